"""Errors that survive the trip from a real dask worker process to the client.

distributed pickles a task's exception with its whole chain; one link it cannot rebuild
(rasterio's ``CPLE_*`` errors) and the client gets a bare ``Exception``, so the runner's
rules (retry a transient read, skip a bad scene) no longer match. Each error the plugin
raises on a worker is raised here by the real worker function (the direct loader's
``_day_block``, the COG encoding) in a ``LocalCluster`` of processes, and must arrive
with its type, its fields and its cause's text.
"""

from __future__ import annotations

import shutil

import pytest
from distributed import Client, LocalCluster

from odc_ndvi_plugin._portable import ErrorText, travels
from odc_ndvi_plugin.load import InputReadError
from odc_ndvi_plugin.load._direct import _day_block
from odc_ndvi_plugin.load._rio import _Source
from odc_ndvi_plugin.masking import compile_clear_rule
from odc_ndvi_plugin.ndvi import BandEncoding, NDVIInputs

C2 = BandEncoding(nodata=0, scale_factor=0.0000275, add_offset=-0.2)
RULE = compile_clear_rule(
    {"nodata": {"bits": 0, "values": {0: False, 1: True}}}, {"nodata": False}, band="qa_pixel"
)
INPUTS = NDVIInputs(red=C2, nir=C2, clear=RULE, bands=("red", "nir08", "qa_pixel"))
SUFFIX = {"red": "_SR_B4.TIF", "nir08": "_SR_B5.TIF", "qa_pixel": "_QA_PIXEL.TIF"}


@pytest.fixture(scope="module")
def worker_client():
    """One worker *process* (exceptions are pickled on the way back, as on a cluster)."""
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            host="127.0.0.1",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def scene(tiny_archive, tmp_path_factory):
    """One scene's three band files (a private copy) and a tile it covers."""
    archive = tiny_archive("usgs_c2")
    victim = archive.scenes[0]
    root = tmp_path_factory.mktemp("worker-errors")
    files = {}
    for band, suffix in SUFFIX.items():
        src = victim.dataset_yaml.with_name(victim.name + suffix)
        files[band] = root / src.name
        shutil.copy(src, files[band])
    geobox = next(iter(archive.tiles().values()))
    return files, geobox


def _source(red: str, nir: str, mask: str) -> _Source:
    return _Source("5d3f1c52-0000-4000-8000-00000000abcd", "ls_c2l2_sr", (red, nir, mask), INPUTS)


def _raised(client: Client, fn, *args) -> BaseException:
    with pytest.raises(Exception) as caught:
        client.submit(fn, *args, pure=False).result()
    return caught.value


def _chain_text(err: BaseException) -> str:
    parts, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return " <- ".join(parts)


def test_a_truncated_input_arrives_as_input_read_error_with_the_cause_text(
    worker_client, scene, tmp_path
):
    files, geobox = scene
    cut = tmp_path / files["qa_pixel"].name
    data = files["qa_pixel"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # header whole, tiles cut: fails while decoding
    src = _source(str(files["red"]), str(files["nir08"]), str(cut))
    err = _raised(worker_client, _day_block, (src,), geobox, "nearest", ())
    assert type(err) is InputReadError, _chain_text(err)
    assert err.dataset_id == src.dataset_id and err.band == "qa_pixel"
    assert err.url.endswith(cut.name) and not err.transient
    # the decoder's own words travel with it (rasterio's "Read failed. See previous
    # exception" alone says nothing)
    assert "TIFFRead" in str(err) or "tile" in str(err).lower(), str(err)
    assert "CPLE_" in _chain_text(err)


def test_a_missing_input_arrives_as_input_read_error(worker_client, scene, tmp_path):
    files, geobox = scene
    gone = tmp_path / "gone_QA_PIXEL.TIF"
    src = _source(str(files["red"]), str(files["nir08"]), str(gone))
    err = _raised(worker_client, _day_block, (src,), geobox, "nearest", ())
    assert type(err) is InputReadError, _chain_text(err)
    assert "gone_QA_PIXEL.TIF" in str(err) and not err.transient


def test_a_wrong_secret_arrives_as_input_read_error_naming_the_signature(
    worker_client, scene, s3_gate, moto_server, s3_bucket, monkeypatch
):
    """The issue's case: private S3 inputs, a wrong secret -> rasterio raises
    CPLE_AWSSignatureDoesNotMatchError, which dask could not rebuild."""
    from datacube.utils.aws import configure_s3_access

    files, geobox = scene
    s3 = moto_server.client("s3")
    urls = []
    for band in ("red", "nir08", "qa_pixel"):
        key = f"scene/{files[band].name}"
        s3.put_object(Bucket=s3_bucket, Key=key, Body=files[band].read_bytes())
        urls.append(f"s3://{s3_bucket}/{key}")
    # credentials reach the workers the ecosystem's way (as odc-stats and our runner do)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGSECRET00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    configure_s3_access(region_name=moto_server.region, client=worker_client)
    read_env = (*s3_gate.gdal_environ().items(), ("GDAL_HTTP_MAX_RETRY", "0"))
    s3_gate.fail("scene/", times=100, mode="signature")
    try:
        err = _raised(worker_client, _day_block, (_source(*urls),), geobox, "nearest", (), read_env)
    finally:
        s3_gate.clear()
    assert type(err) is InputReadError, _chain_text(err)
    assert "SignatureDoesNotMatch" in _chain_text(err) or "signature" in str(err).lower()
    assert "not-the-secret" not in _chain_text(err)
    assert not err.transient


def _foreign_failure() -> None:
    from rasterio._err import CPLE_AppDefinedError

    raise CPLE_AppDefinedError(1, 1, "encoder ran out of scratch space")


def test_a_foreign_unpicklable_error_arrives_as_text(worker_client):
    """Anything else a decorated worker function raises (e.g. while encoding a COG) arrives
    as ErrorText naming the original type and message."""
    err = _raised(worker_client, travels(_foreign_failure))
    assert type(err) is ErrorText
    assert "CPLE_AppDefinedError: encoder ran out of scratch space" in str(err)


def test_no_credentials_fail_fast_naming_the_input_and_where_they_were_looked_for(
    moto_server, s3_bucket, monkeypatch, tmp_path
):
    """datacube's look-up waits ~36 s (10 tries) and names nothing; ours asks botocore's
    chain once (the metadata service with a 1 s timeout) and names the S3 location and
    the sources tried. With moto's credentials the same check passes and the object
    is readable with them."""
    import time

    from odc_ndvi_plugin.errors import S3AccessError
    from odc_ndvi_plugin.ops.session import check_credentials

    url = f"s3://{s3_bucket}/scene/red.tif"
    for key, value in moto_server.environ().items():
        monkeypatch.setenv(key, value)
    moto_server.client("s3").put_object(Bucket=s3_bucket, Key="scene/red.tif", Body=b"x")
    check_credentials(url)  # found in the environment: nothing raised
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED")  # the metadata service is tried too
    t0 = time.monotonic()
    with pytest.raises(S3AccessError) as err:
        check_credentials(url)
    assert time.monotonic() - t0 < 5
    text = str(err.value)
    assert url in text and "aws_unsigned: true" in text
    for source in ("env", "shared-credentials-file", "config-file", "iam-role"):
        assert source in text
