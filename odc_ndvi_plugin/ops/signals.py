"""Ctrl-C and SIGTERM are one thing: a ``KeyboardInterrupt``, from a command's first moment.

Kubernetes stops a pod with SIGTERM, a user with Ctrl-C (SIGINT). Inside
:func:`interrupts_raise` both raise ``KeyboardInterrupt`` in the main thread, so every
``finally`` runs: tasks in flight are cancelled, SQS messages released, a gateway cluster
we created is shut down, the run report is written.

A few steps must not be cut in half: between "the gateway created a cluster" and "we know
its name" an interrupt would leave a cluster nobody can shut down. Inside
:func:`interrupts_deferred` an interrupt is held and raised when the block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["interrupts_deferred", "interrupts_raise"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State(threading.local):
    deferring = 0
    pending: int | None = None


_state = _State()


def _raise_interrupt(signum: int, frame: object) -> None:
    if _state.deferring:
        _state.pending = signum
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` inside the block (nothing changes
    outside the main thread, where Python allows no signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupt) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """An interrupt that arrives inside the block is raised when it ends (only while
    :func:`interrupts_raise` handles the signals; Python's own Ctrl-C handler raises at
    once)."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
        if not _state.deferring and _state.pending is not None:
            signum, _state.pending = _state.pending, None
            raise KeyboardInterrupt(f"signal {signum}")
