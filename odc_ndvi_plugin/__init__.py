"""Cloud-masked seasonal NDVI statistics for odc-stats.

Importing this package registers the plugin with odc-stats under the short name
``ndvi-seasonal``; the class is also reachable as ``odc_ndvi_plugin.NDVISeasonal``.
"""

from ._version import __version__

__all__ = ["__version__"]
