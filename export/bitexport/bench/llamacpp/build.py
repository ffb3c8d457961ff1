"""Builds llama.cpp once from the `llama-cpp-python` source distribution on PyPI, into
`${BITEXPORT_CACHE:-~/.cache/bitexport}/llama.cpp/<version>/` (sdist/ and build/bin/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bitexport.cache import cache_dir
from bitexport.errors import EnvironmentProblem

VERSION = "0.3.36"  # llama-cpp-python source distribution (NOTES.md's measurements used it)
TARGETS = ("llama-bench", "llama-quantize", "llama-completion", "llama-perplexity", "llama-tokenize")

Progress = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


@dataclass
class LlamaCpp:
    root: Path  # cache folder of this version
    version: str

    @property
    def source(self) -> Path:
        return self.root / "sdist" / "vendor" / "llama.cpp"

    @property
    def bin(self) -> Path:
        return self.root / "build" / "bin"

    def tool(self, name: str) -> Path:
        return self.bin / name

    @property
    def converter(self) -> Path:
        return self.source / "convert_hf_to_gguf.py"

    def built(self) -> bool:
        return all(os.access(self.tool(t), os.X_OK) for t in TARGETS)


def llamacpp_root(version: str = VERSION) -> Path:
    return cache_dir("llama.cpp", version)


def find_llamacpp(version: str = VERSION) -> LlamaCpp | None:
    """The cached build, or None if it has not been built yet."""
    lc = LlamaCpp(llamacpp_root(version), version)
    return lc if lc.built() and lc.converter.is_file() else None


def _venv_tool(name: str) -> str:
    """cmake/ninja from this Python's environment first (Debian's cmake is too old)."""
    here = Path(sys.executable).parent / name
    if here.is_file():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise EnvironmentProblem(f"{name} is not installed; pip install cmake ninja")
    return found


def _run_logged(cmd: list[str], log: Path, cwd: Path | None = None, env: dict | None = None) -> None:
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise EnvironmentProblem(
            f"building llama.cpp failed ({cmd[0]} exited {proc.returncode}); see {log}:\n" + "\n".join(tail)
        )


def _fetch_sdist(root: Path, version: str, progress: Progress) -> None:
    if (root / "sdist" / "vendor" / "llama.cpp" / "CMakeLists.txt").is_file():
        return
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        progress(f"downloading the llama-cpp-python {version} source distribution from PyPI")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             f"llama-cpp-python=={version}", "-d", tmp],
            capture_output=True, text=True,
        )
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or not archives:
            raise EnvironmentProblem(
                f"could not download llama-cpp-python=={version} from PyPI ({proc.stderr.strip().splitlines()[-1:]}); "
                "check network access to PyPI or drop --with-llama-cpp"
            )
        with tarfile.open(archives[0]) as tf:
            tf.extractall(tmp, filter="data")
        unpacked = next(p for p in Path(tmp).iterdir() if p.is_dir())
        if (root / "sdist").exists():
            shutil.rmtree(root / "sdist")
        unpacked.rename(root / "sdist")  # atomic: a half-unpacked tree never looks complete


def ensure_llamacpp(version: str = VERSION, jobs: int = 2, progress: Progress = _quiet) -> LlamaCpp:
    """The cached llama.cpp build, building it first (minutes on 2 cores) if needed."""
    found = find_llamacpp(version)
    if found:
        return found
    root = llamacpp_root(version)
    _fetch_sdist(root, version, progress)
    lc = LlamaCpp(root, version)
    log = root / "build.log"
    progress(f"building llama.cpp {version} (llama-bench, llama-quantize; a few minutes, log: {log})")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    _run_logged(
        [_venv_tool("cmake"), "-S", str(lc.source), "-B", str(root / "build"), "-G", "Ninja",
         f"-DCMAKE_MAKE_PROGRAM={_venv_tool('ninja')}",
         "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF",
         "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
         "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TOOLS=ON", "-DGGML_OPENMP=ON"],
        log, env=env,
    )
    # nice: the machine is shared and the build is not timed
    _run_logged(["nice", "-n", "10", _venv_tool("cmake"), "--build", str(root / "build"), "--target", *TARGETS,
                 "-j", str(jobs)], log, env=env)
    if not lc.built():
        raise EnvironmentProblem(f"llama.cpp built but {', '.join(TARGETS)} are not all in {lc.bin}; see {log}")
    return lc


# --- the model, in the format llama.cpp's converter reads ----------------------------------------

