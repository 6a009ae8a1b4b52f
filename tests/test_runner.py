"""ops/commit.py's commit rules and staging sweep on tiny local files (no dask, no servers)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from odc_ndvi_plugin.ops.commit import STAGING_DIR, _commit_files, sweep_stale_staging
from odc_ndvi_plugin.storage import LocalStore

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
    _commit_files(LocalStore(), b"item-new", item.as_uri(), staged, overwrite=overwrite)
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
        _commit_files(LocalStore(), b"item-new", item.as_uri(), staged, overwrite=True)
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
    assert (got == [attempt.as_uri()]) is removed
    assert attempt.exists() is not removed


@pytest.mark.parametrize("location", ["memory://prefix", "file:///nonexistent/place"])
def test_sweep_ignores_other_schemes_and_missing_folders(location):
    assert sweep_stale_staging(location) == []


# -- what a run decodes ---------------------------------------------------------------------


@pytest.mark.integration
def test_a_run_decodes_the_first_dataset_for_its_checks_not_the_whole_tile(
    tmp_path_factory, tiny_archive, datacube_env_module, monkeypatch
):
    """Before its first task a run checks the inputs' product and whether they are on S3,
    from the task db's first dataset: it decodes that dataset for each check, not every
    dataset of the tile (bench_round3's UTM world: two whole-tile decodes of 92 large
    documents cost 7 s before each run's first task)."""
    import yaml
    from odc.dscache import _dscache

    from odc_ndvi_plugin.ops.runconfig import load_run_config
    from odc_ndvi_plugin.ops.session import execute
    from tests.helpers.ops_bench import SEASONAL_RUN, make_bench

    bench = make_bench(
        tmp_path_factory.mktemp("decode"), tiny_archive("usgs_c2"), datacube_env_module
    )
    decoded: list[str] = []
    real = _dscache.doc2ds

    def counting(doc, products):
        decoded.append(doc["metadata"]["id"] if "metadata" in doc else doc["id"])
        return real(doc, products)

    monkeypatch.setattr(_dscache, "doc2ds", counting)
    cfg, _ = load_run_config(
        yaml.safe_load(SEASONAL_RUN.read_text()),
        filedb=str(bench.db),
        output_location=tmp_path_factory.mktemp("decode-out").as_uri(),
        threads=1,
    )
    summary = execute(cfg, tasks=["0"])  # the task of the db's first tile
    assert (summary.done, summary.failed) == (1, 0), summary.errors
    task_datasets = set(decoded)
    assert len(task_datasets) > 1
    # the task's own load decodes each once; the two checks decode the first one again
    assert len(decoded) == len(task_datasets) + 2, len(decoded)
