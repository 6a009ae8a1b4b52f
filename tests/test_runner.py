"""ops/commit.py's commit rules and staging sweep on tiny local files (no dask, no servers)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from odc_ndvi_plugin.ops.commit import STAGING_DIR, _commit_files, _LocalStore, sweep_stale_staging

DAY = 24 * 3600


def _staged(tmp: Path, attempt: str, names: dict[str, bytes]) -> list[tuple[str, str]]:
    pairs = []
    for name, data in names.items():
        src = tmp / STAGING_DIR / attempt / "x" / f"{name}.part"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(data)
        pairs.append((src.as_uri(), (tmp / "x" / name).as_uri()))
    return pairs


@pytest.mark.parametrize(
    "existing, overwrite, expect_tif, expect_item",
    [
        (False, False, b"new", b"item-new"),  # first attempt: commit
        (False, True, b"new", b"item-new"),
        (True, False, b"old", b"item-old"),  # another attempt finished: keep its files
        (True, True, b"new", b"item-new"),  # --overwrite: replace, item last
    ],
)
def test_commit_moves_staged_files_or_keeps_a_finished_task(
    tmp_path, existing, overwrite, expect_tif, expect_item
):
    item = tmp_path / "x" / "t.stac-item.json"
    if existing:
        item.parent.mkdir(parents=True)
        (tmp_path / "x" / "t_band.tif").write_bytes(b"old")
        item.write_bytes(b"item-old")
    staged = _staged(tmp_path, "a1", {"t_band.tif": b"new"})
    _commit_files(_LocalStore(), b"item-new", item.as_uri(), staged, overwrite=overwrite)
    assert (tmp_path / "x" / "t_band.tif").read_bytes() == expect_tif
    assert item.read_bytes() == expect_item
    assert not list((tmp_path / STAGING_DIR).rglob("*.part"))  # staged files moved or dropped
    assert not list(item.parent.glob(".*"))  # no temp item left


@pytest.mark.parametrize("existing", [False, True])
def test_a_commit_cut_short_leaves_no_stac_item(tmp_path, existing):
    item = tmp_path / "x" / "t.stac-item.json"
    if existing:
        item.parent.mkdir(parents=True)
        item.write_bytes(b"item-old")
    staged = _staged(tmp_path, "a1", {"t_a.tif": b"a", "t_b.tif": b"b"})
    Path(staged[1][0].removeprefix("file://")).unlink()  # e.g. removed by a cleanup
    with pytest.raises(FileNotFoundError):
        _commit_files(_LocalStore(), b"item-new", item.as_uri(), staged, overwrite=True)
    assert not item.exists()  # not "done": a rerun computes the task again
    assert not list(item.parent.glob(".*"))


def _age(path: Path, seconds: float) -> None:
    t = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (t, t))


@pytest.mark.parametrize(
    "files, ages, removed",
    [
        (["a.tif.part"], [2 * DAY], True),  # orphan of a killed attempt
        (["a.tif.part"], [60], False),  # an attempt at work
        (["a.tif.part", "b.tif.part"], [2 * DAY, 60], False),  # one file still being written
        ([], [2 * DAY], True),  # an empty folder left behind
    ],
)
def test_sweep_removes_only_stale_attempt_folders(tmp_path, files, ages, removed):
    attempt = tmp_path / STAGING_DIR / "deadbeef"
    attempt.mkdir(parents=True)
    _age(attempt, max(ages))
    for name, age in zip(files, ages, strict=False):
        f = attempt / "x" / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"1")
        _age(f, age)
    for folder in (attempt / "x", attempt):  # folders as old as the oldest file
        if folder.exists():
            os.utime(folder, (time.time() - max(ages),) * 2)
    got = sweep_stale_staging(tmp_path.as_uri())
    assert (got == [str(attempt)]) is removed
    assert attempt.exists() is not removed


@pytest.mark.parametrize("location", ["s3://bucket/prefix", "file:///nonexistent/place"])
def test_sweep_ignores_s3_and_missing_folders(location):
    assert sweep_stale_staging(location) == []
