"""The sync saver from a PostgreSQL URL keeps its pools' checkouts between operations."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from langchain_core.messages import HumanMessage

from relaygraph.checkpointers import SQLAlchemySaver, _sync
from relaygraph.checkpointers._direct import DirectWriter
from relaygraph.checkpointers._kept import CallerCheckouts, KeptCheckouts

from ._graphs import chat_graph
from ._threads import at_once
from .test_held import _kill_other_connections
from .test_held_writer import _until


@pytest.fixture
def saver(pg_backend) -> Iterator[SQLAlchemySaver]:
    with SQLAlchemySaver.from_conn_string(pg_backend.url) as s:
        s.setup()
        yield s


@pytest.fixture
def kept(pg_backend) -> Iterator[KeptCheckouts]:
    """Kept checkouts of a pool of two, as ``from_conn_string`` builds its pools."""
    engine = sa.create_engine(pg_backend.url, isolation_level="AUTOCOMMIT",
                              pool_reset_on_return=None, pool_size=2, max_overflow=0,
                              pool_timeout=5)
    k = KeptCheckouts(engine, DirectWriter(engine.dialect))
    yield k
    k.close()
    engine.dispose()


def _checkouts(engine: sa.Engine) -> list[int]:
    seen: list[int] = []
    sa.event.listen(engine, "checkout", lambda *a: seen.append(1))
    return seen


def test_runs_check_out_no_more_than_the_kept_connections(saver) -> None:
    assert saver._kept is not None and saver._kept_lane is not None
    saver.get_tuple({"configurable": {"thread_id": "warm"}})  # (the schema check)
    main, lane = _checkouts(saver._kept.engine), _checkouts(saver._kept_lane.engine)
    ops: list[int] = []
    real = saver._run_once

    def counted(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        ops.append(1)
        return real(*a, **kw)

    saver._run_once = counted  # type: ignore[method-assign]
    g = chat_graph(6).compile(checkpointer=saver)
    for i in range(5):
        cfg = {"configurable": {"thread_id": f"t{i}"}}
        out = g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
        assert g.get_state(cfg).values["messages"] == out["messages"]
    # five threads of eight checkpoints: dozens of operations, a few at a time (a put
    # runs beside the next step's task writes, and a burst that takes every connection
    # of a pool gives them back to it), on a handful of checkouts
    assert len(ops) >= 80
    assert len(main) + len(lane) <= len(ops) // 5, (len(main), len(lane), len(ops))
    for k in (saver._kept, saver._kept_lane):
        assert k.engine.pool.checkedout() == len(k._idle) >= 1  # type: ignore[attr-defined]
        k.close()
        assert k.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_a_statement_the_cached_path_cannot_run_gives_its_checkout_back(saver) -> None:
    g = chat_graph(3).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "l"}}
    g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    assert saver._kept is not None
    idle = list(saver._kept._idle)
    assert len(list(saver.list(cfg))) == 5  # the input's and four steps'
    assert len(saver._kept._idle) <= len(idle) + 1
    assert saver._kept.engine.pool.checkedout() == len(saver._kept._idle)  # type: ignore[attr-defined]


def test_nothing_stays_checked_out_after_the_saver(pg_backend) -> None:
    with SQLAlchemySaver.from_conn_string(pg_backend.url) as s:
        s.setup()
        s.get_tuple({"configurable": {"thread_id": "x"}})
        kept = s._kept
        assert kept is not None and kept._idle
    assert kept._idle == []


def test_a_dropped_connection_is_replaced_and_the_operation_retried(saver, pg_backend) -> None:
    g = chat_graph(4).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "drop"}}
    g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
    assert saver._kept is not None and saver._kept._idle
    dead = saver._kept._idle[0]
    assert _kill_other_connections(pg_backend.url) >= 1  # the kept connections are dead
    g.invoke({"messages": [HumanMessage("again", id="h2")], "count": 0}, cfg)
    ids = [m.id for m in g.get_state(cfg).values["messages"]]
    assert ids[0] == "h" and "h2" in ids
    assert dead not in saver._kept._idle


def test_concurrent_runs_never_wait_on_a_kept_connection(pg_backend) -> None:
    # a reads-and-puts pool of 4: twelve runs at once keep it busy
    with SQLAlchemySaver.from_conn_string(pg_backend.url, max_connections=6) as s:
        s.setup()
        assert s._kept is not None and s._kept._size == 4
        s._kept.engine.pool._timeout = 10  # type: ignore[attr-defined]
        g = chat_graph(5).compile(checkpointer=s)

        def run(i: int) -> None:
            for j in range(3):
                cfg = {"configurable": {"thread_id": f"c{i}-{j}"}}
                out = g.invoke({"messages": [HumanMessage("hi", id="h")], "count": 0}, cfg)
                assert g.get_state(cfg).values["messages"] == out["messages"]

        assert at_once(run, 12) == []
        assert len(s._kept._idle) <= 3
        assert s._kept.engine.pool.checkedout() == len(s._kept._idle)  # type: ignore[attr-defined]


def test_kept_only_while_the_pool_has_a_connection_to_hand_out(kept) -> None:
    pool: Any = kept.engine.pool
    a, b = kept.acquire(), kept.acquire()
    assert pool.checkedout() == 2
    kept.release(a)  # the pool is empty: someone may be waiting on it
    assert kept._idle == [] and pool.checkedout() == 1
    kept.release(b)
    assert kept._idle == [b] and pool.checkedout() == 1
    assert kept.acquire() is b  # lent again, no checkout
    kept.release(b)
    c = kept.acquire()
    d = kept.acquire()  # from the pool
    assert c is b and d is not b
    kept.release(c)
    kept.release(d)
    assert len(kept._idle) == 1  # at most the pool's size less one


def test_a_connection_left_in_a_transaction_is_rolled_back_and_not_kept(kept) -> None:
    conn = kept.acquire()
    raw: Any = conn.connection.dbapi_connection
    raw.execute("BEGIN")
    raw.execute("CREATE TEMP TABLE t_kept (x int)")
    kept.release(conn)
    assert kept._idle == []
    assert int(raw.info.transaction_status) == 0  # rolled back before the pool took it
    again = kept.acquire()
    with pytest.raises(sa.exc.ProgrammingError):
        again.execute(sa.text("SELECT * FROM t_kept"))
    kept.release(again)
    assert kept._idle == []  # a Connection was built over it: back to the pool


def test_a_connection_past_the_pools_recycle_age_is_not_lent(kept) -> None:
    conn = kept.acquire()
    kept.release(conn)
    assert kept._idle == [conn]
    kept._recycle = 0
    fresh = kept.acquire()
    assert fresh is not conn and kept._idle == []
    kept.release(fresh)


def test_a_forked_child_forgets_the_parents_checkouts(kept) -> None:
    conn = kept.acquire()
    kept.release(conn)
    kept._pid = -1  # as in a child after fork: the parent's connection is not used
    other = kept.acquire()
    assert other is not conn and kept._idle == []
    conn.close()  # (the parent's, given back by its owner)
    kept.release(other)
    assert kept._idle == [other]


def test_only_pools_without_overflow_of_two_or_more_on_psycopg(pg_backend) -> None:
    for kw, ok in (({"pool_size": 2, "max_overflow": 0}, True),
                   ({"pool_size": 1, "max_overflow": 0}, False),
                   ({"pool_size": 4, "max_overflow": 10}, False),
                   ({"poolclass": sa.pool.NullPool}, False)):
        engine = sa.create_engine(pg_backend.url, **kw)
        assert KeptCheckouts.suits(engine) is ok, kw
        engine.dispose()


def test_a_callers_engine_is_kept_from_only_for_a_moment(pg_backend, monkeypatch) -> None:
    monkeypatch.setattr(_sync, "HOLD_IDLE", 0.2)
    engine = sa.create_engine(pg_backend.url, pool_size=3, max_overflow=0)
    try:
        s = SQLAlchemySaver(engine)
        s.setup()
        # not the saver's own pools' rules (test_caller_kept.py has the caller's)
        assert isinstance(s._kept, CallerCheckouts)
        assert isinstance(s._kept_lane, CallerCheckouts)
        s.get_tuple({"configurable": {"thread_id": "x"}})
        assert engine.pool.checkedout() <= 1  # type: ignore[attr-defined]
        assert _until(lambda: engine.pool.checkedout() == 0)  # type: ignore[attr-defined]
    finally:
        engine.dispose()
