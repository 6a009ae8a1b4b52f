"""Errors that survive the trip from a dask worker to the client.

distributed sends a task's exception back pickled *with its whole chain* (tblib pickles
``__cause__``, ``__context__`` and the traceback). One link that cannot be rebuilt, e.g.
rasterio's ``CPLE_*`` errors ("property 'args' ... has no setter"), and the client gets a
bare ``Exception(repr)`` instead: the runner's rules (retry a transient read, skip a bad
scene) no longer recognise it. :func:`portable` replaces such links with an
:class:`ErrorText` that keeps their type name and message; :func:`travels` applies it to
whatever a worker function raises.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ErrorText", "portable", "travels"]

F = TypeVar("F", bound=Callable[..., Any])


class ErrorText(Exception):
    """An exception that could not travel between processes, as text: ``<module>.<type>:
    <message>`` (its traceback, which does travel, is kept)."""

    @classmethod
    def of(cls, err: BaseException) -> ErrorText:
        kind = type(err)
        text = cls(f"{kind.__module__}.{kind.__qualname__}: {err}")
        text.__traceback__ = err.__traceback__
        return text


def _survives(err: BaseException) -> bool:
    """``err`` alone (its chain aside) survives distributed's pickling and rebuilding."""
    saved = err.__cause__, err.__context__, err.__traceback__
    err.__cause__ = err.__context__ = None
    err.__traceback__ = None
    try:
        try:
            from tblib import pickling_support  # distributed's exception pickling
        except ImportError:  # without distributed: plain pickling is what happens
            pass
        else:
            pickling_support.install(err)
        pickle.loads(pickle.dumps(err))
        return True
    except Exception:  # noqa: BLE001 - any failure means "cannot travel"
        return False
    finally:
        err.__cause__, err.__context__, err.__traceback__ = saved


def portable(err: BaseException) -> BaseException:
    """``err`` with each link of its cause/context chain that cannot travel replaced by
    an :class:`ErrorText` (which takes over that link's own chain); ``err`` itself when
    it can travel, else its ``ErrorText``."""
    done: dict[int, BaseException] = {}  # id of a link -> the link or its stand-in

    def fix(e: BaseException) -> None:
        for attr in ("__cause__", "__context__"):
            link = getattr(e, attr)
            if link is None:
                continue
            if id(link) in done:
                setattr(e, attr, done[id(link)])
                continue
            if _survives(link):
                done[id(link)] = link
            else:
                text = ErrorText.of(link)
                text.__cause__, text.__context__ = link.__cause__, link.__context__
                text.__suppress_context__ = link.__suppress_context__
                done[id(link)] = text
                setattr(e, attr, text)
            fix(done[id(link)])

    if not _survives(err):
        text = ErrorText.of(err)
        text.__cause__, text.__context__ = err.__cause__, err.__context__
        err = text
    fix(err)
    return err


def travels(fn: F) -> F:
    """Decorate a function that runs on dask workers: what it raises can travel back."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            fixed = portable(err)
            if fixed is err:
                raise
        # raised outside the handler: else the original would be its __context__ again
        raise fixed

    return wrapper  # type: ignore[return-value]
