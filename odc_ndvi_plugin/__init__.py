"""Cloud-masked seasonal NDVI statistics for odc-stats.

Importing this package registers the plugin with odc-stats under the short name
``ndvi-seasonal``; the class is also reachable as ``odc_ndvi_plugin.NDVISeasonal``.
"""

from odc.stats.plugins._registry import register

from ._version import __version__
from .api import seasonal_ndvi
from .config import NDVIConfig
from .plugin import NDVISeasonal
from .preview import plot_seasons

register("ndvi-seasonal", NDVISeasonal)

__all__ = ["NDVIConfig", "NDVISeasonal", "__version__", "plot_seasons", "seasonal_ndvi"]
