"""The guide (docs/) builds with warnings as errors, and its generated reference is whole."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from odc_ndvi_plugin.config import NDVIConfig
from tests.conftest import REPO


@pytest.fixture(scope="module")
def built_guide(tmp_path_factory) -> Path:
    """``sphinx-build -W --keep-going -b html docs <out>``: a broken link or reference, a
    page in no toctree, an undocumented ``plugin_config`` key or a bad docstring fails."""
    out = tmp_path_factory.mktemp("guide")
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + ["-d", str(out / ".doctrees"), str(REPO / "docs"), str(out / "html")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    return out / "html"


def test_the_plugin_config_reference_has_every_key_with_its_docstring(built_guide):
    page = (built_guide / "reference" / "plugin-config.html").read_text()
    for key in NDVIConfig.keys():
        assert (
            f'<code class="docutils literal notranslate"><span class="pre">{key}</span>' in page
        ), key
    assert "(undocumented)" not in page
    # a field docstring, as written in config.py
    assert "fewer clear observations" in page.lower()


def test_the_cli_reference_has_every_command(built_guide):
    from odc_ndvi_plugin.cli import main

    page = (built_guide / "reference" / "cli.html").read_text()
    for name in main.commands:
        assert f'id="odc-ndvi-{name}"' in page, name


def test_the_tutorial_and_the_benchmarks_are_rendered_with_their_pictures(built_guide):
    notebook = (built_guide / "tutorial" / "tutorial_seasonal_ndvi.html").read_text()
    assert notebook.count("seasonal_ndvi") >= 3  # its code cells, highlighted
    bench = (built_guide / "benchmarks.html").read_text()
    assert "pipeline-round2.png" in bench
    images = {p.name for p in (built_guide / "_images").iterdir()}
    assert {"pipeline-round2.png", "demo-seasons.png"} <= images


def test_the_development_page_maps_every_module(built_guide):
    page = (built_guide / "development.html").read_text()
    package = REPO / "odc_ndvi_plugin"
    for path in package.rglob("*.py"):
        rel = path.relative_to(package)
        name = f"{rel.parent}/" if rel.name == "__init__.py" and rel.parent.name else str(rel)
        assert f'<span class="pre">{name}</span>' in page, name


def test_the_readme_is_a_front_page_whose_links_hold():
    """The two commands first, one picture, at most ~150 lines, and every relative link to
    a file that exists (Sphinx does not read README.md, so its links are checked here)."""
    text = (REPO / "README.md").read_text()
    lines = text.splitlines()
    assert len(lines) <= 150, len(lines)
    commands = [line.split()[0] for line in lines[1:5] if line.startswith("    ")]
    assert commands == ["scripts/demo", "scripts/test"], lines[:5]
    assert len(re.findall(r"!\[[^]]*\]\(", text)) == 1  # one picture
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets
    missing = [t for t in targets if "://" not in t and not (REPO / t).exists()]
    assert not missing, missing
