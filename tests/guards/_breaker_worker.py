"""A worker process sharing one breaker through SQL; reads JSON commands on stdin.

Each line is ``{"op": ..., "now": <epoch>, ...}``; each answer is one JSON line with the
breaker state as this process sees it. Used by test_breaker_sql.py.
"""

from __future__ import annotations

import json
import sys

import sqlalchemy as sa

from relaygraph.guards import CircuitBreaker, SQLBreakerStore


def main(url: str) -> None:
    engine = sa.create_engine(url)
    now = [0.0]
    store = SQLBreakerStore(engine)
    store.setup()
    breaker = CircuitBreaker("resolver", failure_rate=0.5, window=200, min_calls=5,
                             cooldown=300, store=store, clock=lambda: now[0])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        now[0] = cmd.get("now", now[0])
        out: dict[str, object] = {}
        if cmd["op"] == "record":
            out["after"] = breaker.record(cmd["ok"])
        elif cmd["op"] == "allow":
            out["allowed"] = breaker.allow()
        elif cmd["op"] == "hammer":  # many successes, each its own transaction
            for _ in range(cmd["n"]):
                breaker.record(True)
        elif cmd["op"] == "quit":
            break
        rec = breaker.snapshot()
        out["state"] = breaker.state()
        out["outcomes"] = rec.outcomes if rec else None
        print(json.dumps(out), flush=True)
    engine.dispose()


if __name__ == "__main__":
    main(sys.argv[1])
