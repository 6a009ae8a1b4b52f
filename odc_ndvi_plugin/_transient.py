"""Which failures are transient (worth another try) and which are not: one rule for the
loader, which retries a read, and the runner, which retries a task.

Retried (the cause is outside the task and may be gone a moment later): a dask worker
lost while it held the task's work (``KilledWorker``), a broken connection to the
scheduler or a worker (``CommClosedError``, ``StreamClosedError``, ``ConnectionError``),
a timeout, and an input read that failed on a timeout or an HTTP 5xx answer.

Also retried: an output write to S3 that still failed on a 5xx/throttling answer or a
dropped connection after boto3's own retries (``ops.commit.TransientWriteError``, a
``ConnectionError``).

Not retried (the same input gives the same failure): everything else, in particular an
:class:`~odc_ndvi_plugin.load.InputReadError` from a file that cannot be decoded, a
missing file or band, and any other failed write (a refused or local one).
"""

from __future__ import annotations

import re

__all__ = ["RETRYABLE_ERROR_TYPES", "TRANSIENT_READ", "retry_reason"]

#: failures of a remote read worth another try: the server's 5xx/429, a timeout, a
#: dropped or reset connection. GDAL retries HTTP errors itself (GDAL_HTTP_MAX_RETRY) but
#: not a dropped connection
TRANSIENT_READ = re.compile(
    r"CURL error|HTTP (?:response|error|status) (?:code:? )?(?:5\d\d|429)|timed? ?out|timeout"
    r"|connection (?:reset|aborted)|empty reply|temporarily unavailable|SlowDown"
    r"|ServiceUnavailable",
    re.IGNORECASE,
)

#: exception class names (anywhere in the class hierarchy) of transient failures; by
#: name, because they arrive re-raised from workers and come from several packages
RETRYABLE_ERROR_TYPES = (
    "KilledWorker",
    "CommClosedError",
    "StreamClosedError",
    "ConnectionError",
    "TimeoutError",
)


def retry_reason(error: BaseException) -> str | None:
    """Why ``error`` is worth another attempt (a few words), or None when it is not."""
    names = {cls.__name__ for cls in type(error).__mro__}
    for name in RETRYABLE_ERROR_TYPES:
        if name in names:
            return {
                "KilledWorker": "a dask worker was lost",
                "CommClosedError": "a dask connection closed",
                "StreamClosedError": "a dask connection closed",
            }.get(name, name)
    if "InputReadError" in names:
        match = TRANSIENT_READ.search(str(error))
        if match:
            return f"an input read failed transiently ({match.group(0)})"
        if getattr(error, "transient", False):  # e.g. a header cut by a dropped connection
            return "an input read failed transiently (after a dropped connection)"
    return None
