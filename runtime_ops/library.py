"""Finds, builds and loads the bitexport runtime kernels (the ExecuTorch side of runtime_ops).

``load_kernels()`` returns the path of a shared library that registers ``bitexport::tq2_linear.out``
with the ExecuTorch runtime of the installed ``executorch`` wheel, building it with CMake the
first time:

* ``BITEXPORT_KERNELS_LIB`` set: that prebuilt library is loaded, nothing is built.
* otherwise the library lives in
  ``${BITEXPORT_CACHE:-~/.cache/bitexport}/runtime_ops/<key>/libbitexport_kernels.so``, where
  ``<key>`` hashes the sources, the executorch version and location, the compiler and the flags:
  changing any of them builds a new one. A build happens in a temporary folder that is renamed
  into place, so processes racing to build never see a half-written library.

The library is loaded once per process (a second load of the same registrations would abort the
process); later calls return the same path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bitexport.cache import cache_dir
from bitexport.errors import EnvironmentProblem

LIB_BASENAME = "bitexport_kernels"
OP_NAME = "bitexport::tq2_linear.out"
MIN_CMAKE = (3, 28)
# Part of the cache key: bump when the build recipe (not the sources) changes meaning.
BUILD_RECIPE = "cmake-release-v1"

_HERE = Path(__file__).resolve().parent
_lock = threading.Lock()
_loaded_path: Path | None = None
_handle: ctypes.CDLL | None = None


def _lib_filename() -> str:
    if sys.platform == "darwin":
        return f"lib{LIB_BASENAME}.dylib"
    return f"lib{LIB_BASENAME}.so"


def source_files() -> list[Path]:
    """Every file that goes into the build (CMakeLists.txt and csrc/)."""
    files = [_HERE / "CMakeLists.txt"]
    files += sorted(p for p in (_HERE / "csrc").rglob("*") if p.is_file() and p.suffix in {".h", ".cpp"})
    return files


def cache_root() -> Path:
    return cache_dir("runtime_ops")


def _executorch_info() -> tuple[str, Path]:
    try:
        import executorch
        from executorch import version as et_version
    except ImportError as e:  # pragma: no cover - executorch is a hard dependency
        raise EnvironmentProblem(
            f"cannot import executorch ({e}); install it with `pip install executorch==1.5.1`"
        ) from e
    root = Path(executorch.__path__[0]).resolve()
    ver = f"{et_version.__version__}+{getattr(et_version, 'git_version', '') or ''}"
    return ver, root


def _executorch_cmake_dir(root: Path) -> Path:
    cmake_dir = root / "share" / "cmake"
    if not (cmake_dir / "executorch-config.cmake").is_file():
        raise EnvironmentProblem(
            f"the executorch package at {root} has no share/cmake/executorch-config.cmake; "
            "reinstall it with `pip install --force-reinstall executorch==1.5.1`"
        )
    return cmake_dir


def _find_cmake() -> str:
    candidates: list[str] = []
    exe_dir = Path(sys.executable).parent
    candidates.append(str(exe_dir / "cmake"))
    try:
        import cmake as cmake_pkg  # the PyPI `cmake` package

        candidates.append(os.path.join(cmake_pkg.CMAKE_BIN_DIR, "cmake"))
    except (ImportError, AttributeError):
        pass
    found = shutil.which("cmake")
    if found:
        candidates.append(found)
    too_old = []
    for c in candidates:
        if not (os.path.isfile(c) and os.access(c, os.X_OK)):
            continue
        try:
            out = subprocess.run([c, "--version"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        m = re.search(r"version (\d+)\.(\d+)", out)
        if m and (int(m.group(1)), int(m.group(2))) >= MIN_CMAKE:
            return c
        if m:
            too_old.append(f"{c} ({m.group(1)}.{m.group(2)})")
    detail = f"; found only {', '.join(too_old)}" if too_old else ""
    raise EnvironmentProblem(
        f"building the bitexport kernels needs CMake >= {MIN_CMAKE[0]}.{MIN_CMAKE[1]}{detail}; "
        "install it with `pip install 'cmake>=3.28'`"
    )


def _find_ninja() -> str | None:
    exe_dir = Path(sys.executable).parent
    cand = exe_dir / "ninja"
    if cand.is_file() and os.access(cand, os.X_OK):
        return str(cand)
    try:
        import ninja as ninja_pkg

        p = Path(ninja_pkg.BIN_DIR) / "ninja"
        if p.is_file():
            return str(p)
    except (ImportError, AttributeError):
        pass
    return shutil.which("ninja")


def _find_compiler() -> str:
    env = os.environ.get("CXX")
    if env:
        path = shutil.which(env.split()[0])
        if path:
            return path
        raise EnvironmentProblem(
            f"CXX is set to {env!r} but that compiler is not on PATH; fix CXX or unset it"
        )
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    raise EnvironmentProblem(
        "building the bitexport kernels needs a C++17 compiler and none was found; install one "
        "(Debian/Ubuntu: `apt-get install g++`, macOS: `xcode-select --install`) or set CXX, or "
        "point BITEXPORT_KERNELS_LIB at a prebuilt libbitexport_kernels"
    )


def _compiler_id(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.splitlines()[0] if out.stdout else cxx
    except (OSError, subprocess.SubprocessError, IndexError):
        return cxx


def build_key(cxx: str | None = None) -> str:
    """Cache key: sources, executorch version and location, compiler, flags, platform."""
    cxx = cxx or _find_compiler()
    et_ver, et_root = _executorch_info()
    h = hashlib.sha256()
    for f in source_files():
        h.update(f.relative_to(_HERE).as_posix().encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    for part in (
        et_ver,
        str(et_root),
        cxx,
        _compiler_id(cxx),
        os.environ.get("CXXFLAGS", ""),
        BUILD_RECIPE,
        platform.machine(),
        sys.platform,
    ):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


KERNELS_FIX = "Fix the compiler/CMake setup shown above, or point BITEXPORT_KERNELS_LIB at a prebuilt libbitexport_kernels."


def run_build_step(cmd: list[str], cwd: Path, log: Path, what: str = "the bitexport kernels",
                   fix: str = KERNELS_FIX) -> None:
    """One build command with its output appended to `log`; a failure keeps the log in the cache
    and becomes one EnvironmentProblem naming `what` failed, its last lines and `fix`."""
    with open(log, "ab") as fh:
        fh.write(("$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        try:
            res = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EnvironmentProblem(f"could not run {cmd[0]}: {e}") from None
    if res.returncode != 0:
        kept = cache_root() / "last-failed-build.log"
        try:
            shutil.copy2(log, kept)
        except OSError:
            kept = log
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise EnvironmentProblem(
            f"building {what} failed ({' '.join(cmd[:2])} ...); full log: {kept}. Last lines:\n{tail}\n{fix}"
        )


def build_kernels(dest_dir: Path | None = None, *, quiet: bool = False) -> Path:
    """Builds the library into the cache (or ``dest_dir``) unless it is there; returns its path."""
    cxx = _find_compiler()
    key = build_key(cxx)
    final_dir = Path(dest_dir) if dest_dir is not None else cache_root() / key
    final_lib = final_dir / _lib_filename()
    if final_lib.is_file():
        return final_lib
    cmake = _find_cmake()
    ninja = _find_ninja()
    _, et_root = _executorch_info()
    et_cmake = _executorch_cmake_dir(et_root)
    try:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=final_dir.parent))
    except OSError as e:
        raise EnvironmentProblem(
            f"cannot write the kernel cache under {final_dir.parent} ({e}); set BITEXPORT_CACHE "
            "to a writable folder"
        ) from e
    if not quiet:
        logging.getLogger("bitexport").info("building runtime kernels (once, ~10-60 s) into %s", final_dir)
    try:
        build = tmp / "build"
        out = tmp / "out"
        out.mkdir()
        log = tmp / "build.log"
        cfg = [
            cmake,
            "-S",
            str(_HERE),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-Dexecutorch_DIR={et_cmake}",
            f"-DCMAKE_CXX_COMPILER={cxx}",
        ]
        if ninja:
            cfg += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        run_build_step(cfg, tmp, log)
        run_build_step([cmake, "--build", str(build), "--parallel", "2"], tmp, log)
        built = build / _lib_filename()
        if not built.is_file():
            raise EnvironmentProblem(
                f"the CMake build finished but produced no {built.name}; see {log}"
            )
        shutil.copy2(built, out / built.name)
        shutil.copy2(log, out / "build.log")
        try:
            os.rename(out, final_dir)
        except OSError:
            # Another process finished first: its library is complete (it was renamed whole).
            if not final_lib.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final_lib


def _registered_in_executorch() -> bool:
    from executorch.extension.pybindings import portable_lib

    return OP_NAME in set(portable_lib._get_operator_names())


def load_kernels() -> Path:
    """Makes ``bitexport::tq2_linear.out`` available to the ExecuTorch runtime in this process.

    Builds the library if needed (see module doc), loads it once, returns its path.
    Raises ``bitexport.errors.EnvironmentProblem`` when it cannot be found or built.
    """
    global _loaded_path, _handle
    with _lock:
        if _loaded_path is not None:
            return _loaded_path
        override = os.environ.get("BITEXPORT_KERNELS_LIB")
        if override:
            path = Path(override).expanduser().resolve()
            if not path.is_file():
                raise EnvironmentProblem(
                    f"BITEXPORT_KERNELS_LIB points at {path}, which does not exist; fix the path "
                    "or unset it to build the kernels automatically"
                )
        else:
            path = build_kernels()
        # The Python runtime must be the one that owns the registry our library registers into;
        # importing it first also lets us notice a library loaded by someone else.
        already = _registered_in_executorch()
        if not already:
            try:
                _handle = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise EnvironmentProblem(
                    f"could not load the bitexport kernels from {path}: {e}. Delete "
                    f"{path.parent} to rebuild it, or fix BITEXPORT_KERNELS_LIB"
                ) from e
            if not _registered_in_executorch():
                raise EnvironmentProblem(
                    f"{path} loaded but did not register {OP_NAME} with this executorch runtime; "
                    "it was probably built against another executorch: delete it to rebuild"
                )
        else:
            # Registered already (by this library loaded some other way, or by another build):
            # loading a second copy would abort the process, so only look for this one.
            _handle = _already_open(path)
        _loaded_path = path
        return path


def _already_open(path: Path) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(str(path), mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL)
    except OSError:
        return None


def kernels_handle() -> ctypes.CDLL:
    """ctypes handle of the loaded library (its C entry points: see csrc/tq2_c_api.cpp)."""
    load_kernels()
    if _handle is None:
        raise EnvironmentProblem(
            f"{OP_NAME} was registered by a library bitexport did not load; its C entry points "
            "are not reachable from here"
        )
    return _handle
