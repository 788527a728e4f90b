"""The SQL store and the in-memory store make the same breaker (property-based)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaygraph.guards import CircuitBreaker, InMemoryBreakerStore, SQLBreakerStore
from relaygraph.testing import ManualClock

ops = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.booleans()),
        st.tuples(st.just("allow"), st.none()),
        st.tuples(st.just("advance"), st.sampled_from([1.0, 30.0, 60.0])),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
def test_sql_and_memory_stores_agree(tmp_path, script: list[tuple[str, Any]]) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'eq.db'}")
    try:
        sql = SQLBreakerStore(engine)
        sql.setup()
        with engine.begin() as conn:
            conn.execute(sa.delete(sql.table))
        clock = ManualClock()
        kw: dict[str, Any] = dict(failure_rate=0.5, window=4, min_calls=2, cooldown=60,
                                  half_open_probes=2, clock=clock)
        mem_b = CircuitBreaker("b", store=InMemoryBreakerStore(), **kw)
        sql_b = CircuitBreaker("b", store=sql, **kw)
        for op, arg in script:
            if op == "record":
                assert mem_b.record(arg) == sql_b.record(arg)
            elif op == "allow":
                assert mem_b.allow() == sql_b.allow()
            else:
                clock.advance(arg)
            assert mem_b.snapshot() == sql_b.snapshot()
            assert mem_b.state() == sql_b.state()
    finally:
        engine.dispose()
