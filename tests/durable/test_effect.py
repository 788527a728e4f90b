"""Effects happen once per call site across crashes, resumes and retries, on every database.

Each graph test runs on SQLite, PostgreSQL and MariaDB (fresh database each), through the
sync saver and ``invoke`` and through the async saver and ``ainvoke``. A crash "between an
effect and its ledger record" is simulated by making the ledger's record statement fail
(the database went away): the call is left started and never recorded, as after a SIGKILL
at that point (tests/reliability/test_crash_resume.py does the SIGKILL for real).
"""

from __future__ import annotations

import operator
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import pytest
import sqlalchemy as sa
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, RetryPolicy, interrupt
from sqlalchemy.ext.asyncio import create_async_engine

from relaygraph.checkpointers import AsyncSQLAlchemySaver, SQLAlchemySaver
from relaygraph.durable import (
    EffectLedger,
    Resolved,
    derive_key,
    effect,
)
from relaygraph.durable import _effect as effect_module


class S(TypedDict, total=False):
    out: list[Any]
    log: Annotated[list[str], operator.add]


@dataclass
class Env:
    kind: str
    mode: str  # "sync" | "async"
    saver: Any
    ledger: EffectLedger
    url: str

    async def run(self, graph: Any, inp: Any, cfg: dict[str, Any]) -> Any:
        if self.mode == "sync":
            return graph.invoke(inp, cfg)
        return await graph.ainvoke(inp, cfg)

    async def state(self, graph: Any, cfg: dict[str, Any]) -> Any:
        return graph.get_state(cfg) if self.mode == "sync" else await graph.aget_state(cfg)

    async def calls(self, thread: str) -> list[Any]:
        return self.ledger.calls(thread) if self.mode == "sync" \
            else await self.ledger.acalls(thread)


@pytest.fixture(params=["sync", "async"])
async def env(request, backend) -> AsyncIterator[Env]:
    if request.param == "sync":
        engine = sa.create_engine(backend.url)
        saver = SQLAlchemySaver(engine)
        saver.setup()
        ledger = EffectLedger.from_saver(saver)
        ledger.setup()
        yield Env(backend.kind, "sync", saver, ledger, backend.url)
        engine.dispose()
    else:
        aengine = create_async_engine(backend.async_url)
        asaver = AsyncSQLAlchemySaver(aengine)
        await asaver.asetup()
        ledger = EffectLedger.from_saver(asaver)
        await ledger.asetup()
        yield Env(backend.kind, "async", asaver, ledger, backend.url)
        await aengine.dispose()


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def graph_of(env: Env, calls: list[tuple[Any, tuple[Any, ...]]],
             after: Callable[[], Any] | None = None, **node_kw: Any) -> Any:
    """A one-node graph that makes ``calls`` (effect, args) in order, then runs ``after``."""

    def finish(results: list[Any]) -> dict[str, Any]:
        extra = after() if after is not None else None
        return {"out": results + ([extra] if extra is not None else [])}

    if env.mode == "sync":
        def node(state: S) -> dict[str, Any]:
            return finish([eff(*args) for eff, args in calls])
    else:
        async def node(state: S) -> dict[str, Any]:  # type: ignore[misc]
            return finish([await eff.acall(*args) for eff, args in calls])

    b = StateGraph(S)
    b.add_node("act", node, **node_kw)
    b.add_edge(START, "act")
    b.add_edge("act", END)
    return b.compile(checkpointer=env.saver)


class Crash:
    """Raises on its first ``n`` calls: a node dying after its effects."""

    def __init__(self, n: int = 1) -> None:
        self.left = n

    def __call__(self) -> None:
        if self.left > 0:
            self.left -= 1
            raise RuntimeError("crash after the effects")


def refund_effect(ledger: EffectLedger, seen: list[tuple[Any, str]], **kw: Any) -> Any:
    def issue(amount: int, *, key: str) -> str:
        seen.append((amount, key))
        return f"refund-{amount}"

    return effect(issue, ledger=ledger, name="issue", **kw)


async def test_a_completed_call_is_replayed_not_repeated_when_the_node_reexecutes(env) -> None:
    seen: list[tuple[Any, str]] = []
    eff = refund_effect(env.ledger, seen)
    graph = graph_of(env, [(eff, (10,)), (eff, (20,))], after=Crash())
    with pytest.raises(RuntimeError, match="crash after"):
        await env.run(graph, {"out": []}, cfg("t1"))
    out = await env.run(graph, None, cfg("t1"))
    assert out["out"] == ["refund-10", "refund-20"]
    assert [a for a, _ in seen] == [10, 20]  # once each, although the node ran twice
    rows = await env.calls("t1")
    assert [(r.status, r.call_index, r.attempts, r.resolved_by) for r in rows] == [
        ("done", 0, 1, "call"), ("done", 1, 1, "call")]
    # the key is derived from thread, namespace, task, name and call index
    for r, (_, key) in zip(rows, seen, strict=True):
        assert r.key == key == derive_key("t1", r.checkpoint_ns, r.task_id, "issue",
                                          r.call_index)
        assert r.checkpoint_ns == f"act:{r.task_id}"


async def test_keys_differ_per_call_index_per_thread_and_are_the_same_after_resume(
        env, monkeypatch) -> None:
    seen: list[tuple[Any, str]] = []
    eff = refund_effect(env.ledger, seen)
    graph = graph_of(env, [(eff, (1,)), (eff, (1,))])
    await env.run(graph, {"out": []}, cfg("a"))
    await env.run(graph, {"out": []}, cfg("b"))
    keys = [k for _, k in seen]
    assert len(set(keys)) == 4  # two calls in a task, two threads: four keys

    # a crash between the call and its record leaves it in doubt; the resumed node's
    # retry passes the very same key
    seen.clear()

    def lost(*a: Any, **k: Any) -> bool:
        raise sa.exc.OperationalError("UPDATE relaygraph_effects", {}, Exception("gone"))

    monkeypatch.setattr(effect_module, "op_finish", lost)
    with pytest.raises(sa.exc.OperationalError):
        await env.run(graph, {"out": []}, cfg("c"))
    monkeypatch.undo()
    assert [r.status for r in await env.calls("c")] == ["started"]
    out = await env.run(graph, None, cfg("c"))
    assert out["out"] == ["refund-1", "refund-1"]
    assert len(seen) == 3 and seen[0][1] == seen[1][1] != seen[2][1]
    rows = await env.calls("c")
    assert [(r.status, r.attempts) for r in rows] == [("done", 2), ("done", 1)]


async def test_a_retry_policy_rerun_gets_the_recorded_result(env) -> None:
    seen: list[tuple[Any, str]] = []
    eff = refund_effect(env.ledger, seen)
    graph = graph_of(env, [(eff, (5,))], after=Crash(2),
                     retry_policy=RetryPolicy(initial_interval=0.0, jitter=False,
                                              retry_on=RuntimeError, max_attempts=3))
    out = await env.run(graph, {"out": []}, cfg("r"))
    assert out["out"] == ["refund-5"]
    assert len(seen) == 1


async def test_a_call_that_raised_is_not_recorded_and_runs_again_with_the_same_key(env) -> None:
    keys: list[str] = []
    fail = [True]

    def flaky(*, key: str) -> str:
        keys.append(key)
        if fail[0]:
            fail[0] = False
            raise ConnectionError("payment API down")
        return "ok"

    eff = effect(flaky, ledger=env.ledger, name="flaky")
    graph = graph_of(env, [(eff, ())])
    with pytest.raises(ConnectionError):
        await env.run(graph, {"out": []}, cfg("f"))
    assert await env.calls("f") == []
    assert (await env.run(graph, None, cfg("f")))["out"] == ["ok"]
    assert len(keys) == 2 and keys[0] == keys[1]


def _leave_in_doubt(monkeypatch) -> None:
    def lost(*a: Any, **k: Any) -> bool:
        raise sa.exc.OperationalError("UPDATE relaygraph_effects", {}, Exception("gone"))

    monkeypatch.setattr(effect_module, "op_finish", lost)


async def test_reconcile_decides_an_in_doubt_call(env, monkeypatch) -> None:
    seen: list[tuple[Any, str]] = []
    asked: list[Any] = []
    verdicts = [Resolved.done("found-in-crm"), Resolved.run_again()]

    def reconcile(call: Any) -> Resolved:
        asked.append(call)
        return verdicts.pop(0)

    eff = refund_effect(env.ledger, seen, on_doubt="reconcile", reconcile=reconcile)
    graph = graph_of(env, [(eff, (7,))])
    for thread in ("done", "again"):
        _leave_in_doubt(monkeypatch)
        with pytest.raises(sa.exc.OperationalError):
            await env.run(graph, {"out": []}, cfg(thread))
        monkeypatch.undo()
    assert len(seen) == 2
    # "done": the reconcile function found it acted; the function is not called again
    assert (await env.run(graph, None, cfg("done")))["out"] == ["found-in-crm"]
    assert asked[0].key == seen[0][1] and asked[0].args == (7,) and asked[0].attempts == 1
    assert [r.resolved_by for r in await env.calls("done")] == ["reconcile"]
    assert len(seen) == 2
    # "run_again": called again with the key it had
    assert (await env.run(graph, None, cfg("again")))["out"] == ["refund-7"]
    assert len(seen) == 3 and seen[2][1] == seen[1][1]
    # settled: a later execution neither asks nor calls
    assert len(asked) == 2


async def test_review_pauses_on_an_interrupt_and_the_human_answer_settles_it(
        env, monkeypatch) -> None:
    seen: list[tuple[Any, str]] = []
    eff = refund_effect(env.ledger, seen, on_doubt="review")
    graph = graph_of(env, [(eff, (9,))])
    for thread in ("yes", "no"):
        _leave_in_doubt(monkeypatch)
        with pytest.raises(sa.exc.OperationalError):
            await env.run(graph, {"out": []}, cfg(thread))
        monkeypatch.undo()
        await env.run(graph, None, cfg(thread))  # pauses: nobody knows if it acted
        snap = await env.state(graph, cfg(thread))
        (req,) = [i.value for i in snap.interrupts]
        assert req["kind"] == "effect_in_doubt" and req["effect"] == "issue"
        assert req["key"] == seen[-1][1] and req["thread_id"] == thread
    assert len(seen) == 2

    # a wrong-shaped answer asks again, saying what is expected
    await env.run(graph, Command(resume={"action": "maybe"}), cfg("yes"))
    (req,) = [i.value for i in (await env.state(graph, cfg("yes"))).interrupts]
    assert "run_again" in req["error"] and "maybe" in req["error"]
    out = await env.run(graph, Command(resume={"action": "done", "result": "re-123"}),
                        cfg("yes"))
    assert out["out"] == ["re-123"] and len(seen) == 2
    assert [r.resolved_by for r in await env.calls("yes")] == ["review"]

    out = await env.run(graph, Command(resume={"action": "run_again"}), cfg("no"))
    assert out["out"] == ["refund-9"] and len(seen) == 3 and seen[2][1] == seen[1][1]


async def test_transactional_effect_commits_with_its_record_exactly_once(
        env, monkeypatch) -> None:
    crm = sa.Table("crm_test", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                   sa.Column("k", sa.String(64)))
    sync_engine = sa.create_engine(env.url)
    crm.create(sync_engine)
    calls: list[str] = []

    def write(n: int, *, key: str, conn: Any) -> int:
        calls.append(key)
        conn.execute(crm.insert().values(k=key))
        return n

    eff = effect(write, ledger=env.ledger, name="crm", transactional=True)
    graph = graph_of(env, [(eff, (3,))], after=Crash())

    def rows() -> list[str]:
        with sync_engine.connect() as c:
            return [r[0] for r in c.execute(sa.select(crm.c.k))]

    # the process dies inside the transaction, after the write and before the record:
    # both roll back, nothing is in doubt
    def die(*a: Any, **k: Any) -> None:
        raise sa.exc.OperationalError("INSERT relaygraph_effects", {}, Exception("gone"))

    monkeypatch.setattr(effect_module, "op_insert_done", die)
    with pytest.raises(sa.exc.OperationalError):
        await env.run(graph, {"out": []}, cfg("x"))
    monkeypatch.undo()
    assert rows() == [] and await env.calls("x") == []

    with pytest.raises(RuntimeError, match="crash after"):  # committed, then the node dies
        await env.run(graph, None, cfg("x"))
    out = await env.run(graph, None, cfg("x"))
    assert out["out"] == [3]
    assert len(calls) == 2 and calls[0] == calls[1]
    assert rows() == [calls[0]]  # one row, although the function ran twice
    assert [(r.status, r.attempts) for r in await env.calls("x")] == [("done", 1)]
    sync_engine.dispose()


@pytest.mark.parametrize("env", ["async"], indirect=True)
async def test_an_async_function_is_an_effect_too(env) -> None:
    seen: list[str] = []

    async def notify(*, key: str) -> str:
        seen.append(key)
        return "sent"

    eff = effect(notify, ledger=env.ledger)

    async def node(state: S) -> dict[str, Any]:
        return {"out": [await eff(), await eff()]}

    b = StateGraph(S)
    b.add_node("n", node)
    b.add_edge(START, "n")
    b.add_edge("n", END)
    graph = b.compile(checkpointer=env.saver)
    assert (await graph.ainvoke({"out": []}, cfg("as")))["out"] == ["sent", "sent"]
    assert len(set(seen)) == 2
    rows = await env.ledger.acalls("as")
    assert [r.name for r in rows] == [notify.__qualname__] * 2


async def test_an_effect_interrupted_after_it_acted_is_not_repeated_on_resume(env) -> None:
    seen: list[tuple[Any, str]] = []
    eff = refund_effect(env.ledger, seen)
    graph = graph_of(env, [(eff, (4,))], after=lambda: interrupt("approve?"))
    await env.run(graph, {"out": []}, cfg("i"))
    out = await env.run(graph, Command(resume="yes"), cfg("i"))
    assert out["out"] == ["refund-4", "yes"] and len(seen) == 1


async def test_an_effect_in_a_subgraph_is_keyed_by_its_namespace_and_not_repeated(env) -> None:
    seen: list[tuple[Any, str]] = []
    eff = refund_effect(env.ledger, seen)
    crash = Crash()
    inner = graph_of(env, [(eff, (8,))], after=crash)  # compiled on the saver too
    sub = StateGraph(S)
    sub.add_node("act", inner.nodes["act"].bound)
    sub.add_edge(START, "act")
    sub.add_edge("act", END)
    outer = StateGraph(S)
    outer.add_node("inner", sub.compile())
    outer.add_edge(START, "inner")
    outer.add_edge("inner", END)
    graph = outer.compile(checkpointer=env.saver)
    with pytest.raises(RuntimeError, match="crash after"):
        await env.run(graph, {"out": []}, cfg("sub"))
    out = await env.run(graph, None, cfg("sub"))
    assert out["out"] == ["refund-8"] and len(seen) == 1
    (rec,) = await env.calls("sub")
    assert rec.checkpoint_ns.startswith("inner:") and "|act:" in rec.checkpoint_ns
