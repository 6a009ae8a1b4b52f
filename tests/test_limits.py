"""Local dask sized from the container's limits (cgroup v2 / v1), else the host's.

The parsers and the decision are tested on fake cgroup trees under a root path. The real
``odc-ndvi run -v`` is then run as root in a mount + cgroup namespace made by the test
(``unshare --mount --cgroup``), with a fake cgroup tree bind-mounted over
``/sys/fs/cgroup``: in the new cgroup namespace ``/proc/self/cgroup`` says ``/``, as in a
container, and the run's log must name the threads and memory limit it chose and the file
each came from. The outputs of those runs are checked to exist (the run really ran).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from odc_ndvi_plugin.ops.limits import (
    CgroupLimits,
    HostResources,
    host_resources,
    parse_cfs_quota,
    parse_cpu_max,
    parse_memory_limit,
    read_cgroup_limits,
    size_local_dask,
)
from tests.fixtures.archives import index_with_year_tasks

REPO = Path(__file__).resolve().parent.parent
CFG_DIR = REPO / "cfg"
GIB = 1 << 30
HOST = HostResources(cpus=8, memory=32 * GIB)
V1_UNLIMITED = "9223372036854771712"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def _v2(root: Path, cpu: str, memory: str, own: str = "/") -> Path:
    return _tree(
        root,
        {
            "proc/self/cgroup": f"0::{own}",
            "sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids",
            "sys/fs/cgroup/cpu.max": cpu,
            "sys/fs/cgroup/memory.max": memory,
        },
    )


def _v1(root: Path, quota: str, period: str, memory: str, cpu_dir: str = "cpu,cpuacct") -> Path:
    return _tree(
        root,
        {
            "proc/self/cgroup": f"5:memory:/\n3:{cpu_dir}:/\n0::/",
            f"sys/fs/cgroup/{cpu_dir}/cpu.cfs_quota_us": quota,
            f"sys/fs/cgroup/{cpu_dir}/cpu.cfs_period_us": period,
            "sys/fs/cgroup/memory/memory.limit_in_bytes": memory,
        },
    )


# -- parsers and the decision (pure) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("max 100000", None), ("150000 100000", 1.5), ("400000 100000", 4.0), ("50000", 0.5)],
)
def test_cpu_max(text, cpus):
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"), [("-1", "100000", None), ("250000", "100000", 2.5)]
)
def test_cfs_quota(quota, period, cpus):
    assert parse_cfs_quota(quota, period) == cpus


@pytest.mark.parametrize(
    ("text", "limit"),
    [("max", None), ("4294967296", 4 * GIB), (V1_UNLIMITED, None), ("0", None)],
)
def test_memory_limit(text, limit):
    assert parse_memory_limit(text) == limit


def test_v2_limits_come_from_cpu_max_and_memory_max(tmp_path):
    limits = read_cgroup_limits(_v2(tmp_path, "150000 100000", str(3 * GIB)))
    assert (limits.version, limits.cpus, limits.memory) == ("v2", 1.5, 3 * GIB)
    assert limits.cpus_source == "/sys/fs/cgroup/cpu.max ('150000 100000')"
    size = size_local_dask(limits, HOST)
    assert (size.threads, size.memory_limit) == (2, 3 * GIB)
    assert "cgroup v2 /sys/fs/cgroup/cpu.max" in size.threads_from
    assert "cgroup v2 /sys/fs/cgroup/memory.max" in size.memory_from


def test_v2_on_a_host_the_tightest_limit_from_the_own_cgroup_up_wins(tmp_path):
    # no cgroup namespace: /proc/self/cgroup names a sub-directory; the pod's limit sits on
    # an ancestor of the container's cgroup, the container's own is looser
    _v2(tmp_path, "max 100000", "max", own="/kubepods/pod1/ctr")
    _tree(
        tmp_path / "sys/fs/cgroup/kubepods/pod1",
        {"cpu.max": "200000 100000", "memory.max": str(2 * GIB), "ctr/memory.max": "max"},
    )
    _tree(tmp_path / "sys/fs/cgroup/kubepods/pod1/ctr", {"cpu.max": "300000 100000"})
    limits = read_cgroup_limits(tmp_path)
    assert (limits.cpus, limits.memory) == (2.0, 2 * GIB)
    assert limits.cpus_source.startswith("/sys/fs/cgroup/kubepods/pod1/cpu.max")


@pytest.mark.parametrize("cpu_dir", ["cpu,cpuacct", "cpu"])
def test_v1_limits_come_from_cfs_quota_and_limit_in_bytes(tmp_path, cpu_dir):
    limits = read_cgroup_limits(_v1(tmp_path, "100000", "100000", str(GIB), cpu_dir=cpu_dir))
    assert (limits.version, limits.cpus, limits.memory) == ("v1", 1.0, GIB)
    size = size_local_dask(limits, HOST)
    assert (size.threads, size.memory_limit) == (1, GIB)
    assert f"/sys/fs/cgroup/{cpu_dir}/cpu.cfs_quota_us" in size.threads_from


@pytest.mark.parametrize("version", ["v2", "v1", "none"])
def test_unlimited_falls_back_to_the_host(tmp_path, version):
    if version == "v2":
        _v2(tmp_path, "max 100000", "max")
    elif version == "v1":
        _v1(tmp_path, "-1", "100000", V1_UNLIMITED)
    limits = read_cgroup_limits(tmp_path)
    assert (limits.version, limits.cpus, limits.memory) == (version, None, None)
    size = size_local_dask(limits, HOST)
    assert (size.threads, size.memory_limit) == (8, 31 * GIB)
    assert size.threads_from.startswith("host: 8 CPUs")


def test_explicit_settings_win_and_limits_above_the_host_are_capped():
    limits = CgroupLimits("v2", 16.0, "/sys/fs/cgroup/cpu.max", 64 * GIB, "/m")
    size = size_local_dask(limits, HOST)
    assert size.threads == 8 and "capped at the host's 8" in size.threads_from
    assert size.memory_limit == 31 * GIB and "is above it" in size.memory_from
    size = size_local_dask(limits, HOST, threads=3, memory_limit=5 * GIB)
    assert (size.threads, size.memory_limit) == (3, 5 * GIB)
    assert "--threads" in size.threads_from and "--memory-limit" in size.memory_from


def test_unreadable_values_are_no_limit(tmp_path):
    limits = read_cgroup_limits(_v2(tmp_path, "lots", "plenty"))
    assert (limits.cpus, limits.memory) == (None, None)


# -- the real odc-ndvi run in a mount + cgroup namespace (root) ------------------------


def _namespaces_available() -> str:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return "needs root and unshare(1)"
    probe = subprocess.run(
        ["unshare", "--mount", "--cgroup", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "" if probe.returncode == 0 else f"unshare failed: {probe.stderr.strip()}"


@pytest.fixture(scope="module")
def year_db(tmp_path_factory, tiny_archive, datacube_env_module):
    why = _namespaces_available()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("limits")
    db, _ = index_with_year_tasks(
        tiny_archive(),
        datacube_env_module,
        root / "year.db",
        config=CFG_DIR / "save-tasks-usgs-c2-year.yaml",
    )
    return db, datacube_env_module


HOST_NOW = host_resources()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "v2",
            "threads 1 (from cgroup v2 /sys/fs/cgroup/cpu.max ('50000 100000'): 0.5 CPUs); "
            "memory limit 1.50 GiB (from cgroup v2 /sys/fs/cgroup/memory.max ('1610612736'))",
        ),
        (
            "v1",
            "threads 1 (from cgroup v1 /sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us "
            "('100000 / 100000'): 1 CPUs); memory limit 2.00 GiB (from cgroup v1 "
            "/sys/fs/cgroup/memory/memory.limit_in_bytes ('2147483648'))",
        ),
        (
            "unlimited",
            f"threads {HOST_NOW.cpus} (from host: {HOST_NOW.cpus} CPUs, no cgroup CPU limit); "
            f"memory limit {(HOST_NOW.memory - GIB) / GIB:.2f} GiB (from host: "
            f"{HOST_NOW.memory / GIB:.2f} GiB less 1 GiB headroom, no cgroup memory limit)",
        ),
    ],
)
def test_odc_ndvi_run_sizes_local_dask_from_the_containers_cgroup(
    tmp_path, year_db, case, expected
):
    db, dcenv = year_db
    fake = tmp_path / "fake"
    if case == "v2":
        _v2(fake, "50000 100000", "1610612736")
    elif case == "v1":
        _v1(fake, "100000", "100000", "2147483648")
    else:
        _v2(fake, "max 100000", "max")
    out = tmp_path / "out"
    run = [
        shutil.which("odc-ndvi") or str(Path(sys.executable).parent / "odc-ndvi"),
        "run",
        "-v",
        "--config",
        str(CFG_DIR / "run-usgs-c2-year.yaml"),
        "--location",
        f"file://{out}",
        str(db),
        "0",
    ]
    script = 'mount --bind "$0" /sys/fs/cgroup && exec "$@"'
    proc = subprocess.run(
        ["unshare", "--mount", "--cgroup", "--propagation", "private"]
        + ["sh", "-c", script, str(fake / "sys/fs/cgroup"), *run],
        env={**os.environ, **dcenv.environ()},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Local dask size: {expected}" in proc.stderr
    assert len(list(out.rglob("*.stac-item.json"))) == 1
