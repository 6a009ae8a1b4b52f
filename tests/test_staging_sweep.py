"""The staging sweep on S3 (moto): ``odc-ndvi sweep-staging`` and the runner's own sweep
remove only attempts whose newest staged object is older than the threshold; files under
final names and STAC items are never touched."""

from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner

from odc_ndvi_plugin.cli import main
from odc_ndvi_plugin.ops.commit import STAGING_DIR, sweep_stale_staging

pytestmark = pytest.mark.servers

TASK = "x+768/y-2113/2020-03--P3M"
FINAL = [
    f"out/{TASK}/ndvi_2020-03--P3M_final.tif",
    f"out/{TASK}/ndvi_2020-03--P3M_final.sha1",
    f"out/{TASK}/ndvi_2020-03--P3M_final.stac-item.json",
    "elsewhere/.staging/not-ours/a.tif.part",  # another location's staging
]


def _keys(s3, bucket: str) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def _world(s3, bucket: str) -> tuple[set[str], set[str]]:
    """Final objects, an old attempt (two staged files) and, 2 s later, a fresh one."""
    for key in FINAL:
        s3.put_object(Bucket=bucket, Key=key, Body=b"final")
    old = {f"out/{STAGING_DIR}/dead/{TASK}/b{i}.tif.part" for i in range(2)}
    for key in old:
        s3.put_object(Bucket=bucket, Key=key, Body=b"orphan")
    time.sleep(3.5)  # S3 keeps LastModified to the second
    fresh = {f"out/{STAGING_DIR}/alive/{TASK}/b0.tif.part"}
    for key in fresh:
        s3.put_object(Bucket=bucket, Key=key, Body=b"being written")
    return old, fresh


def test_sweep_removes_old_attempts_keeps_fresh_ones_and_final_objects(moto_env, s3_bucket):
    s3 = moto_env.client("s3")
    old, fresh = _world(s3, s3_bucket)
    location = f"s3://{s3_bucket}/out"
    dead = f"{location}/{STAGING_DIR}/dead"
    # a day-long threshold (the runner's own sweep) leaves everything
    assert sweep_stale_staging(location) == []
    assert sweep_stale_staging(location, max_age=2.0, dry_run=True) == [dead]
    assert _keys(s3, s3_bucket) == set(FINAL) | old | fresh
    assert sweep_stale_staging(location, max_age=2.0) == [dead]
    assert _keys(s3, s3_bucket) == set(FINAL) | fresh
    assert sweep_stale_staging(location, max_age=2.0) == []  # idempotent


def test_sweep_staging_command(moto_env, s3_bucket):
    s3 = moto_env.client("s3")
    old, fresh = _world(s3, s3_bucket)
    location = f"s3://{s3_bucket}/out/"
    dry = CliRunner().invoke(main, ["sweep-staging", location, "--older-than", "2s", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would remove s3://{s3_bucket}/out/{STAGING_DIR}/dead" in dry.output
    assert "1 staging attempt(s) older than 2s would be removed" in dry.output
    assert _keys(s3, s3_bucket) == set(FINAL) | old | fresh
    kept = CliRunner().invoke(main, ["sweep-staging", location])  # default: 24h
    assert kept.exit_code == 0 and "0 staging attempt(s)" in kept.output, kept.output
    for key in fresh:  # still being written (the invocations above took their time)
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"being written")
    done = CliRunner().invoke(main, ["sweep-staging", location, "--older-than", "2s"])
    assert done.exit_code == 0, done.output
    assert _keys(s3, s3_bucket) == set(FINAL) | fresh


def test_sweep_staging_command_refuses_a_bad_duration(tmp_path):
    got = CliRunner().invoke(main, ["sweep-staging", str(tmp_path), "--older-than", "soon"])
    assert got.exit_code == 2
    assert "'soon' is not a duration" in got.output


def test_sweep_staging_command_on_a_local_folder(tmp_path):
    attempt = tmp_path / STAGING_DIR / "dead" / "x"
    attempt.mkdir(parents=True)
    (attempt / "a.tif.part").write_bytes(b"1")
    final = tmp_path / "x" / "a.tif"
    final.parent.mkdir()
    final.write_bytes(b"2")
    old = time.time() - 3600
    for path in (attempt / "a.tif.part", attempt, attempt.parent):  # folders too
        os.utime(path, (old, old))
    os.utime(final, (old, old))
    got = CliRunner().invoke(main, ["sweep-staging", str(tmp_path), "--older-than", "2s"])
    assert got.exit_code == 0, got.output
    assert not (tmp_path / STAGING_DIR / "dead").exists() and final.read_bytes() == b"2"
