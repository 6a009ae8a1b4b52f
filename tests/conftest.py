"""Shared pytest configuration: fixture modules and repository paths."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CFG_DIR = REPO / "cfg"
PRODUCTS_DIR = CFG_DIR / "products"

pytest_plugins = [
    "tests.fixtures.archives",
    "tests.fixtures.index",
    "tests.fixtures.servers",
    "tests.fixtures.s3gate",
]
