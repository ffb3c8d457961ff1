"""Training recipe for BitNet b1.58 decoders (the bundled demo model's): `python -m bitexport.train`.

`register(subparsers)` adds the `train` subcommand to bitexport's CLI; `run(args)` runs it.
"""

from bitexport.train.cli import build_parser, main, register, run

__all__ = ["build_parser", "main", "register", "run"]
