"""The shipped configs: ``cfg/`` of the source tree, ``odc_ndvi_plugin/cfg`` in a wheel.

Run configs, save-tasks configs, input and output product definitions, drop-in examples
for real product families, the gateway cluster options and the Kubernetes Jobs, so that
an installed package can start a user off (``odc-ndvi init-config DIR``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["cfg_dir", "init_config"]


def cfg_dir() -> Path:
    """Where the shipped configs are (a wheel installs them inside the package)."""
    for candidate in (Path(__file__).parent / "cfg", Path(__file__).resolve().parents[1] / "cfg"):
        if (candidate / "products").is_dir():
            return candidate
    raise FileNotFoundError("the shipped configs are missing: reinstall odc-ndvi-plugin")


def init_config(dest: Path, *, overwrite: bool = False) -> tuple[list[Path], list[Path]]:
    """Copy the shipped configs into ``dest``; returns (written, kept) files. Existing files
    are kept unless ``overwrite``: a user's edits are never lost."""
    source = cfg_dir()
    written, kept = [], []
    for path in sorted(source.rglob("*.yaml")):
        target = dest / path.relative_to(source)
        if target.exists() and not overwrite:
            kept.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    return written, kept
