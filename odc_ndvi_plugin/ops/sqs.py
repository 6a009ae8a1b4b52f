"""SQS task messages as leases: received only when a runner can work on them.

odc-stats' ``TaskReader.stream_from_sqs`` is a generator: whoever iterates it receives
the next message as soon as it asks for the next task, and a message received while every
slot is busy is held with no lease renewal and no way to release it on interrupt (it stays
invisible for the whole visibility timeout, and the receive counts towards the
dead-letter limit). :class:`SqsTaskSource` is the runner's replacement:

* :meth:`~SqsTaskSource.receive` asks SQS for *one* message, and the runner calls it only
  when a slot is free; from the moment of receipt the message is a lease the source
  holds (:attr:`~SqsTaskSource.held`) until the runner has it in flight, and any
  exception (including Ctrl-C/SIGTERM) while turning it into a task releases it;
* :meth:`~SqsTaskSource.release_held` makes a held message visible again at once
  (the runner calls it on interrupt and shutdown);
* **drain semantics for fleets**: an empty receive does not end the run while the queue
  still reports messages in flight elsewhere (``ApproximateNumberOfMessagesNotVisible``):
  their holder may have died, and its lease will lapse. The source waits (one log line
  says why), bounded by ``idle_timeout`` seconds without work.

A failed task's message is released at once, so a survivor (or this runner) retries it
and the queue's redrive policy moves a task that keeps failing to the dead-letter queue.
Without a redrive policy that message would circulate for ever: a runner that receives
the same message more than :data:`MAX_RECEIVES_PER_RUN` times releases it and stops
taking work (and says so).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._redact import redact_text, redact_url
from ..errors import NDVIPluginError
from ..storage import is_s3

__all__ = ["END", "QueueDepth", "QueueUnavailable", "SqsTaskSource", "lease"]

_log = logging.getLogger(__name__)

#: returned by :meth:`SqsTaskSource.receive` when the queue is drained
END = object()
#: a runner stops taking work when one message comes back to it more often than this
#: (a deletion ends a message's life, so it came back because it failed every time)
MAX_RECEIVES_PER_RUN = 3


class QueueUnavailable(NDVIPluginError, RuntimeError):
    """The SQS queue named for a run cannot be found or reached (the message says why)."""


def _resolve_queue(name: str) -> Any:
    """odc-stats' lookup of a queue by name; its failures (no such queue, no credentials
    or region, no endpoint) are one line naming the queue."""
    from botocore.exceptions import BotoCoreError, ClientError
    from odc.aws.queue import get_queue

    try:
        return get_queue(name)
    except (BotoCoreError, ClientError) as err:
        raise QueueUnavailable(
            f"SQS queue {name!r} cannot be used: {redact_text(str(err))}"
        ) from err


def lease(token: Any, op: str, *args: Any) -> bool:
    """``token.<op>(*args)`` (done/cancel/extend_if_needed of an SQS message) that does not
    end the run when SQS refuses: after a redelivery the other runner may have deleted the
    message already (ReceiptHandleIsInvalid), and the task's outputs are whole either way."""
    if token is None:
        return True
    try:
        return getattr(token, op)(*args) is not False
    except Exception as err:  # noqa: BLE001 - the lease is lost; the task itself is fine
        _log.warning(
            "SQS %s of a task's message failed (%s: %s); another runner may have it",
            op,
            type(err).__name__,
            err,
        )
        return False


@dataclass(frozen=True)
class QueueDepth:
    """The queue's approximate counts (SQS updates them within about a minute)."""

    visible: int
    in_flight: int


class SqsTaskSource:
    """Tasks of an SQS queue, one message per :meth:`receive`, each leased from receipt.

    ``reader`` is odc-stats' ``TaskReader`` (it opens the task db a message names and
    loads the task); ``lease_seconds`` is the visibility timeout of each receive and
    ``idle_timeout`` how long an empty queue with messages in flight elsewhere is waited
    on (``None``: the lease plus a minute, so a dead holder's message is picked up)."""

    def __init__(
        self,
        queue: Any,
        reader: Any,
        *,
        product: Any = None,
        lease_seconds: int = 300,
        ds_filters: str | None = None,
        idle_timeout: float | None = None,
        poll_seconds: float = 2.0,
        on_failure: Callable[[str, str], None] | None = None,
    ):
        self.queue = _resolve_queue(queue) if isinstance(queue, str) else queue
        self.reader = reader
        self.product = product
        self.lease_seconds = int(lease_seconds)
        self.ds_filters = ds_filters
        self.idle_timeout = float(
            idle_timeout if idle_timeout is not None else self.lease_seconds + 60
        )
        self.poll_seconds = max(0.1, float(poll_seconds))
        self.on_failure = on_failure
        #: the SQS token of a message received but not yet handed to the runner
        self.held: Any = None
        self._idle_since: float | None = None
        self._said_waiting = False
        self._receives: dict[str, int] = {}
        self._warn_without_redrive()

    def _warn_without_redrive(self) -> None:
        try:
            attrs = self.queue.attributes
        except Exception:  # noqa: BLE001 - only a hint; the receive will report real errors
            return
        if "RedrivePolicy" not in attrs:
            _log.warning(
                "SQS queue %s has no dead-letter queue (RedrivePolicy): a task that always "
                "fails is retried by every runner until each gives up on it",
                self.queue.url,
            )

    # -- queue ------------------------------------------------------------------------
    def depth(self) -> QueueDepth:
        self.queue.reload()
        attrs = self.queue.attributes
        return QueueDepth(
            int(attrs.get("ApproximateNumberOfMessages", 0)),
            int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    def _receive_message(self) -> Any | None:
        """One message or None; botocore's failures (no such queue, access denied, no
        endpoint, after boto3's own retries) are one line naming the queue."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            messages = self.queue.receive_messages(
                VisibilityTimeout=self.lease_seconds,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            )
        except (BotoCoreError, ClientError) as err:
            raise QueueUnavailable(
                f"SQS queue {redact_url(str(getattr(self.queue, 'url', self.queue)))} cannot "
                f"be received from: {type(err).__name__}: {redact_text(str(err))}"
            ) from err
        return messages[0] if messages else None

    # -- tasks ------------------------------------------------------------------------
    def receive(self, *, busy: bool) -> Any:
        """The next task (its ``source`` is the message's lease), ``None`` when nothing can
        be had right now (the caller polls its running tasks and asks again), or
        :data:`END` when the queue is drained. ``busy``: the caller has tasks in flight
        (their messages count as in flight too, so an idle wait starts only without)."""
        msg = self._receive_message()
        if msg is None:
            return self._when_empty(busy)
        self._idle_since, self._said_waiting = None, False
        seen = self._receives[msg.message_id] = self._receives.get(msg.message_id, 0) + 1
        if seen > MAX_RECEIVES_PER_RUN:
            lease(self._token(msg), "cancel")
            _log.error(
                "SQS message %s came back to this runner %d times (its task failed each "
                "time): released, and this runner takes no more work",
                msg.message_id,
                seen,
            )
            return END
        return self._task(msg)

    def _token(self, msg: Any) -> Any:
        from .._compat import sqs_work_token

        return sqs_work_token(msg, self.lease_seconds)

    def _when_empty(self, busy: bool) -> Any:
        if busy:
            self._idle_since = None
            return None
        try:
            depth = self.depth()
        except Exception as err:  # noqa: BLE001 - e.g. no sqs:GetQueueAttributes permission
            _log.warning("Queue empty; its depth cannot be read (%s): exiting", err)
            return END
        if depth.visible:
            return None  # visible again meanwhile: receive at once
        if not depth.in_flight:
            return END
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        waited = now - self._idle_since
        if waited >= self.idle_timeout:
            _log.warning(
                "Queue empty; %d message(s) still in flight elsewhere after %.0f s of waiting "
                "(idle timeout): exiting",
                depth.in_flight,
                waited,
            )
            return END
        if not self._said_waiting:
            self._said_waiting = True
            _log.warning(
                "Queue empty but %d message(s) in flight elsewhere: waiting up to %.0f s for "
                "them to finish or for their leases to lapse (a runner may have died)",
                depth.in_flight,
                self.idle_timeout,
            )
        time.sleep(self.poll_seconds)
        return None

    def _task(self, msg: Any) -> Any:
        from odc.stats.tasks import parse_sqs

        token = self.held = self._token(msg)
        try:
            tidx, filedb = parse_sqs(msg.body)
            self.reader.init_from_sqs(self._local_task_db(filedb))
            product = self.reader._resolve_product(self.product)
            task = self.reader.load_task(tidx, product, source=token, ds_filters=self.ds_filters)
        except BaseException as err:
            self.release_held()
            if not isinstance(err, Exception):
                raise
            what = f"SQS message {msg.message_id}"
            _log.error("%s cannot be turned into a task (released): %s", what, err)
            if self.on_failure is not None:
                self.on_failure(what, f"{type(err).__name__}: {err}")
            return None
        return task

    def _local_task_db(self, filedb: str) -> str:
        """The task db a message names, downloaded once if it is on S3 (as odc-stats)."""
        if not is_s3(filedb):
            return filedb
        from odc.aws import s3_url_parse

        local = s3_url_parse(filedb)[1].split("/")[-1]
        self.reader._cache_path = local
        if not os.path.isfile(local):
            self.reader.s3_client.download(filedb, destination=local)
        return local

    def handed_over(self) -> None:
        """The runner has the held message's task in flight (it renews and ends the lease)."""
        self.held = None

    def release_held(self) -> None:
        """Make a received message that no one works on visible again at once."""
        token, self.held = self.held, None
        if token is not None:
            lease(token, "cancel")
