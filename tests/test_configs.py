"""Every shipped run config validates, and its output product definition in cfg/products is current."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from odc_ndvi_plugin import NDVISeasonal
from odc_ndvi_plugin.cli import main
from odc_ndvi_plugin.ops.runner import load_run_config
from odc_ndvi_plugin.product import output_product_definition
from tests.conftest import CFG_DIR, PRODUCTS_DIR

RUN_CONFIGS = sorted(p.name for p in CFG_DIR.glob("run-*.yaml"))


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_config_is_valid_and_its_product_definition_is_shipped(name):
    doc = yaml.safe_load((CFG_DIR / name).read_text())
    cfg, _ = load_run_config(doc)
    plugin = NDVISeasonal(**cfg.plugin_config)
    # the shipped save-tasks configs tile the DEA Albers grid
    product = output_product_definition(plugin, cfg.product, grid="au-30")
    shipped = PRODUCTS_DIR / f"{cfg.product['name']}.odc-product.yaml"
    regenerate = (
        f"run `odc-ndvi product-definition cfg/{name} --grid au-30 > "
        f"{shipped.relative_to(CFG_DIR.parent)}`"
    )
    assert shipped.exists(), regenerate
    shipped_doc = yaml.safe_load(shipped.read_text())
    generated = yaml.safe_load(yaml.safe_dump(product))
    shipped_doc.pop("description"), generated.pop("description")  # names the plugin version
    assert shipped_doc == generated, regenerate
    # the publisher's identity is the config's, never odc-stats' default (DEA's)
    assert shipped_doc["metadata"]["properties"]["odc:producer"] == cfg.product["producer"]
    assert "ga.gov.au" not in shipped.read_text()


@pytest.mark.parametrize(
    "patch, message",
    [
        (
            {"plugin_config": {"statistics": ["mode"]}},
            "plugin_config.statistics: 'mode' is not allowed",
        ),
        (
            {"plugin_config": {"seasons": {"a": [13]}}},
            "plugin_config.seasons.a: expected an integer in 1..12, got 13",
        ),
        ({"colour": "red"}, "run config: unknown key 'colour'"),
        ({"output_location": "ftp://x"}, "must start with file:// or s3://"),
    ],
)
def test_check_config_names_the_bad_key(tmp_path, patch, message):
    doc = yaml.safe_load((CFG_DIR / "run-usgs-c2-year.yaml").read_text())
    for key, value in patch.items():
        if isinstance(value, dict):
            doc[key] = {**doc.get(key, {}), **value}
        else:
            doc[key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    result = CliRunner().invoke(main, ["check-config", str(path)])
    assert result.exit_code != 0
    assert message in result.output


def test_unwritable_output_location_fails_before_any_work(tmp_path):
    from odc_ndvi_plugin.ops.session import check_output_location

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.raises(ValueError, match="output_location 'file://.*' is not writable"):
        check_output_location(f"file://{blocked}/out")


@pytest.mark.parametrize("job", sorted(p.name for p in (CFG_DIR / "k8s").glob("*.yaml")))
def test_kubernetes_jobs_call_real_cli_options_and_shipped_configs(job):
    from odc_ndvi_plugin.cli import run_command

    doc = yaml.safe_load((CFG_DIR / "k8s" / job).read_text())
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["odc-ndvi", "run"]
    ctx = run_command.make_context("run", list(container["args"]))  # raises on unknown options
    for key in ("config_path", "gateway_config"):
        if ctx.params.get(key):
            assert (CFG_DIR / ctx.params[key].removeprefix("/cfg/")).exists()


def test_the_sqs_runner_job_sizes_local_dask_from_its_guaranteed_limits():
    """The pod's limits are the one place its size is written: odc-ndvi run reads them from
    the cgroup (ops/limits.py), so the job passes no --threads/--memory-limit, and requests
    equal limits (Guaranteed QoS) so the limits are what the pod gets."""
    doc = yaml.safe_load((CFG_DIR / "k8s" / "sqs-runner-job.yaml").read_text())
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    assert not [a for a in container["args"] if a.startswith(("--threads", "--memory-limit"))]
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]


def test_run_with_a_missing_task_db_names_it(tmp_path):
    missing = tmp_path / "nope.db"
    result = CliRunner().invoke(
        main,
        [
            "run",
            "--config",
            str(CFG_DIR / "run-usgs-c2-year.yaml"),
            "--location",
            tmp_path.as_uri(),
            str(missing),
        ],
    )
    assert result.exit_code == 2  # a usage error: the command line names no task db
    assert f"task db '{missing}' does not exist" in result.output


def test_demo_with_an_unreachable_database_fails_first_without_the_password(tmp_path, monkeypatch):
    monkeypatch.setenv("ODC_ENVIRONMENT", "default")
    monkeypatch.setenv(
        "ODC_DEFAULT_DB_URL", "postgresql+psycopg2://someone:s3cr3t-pw@127.0.0.1:1/nodb"
    )
    result = CliRunner().invoke(main, ["demo", "--size", "tiny", "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 1
    assert (
        "datacube index postgresql+psycopg2://someone:***@127.0.0.1:1/nodb cannot be reached"
        in result.output
    )
    assert "Connection refused" in result.output
    assert "s3cr3t-pw" not in result.output
    assert not list((tmp_path / "w").iterdir())  # nothing generated before the check
