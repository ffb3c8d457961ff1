"""The one folder bitexport caches builds in (kernels, the bandwidth probe, llama.cpp)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """${BITEXPORT_CACHE:-~/.cache/bitexport}/parts..."""
    base = os.environ.get("BITEXPORT_CACHE") or os.path.join(Path.home(), ".cache", "bitexport")
    return Path(base).expanduser().joinpath(*parts)
