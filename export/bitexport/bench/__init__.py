"""Benchmarks: `bitexport bench` (suite.py, wired in through cli.py's `register`/`run`), the
per-target scripts, llama.cpp's formats for comparison and the memory-bandwidth roofline."""

from __future__ import annotations


def register(subparsers) -> None:  # noqa: ANN001 - argparse's private subparsers type
    from bitexport.bench.cli import register as _register

    _register(subparsers)


def run(args) -> int:  # noqa: ANN001
    from bitexport.bench.cli import run as _run

    return _run(args)
