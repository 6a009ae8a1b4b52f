"""Sphinx configuration of the guide: ``sphinx-build -W --keep-going -b html docs <out>``.

Pages are Markdown (MyST); the reference is generated from the code (sphinx-click for the
CLI, autodoc for the public API, ``_ext/ndvi_docs.py`` for the ``plugin_config`` keys); the
tutorial notebook is rendered from ``examples/`` without executing it.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

from odc_ndvi_plugin import __version__  # noqa: E402

project = "odc-ndvi-plugin"
author = "odc-ndvi-plugin developers"
copyright = "odc-ndvi-plugin developers"  # noqa: A001 - Sphinx's name
release = version = __version__

extensions = [
    "myst_nb",  # Markdown pages (it includes myst_parser) and the notebook
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx_click",
    "ndvi_docs",
]
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "**/.work"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# the notebook builds its own embedded datacube (about a minute): rendered, not run
nb_execution_mode = "off"

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}

html_theme = "furo"
html_title = f"odc-ndvi-plugin {release}"
html_static_path = ["_static"]
