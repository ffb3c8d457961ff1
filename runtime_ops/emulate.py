"""Runs a .pte the way an aarch64 phone would, on this x86_64 machine: ExecuTorch's own C++
runtime from the aarch64 executorch wheel, with bitexport's kernels, under qemu-user.

``run_emulated(pte, prompt_ids, max_new_tokens)`` greedy-decodes with the LLM-runner loop
(prefill the prompt in one ``forward`` call, then one token per call) and returns
``{"tokens", "prefill_s", "decode_s", "prompt_tokens", "threads", "max_seq_len"}``. Timings are
qemu's (an x86 core translating aarch64 code): they show relative costs, not a phone's speed.

What it needs, each found or made once and cached under
``${BITEXPORT_CACHE:-~/.cache/bitexport}/aarch64/``:

* the executorch aarch64 manylinux wheel of the installed executorch version (``pip download``;
  ``BITEXPORT_AARCH64_WHEEL`` names a wheel file to use instead, for offline machines). Only its
  Python-free libraries are used: libexecutorch (Program/Method), the XNNPACK delegate, the
  optimized and quantized kernels, the thread pool; plus its headers and CMake package;
* the runner program (``aarch64/runner.cpp``, with bitexport's tq2 kernels and its own kernels for
  ExecuTorch's two LLM operators, ``aarch64/llm_ops.cpp``), built with Debian's
  ``aarch64-linux-gnu-g++`` and the pip ``cmake`` into ``runner/<key>/``, where ``<key>`` hashes
  every source, the wheel and the compiler: changing any of them builds a new one;
* ``qemu-aarch64`` and the cross toolchain's sysroot ``/usr/aarch64-linux-gnu`` to run it.

Every missing piece raises ``bitexport.errors.EnvironmentProblem`` with the command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Iterable, Sequence

from bitexport.cache import cache_dir
from bitexport.errors import BundleError, EnvironmentProblem, InputError

from .library import _find_cmake, _find_ninja, run_build_step

RUNNER_NAME = "bitexport_a64_runner"
# the LLM operators' kernels alone, for the tests (aarch64/llm_ops_check.cpp); small, so built
# with the runner rather than on a path of its own
LLM_OPS_CHECK_NAME = "bitexport_a64_llm_ops_check"
PROGRAMS = (RUNNER_NAME, LLM_OPS_CHECK_NAME)
CXX = "aarch64-linux-gnu-g++"
QEMU = "qemu-aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")
APT_FIX = "apt-get install -y g++-aarch64-linux-gnu qemu-user"
# The wheel's C++ libraries do not depend on Python; any CPython tag carries the same ones, so
# the project's own interpreter version names the file.
WHEEL_PLATFORM = "manylinux_2_28_aarch64"
WHEEL_PYTHON = "3.11"
# Part of the cache key: bump when the build recipe (not the sources) changes meaning.
BUILD_RECIPE = "a64-runner-v2"

_HERE = Path(__file__).resolve().parent
_A64 = _HERE / "aarch64"


def cache_root() -> Path:
    return cache_dir("aarch64")


def executorch_version() -> str:
    """The installed executorch's release (local tags such as +cpu dropped): the runtime the
    .pte was written for, so the aarch64 runtime must be the same release."""
    try:
        return metadata.version("executorch").split("+")[0]
    except metadata.PackageNotFoundError:
        raise EnvironmentProblem("executorch is not installed; pip install executorch==1.5.1") from None


def source_files() -> list[Path]:
    """Every file the runner is built from: its own folder and the kernel library's recipe."""
    files = [_HERE / "CMakeLists.txt"]
    files += sorted(p for p in (_HERE / "csrc").rglob("*") if p.is_file() and p.suffix in {".h", ".cpp"})
    files += sorted(p for p in _A64.rglob("*") if p.is_file() and p.suffix in {".h", ".cpp", ".cmake", ".txt"})
    return files


def check_tools() -> tuple[str, str]:
    """(cross compiler, qemu) paths, or EnvironmentProblem naming the apt packages."""
    cxx, qemu = shutil.which(CXX), shutil.which(QEMU)
    missing = [name for name, path in ((CXX, cxx), (QEMU, qemu)) if path is None]
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").is_file():
        missing.append(f"the aarch64 sysroot {SYSROOT}")
    if missing:
        raise EnvironmentProblem(
            f"emulating aarch64 needs {', '.join(missing)}; install them with `{APT_FIX}` (Debian/Ubuntu)"
        )
    return cxx, qemu  # type: ignore[return-value]


def _pip_download_cmd(version: str, dest: Path) -> list[str]:
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--platform", WHEEL_PLATFORM, "--python-version", WHEEL_PYTHON, "--implementation", "cp",
        f"executorch=={version}", "-d", str(dest),
    ]


def find_wheel(*, quiet: bool = False) -> Path:
    """The aarch64 executorch wheel: BITEXPORT_AARCH64_WHEEL, else the cached one, else downloaded."""
    version = executorch_version()
    override = os.environ.get("BITEXPORT_AARCH64_WHEEL")
    if override:
        path = Path(override).expanduser().resolve()
        if not path.is_file():
            raise EnvironmentProblem(
                f"BITEXPORT_AARCH64_WHEEL points at {path}, which does not exist; fix the path or unset it "
                "to download the wheel"
            )
        return path
    wheels = cache_root() / "wheels"
    found = sorted(wheels.glob(f"executorch-{version}-*_aarch64.whl"))
    if found:
        return found[-1]
    if not quiet:
        print(f"bitexport: downloading the aarch64 executorch {version} wheel (once, ~18 MB) into {wheels}",
              file=sys.stderr, flush=True)
    try:
        wheels.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=wheels))
    except OSError as e:
        raise EnvironmentProblem(f"cannot write {wheels} ({e}); set BITEXPORT_CACHE to a writable folder") from e
    cmd = _pip_download_cmd(version, tmp)
    manual = " ".join(_pip_download_cmd(version, wheels)[1:])
    try:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EnvironmentProblem(
                f"could not download the aarch64 executorch wheel ({e}); run `python {manual}` on a connected "
                "machine, or set BITEXPORT_AARCH64_WHEEL to a copy of the wheel"
            ) from None
        got = sorted(tmp.glob("executorch-*_aarch64.whl"))
        if res.returncode != 0 or not got:
            text = res.stderr + res.stdout
            if "No module named pip" in text:
                fix = "install pip into this environment with `python -m ensurepip`"
            else:
                last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "no wheel written")
                fix = (f"pip said: {last.strip()}; check the network or run `python {manual}` on a connected "
                       "machine, or set BITEXPORT_AARCH64_WHEEL to a copy of the wheel")
            raise EnvironmentProblem(f"could not download the aarch64 executorch {version} wheel; {fix}")
        final = wheels / got[0].name
        os.replace(got[0], final)  # atomic: a racing download ends with the same complete file
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpacked_wheel(wheel: Path) -> Path:
    """The wheel's ``executorch/{lib,include,share}`` unpacked once; returns the ``executorch`` folder."""
    final = cache_root() / "unpacked" / wheel.stem / "executorch"
    if (final / "share" / "cmake" / "executorch-config.cmake").is_file():
        return final
    final.parent.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=final.parent.parent))
    try:
        try:
            with zipfile.ZipFile(wheel) as zf:
                members = [n for n in zf.namelist() if re.match(r"executorch/(lib|include|share)/", n)]
                zf.extractall(tmp, members)
        except (zipfile.BadZipFile, OSError) as e:
            raise EnvironmentProblem(f"{wheel} is not a readable wheel ({e}); delete it to download it again") from None
        if not (tmp / "executorch" / "lib" / "libexecutorch.so").is_file():
            raise EnvironmentProblem(
                f"{wheel.name} has no executorch/lib/libexecutorch.so; use the manylinux aarch64 wheel of "
                f"executorch=={executorch_version()}"
            )
        try:
            os.rename(tmp, final.parent)
        except OSError:
            if not final.is_dir():  # not a racing unpack that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        return out.splitlines()[0] if out else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def build_key(cxx: str, wheel: Path) -> str:
    h = hashlib.sha256()
    for f in source_files():
        h.update(f.relative_to(_HERE).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    for part in (wheel.name, str(wheel.stat().st_size), cxx, _first_line([cxx, "--version"]), BUILD_RECIPE):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:20]


_built: Path | None = None


def build_runner(*, quiet: bool = False) -> Path:
    """The aarch64 runner program, built into the cache unless it is there; returns its path
    (found once per process: hashing the sources again for every run would be wasted)."""
    global _built
    if _built is not None and _built.is_file():
        return _built
    _built = _build_runner(quiet)
    return _built


def llm_ops_check_program(*, quiet: bool = False) -> Path:
    """The test program for the LLM operators' kernels (built beside the runner)."""
    return build_runner(quiet=quiet).parent / LLM_OPS_CHECK_NAME


def _build_runner(quiet: bool) -> Path:
    if not (_A64 / "CMakeLists.txt").is_file() or not (_HERE / "CMakeLists.txt").is_file():
        raise EnvironmentProblem(
            f"this bitexport install lacks the runner sources ({_A64}); install bitexport from its repository "
            "with `pip install -e .`"
        )
    cxx, _ = check_tools()
    wheel = find_wheel(quiet=quiet)
    et_root = unpacked_wheel(wheel)
    key = build_key(cxx, wheel)
    final_dir = cache_root() / "runner" / key
    final = final_dir / RUNNER_NAME
    if final.is_file():
        return final
    cmake = _find_cmake()
    ninja = _find_ninja()
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=final_dir.parent))
    if not quiet:
        print(f"bitexport: building the aarch64 runner (once, ~2-4 min) into {final_dir}", file=sys.stderr, flush=True)
    try:
        build, out, log = tmp / "build", tmp / "out", tmp / "build.log"
        out.mkdir()
        cfg = [
            cmake, "-S", str(_A64), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_TOOLCHAIN_FILE={_A64 / 'toolchain-aarch64-linux-gnu.cmake'}",
            f"-DCMAKE_CXX_COMPILER={cxx}",
            f"-Dexecutorch_DIR={et_root / 'share' / 'cmake'}",
        ]
        if ninja:
            cfg += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
        run_build_step(cfg, tmp, log, "the aarch64 runner", f"Fix the cross toolchain shown above (`{APT_FIX}`)")
        # two jobs: the machines this runs on are small and shared
        run_build_step([cmake, "--build", str(build), "--parallel", "2", "--target", *PROGRAMS], tmp, log,
                       "the aarch64 runner", f"Fix the cross toolchain shown above (`{APT_FIX}`)")
        for name in PROGRAMS:
            built = build / name
            if not built.is_file():
                raise EnvironmentProblem(f"the CMake build finished but produced no {name}; see {log}")
            shutil.copy2(built, out / name)
        shutil.copy2(log, out / "build.log")
        try:
            os.rename(out, final_dir)
        except OSError:
            if not final.is_file():  # not a racing build that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _ids(values: Iterable[int], what: str) -> str:
    ids = [int(v) for v in values]
    if any(v < 0 for v in ids):
        raise InputError(f"{what} holds a negative token id")
    return ",".join(map(str, ids))


def _failure(pte: Path, rc: int, stderr: str) -> Exception:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    missing = sorted({m.group(1) for ln in lines if (m := re.search(r"Missing operator: \[\d+\] (\S+)", ln))})
    if missing:
        return EnvironmentProblem(
            f"{pte.name} uses operators the aarch64 runner does not link ({', '.join(missing)}); add their "
            "kernels to runtime_ops/aarch64/CMakeLists.txt, or export with stock operators"
        )
    error = next((ln[len("error: "):] for ln in reversed(lines) if ln.startswith("error: ")), None)
    if error and ("not a loadable .pte" in error or "has no method" in error):
        where = "" if str(pte.resolve()) in error else f"{pte}: "
        return BundleError(f"{where}{error}; export the bundle again")
    if error:
        return EnvironmentProblem(f"the aarch64 runner failed on {pte.name}: {error}")
    tail = " | ".join(lines[-3:]) or "no output"
    return EnvironmentProblem(
        f"the aarch64 runner died on {pte.name} (exit status {rc}: {tail}); delete {cache_root() / 'runner'} "
        "to rebuild it"
    )


def run_emulated(
    pte_path: str | Path,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    threads: int | None = None,
    *,
    eos_ids: Sequence[int] = (),
    logits_out: str | Path | None = None,
    timeout_s: float | None = None,
) -> dict:
    """Greedy-decode `prompt_ids` with the .pte on emulated aarch64 (see the module doc).

    `threads`: the size of ExecuTorch's thread pool (None: the runtime's own default). Decoding
    stops after `max_new_tokens`, at a token in `eos_ids` (kept in the output) or at the .pte's
    cache end, like the desktop runners. `logits_out`: a file that receives every call's
    last-position logits as float32 rows (to measure how close a greedy pick was).
    Raises EnvironmentProblem (toolchain, qemu, wheel, build, missing operators), BundleError
    (the .pte does not load) or InputError (the prompt).
    """
    pte = Path(pte_path)
    if not pte.is_file():
        raise BundleError(f"{pte}: missing; export the bundle again")
    if not prompt_ids:
        raise InputError("the prompt is empty")
    if max_new_tokens < 0:
        raise InputError("--max-new-tokens must be at least 0")
    if threads is not None and threads < 1:
        raise InputError("--threads must be at least 1")
    runner = build_runner()
    _, qemu = check_tools()
    cmd = [qemu, "-L", str(SYSROOT), str(runner), str(pte.resolve()), "--prompt", _ids(prompt_ids, "the prompt"),
           "--max-new-tokens", str(int(max_new_tokens))]
    if threads is not None:
        cmd += ["--threads", str(int(threads))]
    if eos_ids:
        cmd += ["--eos", _ids(eos_ids, "eos_ids")]
    if logits_out is not None:
        cmd += ["--logits-out", str(Path(logits_out).resolve())]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(
            f"the emulated aarch64 run of {pte.name} took over {timeout_s:.0f} s; ask for fewer tokens"
        ) from None
    except OSError as e:
        raise EnvironmentProblem(f"could not start {QEMU} ({e}); install it with `{APT_FIX}`") from None
    if res.returncode != 0:
        raise _failure(pte, res.returncode, res.stderr)
    try:
        result = json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise EnvironmentProblem(
            f"the aarch64 runner printed no result for {pte.name}; delete {cache_root() / 'runner'} to rebuild it"
        ) from None
    return result


def emulated_generation(
    pte_path: str | Path,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    threads: int | None = None,
    eos_ids: Sequence[int] = (),
):
    """run_emulated as the desktop runners report it: a bitexport.runtime.generate.Generation, so
    `bitexport run --emulate aarch64` can print tokens/s the same way."""
    from bitexport.runtime.generate import Generation, GenerationStats

    r = run_emulated(pte_path, prompt_ids, max_new_tokens, threads, eos_ids=eos_ids)
    stats = GenerationStats(prompt_tokens=int(r["prompt_tokens"]), new_tokens=len(r["tokens"]),
                            prefill_s=float(r["prefill_s"]), decode_s=float(r["decode_s"]))
    return Generation([int(t) for t in r["tokens"]], stats)


__all__ = ["build_runner", "cache_root", "check_tools", "emulated_generation", "find_wheel", "run_emulated"]
