"""Shared by the benchmark scripts: run one case in a fresh interpreter and measure it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["mib", "run_case_process", "run_measured", "vmhwm", "write_results"]


def run_case_process(
    case: str, cmd: list[str], report: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd`` (which writes its JSON ``report``); add the child's wall, CPU and rusage."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0:
        raise SystemExit(f"case {case!r} failed with exit code {returncode}")
    result = json.loads(report.read_text())
    result.update(
        process_wall_s=time.perf_counter() - t0,
        process_cpu_s=usage.ru_utime + usage.ru_stime,
        ru_maxrss_bytes=usage.ru_maxrss * 1024,
    )
    return result


def vmhwm(pid: int | str = "self") -> int:
    """Peak RSS (``VmHWM``, bytes) of a live process image; 0 if it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    stdout: Path | None = None,
    stderr: Path | None = None,
    poll_s: float = 0.02,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``cmd`` to its end: wall (start to exit), CPU (``os.wait4``), exit code and peak
    RSS. The peak is the child's own ``VmHWM``, read from ``/proc`` every ``poll_s`` while it
    runs (``ru_maxrss`` of a fork + exec child also counts the parent's RSS at the fork);
    a peak in the child's last ``poll_s`` would be missed. Output goes to the given files
    (default: inherited)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(stdout, "wb")) if stdout else None
        err = stack.enter_context(open(stderr, "wb")) if stderr else None
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, vmhwm(proc.pid))
            if timeout is not None and time.perf_counter() - t0 > timeout:
                proc.kill()
            time.sleep(poll_s)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "process_wall_s": wall,
        "process_cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_bytes": peak,
        "ru_maxrss_bytes": usage.ru_maxrss * 1024,
    }


def mib(n: float) -> str:
    """Bytes as a MiB figure with thousands separators."""
    return f"{n / 2**20:,.0f}"


def write_results(
    benchmark: str, body: dict[str, Any], out: Path | None, results_dir: Path
) -> Path:
    """Write ``body`` as JSON with the benchmark name, UTC time and machine; return the path."""
    import datetime as dt
    import platform

    now = dt.datetime.now(dt.UTC)
    doc = {
        "benchmark": benchmark,
        "utc": now.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        **body,
    }
    out = out or results_dir / f"{benchmark}_{now:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    return out
