"""``effect``: a side effect (a refund, an email, a CRM write) that a re-executed node does
not repeat.

LangGraph re-executes a node after a crash, an interrupt or a retry; whatever the node did
to the world, it does again. A function wrapped with `effect` is keyed by where it is
called (thread, checkpoint namespace, task, effect name, call index within the task):
the same call in a re-execution gets the same key. The first completed call's result is
recorded in an `EffectLedger`; later executions get it back without calling the function.

The key is passed to the function (``key=``) so that it can forward it to an API that
dedupes on it (an ``Idempotency-Key`` header). A call that started and never recorded its
end is *in doubt*; ``on_doubt`` says what a re-execution does with it:

- ``"retry"``: call again with the same key (safe when the other side dedupes on it);
- ``"reconcile"``: ask a function that can look (did the CRM get the refund?);
- ``"review"``: ask a human (a LangGraph interrupt; outside a graph, `EffectInDoubtError`).

``transactional=True`` runs the function inside the ledger's transaction with ``conn=``:
an effect that writes to the ledger's own database happens exactly once, with no doubt.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from relaygraph._clock import iso
from relaygraph._errors import ConfigurationError, RelaygraphError
from relaygraph.durable._ledger import (
    CallSite,
    EffectLedger,
    EffectRecord,
    begin_write,
    op_finish,
    op_forget,
    op_get,
    op_insert_done,
    op_reclaim,
)
from relaygraph.durable._scheduled import await_stored, wait_stored

OnDoubt = Literal["retry", "reconcile", "review"]
_MODES = ("retry", "reconcile", "review")

# LangGraph's configurable keys (langgraph._internal._constants), read, never written
_TASK_ID = "__pregel_task_id"
_SCRATCHPAD = "__pregel_scratchpad"
_CHECKPOINTER = "__pregel_checkpointer"
_DURABILITY = "__pregel_durability"


# -- errors ---------------------------------------------------------------------------------

class EffectError(RelaygraphError):
    """An effect was used in a way that cannot keep its promise (see the message)."""


class EffectInDoubtError(RelaygraphError):
    """A call started earlier and never recorded its end, and nobody can say if it acted.

    Raised for ``on_doubt="review"`` outside a graph run (inside one, the run pauses on an
    interrupt instead). Settle it with ``ledger.resolve(name, key, result)`` (it acted) or
    ``ledger.forget(name, key)`` (call it again), then run again.

    Attributes:
        name: the effect.
        key: the in-doubt call's key.
        started_at: when its last attempt started (epoch seconds).
        attempts: how many attempts started under this key.
    """

    def __init__(self, name: str, key: str, started_at: float, attempts: int) -> None:
        super().__init__(
            f"effect {name!r} call {key} started at {iso(started_at)} ({attempts} "
            "attempt(s)) and never recorded whether it completed; check the other system, "
            f"then ledger.resolve({name!r}, {key!r}, result) if it acted or "
            f"ledger.forget({name!r}, {key!r}) to call it again")
        self.name = name
        self.key = key
        self.started_at = started_at
        self.attempts = attempts


# -- reconciling and reviewing in-doubt calls -------------------------------------------------

@dataclass(frozen=True)
class InDoubtCall:
    """What a reconcile function is told about an in-doubt call.

    Attributes:
        name: the effect.
        key: the key the earlier attempt was given (look it up on the other side).
        thread_id: the thread (``""`` for a call keyed by hand).
        started_at: when the last attempt started (epoch seconds).
        attempts: how many attempts started.
        args: the positional arguments of this call.
        kwargs: the keyword arguments of this call (without ``key``/``conn``).
    """

    name: str
    key: str
    thread_id: str
    started_at: float
    attempts: int
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolved:
    """A reconcile function's (or reviewer's) verdict on an in-doubt call.

    Build it with `Resolved.done` (it acted: record ``result``, do not call again) or
    `Resolved.run_again` (it did not: call the function again, same key).
    """

    action: Literal["done", "run_again"]
    result: Any = None

    @classmethod
    def done(cls, result: Any = None) -> Resolved:
        """The call took effect; ``result`` is what the function would have returned."""
        return cls("done", result)

    @classmethod
    def run_again(cls) -> Resolved:
        """The call did not take effect; call the function again with the same key."""
        return cls("run_again")


class EffectReviewDecision(BaseModel):
    """A human's answer to an in-doubt effect interrupt (the resume value).

    ``{"action": "done", "result": ...}`` (it acted; the node continues with ``result``) or
    ``{"action": "run_again"}`` (call it again with the same key).
    """

    model_config = ConfigDict(extra="forbid")

    action: Literal["done", "run_again"]
    result: Any = None


Reconcile = Callable[[InDoubtCall], "Resolved | Awaitable[Resolved]"]


# -- where a call comes from ----------------------------------------------------------------

def derive_key(thread_id: str, checkpoint_ns: str, task_id: str, name: str, index: int) -> str:
    """The key of the ``index``-th call of effect ``name`` in a task: ``rg-`` + 40 hex."""
    raw = "\x1f".join((thread_id, checkpoint_ns, task_id, name, str(index)))
    return "rg-" + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:40]


# Call counters per task attempt. LangGraph builds a scratchpad for every execution of a
# task and shares it with everything that runs inside (helpers, nested runnables); its
# ``get_null_resume`` closure is a weak-referenceable object that lives as long as that
# execution (retries under a RetryPolicy share it, and count their attempts in the
# runtime's ``execution_info.node_attempt``). So the counters start from 0 on every
# execution and every attempt (a resume, a retry), and are dropped with the execution.
_counters: weakref.WeakKeyDictionary[Any, dict[tuple[Any, str], int]] = (
    weakref.WeakKeyDictionary())
_counters_lock = threading.Lock()
_RUNTIME = "__pregel_runtime"


def _next_index(conf: dict[str, Any], scratchpad: Any, name: str) -> int:
    anchor = getattr(scratchpad, "get_null_resume", None)
    if anchor is None:
        raise EffectError(
            "this LangGraph version keeps no per-task scratchpad where relaygraph expects "
            "it; pass key= explicitly")
    info = getattr(conf.get(_RUNTIME), "execution_info", None)
    attempt = getattr(info, "node_attempt", None)
    slot = (attempt if attempt is not None else id(scratchpad), name)
    with _counters_lock:
        counts = _counters.get(anchor)
        if counts is None:
            counts = _counters[anchor] = {}
        i = counts.get(slot, 0)
        counts[slot] = i + 1
    return i


@dataclass(frozen=True)
class _Call:
    site: CallSite
    in_graph: bool
    checkpointer: Any
    conf: dict[str, Any] = field(default_factory=dict)

    def wait_stored(self) -> None:
        if self.in_graph and self.checkpointer is not None:
            wait_stored(self.site.name, self.checkpointer, self.conf)

    async def await_stored(self) -> None:
        if self.in_graph and self.checkpointer is not None:
            await await_stored(self.site.name, self.checkpointer, self.conf)


def _locate(name: str, key: str | None) -> _Call:
    if key is not None:
        if not isinstance(key, str) or not key or len(key) > 255:
            raise EffectError(f"key must be a non-empty string of at most 255 characters, "
                              f"got {key!r}")
        return _Call(CallSite(name, key), False, None)
    try:
        from langgraph.config import get_config

        config = get_config()
    except RuntimeError:
        config = None
    conf = (config or {}).get("configurable") or {}
    thread_id, task_id = conf.get("thread_id"), conf.get(_TASK_ID)
    scratchpad = conf.get(_SCRATCHPAD)
    if task_id is None or scratchpad is None:
        raise EffectError(
            f"effect {name!r} was called outside a LangGraph node, where it has no stable "
            "key; call it from a node of a graph compiled with a checkpointer, or pass "
            "key='...' (the same key for the same real-world action)")
    if thread_id is None:
        raise EffectError(
            f"effect {name!r} was called in a graph run without a thread_id: its key would "
            "not survive a restart; compile the graph with a checkpointer and run it with "
            "config={'configurable': {'thread_id': ...}}")
    if conf.get(_DURABILITY) == "exit":
        raise EffectError(
            f"effect {name!r} was called in a run with durability='exit': nothing is "
            "stored until the run ends, so after a crash the same call could not be "
            "recognised; run graphs with effects with durability 'async' (the default) "
            "or 'sync'")
    ns = str(conf.get("checkpoint_ns") or "")
    index = _next_index(conf, scratchpad, name)
    site = CallSite(name, derive_key(str(thread_id), ns, str(task_id), name, index),
                    str(thread_id), ns, str(task_id), index)
    return _Call(site, True, conf.get(_CHECKPOINTER), conf)


def _accepts(fn: Callable[..., Any], param: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables: trust the caller
        return True
    return param in params or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                  for p in params.values())


# -- the wrapper --------------------------------------------------------------------------------

class Effect:
    """A function wrapped by `effect`. Call it like the function, without ``key``/``conn``.

    A sync function's wrapper is called directly (or awaited with `acall` from async
    code); an async function's wrapper returns a coroutine.
    """

    def __init__(self, fn: Callable[..., Any], *, ledger: EffectLedger | None, name: str,
                 on_doubt: OnDoubt, reconcile: Reconcile | None, transactional: bool) -> None:
        self.fn = fn
        self.ledger = ledger
        self.name = name
        self.on_doubt = on_doubt
        self.reconcile = reconcile
        self.transactional = transactional
        self.is_async = inspect.iscoroutinefunction(fn)
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<effect {self.name!r} on_doubt={self.on_doubt!r}>"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # decorating a method: bind like a function would
        return self if obj is None else functools.partial(self.__call__, obj)

    # -- entry points -----------------------------------------------------------------------

    def __call__(self, *args: Any, key: str | None = None, **kwargs: Any) -> Any:
        if self.is_async:
            return self.acall(*args, key=key, **kwargs)
        call = _locate(self.name, key)
        return self._run_sync(self._ledger_for(call, sync=True), call, args, kwargs)

    async def acall(self, *args: Any, key: str | None = None, **kwargs: Any) -> Any:
        """Make the call from async code (works for sync and async functions)."""
        call = _locate(self.name, key)
        ledger = self._ledger_for(call, sync=False)
        if self.ledger is None:
            await ledger.aensure_setup()
        return await self._run_async(ledger, call, args, kwargs)

    # -- which ledger -------------------------------------------------------------------------

    def _ledger_for(self, call: _Call, *, sync: bool) -> EffectLedger:
        ledger = self.ledger
        if ledger is None:
            if not isinstance(getattr(call.checkpointer, "engine", None),
                              sa.Engine | AsyncEngine):
                raise EffectError(
                    f"effect {self.name!r} has no ledger=, so it records calls in the "
                    "database of the graph's checkpointer, and this graph's checkpointer "
                    f"({type(call.checkpointer).__name__}) has none; compile the graph "
                    "with a relaygraph SQL saver or pass ledger=EffectLedger(engine)")
            ledger = EffectLedger.for_checkpointer(call.checkpointer)
            if sync:
                ledger.ensure_setup()
        if sync and ledger.is_async:
            raise EffectError(
                f"effect {self.name!r} records its calls through an AsyncEngine and cannot "
                f"run from sync code; use `await {self.name}.acall(...)` in an async node")
        if self.transactional and self.is_async and not ledger.is_async:
            raise EffectError(
                f"effect {self.name!r} is an async function with transactional=True: it "
                "needs a ledger on an AsyncEngine to get an AsyncConnection; use a sync "
                "function (it gets a sync Connection) or an AsyncEngine")
        return ledger

    # -- sync -------------------------------------------------------------------------------

    def _run_sync(self, ledger: EffectLedger, call: _Call, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
        if self.transactional:
            return self._transact_sync(ledger, call, args, kwargs)
        site = call.site
        call.wait_stored()
        found = ledger.claim(site)
        attempts = 1
        if found is not None:
            if found.status == "done":
                return self._replay(ledger, call, found)
            verdict = self._doubt_sync(call, found, args, kwargs)
            if verdict.action == "done":
                return self._settle_sync(ledger, call, found, verdict.result)
            if not ledger.run(op_reclaim, site.name, site.key, found.attempts, ledger.clock()):
                return self._after_race_sync(ledger, call)
            attempts = found.attempts + 1
        try:
            result = self.fn(*args, key=site.key, **kwargs)
        except BaseException:
            # it raised: it did not complete, and the next execution calls it again (same
            # key). If the ledger cannot forget, the call stays in doubt, which is safe.
            _quietly(lambda: ledger.run(op_forget, site.name, site.key, attempts))
            raise
        by = "review" if found is not None and self.on_doubt == "review" and call.in_graph \
            else "call"
        ledger.run(op_finish, site.name, site.key, attempts, ledger.dumps(result),
                   ledger.clock(), by)
        return result

    def _transact_sync(self, ledger: EffectLedger, call: _Call, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        site = call.site
        engine = ledger._sync_engine()
        call.wait_stored()
        try:
            with ledger.turn(), engine.begin() as conn:
                begin_write(conn)
                found = op_get(conn, site.name, site.key)
                if found is not None and found.status == "done":
                    return self._replay(ledger, call, found)
                result = self.fn(*args, key=site.key, conn=conn, **kwargs)
                op_insert_done(conn, site, ledger.dumps(result), ledger.clock(),
                               replace_started=found is not None)
                return result
        except sa.exc.IntegrityError:
            # a concurrent execution recorded the same call first; ours rolled back
            return self._after_race_sync(ledger, call)
        except sa.exc.DBAPIError as exc:
            raise ledger._translate(exc) from exc

    def _doubt_sync(self, call: _Call, found: EffectRecord, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Resolved:
        if self.on_doubt == "retry":
            return Resolved.run_again()
        if self.on_doubt == "reconcile":
            assert self.reconcile is not None
            verdict = self.reconcile(self._in_doubt(call, found, args, kwargs))
            if inspect.isawaitable(verdict):
                _close(verdict)
                raise EffectError(
                    f"effect {self.name!r} has an async reconcile function and was called "
                    f"from sync code; use `await {self.name}.acall(...)` or a sync reconcile")
            return _check_verdict(self.name, verdict)
        return self._review(call, found)

    def _settle_sync(self, ledger: EffectLedger, call: _Call, found: EffectRecord,
                     result: Any) -> Any:
        by = "reconcile" if self.on_doubt == "reconcile" else "review"
        if not ledger.run(op_finish, call.site.name, call.site.key, found.attempts,
                          ledger.dumps(result), ledger.clock(), by):
            return self._after_race_sync(ledger, call)
        return result

    def _after_race_sync(self, ledger: EffectLedger, call: _Call) -> Any:
        found = ledger.run(op_get, call.site.name, call.site.key)
        return self._after_race(ledger, call, found)

    # -- async --------------------------------------------------------------------------------

    async def _invoke(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        out = self.fn(*args, **kwargs)
        return await out if inspect.isawaitable(out) else out

    async def _run_async(self, ledger: EffectLedger, call: _Call, args: tuple[Any, ...],
                         kwargs: dict[str, Any]) -> Any:
        if self.transactional:
            return await self._transact_async(ledger, call, args, kwargs)
        site = call.site
        await call.await_stored()
        found = await ledger.aclaim(site)
        attempts = 1
        if found is not None:
            if found.status == "done":
                return self._replay(ledger, call, found)
            verdict = await self._doubt_async(call, found, args, kwargs)
            if verdict.action == "done":
                by = "reconcile" if self.on_doubt == "reconcile" else "review"
                if not await ledger.arun(op_finish, site.name, site.key, found.attempts,
                                         ledger.dumps(verdict.result), ledger.clock(), by):
                    return await self._after_race_async(ledger, call)
                return verdict.result
            if not await ledger.arun(op_reclaim, site.name, site.key, found.attempts,
                                     ledger.clock()):
                return await self._after_race_async(ledger, call)
            attempts = found.attempts + 1
        try:
            result = await self._invoke(args, {"key": site.key, **kwargs})
        except BaseException:
            try:
                await ledger.arun(op_forget, site.name, site.key, attempts)
            except Exception:  # noqa: BLE001, S110 - the call stays in doubt: safe
                pass
            raise
        by = "review" if found is not None and self.on_doubt == "review" and call.in_graph \
            else "call"
        await ledger.arun(op_finish, site.name, site.key, attempts, ledger.dumps(result),
                          ledger.clock(), by)
        return result

    async def _transact_async(self, ledger: EffectLedger, call: _Call, args: tuple[Any, ...],
                              kwargs: dict[str, Any]) -> Any:
        if not ledger.is_async:  # a sync function on a sync Engine: its own thread
            import asyncio

            return await asyncio.to_thread(self._transact_sync, ledger, call, args, kwargs)
        site = call.site
        engine = ledger.engine
        assert isinstance(engine, AsyncEngine)
        await call.await_stored()
        try:
            async with engine.begin() as aconn:
                await aconn.run_sync(begin_write)
                found = await aconn.run_sync(op_get, site.name, site.key)
                if found is not None and found.status == "done":
                    return self._replay(ledger, call, found)
                if self.is_async:
                    result = await self.fn(*args, key=site.key, conn=aconn, **kwargs)
                else:  # a sync function gets the same transaction as a sync Connection
                    result = await aconn.run_sync(
                        lambda conn: self.fn(*args, key=site.key, conn=conn, **kwargs))
                await aconn.run_sync(op_insert_done, site, ledger.dumps(result),
                                     ledger.clock(), replace_started=found is not None)
                return result
        except sa.exc.IntegrityError:
            return await self._after_race_async(ledger, call)
        except sa.exc.DBAPIError as exc:
            raise ledger._translate(exc) from exc

    async def _doubt_async(self, call: _Call, found: EffectRecord, args: tuple[Any, ...],
                           kwargs: dict[str, Any]) -> Resolved:
        if self.on_doubt == "reconcile":
            assert self.reconcile is not None
            verdict = self.reconcile(self._in_doubt(call, found, args, kwargs))
            if inspect.isawaitable(verdict):
                verdict = await verdict
            return _check_verdict(self.name, verdict)
        return self._doubt_sync(call, found, args, kwargs)

    async def _after_race_async(self, ledger: EffectLedger, call: _Call) -> Any:
        found = await ledger.arun(op_get, call.site.name, call.site.key)
        return self._after_race(ledger, call, found)

    # -- shared --------------------------------------------------------------------------------

    def _in_doubt(self, call: _Call, found: EffectRecord, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> InDoubtCall:
        return InDoubtCall(self.name, found.key, found.thread_id, found.started_at,
                           found.attempts, tuple(args), dict(kwargs))

    def _review(self, call: _Call, found: EffectRecord) -> Resolved:
        if not call.in_graph:
            raise EffectInDoubtError(self.name, found.key, found.started_at, found.attempts)
        return _ask(found)

    def _replay(self, ledger: EffectLedger, call: _Call, found: EffectRecord) -> Any:
        if found.resolved_by == "review" and call.in_graph:
            # the node asked a human about this call in an earlier execution: take that
            # interrupt's slots again (they return the stored answers) so that the node's
            # later interrupts keep their own answers
            _ask(found)
        return ledger.loads(found)

    def _after_race(self, ledger: EffectLedger, call: _Call, found: EffectRecord | None) -> Any:
        if found is not None and found.status == "done":
            return ledger.loads(found)
        raise EffectError(
            f"effect {self.name!r} call {call.site.key} is being made by another execution "
            "of the same task at this moment (two workers on one thread?); run graphs under "
            "relaygraph.durable.leased() so that one worker drives a thread")


def _ask(found: EffectRecord) -> Resolved:
    """Ask a human (an interrupt) until the answer has the right shape.

    A wrong answer is not an error of the run: LangGraph keeps a resume value for the
    task's interrupt, so the question is asked again, as the task's next interrupt.
    """
    from langgraph.types import interrupt

    request = review_request(found)
    while True:
        answer = interrupt(request)
        try:
            decision = EffectReviewDecision.model_validate(answer)
        except ValidationError:
            request = {**request, "error": (
                "the answer must be {'action': 'done', 'result': ...} or "
                f"{{'action': 'run_again'}}, got {answer!r}")}
            continue
        return Resolved(decision.action, decision.result)


def review_request(found: EffectRecord) -> dict[str, Any]:
    """The interrupt value that asks a human about an in-doubt call."""
    return {
        "kind": "effect_in_doubt",
        "effect": found.name,
        "key": found.key,
        "thread_id": found.thread_id,
        "task_id": found.task_id,
        "call_index": found.call_index,
        "started_at": iso(found.started_at),
        "attempts": found.attempts,
        "question": (f"{found.name} started at {iso(found.started_at)} and never recorded "
                     "whether it completed. Check the other system with the key: did it "
                     "take effect?"),
        "answer_with": [{"action": "done", "result": "what it returned"},
                        {"action": "run_again"}],
    }


def _check_verdict(name: str, verdict: Any) -> Resolved:
    if not isinstance(verdict, Resolved):
        raise EffectError(
            f"the reconcile function of effect {name!r} must return Resolved.done(result) "
            f"or Resolved.run_again(), got {verdict!r}")
    return verdict


def _close(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


def _quietly(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001, S110 - best effort; the call stays in doubt: safe
        pass


# -- the decorator ---------------------------------------------------------------------------

def effect(fn: Callable[..., Any] | None = None, *, ledger: EffectLedger | None = None,
           name: str | None = None, on_doubt: OnDoubt = "retry",
           reconcile: Reconcile | None = None, transactional: bool = False) -> Any:
    """Make a function's side effect happen once per call site, across re-executions.

    Use it as ``@effect(ledger=...)`` or ``effect(fn, ledger=...)``, on a sync or async
    function that takes a keyword argument ``key`` (and ``conn`` when transactional).

    Args:
        fn: the function that acts on the world.
        ledger: where calls are recorded. Default: an `EffectLedger` on the database of
            the checkpointer the running graph was compiled with (set up on first use).
        name: the effect's name in keys and records (default: the function's qualified
            name). Renaming an effect changes its keys.
        on_doubt: what a re-execution does with a call that started and never recorded its
            end: ``"retry"`` (call again, same key), ``"reconcile"`` (ask ``reconcile``) or
            ``"review"`` (ask a human through an interrupt).
        reconcile: for ``on_doubt="reconcile"``: ``f(InDoubtCall) -> Resolved``, sync or
            async.
        transactional: call the function inside the ledger's transaction with ``conn=``
            (a SQLAlchemy ``Connection``, or an ``AsyncConnection`` for an async function
            on an ``AsyncEngine``): its writes to that database and the record commit
            together, exactly once, and nothing is ever in doubt.

    Returns:
        An `Effect` (or a decorator making one).

    Raises:
        ConfigurationError: an unknown ``on_doubt``, ``reconcile`` missing or given
            without ``on_doubt="reconcile"``, or a function without ``key``/``conn``.

    Example:
        >>> @effect(ledger=EffectLedger(engine))  # doctest: +SKIP
        ... def issue_refund(order_id: str, amount: Decimal, *, key: str) -> str:
        ...     return payments.refund(order_id, amount, idempotency_key=key).id
    """
    if on_doubt not in _MODES:
        raise ConfigurationError(f"on_doubt must be one of {', '.join(_MODES)}, "
                                 f"got {on_doubt!r}")
    if on_doubt == "reconcile" and reconcile is None:
        raise ConfigurationError("on_doubt='reconcile' needs reconcile=f(InDoubtCall) -> "
                                 "Resolved")
    if reconcile is not None and on_doubt != "reconcile":
        raise ConfigurationError(f"reconcile= is used only with on_doubt='reconcile', got "
                                 f"on_doubt={on_doubt!r}")
    if ledger is not None and not isinstance(ledger, EffectLedger):
        raise ConfigurationError(f"ledger must be an EffectLedger, got "
                                 f"{type(ledger).__name__}")

    def wrap(f: Callable[..., Any]) -> Effect:
        if not callable(f):
            raise ConfigurationError(f"effect wraps a function, got {type(f).__name__}")
        effect_name = name or getattr(f, "__qualname__", None) or getattr(f, "__name__", "")
        if not effect_name or len(effect_name) > 255:
            raise ConfigurationError(f"effect name must be 1-255 characters, got "
                                     f"{effect_name!r}")
        for param in ("key",) + (("conn",) if transactional else ()):
            if not _accepts(f, param):
                raise ConfigurationError(
                    f"effect {effect_name!r} must accept a keyword argument {param!r} "
                    f"(def {getattr(f, '__name__', 'fn')}(..., *, {param}))")
        if (ledger is not None and not ledger.is_async and transactional
                and inspect.iscoroutinefunction(f)):
            raise ConfigurationError(
                f"effect {effect_name!r} is async and transactional, so it needs an "
                "AsyncConnection: give it a ledger on an AsyncEngine, or make it sync")
        return Effect(f, ledger=ledger, name=effect_name, on_doubt=on_doubt,
                      reconcile=reconcile, transactional=transactional)

    return wrap(fn) if fn is not None else wrap
