"""Concurrency: several processes drive the same threads through ``leased()``.

- Two processes on one thread at once: one runs, the other is refused (``reject``) or
  waits (``enqueue``); the thread's checkpoints stay one chain. The control: without the
  lease, the same two processes fork the chain, and the check says so.
- 8 processes x 25 threads on PostgreSQL: no deadlock, no lost checkpoint.
- A holder SIGSTOPped past its TTL, taken over, then SIGCONTed cannot write.

The workers are this file run as a script (see ``main`` at the bottom). Processes meet at
points they print and the test answers on their stdin, so that overlaps are certain rather
than likely, with no sleeps standing in for them.
"""

from __future__ import annotations

import operator
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from relaygraph.checkpointers import SQLAlchemySaver
from relaygraph.checkpointers import _schema as S
from relaygraph.durable import LeaseLostError, LeaseStore, ThreadBusyError, leased

pytestmark = pytest.mark.reliability

HERE = Path(__file__).resolve()


# -- the graph and the history checks ------------------------------------------------------

class CountState(TypedDict, total=False):
    count: int
    log: Annotated[list[str], operator.add]


def counter_graph(steps: int, hook: Any = None) -> StateGraph:
    def step(state: CountState) -> dict[str, Any]:
        n = state.get("count", 0) + 1
        if hook is not None:
            hook(n)
        return {"count": n, "log": [f"step:{n}"]}

    b = StateGraph(CountState)
    b.add_node("step", step)
    b.add_edge(START, "step")
    b.add_conditional_edges("step", lambda s: END if s.get("count", 0) >= steps else "step")
    return b


def chain(url: str, thread_id: str) -> list[tuple[str, str | None]]:
    c = S.checkpoints
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            rows = conn.execute(sa.select(c.c.checkpoint_id, c.c.parent_checkpoint_id).where(
                c.c.thread_id == thread_id, c.c.checkpoint_ns == "")).all()
    finally:
        eng.dispose()
    return [(r[0], r[1]) for r in rows]


def forks(rows: list[tuple[str, str | None]]) -> list[str]:
    """What makes the checkpoints more than one chain: extra roots, parents with two
    children, parents that are not stored."""
    problems = []
    ids = {cid for cid, _ in rows}
    roots = [cid for cid, p in rows if p is None]
    if len(roots) != 1:
        problems.append(f"{len(roots)} roots")
    children: dict[str, int] = {}
    for _, p in rows:
        if p is not None:
            children[p] = children.get(p, 0) + 1
            if p not in ids:
                problems.append(f"missing parent {p}")
    problems += [f"{p} has {n} children" for p, n in children.items() if n > 1]
    return problems


# -- driving worker processes ----------------------------------------------------------------

class Worker:
    """A worker process; its stdout lines arrive on a queue."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.err_reader = threading.Thread(target=self._read_err, daemon=True)
        self.reader.start()
        self.err_reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err.extend(self.proc.stderr)

    def expect(self, timeout: float = 60) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker said nothing for {timeout} s") from None
        if line is None:
            self.proc.wait(10)
            raise AssertionError(f"worker exited ({self.proc.returncode}): "
                                 + "".join(self.err)[-3000:])
        return line

    def send(self, line: str = "go") -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.reader.join(10)
        self.err_reader.join(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None and not f.closed:
                f.close()


def _setup(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        if engine.dialect.name == "sqlite":
            with engine.connect() as conn:  # as the savers' URLs do; it sticks to the file
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        saver = SQLAlchemySaver(engine)
        saver.setup()
        LeaseStore.from_saver(saver).setup()
    finally:
        engine.dispose()


def _pair(url: str, strategy: str) -> tuple[Worker, Worker]:
    """Two workers on thread "t"; the one that gets into step 1 first is returned first."""
    _setup(url)
    a = Worker("pair", url, "t", strategy, "A")
    b = Worker("pair", url, "t", strategy, "B")
    assert a.expect() == "ready" and b.expect() == "ready"
    a.send()
    b.send()
    return a, b


def _first_in_step(a: Worker, b: Worker) -> tuple[Worker, Worker, str]:
    """Wait until one worker is inside step 1; returns it, the other, and the other's
    first line when it had one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for w, other in ((a, b), (b, a)):
            try:
                line = w.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if line == "in-step 1":
                return w, other, ""
            if line is None:
                raise AssertionError("worker exited: " + "".join(w.err)[-3000:])
            # this one spoke first (busy / refused): the other is the one in step 1
            first = other.expect()
            assert first == "in-step 1", first
            return other, w, line
    raise AssertionError("no worker got into step 1")


def test_two_processes_one_thread_reject(backend) -> None:
    a, b = _pair(backend.url, "reject")
    try:
        runner, other, said = _first_in_step(a, b)
        assert (said or other.expect()) == "refused"  # one attempt, refused at once
        holder = runner.proc.args[-1]  # type: ignore[index]
        assert other.expect() == f"busy {holder}"  # while the runner holds the lease
        assert other.finish() == 0
        runner.send()  # let it finish its steps
        for _ in range(2):
            assert runner.expect() in ("in-step 2", "in-step 3")
            runner.send()
        assert runner.expect() == "done 3"
        assert runner.finish() == 0
    finally:
        a.kill()
        b.kill()
    assert forks(chain(backend.url, "t")) == []


def test_two_processes_one_thread_enqueue(backend) -> None:
    a, b = _pair(backend.url, "enqueue")
    try:
        runner, waiter, said = _first_in_step(a, b)
        assert (said or waiter.expect()) == "refused"  # it tried, and now waits
        for n in (1, 2, 3):  # the runner's steps
            runner.send()
            if n < 3:
                assert runner.expect() == f"in-step {n + 1}"
        assert runner.expect() == "done 3"
        assert runner.finish() == 0
        for n in (1, 2, 3):  # then the waiter's run, from where the runner left off
            assert waiter.expect() == f"in-step {n}"
            waiter.send()
        assert waiter.expect() == "done 3"
        assert waiter.finish() == 0
    finally:
        a.kill()
        b.kill()
    rows = chain(backend.url, "t")
    assert forks(rows) == []
    engine = sa.create_engine(backend.url)
    try:
        state = counter_graph(3).compile(checkpointer=SQLAlchemySaver(engine)).get_state(
            {"configurable": {"thread_id": "t"}})
        assert state.values["log"] == ["step:1", "step:2", "step:3"] * 2
    finally:
        engine.dispose()


def test_control_two_unleased_processes_fork_the_thread(sqlite_backend) -> None:
    """Without the lease the same two processes fork the chain, and ``forks`` sees it:
    the checks above can fail."""
    url = sqlite_backend.url
    a, b = _pair(url, "unleased")
    try:
        assert a.expect() == "in-step 1" and b.expect() == "in-step 1"  # both at once
        for n in (1, 2, 3):
            a.send()
            b.send()
            if n < 3:
                assert a.expect() == f"in-step {n + 1}" and b.expect() == f"in-step {n + 1}"
        assert a.expect() == "done 3" and b.expect() == "done 3"
    finally:
        a.kill()
        b.kill()
    assert forks(chain(url, "t")) != []


def test_eight_processes_twenty_five_threads(pg_backend) -> None:
    url = pg_backend.url
    _setup(url)
    procs, threads = 8, 25
    start = time.monotonic()
    workers = [Worker("swarm", url, str(i), str(threads)) for i in range(procs)]
    try:
        for w in workers:
            assert w.expect(120) == "ready"
        for w in workers:
            w.send()
        reports = [w.expect(120) for w in workers]
        assert [w.finish() for w in workers] == [0] * procs
    finally:
        for w in workers:
            w.kill()
    assert all(r.startswith("ok ") for r in reports), reports
    waits = sum(int(r.split()[2]) for r in reports)
    engine = sa.create_engine(url)
    try:
        graph = counter_graph(3).compile(checkpointer=SQLAlchemySaver(engine))
        for t in range(threads):
            tid = f"thread-{t}"
            assert forks(chain(url, tid)) == [], tid
            log = graph.get_state({"configurable": {"thread_id": tid}}).values["log"]
            # every run of every process is there, whole: nothing lost, nothing doubled
            assert log == ["step:1", "step:2", "step:3"] * procs, (tid, log)
    finally:
        engine.dispose()
    elapsed = time.monotonic() - start
    print(f"\n8x25 on PostgreSQL: {procs * threads} runs in {elapsed:.1f} s, "
          f"{waits} waits for a busy thread")
    assert waits > 0  # the processes did contend for threads


def test_a_holder_stopped_past_its_ttl_cannot_write(backend) -> None:
    url = backend.url
    _setup(url)
    ttl = 2.0
    w = Worker("stop", url, "t", str(ttl))
    engine = sa.create_engine(url)
    try:
        store = LeaseStore(engine, ttl=ttl)
        assert w.expect() == "in-step 2"
        held = store.current("t")
        assert held is not None and held.holder == "stopped-worker"
        try:
            new = _take_over(w, store)
            assert new.token == held.token + 1
            # what the stopped holder wrote before the takeover is all it ever writes
            before = chain(url, "t")
        finally:
            os.kill(w.proc.pid, signal.SIGCONT)
        w.send()  # step 2 finishes and tries to write
        assert w.expect() == "lost"
        assert w.finish() == 0
        after = chain(url, "t")
        assert sorted(after) == sorted(before)
        assert forks(after) == []
        assert store.current("t") == new  # the stopped holder did not release it
        # the new holder resumes the thread from what the stopped one had checkpointed
        saver = SQLAlchemySaver(engine)
        graph = counter_graph(4).compile(checkpointer=saver)
        assert graph.get_state({"configurable": {"thread_id": "t"}}).values["count"] == 1
        store.release(new)
        assert leased(graph, store).invoke(None, {"configurable": {"thread_id": "t"}})[
            "count"] == 4
        assert forks(chain(url, "t")) == []
    finally:
        w.kill()
        engine.dispose()


def _take_over(w: Worker, store: LeaseStore) -> Any:
    """SIGSTOP the holder, wait for its lease to expire, and take it over.

    A holder stopped inside a write transaction (a renewal by its heartbeat) keeps its
    locks, and the takeover waits on them (on SQLite it gives up with "database is
    locked"): then the holder runs on a moment and is stopped again.
    """
    for _ in range(5):
        os.kill(w.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while store.current("t") is not None:  # its heartbeat is stopped too
            assert time.monotonic() < deadline, "the stopped holder's lease never expired"
            time.sleep(0.05)
        got: list[Any] = []

        def take(got: list[Any]) -> None:
            try:
                got.append(store.acquire("t", holder="new-holder"))
            # SQLite's busy timeout; or the holder, let run on, renewed first
            except (sa.exc.OperationalError, ThreadBusyError) as exc:
                got.append(exc)

        taker = threading.Thread(target=take, args=(got,))
        taker.start()
        taker.join(3)
        if not taker.is_alive() and got and not isinstance(got[0], Exception):
            return got[0]  # the holder stays stopped
        os.kill(w.proc.pid, signal.SIGCONT)  # blocked on the stopped holder's locks
        taker.join(30)
        if got and not isinstance(got[0], Exception):
            return got[0]
    raise AssertionError("could not take the lease over from the stopped holder")


# -- the workers -------------------------------------------------------------------------------

def _line() -> None:
    if not sys.stdin.readline():
        raise SystemExit("stdin closed")


def _pair_worker(url: str, thread_id: str, strategy: str, holder: str) -> None:
    engine = sa.create_engine(url)
    saver = SQLAlchemySaver(engine)
    refused: list[int] = []

    class Store(LeaseStore):
        def try_acquire(self, thread_id: str, *, holder: str | None = None) -> Any:
            try:
                return super().try_acquire(thread_id, holder=holder)
            except ThreadBusyError:
                if not refused:
                    print("refused", flush=True)
                refused.append(1)
                raise

    def hook(n: int) -> None:
        print(f"in-step {n}", flush=True)
        _line()

    graph = counter_graph(3, hook=hook).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": thread_id}}
    print("ready", flush=True)
    _line()
    try:
        if strategy == "unleased":
            out = graph.invoke({"count": 0}, cfg)
        else:
            store = Store.from_saver(saver, ttl=30)
            runner = leased(graph, store, strategy=strategy,  # type: ignore[arg-type]
                            wait=120, holder=holder)
            out = runner.invoke({"count": 0}, cfg)
        print(f"done {out['count']}", flush=True)
    except ThreadBusyError as exc:
        print(f"busy {exc.holder}", flush=True)
    engine.dispose()


def _swarm_worker(url: str, index: int, threads: int) -> None:
    engine = sa.create_engine(url, pool_size=2)
    saver = SQLAlchemySaver(engine)
    waits: list[int] = []

    class Store(LeaseStore):
        def try_acquire(self, thread_id: str, *, holder: str | None = None) -> Any:
            try:
                return super().try_acquire(thread_id, holder=holder)
            except ThreadBusyError:
                waits.append(1)
                raise

    runner = leased(counter_graph(3).compile(checkpointer=saver),
                    Store.from_saver(saver, ttl=30), strategy="enqueue", wait=120)
    order = list(range(threads))
    random.Random(index).shuffle(order)
    print("ready", flush=True)
    _line()
    for t in order:
        out = runner.invoke({"count": 0}, {"configurable": {"thread_id": f"thread-{t}"}})
        assert out["count"] == 3
    print(f"ok {threads} {len(waits)}", flush=True)
    engine.dispose()


def _stop_worker(url: str, thread_id: str, ttl: float) -> None:
    engine = sa.create_engine(url)
    saver = SQLAlchemySaver(engine)

    def hook(n: int) -> None:
        if n == 2:
            print("in-step 2", flush=True)
            _line()  # the test SIGSTOPs us here, past the TTL, then SIGCONTs

    runner = leased(counter_graph(4, hook=hook).compile(checkpointer=saver),
                    LeaseStore.from_saver(saver, ttl=ttl), holder="stopped-worker",
                    heartbeat=ttl / 4)
    try:
        # each step's checkpoint is committed before the next step starts, so the test
        # knows what the holder had written when it stopped
        runner.invoke({"count": 0}, {"configurable": {"thread_id": thread_id}},
                      durability="sync")
        print("done", flush=True)
    except LeaseLostError:
        print("lost", flush=True)
    engine.dispose()


def main(argv: list[str]) -> None:
    mode, url, *rest = argv
    if mode == "pair":
        _pair_worker(url, rest[0], rest[1], rest[2])
    elif mode == "swarm":
        _swarm_worker(url, int(rest[0]), int(rest[1]))
    elif mode == "stop":
        _stop_worker(url, rest[0], float(rest[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
