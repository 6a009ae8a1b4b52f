"""Process start-up of the ``odc-ndvi`` command: what it can avoid paying for.

odc-stats imports eodatasets3, which imports jsonschema's format checkers; jsonschema
(>= 4.25, the ``format-nongpl`` extra datacube asks for) then imports ``rfc3987_syntax``,
which builds an Earley grammar at import time: about 1.8 s of every odc-stats process,
half of its start-up, spent on checking the "iri" string format. Nothing odc-stats,
datacube or this plugin validates uses that format, so the ``odc-ndvi`` process declares
the module absent before anything imports it; jsonschema then simply has no "iri"
checker (it handles the missing optional dependency itself). Plain ``odc-stats`` processes
are not touched.
"""

from __future__ import annotations

import sys

__all__ = ["skip_unused_imports"]


def skip_unused_imports() -> None:
    """Mark ``rfc3987_syntax`` absent, unless something imported it already."""
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
