"""The benchmark's processes and machine: a child command with its own peak memory, the worker
steps, waiting for idle CPUs, and what the machine is."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bitexport import __version__

# A small launcher between us and the measured command. Linux folds the exec-ing process's old
# high-water mark into ru_maxrss, so a command forked straight from this (large) process would
# report our size; forked from the launcher (a bare `python -S`, ~10 MB) it reports its own peak,
# which the launcher writes to the file named by its first argument. Polling /proc/PID/status
# instead misses commands that finish between two polls (llama-bench on a tiny model).
_LAUNCHER = """import os, signal, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
if os.WIFSIGNALED(status):
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_with_rusage(
    cmd: list[str], env: dict | None = None, cwd: Path | None = None, timeout: float | None = None
) -> tuple[int, str, str, float, int]:
    """(returncode, stdout, stderr, wall seconds, the command's peak RSS in bytes) of one command.
    Past `timeout` seconds the command is killed and the return code is -SIGKILL, with a note on
    stderr."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rss_file = Path(tmp) / "maxrss"
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCHER, str(rss_file), *cmd], stdout=out, stderr=err,
                                env=env, cwd=cwd, start_new_session=True)
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        if timed_out:
            stderr += f"\ntimed out after {timeout:.0f} s\n"
        peak = int(rss_file.read_text()) if rss_file.is_file() else 0
        return proc.returncode, out.read().decode(errors="replace"), stderr, wall, peak



def child_error(err: str, rc: int = 1) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    last = lines[-1].strip() if lines else "no error output"
    if rc < 0 and last.startswith("timed out"):
        return last
    if rc < 0:  # killed by a signal: a crash inside a runtime, not a Python error
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"crashed with {name} (last output: {last})"
    return last


# a step that runs past these has hung (a large export takes minutes, a measurement less)
EXPORT_TIMEOUT_S = 3600
MEASURE_TIMEOUT_S = 1800


def worker(args: list[str], timeout: float) -> tuple[int, dict | None, str, float, int]:
    """Run one worker step: (returncode, its JSON result, stderr, wall s, peak RSS bytes)."""
    rc, out, err, wall, rss = run_with_rusage([sys.executable, "-m", "bitexport.bench.worker", *args], timeout=timeout)
    result = None
    if rc == 0:
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            rc, err = 1, f"worker printed no result: {out[-300:]}"
    if result is not None:
        rss = max(rss, result.pop("vm_hwm_bytes", 0))
    return rc, result, err, wall, rss


def cpu_busy(interval: float = 1.0) -> float:
    """Share of all CPUs busy over `interval` seconds (from /proc/stat; 0.0 where unreadable)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # all jiffies, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_quiet(max_wait_s: float, busy_limit: float = 0.15, calm_samples: int = 3) -> tuple[float, float]:
    """Wait (at most max_wait_s) until the CPUs have been nearly idle for a few seconds: on a
    shared machine another process's load would land on whichever variant runs beside it, and
    spin-waiting thread pools (llama.cpp's, XNNPACK's) collapse when they lose a core.
    Returns (seconds waited, busy share of the last sample)."""
    t0 = time.perf_counter()
    calm, busy = 0, 0.0
    while max_wait_s > 0:
        busy = cpu_busy(1.0)
        calm = calm + 1 if busy < busy_limit else 0
        if calm >= calm_samples or time.perf_counter() - t0 > max_wait_s:
            break
    return time.perf_counter() - t0, busy


def machine_info() -> dict:
    cpu = platform.processor()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "sve") if f in flags]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem, "simd": simd, "system": platform.platform(),
            "python": platform.python_version()}


def versions() -> dict:
    out = {"bitexport": __version__}
    for mod in ("torch", "executorch", "onnxruntime", "onnxruntime_genai"):
        try:
            from importlib.metadata import version

            out[mod] = version(mod.replace("_", "-"))
        except Exception:
            out[mod] = None
    return out
