"""Moved to :mod:`tests.helpers.truth`; this name stays an alias of that module (the same
module object: attributes, private ones and monkeypatches included)."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("tests.helpers.truth")
