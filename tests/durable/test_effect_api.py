"""The effect API outside a graph, its ledger operations, and its misuse errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph._errors import ConfigurationError
from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.durable import (
    EffectError,
    EffectInDoubtError,
    EffectLedger,
    EffectLedgerError,
    Resolved,
    effect,
)
from relaygraph.durable import _effect as effect_module


@pytest.fixture
def ledger(backend) -> Iterator[EffectLedger]:
    engine = sa.create_engine(backend.url)
    lg = EffectLedger(engine)
    lg.setup()
    lg.setup()  # idempotent
    yield lg
    engine.dispose()


@pytest.fixture
def sqlite_ledger(sqlite_backend) -> Iterator[EffectLedger]:
    engine = sa.create_engine(sqlite_backend.url)
    lg = EffectLedger(engine)
    lg.setup()
    yield lg
    engine.dispose()


def _in_doubt(monkeypatch, fn: Any, *args: Any, **kw: Any) -> None:
    def lost(*a: Any, **k: Any) -> bool:
        raise sa.exc.OperationalError("UPDATE relaygraph_effects", {}, Exception("gone"))

    monkeypatch.setattr(effect_module, "op_finish", lost)
    with pytest.raises(sa.exc.OperationalError):
        fn(*args, **kw)
    monkeypatch.undo()


def test_an_explicit_key_works_outside_a_graph_and_review_raises_in_doubt(
        ledger, monkeypatch) -> None:
    calls: list[str] = []

    @effect(ledger=ledger, name="pay", on_doubt="review")
    def pay(amount: int, *, key: str) -> dict[str, Any]:
        calls.append(key)
        return {"paid": amount}

    assert pay(5, key="order-1") == {"paid": 5}
    assert pay(5, key="order-1") == {"paid": 5} and calls == ["order-1"]
    rec = ledger.get("pay", "order-1")
    assert rec is not None and (rec.status, rec.thread_id, rec.resolved_by) == (
        "done", "", "call")

    _in_doubt(monkeypatch, pay, 6, key="order-2")
    with pytest.raises(EffectInDoubtError, match="ledger.resolve") as info:
        pay(6, key="order-2")
    assert info.value.key == "order-2" and info.value.attempts == 1
    assert calls == ["order-1", "order-2"]
    # a human checked: it acted
    assert ledger.resolve("pay", "order-2", {"paid": 6}) is True
    assert ledger.resolve("pay", "order-2", {"paid": 6}) is False  # no longer in doubt
    assert pay(6, key="order-2") == {"paid": 6} and len(calls) == 2
    assert ledger.get("pay", "order-2").resolved_by == "manual"

    _in_doubt(monkeypatch, pay, 7, key="order-3")
    assert ledger.forget("pay", "order-3") is True  # a human checked: it did not act
    assert pay(7, key="order-3") == {"paid": 7} and calls[-1] == "order-3"


def test_an_async_reconcile_is_awaited_and_a_sync_caller_is_told(sqlite_ledger,
                                                               monkeypatch) -> None:
    async def reconcile(call: Any) -> Resolved:
        return Resolved.done("looked")

    @effect(ledger=sqlite_ledger, name="r", on_doubt="reconcile", reconcile=reconcile)
    def act(*, key: str) -> str:
        return "acted"

    _in_doubt(monkeypatch, act, key="k")
    with pytest.raises(EffectError, match="async reconcile"):
        act(key="k")

    import asyncio

    assert asyncio.run(act.acall(key="k")) == "looked"


def test_a_result_the_serializer_refuses_is_done_and_replay_says_why(sqlite_ledger) -> None:
    class Opaque:
        pass

    calls = []

    @effect(ledger=sqlite_ledger, name="o")
    def act(*, key: str) -> Any:
        calls.append(key)
        return Opaque()

    act(key="k")  # acted; the caller got its object
    with pytest.raises(EffectLedgerError, match="could not be stored"):
        act(key="k")
    assert len(calls) == 1


def test_the_ledger_table_missing_is_a_clear_error(sqlite_backend) -> None:
    engine = sa.create_engine(sqlite_backend.url)
    lg = EffectLedger(engine)

    @effect(ledger=lg)
    def act(*, key: str) -> None:
        pass

    with pytest.raises(EffectLedgerError, match=r"ledger.setup\(\)"):
        act(key="k")
    engine.dispose()


class S(TypedDict, total=False):
    out: Any


def _one_node(fn: Any) -> StateGraph:
    b = StateGraph(S)
    b.add_node("n", fn)
    b.add_edge(START, "n")
    b.add_edge("n", END)
    return b


def test_misuse_is_reported_with_the_fix(sqlite_ledger, sqlite_backend) -> None:
    @effect(ledger=sqlite_ledger)
    def act(*, key: str) -> str:
        return "x"

    with pytest.raises(EffectError, match="outside a LangGraph node.*key="):
        act()
    # a graph without a checkpointer has no stable thread to key by
    graph = _one_node(lambda s: {"out": act()}).compile()
    with pytest.raises(EffectError, match="without a thread_id"):
        graph.invoke({})
    # no ledger= and a checkpointer without a database
    nodb = effect(lambda *, key: 1, name="nodb")
    graph = _one_node(lambda s: {"out": nodb()}).compile(checkpointer=InMemorySaver())
    with pytest.raises(EffectError, match="ledger=EffectLedger"):
        graph.invoke({}, {"configurable": {"thread_id": "t"}})
    with pytest.raises(EffectError, match="at most 255"):
        act(key="k" * 256)

    with pytest.raises(ConfigurationError, match="on_doubt must be one of"):
        effect(ledger=sqlite_ledger, on_doubt="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="needs reconcile="):
        effect(ledger=sqlite_ledger, on_doubt="reconcile")
    with pytest.raises(ConfigurationError, match="only with on_doubt='reconcile'"):
        effect(ledger=sqlite_ledger, reconcile=lambda c: Resolved.run_again())
    with pytest.raises(ConfigurationError, match="keyword argument 'key'"):
        effect(lambda amount: None, ledger=sqlite_ledger)
    with pytest.raises(ConfigurationError, match="keyword argument 'conn'"):
        effect(lambda *, key: None, ledger=sqlite_ledger, transactional=True)

    async def aact(*, key: str, conn: Any) -> None:
        pass

    with pytest.raises(ConfigurationError, match="AsyncConnection"):
        effect(aact, ledger=sqlite_ledger, transactional=True)
    with pytest.raises(ConfigurationError, match="Engine or AsyncEngine"):
        EffectLedger("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="relaygraph SQL saver"):
        EffectLedger.from_saver(InMemorySaver())

    # a sync call through a ledger on an AsyncEngine
    alg = EffectLedger(create_async_engine(sqlite_backend.async_url))

    @effect(ledger=alg)
    def sync_act(*, key: str) -> None:
        pass

    with pytest.raises(EffectError, match=r"acall"):
        sync_act(key="k")


def test_without_ledger_the_checkpointers_database_is_used_and_set_up(sqlite_backend) -> None:
    calls = []

    @effect(name="auto")
    def act(*, key: str) -> str:
        calls.append(key)
        return "ok"

    engine = sa.create_engine(sqlite_backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    graph = _one_node(lambda s: {"out": act()}).compile(checkpointer=saver)
    assert graph.invoke({}, {"configurable": {"thread_id": "t"}})["out"] == "ok"
    assert sa.inspect(engine).has_table("relaygraph_effects")
    recs = EffectLedger.for_checkpointer(saver).calls("t")
    assert [(r.name, r.key) for r in recs] == [("auto", calls[0])]
    assert EffectLedger.for_checkpointer(saver) is EffectLedger.for_checkpointer(saver)
    assert EffectLedger.for_checkpointer(saver).delete_thread("t") == 1
    engine.dispose()


def test_an_effect_waits_until_its_tasks_checkpoint_is_stored(sqlite_backend,
                                                             monkeypatch) -> None:
    """Under durability='async' a task can start before the checkpoint it was scheduled
    from is stored; acting then would not be recognised after a crash (new task ids)."""
    from relaygraph.durable import _scheduled

    calls = []

    @effect(name="wait")
    def act(*, key: str) -> str:
        calls.append(key)
        return "ok"

    engine = sa.create_engine(sqlite_backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    graph = _one_node(lambda s: {"out": act()}).compile(checkpointer=saver)
    checked: list[Any] = []
    real = _scheduled.stored

    def slow(checkpointer: Any, level: Any) -> bool:  # not there the first two times
        checked.append(level)
        return len(checked) > 2 and real(checkpointer, level)

    monkeypatch.setattr(_scheduled, "stored", slow)
    assert graph.invoke({}, {"configurable": {"thread_id": "w"}})["out"] == "ok"
    assert len(checked) >= 3 and checked[0][0] == "w" and checked[0][1] == ""
    assert len(calls) == 1

    # never stored: the effect refuses to act, and says why
    monkeypatch.setattr(_scheduled, "stored", lambda cp, level: False)
    monkeypatch.setattr(_scheduled, "WAIT_SECONDS", 0.0)
    with pytest.raises(_scheduled.SchedulingCheckpointMissing, match="still not stored"):
        graph.invoke({}, {"configurable": {"thread_id": "never"}})
    assert len(calls) == 1

    # durability='exit' stores nothing until the end: refused up front
    with pytest.raises(EffectError, match="durability='exit'"):
        graph.invoke({}, {"configurable": {"thread_id": "exit"}}, durability="exit")
    engine.dispose()


def test_two_transactional_calls_of_one_key_at_once_write_once(ledger, backend) -> None:
    """Two executions of the same call at the same moment (two workers on one thread): the
    second transaction to record it rolls back its write and returns the first's result."""
    import threading

    sink = sa.Table("race_sink", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("who", sa.String(8)))
    sink.create(ledger.engine)
    entered = threading.Event()
    ran: list[str] = []

    def write(who: str, *, key: str, conn: Any) -> str:
        ran.append(who)
        if who == "first" and backend.kind != "sqlite":
            # on a server database the second transaction runs alongside this one: let it
            # write and record first (SQLite runs them one after the other)
            assert entered.wait(30)
        if who == "second":
            entered.set()
        conn.execute(sink.insert().values(who=who))
        return who

    eff = effect(write, ledger=ledger, name="race", transactional=True)
    results: dict[str, Any] = {}

    def call(who: str) -> None:
        results[who] = eff(who, key="same")

    first = threading.Thread(target=call, args=("first",))
    first.start()
    if backend.kind == "sqlite":
        first.join()
    call("second")
    first.join()
    with ledger.engine.connect() as conn:
        rows = [r[0] for r in conn.execute(sa.select(sink.c.who))]
    assert len(rows) == 1
    assert results["first"] == results["second"] == rows[0]
    rec = ledger.get("race", "same")
    assert rec is not None and rec.status == "done" and ledger.loads(rec) == rows[0]
