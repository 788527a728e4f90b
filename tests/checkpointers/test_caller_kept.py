"""Connections of a caller's PostgreSQL pool (transactional or autocommitted), kept for a
moment between the sync saver's operations (``CallerCheckouts``).

Kept in autocommit and outside any transaction, at most one for puts and reads and one
for task writes, only while the pool has more to lend, and given back as they were lent
(autocommit off): after a pause, when the saver goes away, after a failure, and at once
when the application disposes of its engine.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from relaygraph.checkpointers import SQLAlchemySaver, _sync
from relaygraph.checkpointers._kept import CallerCheckouts

from ._graphs import chat_graph
from .test_held import _kill_other_connections
from .test_held_writer import _count_checkouts, _run, _until


def _sessions(url: str) -> int:
    """Server sessions open on ``url``'s database, other than the one asking."""
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        n = c.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
    admin.dispose()
    return int(n or 0)


@pytest.fixture
def quick_idle(monkeypatch):
    monkeypatch.setattr(_sync, "HOLD_IDLE", 0.2)


@pytest.fixture
def engine(pg_backend) -> Iterator[sa.Engine]:
    """What an application that owns an engine passes: transactional, default pool."""
    e = sa.create_engine(pg_backend.url)
    yield e
    e.dispose()


@pytest.fixture(params=["transactional", "autocommit"])
def any_engine(request, pg_backend) -> Iterator[sa.Engine]:
    """A caller's engine, transactional (the default) or autocommitted."""
    kw = {"isolation_level": "AUTOCOMMIT"} if request.param == "autocommit" else {}
    e = sa.create_engine(pg_backend.url, **kw)
    yield e
    e.dispose()


def test_operations_reuse_a_kept_connection_per_kind(any_engine) -> None:
    engine = any_engine
    saver = SQLAlchemySaver(engine)
    saver.setup()
    assert isinstance(saver._kept, CallerCheckouts)
    assert isinstance(saver._kept_lane, CallerCheckouts)
    _run(saver, "warm")
    seen = _count_checkouts(engine)
    ops: list[int] = []
    real = saver._run_once

    def counted(*a: Any, **kw: Any) -> Any:
        ops.append(1)
        return real(*a, **kw)

    saver._run_once = counted  # type: ignore[method-assign]
    outs = [_run(saver, f"t{i}", steps=4) for i in range(4)]
    # tens of operations, a few checkouts (when a put and a read or two writes overlap)
    assert len(ops) >= 30
    assert len(seen) <= len(ops) // 4
    assert engine.pool.checkedout() <= 2  # type: ignore[attr-defined]
    for kept in (saver._kept, saver._kept_lane):
        conn = kept._conn  # type: ignore[union-attr]
        if conn is not None:
            raw: Any = conn.connection.dbapi_connection
            assert raw.autocommit and raw.info.transaction_status == 0  # idle: no locks
    # the state reads back whole
    snap = chat_graph(4).compile(checkpointer=saver).get_state(
        {"configurable": {"thread_id": "t3"}})
    assert snap.values["count"] == outs[3]["count"]
    assert [m.id for m in snap.values["messages"]] == [m.id for m in outs[3]["messages"]]


def test_kept_connections_go_back_as_lent_after_a_pause(engine, quick_idle) -> None:
    # (transactional: an autocommitted engine lends autocommitted connections anyway)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    _run(saver, "a")
    assert engine.pool.checkedout() >= 1  # type: ignore[attr-defined]
    assert _until(lambda: engine.pool.checkedout() == 0)  # type: ignore[attr-defined]
    assert saver._kept._conn is None and saver._kept_lane._conn is None  # type: ignore[union-attr]
    # what the application checks out is transactional again
    with engine.connect() as c:
        assert c.connection.dbapi_connection.autocommit is False  # type: ignore[union-attr]
        c.execute(sa.text("CREATE TABLE app_own (x int)"))
        c.rollback()
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT to_regclass('app_own')")).scalar() is None
    _run(saver, "b")  # and the next operation keeps one again
    assert engine.pool.checkedout() >= 1  # type: ignore[attr-defined]


def test_disposing_the_engine_ends_the_kept_sessions(pg_backend) -> None:
    engine = sa.create_engine(pg_backend.url)
    saver = SQLAlchemySaver(engine)
    saver.setup()
    _run(saver, "a")
    assert engine.pool.checkedout() >= 1  # type: ignore[attr-defined]
    # the saver listens on the pool, not the engine: an engine listener would switch on
    # SQLAlchemy's event dispatch for every statement the application runs
    assert engine._has_events is False
    engine.dispose()
    # nothing of the saver's is left on the server: a DROP DATABASE would work now
    assert _sessions(pg_backend.url) == 0
    # and the saver goes on with the engine's new pool
    _run(saver, "b")
    assert saver.get_tuple({"configurable": {"thread_id": "a"}}) is not None
    engine.dispose()
    assert _sessions(pg_backend.url) == 0


def test_a_collected_saver_gives_its_connections_back(engine) -> None:
    saver = SQLAlchemySaver(engine)
    saver.setup()
    _run(saver, "a")
    assert engine.pool.checkedout() >= 1  # type: ignore[attr-defined]
    del saver
    gc.collect()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # given back, not collected (which SQLAlchemy would report; warnings fail the suite)
    assert engine.pool.checkedin() >= 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("kwargs", [{"pool_pre_ping": True}, {"pool_size": 1},
                                    {"poolclass": sa.pool.NullPool}])
def test_pools_that_cannot_spare_one_or_act_on_each_checkout_keep_nothing(
        pg_backend, kwargs: dict[str, Any]) -> None:
    engine = sa.create_engine(pg_backend.url, **kwargs)
    try:
        saver = SQLAlchemySaver(engine)
        saver.setup()
        _run(saver, "a")
        if "pool_pre_ping" in kwargs:
            assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        else:  # no pool to keep from
            assert saver._kept is None and saver._kept_lane is None
        assert saver.get_tuple({"configurable": {"thread_id": "a"}}) is not None
    finally:
        engine.dispose()


def test_a_checkout_listener_keeps_nothing(engine) -> None:
    seen: list[object] = []
    sa.event.listen(engine, "checkout", lambda *a: seen.append(1))
    saver = SQLAlchemySaver(engine)
    saver.setup()
    _run(saver, "a")
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert len(seen) >= 10  # every operation went through the application's listener


def test_a_connection_killed_while_kept_is_replaced(engine, pg_backend) -> None:
    saver = SQLAlchemySaver(engine)
    saver.setup()
    _run(saver, "a")
    assert _kill_other_connections(pg_backend.url) >= 1
    # the next operations find the kept connections dead, are retried on fresh ones, and
    # nothing dead is kept
    _run(saver, "b")
    assert saver.get_tuple({"configurable": {"thread_id": "b"}}) is not None
    for kept in (saver._kept, saver._kept_lane):
        conn = kept._conn  # type: ignore[union-attr]
        if conn is not None:
            assert conn.connection.is_valid
            assert conn.connection.dbapi_connection.pgconn.status == 0  # type: ignore[union-attr]


def test_from_a_url_the_savers_own_pools_are_kept_instead(pg_backend) -> None:
    with SQLAlchemySaver.from_conn_string(pg_backend.url) as saver:
        assert not isinstance(saver._kept, CallerCheckouts)
        assert not isinstance(saver._kept_lane, CallerCheckouts)


def test_a_connection_kept_across_a_dispose_with_nothing_in_the_pool_is_closed(
        pg_backend) -> None:
    engine = sa.create_engine(pg_backend.url)
    try:
        saver = SQLAlchemySaver(engine)
        saver.setup()
        engine.dispose()  # setup's connections are closed: the pool holds none
        cfg = {"configurable": {"thread_id": "t"}}
        saver.get_tuple(cfg)  # one operation: its connection is kept, none is pooled
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
        engine.dispose()  # nothing in the pool to close: no event reaches the saver
        # the next operation finds the kept connection of the old pool: its session is
        # ended, not handed back open to a pool nothing will close again
        saver.get_tuple(cfg)
        assert _sessions(pg_backend.url) == 1  # the new pool's, now kept
        engine.dispose()
        del saver
        gc.collect()  # and so is the one kept when the saver goes
        assert _sessions(pg_backend.url) == 0
    finally:
        engine.dispose()
