"""Single source of the package version (also the output product's algorithm version)."""

__version__ = "0.1.0"
