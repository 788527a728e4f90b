"""Database faults: a PostgreSQL restarted under a run, a SQLite file on a read-only file
system, a full disk.

PostgreSQL runs privately: the test initialises its own cluster in a temporary directory
on another port and restarts that one, never the shared server. The file-system faults
use small tmpfs mounts (root only: mounting needs it).
"""

from __future__ import annotations

import operator
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from glob import glob
from pathlib import Path
from typing import Annotated, Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from conftest import IN_CI
from relaygraph.checkpointers import (
    CheckpointerError,
    CheckpointSaveError,
    CorruptCheckpointError,
    DatabaseUnavailableError,
    RetryPolicy,
    SQLAlchemySaver,
)
from relaygraph.observe import thread_status

pytestmark = pytest.mark.reliability

STEPS = 8
DONE = [f"n{i}" for i in range(STEPS)]


def _missing(why: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {why}", pytrace=False)
    pytest.skip(why)


# -- a private PostgreSQL -----------------------------------------------------------------

class PrivatePostgres:
    """A throwaway cluster: initdb in a temporary directory, its own port, pg_ctl."""

    def __init__(self, root: Path) -> None:
        bins = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            _missing("PostgreSQL's server binaries (pg_ctl, initdb) are not installed")
        self.bin = Path(bins[-1]).parent
        self.data = root / "pgdata"
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True,
                       capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  f"-c fsync=off -c max_connections=40", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-m", "fast",
                  "-w", "restart", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                  f"-c fsync=off -c max_connections=40")

    def close(self) -> None:
        subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m",
                        "immediate", "-w", "stop"], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def private_pg() -> Iterator[PrivatePostgres]:
    # directly under /tmp: the server's user must reach it (pytest's tmp dirs are private)
    root = Path(tempfile.mkdtemp(prefix="relaygraph-pg-"))
    try:
        pg = PrivatePostgres(root)
        try:
            yield pg
        finally:
            pg.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


class LogState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


class Gate:
    """Holds node ``at`` until the test has done its damage; counts every node run.

    With ``paced``, each node first waits until the saver has tried (not necessarily
    managed) to save the step before it: nodes slower than a round trip to the database,
    as real agents are, without timing anything.
    """

    def __init__(self, at: str) -> None:
        self.at = at
        self.reached = threading.Event()
        self.go = threading.Event()
        self.ran: list[str] = []
        self.tried = 0
        self.cond = threading.Condition()

    def pace(self, saver) -> None:
        real = saver._run_once

        def run_once(op: Any, **kw: Any) -> Any:
            if getattr(op, "__name__", "") == "_op_put":
                with self.cond:
                    self.tried += 1
                    self.cond.notify_all()
            return real(op, **kw)

        saver._run_once = run_once

    def graph(self, saver, *, paced: bool = False):
        if paced:
            self.pace(saver)

        def node(name: str):
            def run(state: LogState) -> dict[str, Any]:
                if paced:  # the input's, __start__'s and the earlier nodes' saves
                    with self.cond:
                        self.cond.wait_for(lambda: self.tried >= DONE.index(name) + 2, 30)
                self.ran.append(name)  # stands for a side effect
                if name == self.at and not self.go.is_set():
                    self.reached.set()
                    assert self.go.wait(60)
                return {"log": [name]}
            return run

        b = StateGraph(LogState)
        for n in DONE:
            b.add_node(n, node(n))
        b.add_edge(START, DONE[0])
        for a, z in zip(DONE, DONE[1:], strict=False):
            b.add_edge(a, z)
        b.add_edge(DONE[-1], END)
        return b.compile(checkpointer=saver)


def _run_in_thread(graph, cfg) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        try:
            out.append(graph.invoke({"log": []}, cfg))
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            out.append(exc)

    th = threading.Thread(target=go)
    th.start()
    return th, out


def test_a_quick_restart_under_a_run_is_retried_and_the_run_completes(private_pg) -> None:
    with SQLAlchemySaver.from_conn_string(private_pg.url,
                                          retry=RetryPolicy(window=30)) as saver:
        saver.setup()
        gate = Gate("n3")
        graph = gate.graph(saver)
        cfg = {"configurable": {"thread_id": "quick"}}
        th, out = _run_in_thread(graph, cfg)
        assert gate.reached.wait(60)
        private_pg.restart()  # every connection of the saver's pools is now dead
        gate.go.set()
        th.join(120)
        assert out and out[0] == {"log": DONE}, out
        assert gate.ran == DONE  # every node once
        assert thread_status(graph.get_state(cfg)).status == "finished"


def test_an_outage_longer_than_the_retries_stops_the_run_and_it_resumes(private_pg) -> None:
    with SQLAlchemySaver.from_conn_string(private_pg.url,
                                          retry=RetryPolicy(window=1.0)) as saver:
        saver.setup()
        gate = Gate("n3")
        graph = gate.graph(saver, paced=True)
        cfg = {"configurable": {"thread_id": "outage"}}
        th, out = _run_in_thread(graph, cfg)
        assert gate.reached.wait(60)
        private_pg.stop()
        try:
            gate.go.set()
            th.join(120)
        finally:
            private_pg.start()
        [err] = out
        assert isinstance(err, CheckpointSaveError | DatabaseUnavailableError), err
        text = str(err)
        assert f"127.0.0.1:{private_pg.port}" in text or "127.0.0.1" in str(err.__cause__)
        # the run stopped at the next step boundary: n4, running while n3's save was
        # failing, finished; nothing after it ran (without the stop, n5 to n7 would)
        assert gate.ran == DONE[:5], gate.ran
        report = thread_status(graph.get_state(cfg))
        assert report.status == "interrupted" and report.resumable, report
        graph.invoke(None, cfg)  # the database is back: one call resumes it
        assert graph.get_state(cfg).values == {"log": DONE}  # nothing lost or doubled
        assert thread_status(graph.get_state(cfg)).status == "finished"


# -- SQLite: a read-only file system, a full disk -------------------------------------

@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    if os.geteuid() != 0:
        _missing("mounting a small tmpfs needs root")
    where = tmp_path / "mnt"
    where.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        _missing(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _remount(where: Path, opts: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{opts}", str(where)], check=True)


READER = """
import json, sys
from relaygraph.checkpointers import SQLAlchemySaver, DatabaseUnavailableError
out = {}
with SQLAlchemySaver.from_conn_string(sys.argv[1]) as saver:
    saver.setup()
    cfg = {"configurable": {"thread_id": "t"}}
    tup = saver.get_tuple(cfg)
    out["log"] = tup.checkpoint["channel_values"]["log"]
    out["checkpoints"] = len(list(saver.list(cfg)))
    try:
        saver.put_writes(tup.config, [("log", ["x"])], "task-1")
        out["write"] = "stored"
    except DatabaseUnavailableError as exc:
        out["write"] = str(exc)
print(json.dumps(out))
"""


def test_a_read_only_sqlite_file_can_be_read_by_a_new_process(small_fs) -> None:
    import json
    import sys

    url = f"sqlite:///{small_fs}/ro.db"
    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        gate = Gate("none")
        gate.graph(saver).invoke({"log": []}, {"configurable": {"thread_id": "t"}})
    assert not Path(f"{small_fs}/ro.db-shm").exists()  # closed cleanly: WAL files gone
    _remount(small_fs, "ro")
    proc = subprocess.run([sys.executable, "-c", READER, url], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["log"] == DONE and got["checkpoints"] == STEPS + 2
    assert "read-only" in got["write"] and "can be read, not written" in got["write"]


class ChatState(TypedDict, total=False):
    messages: Annotated[list[Any], operator.add]


def _filler(saver, sizes: list[int]):
    def talk(state: ChatState) -> dict[str, Any]:
        n = len(state.get("messages", []))
        # incompressible text: the disk fills within a few steps
        return {"messages": [AIMessage(os.urandom(24_000).hex(), id=f"m{n}")]}

    b = StateGraph(ChatState)
    b.add_node("talk", talk)
    b.add_edge(START, "talk")
    b.add_conditional_edges("talk", lambda s: END if len(s["messages"]) > 40 else "talk")
    return b.compile(checkpointer=saver)


def test_a_full_disk_is_a_clear_error_and_leaves_no_half_checkpoint(small_fs) -> None:
    url = f"sqlite:///{small_fs}/full.db"
    cfg = {"configurable": {"thread_id": "full"}}
    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        graph = _filler(saver, [])
        with pytest.raises(CheckpointerError) as err:
            graph.invoke({"messages": [HumanMessage("go", id="h")]},
                         {**cfg, "recursion_limit": 100}, durability="sync")
        text = str(err.value) + str(err.value.__cause__ or "")
        assert "disk" in text and "full" in text, text
    # a new process reads every checkpoint that was stored, each complete
    with SQLAlchemySaver.from_conn_string(url) as saver:
        history = list(saver.list(cfg))
        assert history, "nothing was stored before the disk filled"
        for tup in history:
            try:
                again = saver.get_tuple(tup.config)
            except CorruptCheckpointError as exc:  # pragma: no cover - the failure shown
                pytest.fail(f"a half-written checkpoint reads back: {exc}")
            msgs = again.checkpoint["channel_values"].get("messages", [])
            step = again.metadata["step"]
            assert len(msgs) == step + 1, (step, len(msgs))
        # room again: the thread resumes from its last stored checkpoint
        _remount(small_fs, "size=8m")
        graph = _filler(saver, [])
        graph.invoke(None, {**cfg, "recursion_limit": 100})
        final = graph.get_state(cfg).values["messages"]
        assert [m.id for m in final] == ["h"] + [f"m{i}" for i in range(1, 41)]


# -- connections: 8 workers x 5 concurrent runs on one default PostgreSQL ---------------

WORKER = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[2])
from langchain_core.messages import HumanMessage
from relaygraph.checkpointers import AsyncSQLAlchemySaver
from checkpointers._graphs import chat_graph

async def main(url, worker):
    ok, errors = 0, []
    async with AsyncSQLAlchemySaver.from_conn_string(url) as saver:  # the defaults
        graph = chat_graph(6).compile(checkpointer=saver)

        async def one(i):
            cfg = {"configurable": {"thread_id": f"w{worker}-{i}"}}
            out = await graph.ainvoke({"messages": [HumanMessage("hi", id="h")],
                                       "count": 0}, cfg)
            assert len(out["messages"]) == 7
            return (await graph.aget_state(cfg)).next

        for rnd in range(3):
            got = await asyncio.gather(*(one(rnd * 5 + i) for i in range(5)),
                                       return_exceptions=True)
            for g in got:
                if isinstance(g, BaseException):
                    errors.append(f"{type(g).__name__}: {g}"[:300])
                else:
                    ok += 1
    print(json.dumps({"ok": ok, "errors": errors}))

asyncio.run(main(sys.argv[1], sys.argv[3]))
"""


@pytest.mark.postgres
def test_eight_workers_with_five_runs_each_fit_a_default_postgres(pg_backend) -> None:
    import json
    import sys
    import time

    from relaygraph.checkpointers._urls import DEFAULT_MAX_CONNECTIONS

    with SQLAlchemySaver.from_conn_string(pg_backend.url) as saver:
        saver.setup()
    admin = sa.create_engine(pg_backend.url, poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        limit = int(c.execute(sa.text("SHOW max_connections")).scalar_one())
    assert 8 * DEFAULT_MAX_CONNECTIONS <= limit - 3 - 10  # the reserved ones, and others'
    peak = [0]
    stop = threading.Event()

    def watch() -> None:  # how many connections the workers hold, at most
        with admin.connect() as c:
            while not stop.is_set():
                n = c.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE "
                                      "datname = current_database() AND pid <> "
                                      "pg_backend_pid()")).scalar_one()
                c.rollback()  # pg_stat_activity is read once per transaction
                peak[0] = max(peak[0], int(n))
                stop.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    tests_dir = str(Path(__file__).parent.parent)
    start = time.monotonic()
    try:
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, pg_backend.url, tests_dir,
                                   str(w)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for w in range(8)]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        stop.set()
        watcher.join()
        admin.dispose()
    took = time.monotonic() - start
    errors = [e for r in results for e in r["errors"]]
    assert not errors, errors[:5]
    assert sum(r["ok"] for r in results) == 8 * 15
    assert 0 < peak[0] <= 8 * DEFAULT_MAX_CONNECTIONS, peak[0]
    assert took < 60, took
    print(f"8 workers x 5 concurrent runs x 3 rounds: {took:.1f} s, "
          f"peak {peak[0]} connections")
