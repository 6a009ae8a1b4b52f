"""Cloud-masked seasonal NDVI statistics for odc-stats.

``odc_ndvi_plugin.NDVISeasonal`` is the odc-stats plugin (``plugin:
odc_ndvi_plugin.NDVISeasonal`` in a run config); ``seasonal_ndvi`` the same engine as one
lazy call in a notebook, ``plot_seasons`` its picture.

The names are imported on first use: ``import odc_ndvi_plugin`` (and ``odc-ndvi --help``)
costs no odc-stats, datacube or dask import. When the plugin class is first imported it
also registers with odc-stats under the short name ``ndvi-seasonal``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .api import seasonal_ndvi
    from .config import NDVIConfig
    from .plugin import NDVISeasonal
    from .preview import plot_seasons

#: public name -> module that defines it
_LAZY = {
    "NDVIConfig": ".config",
    "NDVISeasonal": ".plugin",
    "plot_seasons": ".preview",
    "seasonal_ndvi": ".api",
}

__all__ = ["NDVIConfig", "NDVISeasonal", "__version__", "plot_seasons", "seasonal_ndvi"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
