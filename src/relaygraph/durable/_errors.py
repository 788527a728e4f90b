"""Errors raised by relaygraph.durable."""

from __future__ import annotations

from relaygraph._clock import iso
from relaygraph._errors import RelaygraphError


class ThreadBusyError(RelaygraphError):
    """Another holder has a live lease on the thread.

    Attributes:
        thread_id: the thread asked for.
        holder: who holds it now.
        expires_at: when that lease runs out unless renewed (epoch seconds).
    """

    def __init__(self, thread_id: str, holder: str, expires_at: float) -> None:
        super().__init__(
            f"thread {thread_id!r} is busy: {holder!r} holds its lease until "
            f"{iso(expires_at)}; retry later, wait for it (strategy='enqueue'), "
            "or ask it to stop with LeaseStore.request_cancel()")
        self.thread_id = thread_id
        self.holder = holder
        self.expires_at = expires_at


class LeaseLostError(RelaygraphError):
    """A lease was taken over (it expired and another holder acquired the thread).

    Raised by ``renew`` and by a checkpoint write fenced by the lost lease: that write did
    not happen.

    Attributes:
        thread_id: the thread.
        token: the fencing token of the lost lease.
    """

    def __init__(self, thread_id: str, token: int, detail: str = "") -> None:
        super().__init__(
            f"the lease on thread {thread_id!r} (token {token}) was lost: it expired and "
            "was taken over by another holder" + (f"; {detail}" if detail else "")
            + ". Nothing was written after the takeover; the new holder continues "
            "the thread")
        self.thread_id = thread_id
        self.token = token


class RunCancelledError(RelaygraphError):
    """The run was asked to stop (``LeaseStore.request_cancel``) and stopped at a step
    boundary, with its last step checkpointed.

    Attributes:
        thread_id: the thread whose run stopped.
    """

    def __init__(self, thread_id: str, reason: str = "cancel requested") -> None:
        super().__init__(f"the run on thread {thread_id!r} stopped at a step boundary: "
                         f"{reason}; its completed steps are checkpointed and it can be "
                         "resumed with invoke(None, config)")
        self.thread_id = thread_id
        self.reason = reason
