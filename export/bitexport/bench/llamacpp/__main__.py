"""`python -m bitexport.bench.llamacpp build`: build (or find) the cached llama.cpp."""

from __future__ import annotations

import sys

from bitexport.bench.llamacpp.build import ensure_llamacpp


def main(argv: list[str] | None = None) -> int:
    """`python -m bitexport.bench.llamacpp build`: build (or find) the cached llama.cpp."""
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] != ["build"]:
        print("usage: python -m bitexport.bench.llamacpp build", file=sys.stderr)
        return 2
    lc = ensure_llamacpp(progress=lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True))
    print(lc.bin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
