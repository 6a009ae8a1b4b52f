"""How big a local dask may be: the container's CPU and memory limits (cgroup v2 or v1),
else the host's.

A pod with ``limits: {cpu: "4", memory: 16Gi}`` on a 64-core node must not start 64
threads or size its memory manager for the node's RAM: the kernel throttles the first
(CFS quota) and OOM-kills the second. Three steps, the first two pure:

* parsers of the cgroup files' text (``cpu.max``, ``cpu.cfs_quota_us`` /
  ``cpu.cfs_period_us``, ``memory.max``, ``memory.limit_in_bytes``);
* :func:`read_cgroup_limits`: those files under a root path (``/`` in production, a fake
  tree in tests), from this process's cgroup up to the hierarchy's root; the tightest
  limit on the way wins, as the kernel applies every ancestor's limit;
* :func:`size_local_dask`: the decision (explicit settings, else the cgroup, else the
  host), each value with the place it came from, for the ``-v`` log.

odc-stats' own ``get_max_cpu`` reads cgroup v1 only (and an unlimited quota of ``-1`` as
0 threads); ``distributed`` caps a worker's ``memory_limit`` at the cgroup's on its own but
says nothing about it.
"""

from __future__ import annotations

import math
import os
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CgroupLimits",
    "DaskSizing",
    "HostResources",
    "host_resources",
    "parse_cfs_quota",
    "parse_cpu_max",
    "parse_memory_limit",
    "read_cgroup_limits",
    "size_local_dask",
]

#: cgroup v1 writes "no limit" as the largest page-aligned int64 (9223372036854771712);
#: anything at or above 2**62 bytes (4 EiB) is no limit in practice
_V1_UNLIMITED = 1 << 62
#: headroom left to the rest of the host when no container limit applies (as before)
HOST_HEADROOM = 1 << 30
_MIN_MEMORY = 1 << 30


# -- parsers (pure) --------------------------------------------------------------------


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``): CPUs, or None
    when unlimited."""
    fields = text.split()
    if not fields or fields[0] == "max":
        return None
    quota = int(fields[0])
    period = int(fields[1]) if len(fields) > 1 else 100_000
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs_quota(quota_text: str, period_text: str) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``: CPUs, or None when
    unlimited (quota ``-1``)."""
    quota, period = int(quota_text.strip()), int(period_text.strip())
    return quota / period if quota > 0 and period > 0 else None


def parse_memory_limit(text: str) -> int | None:
    """cgroup v2 ``memory.max`` (bytes or ``max``) or v1 ``memory.limit_in_bytes``: bytes,
    or None when unlimited."""
    value = text.strip()
    if value == "max":
        return None
    n = int(value)
    return n if 0 < n < _V1_UNLIMITED else None


# -- reading a cgroup tree under a root ------------------------------------------------


@dataclass(frozen=True)
class CgroupLimits:
    """The limits found for this process (None: none found or unlimited)."""

    #: "v2", "v1" or "none" (no cgroup filesystem found)
    version: str
    #: CPUs the CFS quota allows (may be fractional)
    cpus: float | None = None
    #: the file and its text the CPU limit came from
    cpus_source: str = ""
    #: bytes of memory the cgroup allows
    memory: int | None = None
    #: the file and its text the memory limit came from
    memory_source: str = ""


def _own_cgroups(root: Path) -> dict[str, str]:
    """``/proc/self/cgroup`` as {controller: path}; v2's unified line is under ``""``."""
    try:
        text = (root / "proc/self/cgroup").read_text()
    except OSError:
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                out[controller] = parts[2]
    return out


def _chain(mount: Path, own: str | None) -> list[Path]:
    """Directories from this process's cgroup up to the hierarchy's mount point. In a
    container (cgroup namespace) the own path is ``/`` and the mount is the container's
    cgroup; on a host it is a sub-directory. An own path that is not under this mount (a
    namespace the mount does not match) counts as the mount itself."""
    leaf = mount
    if own and own.strip("/"):
        candidate = mount / own.strip("/")
        if candidate.is_dir():
            leaf = candidate
    chain = [leaf]
    while chain[-1] != mount:
        chain.append(chain[-1].parent)
    return chain


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def _tightest(found: list[tuple[float, str]]) -> tuple[float | None, str]:
    if not found:
        return None, ""
    value, source = min(found, key=lambda f: f[0])
    return value, source


def _source(path: Path, root: Path, text: str) -> str:
    return f"/{path.relative_to(root)} ({text.strip()!r})"


def read_cgroup_limits(root: Path | str = "/") -> CgroupLimits:
    """The CPU and memory limits of this process's cgroup (v2: ``cpu.max``,
    ``memory.max``; v1: ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``,
    ``memory.limit_in_bytes``) under ``root``; unreadable or unparsable files count as no
    limit."""
    root = Path(root)
    base = root / "sys/fs/cgroup"
    own = _own_cgroups(root)
    cpus: list[tuple[float, str]] = []
    memory: list[tuple[float, str]] = []
    if (base / "cgroup.controllers").is_file():
        version = "v2"
        for d in _chain(base, own.get("")):
            if (text := _read(d / "cpu.max")) is not None:
                with suppress(ValueError, IndexError):  # not a number: no limit
                    if (n := parse_cpu_max(text)) is not None:
                        cpus.append((n, _source(d / "cpu.max", root, text)))
            if (text := _read(d / "memory.max")) is not None:
                with suppress(ValueError, IndexError):  # not a number: no limit
                    if (m := parse_memory_limit(text)) is not None:
                        memory.append((m, _source(d / "memory.max", root, text)))
    else:
        cpu_mount = next(
            (base / n for n in ("cpu", "cpu,cpuacct", "cpuacct,cpu") if (base / n).is_dir()),
            None,
        )
        mem_mount = base / "memory" if (base / "memory").is_dir() else None
        version = "v1" if cpu_mount or mem_mount else "none"
        if cpu_mount:
            for d in _chain(cpu_mount, own.get("cpu")):
                quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
                if quota is not None and period is not None:
                    with suppress(ValueError, IndexError):  # not a number: no limit
                        if (n := parse_cfs_quota(quota, period)) is not None:
                            text = f"{quota.strip()} / {period.strip()}"
                            cpus.append((n, _source(d / "cpu.cfs_quota_us", root, text)))
        if mem_mount:
            for d in _chain(mem_mount, own.get("memory")):
                if (text := _read(d / "memory.limit_in_bytes")) is not None:
                    with suppress(ValueError, IndexError):  # not a number: no limit
                        if (m := parse_memory_limit(text)) is not None:
                            src = _source(d / "memory.limit_in_bytes", root, text)
                            memory.append((m, src))
    n_cpus, cpus_source = _tightest(cpus)
    n_memory, memory_source = _tightest(memory)
    return CgroupLimits(
        version=version,
        cpus=n_cpus,
        cpus_source=cpus_source,
        memory=None if n_memory is None else int(n_memory),
        memory_source=memory_source,
    )


# -- the decision (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class HostResources:
    """What the host offers this process."""

    #: CPUs this process may run on (its affinity mask)
    cpus: int
    #: physical memory, bytes
    memory: int


def host_resources() -> HostResources:
    import psutil

    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return HostResources(cpus=max(1, cpus), memory=int(psutil.virtual_memory().total))


@dataclass(frozen=True)
class DaskSizing:
    """Threads and memory limit of the local dask worker, and where each came from."""

    #: threads of the one in-process worker
    threads: int
    #: why that many, e.g. "cgroup v2 /sys/fs/cgroup/cpu.max ('150000 100000')"
    threads_from: str
    #: the worker's memory_limit, bytes (dask spills at 70 %, pauses at 80 % of it)
    memory_limit: int
    #: why that much
    memory_from: str

    def describe(self) -> str:
        return (
            f"threads {self.threads} (from {self.threads_from}); memory limit "
            f"{_gib(self.memory_limit)} (from {self.memory_from})"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def size_local_dask(
    limits: CgroupLimits,
    host: HostResources,
    *,
    threads: int | None = None,
    memory_limit: int | None = None,
) -> DaskSizing:
    """The local dask worker's size. Explicit ``threads`` (> 0) and ``memory_limit`` (bytes,
    from ``--threads`` / ``--memory-limit`` or the run config) win. Else threads = the CFS
    quota rounded up (a 1.5-CPU pod gets 2 threads: the quota is shared by them, and a
    thread idle on I/O leaves CPU to the other), at most the host's CPUs; memory = the
    cgroup's limit itself (the worker is the container's only big process, and dask's
    spill/pause fractions keep it below the OOM killer). Only with no container limit:
    the host (all its CPUs; its memory less 1 GiB for the rest of the host)."""
    if threads is not None and threads > 0:
        n, n_from = threads, "--threads / run config threads"
    elif limits.cpus is not None:
        n = max(1, min(host.cpus, math.ceil(limits.cpus - 1e-9)))
        n_from = f"cgroup {limits.version} {limits.cpus_source}: {limits.cpus:g} CPUs"
        if math.ceil(limits.cpus - 1e-9) > host.cpus:
            n_from += f", capped at the host's {host.cpus}"
    else:
        n, n_from = host.cpus, f"host: {host.cpus} CPUs, no cgroup CPU limit"
    if memory_limit is not None and memory_limit > 0:
        mem, mem_from = memory_limit, "--memory-limit / run config memory_limit"
    elif limits.memory is not None and limits.memory < host.memory:
        mem = limits.memory
        mem_from = f"cgroup {limits.version} {limits.memory_source}"
    else:
        mem = max(host.memory - HOST_HEADROOM, _MIN_MEMORY)
        mem_from = f"host: {_gib(host.memory)} less 1 GiB headroom"
        if limits.memory is not None:
            mem_from += f"; cgroup limit {limits.memory_source} is above it"
        else:
            mem_from += ", no cgroup memory limit"
    return DaskSizing(threads=n, threads_from=n_from, memory_limit=mem, memory_from=mem_from)
