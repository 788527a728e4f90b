"""leased(): runs hold their thread's lease; reject, enqueue, cancel, takeover, resume."""

from __future__ import annotations

import asyncio
import operator
import threading
import time
from typing import Annotated, Any

import pytest
from langgraph.errors import GraphDrained
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import RunControl
from langgraph.types import Command, interrupt
from typing_extensions import TypedDict

from relaygraph._errors import ConfigurationError
from relaygraph.durable import (
    LeaseLostError,
    LeaseStore,
    RunCancelledError,
    ThreadBusyError,
    leased,
)
from relaygraph.durable._run import drain
from relaygraph.testing import ManualClock

from ._lease_helpers import assert_linear, checkpoint_rows, counter_graph

CFG = {"configurable": {"thread_id": "t"}}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def make_store(saver: Any, clock: ManualClock, ttl: float = 10.0) -> LeaseStore:
    store = LeaseStore.from_saver(saver, ttl=ttl, clock=clock)
    store.setup()
    return store


def test_a_run_holds_the_lease_and_releases_it(saver, clock, backend) -> None:
    store = make_store(saver, clock)
    held: list[Any] = []
    graph = counter_graph(3, hook=lambda n: held.append(store.current("t")))
    runner = leased(graph.compile(checkpointer=saver), store, holder="worker-1")
    assert runner.invoke({"count": 0}, CFG)["count"] == 3
    assert [h.holder for h in held] == ["worker-1"] * 3
    assert store.current("t") is None  # released
    assert runner.get_state(CFG).values["count"] == 3  # the graph's own methods
    assert_linear(checkpoint_rows(backend.url, "t"))


def test_reject_raises_busy_at_once(saver, clock) -> None:
    store = make_store(saver, clock)
    other = store.acquire("t", holder="other-worker")
    runner = leased(counter_graph(1).compile(checkpointer=saver), store)
    with pytest.raises(ThreadBusyError) as err:
        runner.invoke({"count": 0}, CFG)
    assert err.value.holder == "other-worker" and err.value.thread_id == "t"
    assert err.value.expires_at == other.expires_at
    assert saver.get_tuple(CFG) is None  # it did not run


def test_a_run_inside_a_run_of_the_same_thread_is_refused(saver, clock) -> None:
    store = make_store(saver, clock)
    errors: list[BaseException] = []
    inner = leased(counter_graph(1).compile(checkpointer=saver), store)

    def hook(n: int) -> None:
        try:
            inner.invoke({"count": 0}, CFG)
        except ThreadBusyError as exc:
            errors.append(exc)

    outer = leased(counter_graph(2, hook=hook).compile(checkpointer=saver), store)
    assert outer.invoke({"count": 0}, CFG)["count"] == 2
    assert len(errors) == 2


class _CountingStore(LeaseStore):
    """Calls ``on_busy`` after each refused attempt."""

    on_busy: Any = None

    def try_acquire(self, thread_id: str, *, holder: str | None = None) -> Any:
        try:
            return super().try_acquire(thread_id, holder=holder)
        except ThreadBusyError:
            if self.on_busy is not None:
                self.on_busy()
            raise


def test_enqueue_waits_until_the_holder_releases(saver, clock) -> None:
    store = _CountingStore.from_saver(saver, ttl=10, clock=clock)
    store.setup()
    other = store.acquire("t", holder="other")
    refused: list[int] = []

    def on_busy() -> None:
        refused.append(1)
        if len(refused) == 3:
            store.release(other)

    store.on_busy = on_busy
    runner = leased(counter_graph(1).compile(checkpointer=saver), store,
                    strategy="enqueue", wait=30)
    assert runner.invoke({"count": 0}, CFG)["count"] == 1
    assert len(refused) == 3


def test_enqueue_gives_up_after_wait(saver, clock) -> None:
    store = make_store(saver, clock)
    store.acquire("t", holder="other")
    runner = leased(counter_graph(1).compile(checkpointer=saver), store,
                    strategy="enqueue", wait=0.2)
    start = time.monotonic()
    with pytest.raises(ThreadBusyError):
        runner.invoke({"count": 0}, CFG)
    assert 0.2 <= time.monotonic() - start < 5


def test_an_expired_lease_is_taken_over(saver, clock) -> None:
    store = make_store(saver, clock)
    dead = store.acquire("t", holder="crashed-worker")
    clock.advance(10.5)
    runner = leased(counter_graph(1).compile(checkpointer=saver), store, holder="w2")
    assert runner.invoke({"count": 0}, CFG)["count"] == 1
    assert store.acquire("t", holder="w3").token == dead.token + 2  # dead, w2, w3


def test_cancel_stops_at_the_next_step_boundary_and_resumes(saver, clock, backend) -> None:
    store = make_store(saver, clock)

    def hook(n: int) -> None:
        if n == 2:
            assert store.request_cancel("t") is True

    runner = leased(counter_graph(5, hook=hook).compile(checkpointer=saver), store)
    with pytest.raises(RunCancelledError) as err:
        runner.invoke({"count": 0}, CFG)
    assert err.value.thread_id == "t"
    state = runner.get_state(CFG)
    assert state.values["count"] == 2  # the step that saw the cancel finished, checkpointed
    assert state.next == ("step",)
    assert store.current("t") is None
    assert runner.invoke(None, CFG)["count"] == 5  # resume
    assert runner.get_state(CFG).values["log"] == [f"step:{i}" for i in range(1, 6)]
    assert_linear(checkpoint_rows(backend.url, "t"))


def test_cancel_from_another_process_is_seen_at_the_next_renewal(saver, clock) -> None:
    store = make_store(saver, clock)
    elsewhere = LeaseStore.from_saver(saver, ttl=10, clock=clock)  # no shared watchers
    control = RunControl()

    def hook(n: int) -> None:
        if n == 2:
            assert elsewhere.request_cancel("t") is True
            deadline = time.monotonic() + 10
            while not control.drain_requested:  # the heartbeat renews every 50 ms
                assert time.monotonic() < deadline, "the heartbeat never saw the cancel"
                time.sleep(0.005)

    runner = leased(counter_graph(5, hook=hook).compile(checkpointer=saver), store,
                    heartbeat=0.05)
    with pytest.raises(RunCancelledError):
        runner.invoke({"count": 0}, CFG, control=control)
    assert runner.get_state(CFG).values["count"] == 2


def test_a_run_whose_lease_was_taken_over_stops_without_writing(saver, clock, backend):
    store = make_store(saver, clock)
    taken: list[Any] = []

    def hook(n: int) -> None:
        if n == 2 and not taken:  # the run stalls past its TTL; another worker takes over
            clock.advance(11)
            taken.append(store.acquire("t", holder="new-worker"))

    runner = leased(counter_graph(5, hook=hook).compile(checkpointer=saver), store,
                    holder="old-worker")
    with pytest.raises(LeaseLostError):
        runner.invoke({"count": 0}, CFG)
    # step 2's writes and checkpoint were refused (and step 1's checkpoint too when its
    # background save had not run before the takeover); the new holder keeps its lease
    # (the old run's release was a no-op)
    assert runner.get_state(CFG).values.get("count", 0) <= 1
    live = store.current("t")
    assert live is not None and live.holder == "new-worker" and live.token == taken[0].token
    store.release(taken[0])
    rows = checkpoint_rows(backend.url, "t")
    assert_linear(rows)
    assert runner.invoke(None, CFG)["count"] == 5
    assert_linear(checkpoint_rows(backend.url, "t"))


def test_resume_an_interrupt_under_the_lease(saver, clock) -> None:
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class S(TypedDict, total=False):
        answer: str

    def ask(state: S) -> S:
        return {"answer": interrupt("approve?")}

    b = StateGraph(S)
    b.add_node("ask", ask)
    b.add_edge(START, "ask")
    b.add_edge("ask", END)
    store = make_store(saver, clock)
    runner = leased(b.compile(checkpointer=saver), store)
    out = runner.invoke({}, CFG)
    assert "__interrupt__" in out
    assert store.current("t") is None
    assert runner.invoke(Command(resume="yes"), CFG) == {"answer": "yes"}


def test_stream_holds_the_lease_while_consumed(saver, clock) -> None:
    store = make_store(saver, clock)
    runner = leased(counter_graph(3).compile(checkpointer=saver), store, holder="s")
    stream = runner.stream({"count": 0}, CFG, stream_mode="values")
    first = next(stream)
    assert first == {"count": 0, "log": []}
    assert store.current("t").holder == "s"
    rest = list(stream)
    assert rest[-1]["count"] == 3
    assert store.current("t") is None
    # a stream abandoned half way releases when closed
    stream = runner.stream({"count": 0}, {"configurable": {"thread_id": "u"}})
    next(stream)
    assert store.current("u") is not None
    stream.close()
    assert store.current("u") is None


def test_drain_stops_runs_at_a_step_boundary(saver, clock) -> None:
    store = make_store(saver, clock)

    def hook(n: int) -> None:
        if n == 2:
            drain.request()

    runner = leased(counter_graph(4, hook=hook).compile(checkpointer=saver), store)
    try:
        with pytest.raises(GraphDrained):
            runner.invoke({"count": 0}, CFG)
        assert store.current("t") is None
        assert runner.get_state(CFG).values["count"] == 2
        with pytest.raises(GraphDrained):  # a draining worker starts nothing new
            runner.invoke(None, CFG)
    finally:
        drain.reset()
    assert runner.invoke(None, CFG)["count"] == 4


def test_configuration_errors(saver, clock) -> None:
    store = make_store(saver, clock)
    graph = counter_graph(1).compile(checkpointer=saver)
    with pytest.raises(ConfigurationError, match="strategy"):
        leased(graph, store, strategy="queue")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="heartbeat"):
        leased(graph, store, heartbeat=10)
    with pytest.raises(ConfigurationError, match="checkpointer"):
        leased(counter_graph(1).compile(), store)
    with pytest.raises(ConfigurationError, match="thread_id"):
        leased(graph, store).invoke({"count": 0}, {})


# -- async ------------------------------------------------------------------------------

async def test_async_run_cancel_takeover_and_resume(asaver, clock, backend) -> None:
    store = LeaseStore.from_saver(asaver, ttl=10, clock=clock)
    await store.asetup()
    events: list[str] = []

    async def cancel_soon() -> None:
        await store.arequest_cancel("t")

    def hook(n: int) -> None:
        events.append(f"step {n}")
        if n == 2:
            # nodes run in the loop's thread here: schedule the cancel on the loop
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(cancel_soon()))
            done.wait(10)

    loop = asyncio.get_running_loop()
    done = threading.Event()
    store._watch("t", done.set)
    graph = counter_graph(5, hook=hook).compile(checkpointer=asaver)
    runner = leased(graph, store)
    with pytest.raises(RunCancelledError):
        await runner.ainvoke({"count": 0}, CFG)
    assert (await runner.aget_state(CFG)).values["count"] == 2
    assert await store.acurrent("t") is None
    chunks = [c async for c in runner.astream(None, CFG, stream_mode="values")]
    assert chunks[-1]["count"] == 5

    # takeover while the async run is stalled in a node
    def stall(n: int) -> None:
        if n == 2:
            clock.advance(11)
            fut = asyncio.run_coroutine_threadsafe(store.aacquire("u", holder="new"), loop)
            taken.append(fut.result(10))

    taken: list[Any] = []
    u = {"configurable": {"thread_id": "u"}}
    graph2 = counter_graph(4, hook=stall).compile(checkpointer=asaver)
    with pytest.raises(LeaseLostError):
        await leased(graph2, store).ainvoke({"count": 0}, u)
    assert (await runner.aget_state(u)).values.get("count", 0) <= 1
    assert taken[0].holder == "new" and (await store.acurrent("u")).holder == "new"
    assert_linear(checkpoint_rows(backend.url, "t"))
    assert_linear(checkpoint_rows(backend.url, "u"))


def test_update_state_writes_under_the_lease(saver, clock, backend) -> None:
    store = make_store(saver, clock)
    runner = leased(counter_graph(3).compile(checkpointer=saver), store)
    runner.invoke({"count": 0}, CFG)
    other = store.acquire("t", holder="other")
    with pytest.raises(ThreadBusyError):
        runner.update_state(CFG, {"count": 10})
    store.release(other)
    runner.update_state(CFG, {"count": 10})
    assert runner.get_state(CFG).values["count"] == 10
    assert store.current("t") is None
    # the fence reaches update_state's put: a stale lease cannot write through it
    stale = store.acquire("t", holder="stale")
    clock.advance(11)
    store.acquire("t", holder="new")
    from relaygraph.checkpointers._fence import FENCE_KEY

    with pytest.raises(LeaseLostError):
        runner.graph.update_state({"configurable": {"thread_id": "t", FENCE_KEY: stale}},
                                  {"count": 99})
    assert runner.get_state(CFG).values["count"] == 10
    assert_linear(checkpoint_rows(backend.url, "t"))


async def test_aupdate_state_writes_under_the_lease(asaver, clock) -> None:
    store = LeaseStore.from_saver(asaver, ttl=10, clock=clock)
    await store.asetup()
    runner = leased(counter_graph(2).compile(checkpointer=asaver), store)
    await runner.ainvoke({"count": 0}, CFG)
    other = await store.aacquire("t", holder="other")
    with pytest.raises(ThreadBusyError):
        await runner.aupdate_state(CFG, {"count": 7})
    await store.arelease(other)
    await runner.aupdate_state(CFG, {"count": 7})
    assert (await runner.aget_state(CFG)).values["count"] == 7


class LogState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def test_cancel_inside_a_subgraph_resumes_to_the_uninterrupted_result(saver, clock) -> None:
    store = make_store(saver, clock)
    cancel: dict[str, Any] = {"on": False}

    def s1(state: LogState) -> LogState:
        if cancel["on"]:
            store.request_cancel(cancel["thread"])
        return {"log": ["s1"]}

    sub = StateGraph(LogState)
    sub.add_node("s1", s1)
    sub.add_node("s2", lambda s: {"log": ["s2"]})
    sub.add_edge(START, "s1")
    sub.add_edge("s1", "s2")
    sub.add_edge("s2", END)
    b = StateGraph(LogState)
    b.add_node("a", lambda s: {"log": ["a"]})
    b.add_node("sub", sub.compile())
    b.add_node("z", lambda s: {"log": ["z"]})
    b.add_edge(START, "a")
    b.add_edge("a", "sub")
    b.add_edge("sub", "z")
    b.add_edge("z", END)
    runner = leased(b.compile(checkpointer=saver), store)
    clean = runner.invoke({"log": []}, {"configurable": {"thread_id": "clean"}})
    cfg = {"configurable": {"thread_id": "cut"}}
    cancel.update(on=True, thread="cut")
    with pytest.raises(RunCancelledError):
        runner.invoke({"log": []}, cfg)
    cancel["on"] = False
    assert runner.get_state(cfg).next == ("sub",)
    assert runner.invoke(None, cfg) == clean


def test_the_heartbeat_keeps_a_long_run_leased(saver, clock) -> None:
    store = make_store(saver, clock)
    busy: list[ThreadBusyError] = []

    def hook(n: int) -> None:
        if n != 1:
            return
        clock.advance(8)  # most of the TTL passes inside the step ...
        deadline = time.monotonic() + 10
        while store.current("t").expires_at != clock() + 10:  # ... and a renewal comes
            assert time.monotonic() < deadline, "the heartbeat never renewed"
            time.sleep(0.005)
        clock.advance(8)  # 16 s after the acquisition, past the first TTL
        try:
            store.acquire("t", holder="intruder")
        except ThreadBusyError as exc:
            busy.append(exc)

    runner = leased(counter_graph(2, hook=hook).compile(checkpointer=saver), store,
                    holder="long-run", heartbeat=0.02)
    assert runner.invoke({"count": 0}, CFG)["count"] == 2
    assert [b.holder for b in busy] == ["long-run"]
