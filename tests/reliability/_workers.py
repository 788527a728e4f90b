"""Crash-resume workers: the example workflows, driven in processes that SIGKILL themselves.

Run as ``python tests/reliability/_workers.py serve``: a parent process that imports
LangGraph and relaygraph once, then reads one JSON run spec per line on stdin, forks a child
per run and answers one JSON line on stdout: ``{"status": "ok", "result": ...}``,
``{"status": "killed"}`` (the child died of SIGKILL) or ``{"status": "error", ...}``. Each
child is a new process that opens its own engines, so a run resumed after a kill starts
from what the database holds and nothing else.

A run drives one thread to the end: it starts the workflow (or finds where it stopped),
answers reviews with an approval and resumes interrupted runs, then reports the thread's
final state, normalized (message ids and timestamps dropped), and the rows the workflow's
effects wrote. The research workflow is driven with one more step, ``publish``: a
non-transactional effect (``on_doubt="retry"``) that hands the report to an "external"
system deduplicating on the key, so both kinds of effect are exercised.

The spec's ``kill`` picks where the child kills itself (``{"point": ..., "n": ...}``: at the
n-th time it reaches that point):

- ``checkpoint``: inside a checkpoint write (``put`` or ``put_writes``), after its first
  statement and before it completes;
- ``effect``: inside the effect function, after it acted and before it returned;
- ``record``: after the effect returned and before the ledger recorded its result;
- ``after-effect``: after the result is recorded, before the node's writes are saved;
- ``random``: at a random moment (``{"point": "random", "delay": seconds}``).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

KILL_POINTS = ("checkpoint", "effect", "record", "after-effect", "random")
WORKFLOWS = ("refund", "research")
MODES = ("sync", "async")


# -- in the child: kill hooks ----------------------------------------------------------------

class Killer:
    """Counts the points a run passes and SIGKILLs the process at the chosen one."""

    def __init__(self, spec: dict[str, Any] | None, *, bypass_ledger: bool = False) -> None:
        self.bypass_ledger = bypass_ledger
        self.point = spec["point"] if spec else None
        self.n = int(spec.get("n", 1)) if spec else 0
        self.delay = float(spec.get("delay", 0.0)) if spec else 0.0
        self.counts: dict[str, int] = dict.fromkeys(KILL_POINTS, 0)

    def reach(self, point: str) -> None:
        self.counts[point] += 1
        if point == self.point and self.counts[point] == self.n:
            os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        from relaygraph.checkpointers import _aio, _sync
        from relaygraph.durable import _effect

        drive = _sync._drive
        killer = self

        def killing(op: Any, first: Any = None) -> Any:
            # the first statement runs, then the process dies before the op completes
            # (``first``: the op's first message, when the saver started it already)
            if first is None:
                try:
                    msg = op.send(None)
                except StopIteration as stop:
                    return stop.value
            else:
                msg = first
            out = yield msg
            killer.reach("checkpoint")
            while True:
                try:
                    msg = op.send(out)
                except StopIteration as stop:
                    return stop.value
                out = yield msg

        def patched_drive(conn: Any, op: Any, afters: Any, direct: Any = None,
                          first: Any = None) -> Any:
            if getattr(op, "__name__", "") in ("_op_put", "_op_put_writes", "_op_fenced"):
                op, first = killing(op, first), None
            return drive(conn, op, afters, direct, first)

        _sync._drive = patched_drive
        adrive = _aio._drive

        async def patched_adrive(conn: Any, op: Any, afters: Any, direct: Any = None) -> Any:
            if getattr(op, "__name__", "") in ("_op_put", "_op_put_writes", "_op_fenced"):
                op = killing(op)
            return await adrive(conn, op, afters, direct)

        _aio._drive = patched_adrive

        def before(fn: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(*a: Any, **k: Any) -> Any:
                killer.reach("record")
                return fn(*a, **k)
            return wrapper

        _effect.op_finish = before(_effect.op_finish)
        _effect.op_insert_done = before(_effect.op_insert_done)
        run_sync = _effect.Effect._run_sync

        def after_effect(self: Any, *a: Any, **k: Any) -> Any:
            out = run_sync(self, *a, **k)
            killer.reach("after-effect")
            return out

        _effect.Effect._run_sync = after_effect  # type: ignore[method-assign]
        run_async = _effect.Effect._run_async

        async def aafter_effect(self: Any, *a: Any, **k: Any) -> Any:
            out = await run_async(self, *a, **k)
            killer.reach("after-effect")
            return out

        _effect.Effect._run_async = aafter_effect  # type: ignore[method-assign]
        if self.bypass_ledger:
            # the control: effects called as plain functions, to show that the trials
            # see the duplicates a missing ledger lets through
            def unrecorded(self: Any, ledger: Any, call: Any, args: Any, kwargs: Any) -> Any:
                if self.transactional:
                    with ledger._sync_engine().begin() as conn:
                        out = self.fn(*args, key=call.site.key, conn=conn, **kwargs)
                else:
                    out = self.fn(*args, key=call.site.key, **kwargs)
                killer.reach("after-effect")
                return out

            _effect.Effect._run_sync = unrecorded  # type: ignore[method-assign]

        from relaygraph.graphs.examples import refund

        write = refund._write_crm_row

        def write_then_die(*a: Any, **k: Any) -> Any:
            out = write(*a, **k)
            killer.reach("effect")
            return out

        refund._write_crm_row = write_then_die  # type: ignore[assignment]
        if self.point == "random":
            timer = threading.Timer(self.delay, os.kill, (os.getpid(), signal.SIGKILL))
            timer.daemon = True
            timer.start()


# -- in the child: the workflows ---------------------------------------------------------------

def _publish_tables() -> tuple[Any, Any]:
    import sqlalchemy as sa

    md = sa.MetaData()
    published = sa.Table(
        "soak_published", md,
        sa.Column("idempotency_key", sa.String(64), primary_key=True),  # dedupes
        sa.Column("thread_id", sa.String(255), nullable=False),
        sa.Column("report", sa.Text(), nullable=False))
    calls = sa.Table(
        "soak_publish_calls", md,
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("thread_id", sa.String(255), nullable=False))
    return published, calls


def _research_graph(url: str, killer: Killer, mode: str) -> tuple[Any, Any]:
    import sqlalchemy as sa
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import END

    from relaygraph._sql import create_tables, upsert
    from relaygraph.durable import effect
    from relaygraph.graphs.examples import research

    published, calls = _publish_tables()
    external = sa.create_engine(url)  # the "other system": its own connections
    create_tables(external, [published, calls])

    @effect(name="research.publish", on_doubt="retry")
    def publish(thread_id: str, report: str, *, key: str) -> str:
        with external.begin() as conn:
            conn.execute(sa.insert(calls).values(idempotency_key=key, thread_id=thread_id))
            conn.execute(upsert(conn.dialect, published, {
                "idempotency_key": key, "thread_id": thread_id, "report": report},
                keys=("idempotency_key",)))
        killer.reach("effect")
        return key

    # the result is the key; the rows of the "other system" are what the trials count
    def publish_node(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        publish(config["configurable"]["thread_id"], state.get("report") or "")
        return {}

    async def apublish_node(state: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        await publish.acall(config["configurable"]["thread_id"], state.get("report") or "")
        return {}

    builder = research.build_research_graph()
    builder.edges.discard(("writer", END))
    builder.add_node("publish", publish_node if mode == "sync" else apublish_node)
    builder.add_edge("writer", "publish")
    builder.add_edge("publish", END)
    return builder, external


def _normalize(workflow: str, values: dict[str, Any]) -> dict[str, Any]:
    def dump(v: Any) -> Any:
        return v.model_dump(mode="json") if hasattr(v, "model_dump") else v

    out: dict[str, Any] = {
        "messages": [[m.type, m.name, m.content] for m in values.get("messages", [])],
        "handoffs": [[h["contract"], h["repairs"], h["failure"]]
                     for h in values.get("handoffs", [])],
        "usage": {agent: {model: [u["calls"], u["input_tokens"], u["output_tokens"]]
                          for model, u in sorted(models.items())}
                  for agent, models in sorted(values.get("usage", {}).items())},
    }
    if workflow == "refund":
        issued = values.get("issued")
        out.update(
            case=dump(values.get("case")), resolution=dump(values.get("resolution")),
            guard=[g["route"] for g in values.get("guard_log", [])],
            reviews=[[r["node"], r["decision"]] for r in values.get("reviews", [])],
            issued=({k: v for k, v in issued.items() if k != "crm_key"}
                    if isinstance(issued, dict) else issued))
    else:
        out.update(brief=dump(values.get("brief")), report=values.get("report"))
    return out


def _async_url(url: str) -> str:
    return url.replace("+pymysql", "+asyncmy")


def drive(spec: dict[str, Any], killer: Killer) -> dict[str, Any]:
    """Drive ``spec["thread"]`` to its end; return the normalized final state and rows.

    ``spec["mode"]``: ``"sync"`` (SQLAlchemySaver, ``invoke``) or ``"async"``
    (AsyncSQLAlchemySaver, ``ainvoke``).
    """
    import asyncio

    import sqlalchemy as sa

    from relaygraph.graphs.examples import refund

    workflow, thread, url = spec["workflow"], spec["thread"], spec["url"]
    started = time.monotonic()
    if spec.get("mode", "sync") == "async":
        values, steps, external = asyncio.run(_adrive(spec, killer))
    else:
        values, steps, external = _drive_sync(spec, killer)
    rows: dict[str, Any] = {}
    engine = sa.create_engine(url)
    if workflow == "refund":
        rows["crm"] = [[r["order_id"], r["action"], r["amount"]]
                       for r in refund.crm_rows(engine, thread)]
    else:
        published, calls = _publish_tables()
        with engine.connect() as conn:
            rows["published"] = conn.execute(sa.select(sa.func.count()).where(
                published.c.thread_id == thread)).scalar_one()
            rows["publish_calls"] = conn.execute(sa.select(sa.func.count()).where(
                calls.c.thread_id == thread)).scalar_one()
    engine.dispose()
    if external is not None:
        external.dispose()
    return {"state": _normalize(workflow, values), "rows": rows, "steps": steps,
            "counts": killer.counts, "seconds": time.monotonic() - started}


def _next_move(snap: Any) -> str:
    from relaygraph.observe import thread_status

    if snap.metadata is None:  # nothing stored yet: start
        return "start"
    report = thread_status(snap)
    if report.status == "waiting":
        waiting = report.waiting_on[0] if report.waiting_on else {}
        if isinstance(waiting, dict) and waiting.get("kind") == "effect_in_doubt":
            return "in-doubt"
        return "review"
    if report.status in ("interrupted", "failed"):
        return report.status
    return "done"


_APPROVE = {"action": "approve", "reviewer": "soak"}
_RUN_AGAIN = {"action": "run_again"}


def _drive_sync(spec: dict[str, Any], killer: Killer) -> tuple[Any, list[str], Any]:
    from langgraph.types import Command

    from relaygraph.checkpointers import SQLAlchemySaver
    from relaygraph.graphs import examples
    from relaygraph.graphs.examples import refund, research
    from relaygraph.nodes import submit_review

    config = {"configurable": {"thread_id": spec["thread"]}}
    steps: list[str] = []
    external = None
    with SQLAlchemySaver.from_conn_string(spec["url"], serde=examples.serde()) as saver:
        saver.setup()
        if spec["workflow"] == "refund":
            graph = refund.build_refund_graph().compile(checkpointer=saver)
            first = refund.refund_input()
        else:
            builder, external = _research_graph(spec["url"], killer, "sync")
            graph = builder.compile(checkpointer=saver)
            first = research.research_input()
        for _ in range(30):
            move = _next_move(graph.get_state(config))
            if move == "done":
                break
            steps.append(move)
            if move == "start":
                graph.invoke(first, config)
            elif move == "review":
                submit_review(graph, config, _APPROVE)
            elif move == "in-doubt":
                graph.invoke(Command(resume=_RUN_AGAIN), config)
            else:
                graph.invoke(None, config)
        else:
            raise RuntimeError(f"thread {spec['thread']} did not finish: {steps}")
        return graph.get_state(config).values, steps, external


async def _adrive(spec: dict[str, Any], killer: Killer) -> tuple[Any, list[str], Any]:
    from langgraph.types import Command

    from relaygraph.checkpointers import AsyncSQLAlchemySaver
    from relaygraph.graphs import examples
    from relaygraph.graphs.examples import refund, research
    from relaygraph.nodes import asubmit_review

    config = {"configurable": {"thread_id": spec["thread"]}}
    steps: list[str] = []
    external = None
    async with AsyncSQLAlchemySaver.from_conn_string(
            _async_url(spec["url"]), serde=examples.serde()) as saver:
        await saver.asetup()
        if spec["workflow"] == "refund":
            graph = refund.build_refund_graph().compile(checkpointer=saver)
            first = refund.refund_input()
        else:
            builder, external = _research_graph(spec["url"], killer, "async")
            graph = builder.compile(checkpointer=saver)
            first = research.research_input()
        for _ in range(30):
            move = _next_move(await graph.aget_state(config))
            if move == "done":
                break
            steps.append(move)
            if move == "start":
                await graph.ainvoke(first, config)
            elif move == "review":
                await asubmit_review(graph, config, _APPROVE)
            elif move == "in-doubt":
                await graph.ainvoke(Command(resume=_RUN_AGAIN), config)
            else:
                await graph.ainvoke(None, config)
        else:
            raise RuntimeError(f"thread {spec['thread']} did not finish: {steps}")
        return (await graph.aget_state(config)).values, steps, external


# -- in the parent: trials ------------------------------------------------------------------------

class Zygote:
    """The fork server, seen from the test or the soak: ``run(spec) -> outcome``."""

    def __init__(self, workdir: str) -> None:
        import subprocess

        self.workdir = workdir
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError("the crash-resume worker did not start")
        self.runs = 0

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.runs += 1
        spec = {**spec, "out": os.path.join(self.workdir, f"run-{self.runs}.json")}
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the crash-resume worker died")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def compare(reference: dict[str, Any], got: dict[str, Any]) -> dict[str, list[str]]:
    """What a trial's final state lost, duplicated, or got different, against a clean run.

    Lists (messages, records, rows) that are longer than the reference hold duplicates,
    shorter ones lost something; any other difference is "diverged".
    """
    found: dict[str, list[str]] = {"lost": [], "duplicated": [], "diverged": []}
    ref = {**{f"state.{k}": v for k, v in reference["state"].items()},
           **{f"rows.{k}": v for k, v in reference["rows"].items()}}
    new = {**{f"state.{k}": v for k, v in got["state"].items()},
           **{f"rows.{k}": v for k, v in got["rows"].items()}}
    for key in sorted(set(ref) | set(new)):
        if key == "rows.publish_calls":  # retries with the same key: at least once
            continue
        a, b = ref.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            kind = "duplicated" if len(b) > len(a) else "lost" if len(b) < len(a) \
                else "diverged"
        elif isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
            kind = "duplicated" if b > a else "lost"
        elif b in (None, False, {}, []):
            kind = "lost"
        else:
            kind = "diverged"
        found[kind].append(f"{key}: expected {a!r}, got {b!r}")
    return found


def choose_kill(rng: Any, point: str, reference: dict[str, Any]) -> dict[str, Any]:
    """A kill at ``point``: the n-th time a clean run reaches it, n drawn with ``rng``."""
    if point == "random":
        return {"point": "random", "delay": rng.uniform(0.0, reference["seconds"] * 0.9)}
    reached = max(1, int(reference["counts"].get(point, 0)))
    return {"point": point, "n": rng.randint(1, reached)}


def trial(zygote: Zygote, url: str, workflow: str, thread: str, point: str, rng: Any,
          reference: dict[str, Any], *, rekill: float = 0.25, max_runs: int = 6,
          bypass_ledger: bool = False, mode: str = "sync") -> dict[str, Any]:
    """One trial: a run killed at ``point``, resumed in new processes until it finishes
    (a resume is itself killed at a random point with probability ``rekill``)."""
    kills = resumes = 0
    kill: dict[str, Any] | None = choose_kill(rng, point, reference)
    for run in range(max_runs):
        if run > 0:
            resumes += 1
            kill = (choose_kill(rng, rng.choice(KILL_POINTS), reference)
                    if rng.random() < rekill and run < max_runs - 1 else None)
        outcome = zygote.run({"url": url, "workflow": workflow, "thread": thread,
                              "kill": kill, "bypass_ledger": bypass_ledger, "mode": mode})
        if outcome["status"] == "killed":
            kills += 1
            continue
        if outcome["status"] == "error":
            return {"kills": kills, "resumes": resumes, "error": outcome["error"],
                    "lost": [], "duplicated": [], "diverged": []}
        result = outcome["result"]
        return {"kills": kills, "resumes": resumes, "error": None,
                "steps": result["steps"], **compare(reference, result)}
    return {"kills": kills, "resumes": resumes, "error": f"unfinished after {max_runs} runs",
            "lost": [], "duplicated": [], "diverged": []}


def reference_run(zygote: Zygote, url: str, workflow: str, thread: str,
                  mode: str = "sync") -> dict[str, Any]:
    """A clean, uninterrupted run: the state every trial must end with."""
    outcome = zygote.run({"url": url, "workflow": workflow, "thread": thread, "kill": None,
                          "mode": mode})
    if outcome["status"] != "ok":
        raise RuntimeError(f"the uninterrupted {workflow} run failed: {outcome}")
    return outcome["result"]


# -- the fork server -----------------------------------------------------------------------------

def run_forked(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one spec in a forked child; report how it ended."""
    out_path = spec["out"]
    for p in (out_path, out_path + ".err"):
        if os.path.exists(p):
            os.unlink(p)
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            killer = Killer(spec.get("kill"), bypass_ledger=spec.get("bypass_ledger", False))
            killer.install()
            result = drive(spec, killer)
            with open(out_path, "w") as f:
                json.dump(result, f)
            code = 0
        except BaseException:  # noqa: BLE001 - reported to the parent
            with open(out_path + ".err", "w") as f:
                f.write(traceback.format_exc())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"status": "killed", "signal": os.WTERMSIG(status)}
    if os.WEXITSTATUS(status) == 0:
        with open(out_path) as f:
            return {"status": "ok", "result": json.load(f)}
    err = ""
    if os.path.exists(out_path + ".err"):
        with open(out_path + ".err") as f:
            err = f.read()
    return {"status": "error", "error": err or f"exit {os.WEXITSTATUS(status)}"}


def serve() -> None:
    # import everything once, before any fork, and open nothing
    import relaygraph.checkpointers  # noqa: F401
    import relaygraph.durable  # noqa: F401
    import relaygraph.graphs.examples  # noqa: F401
    import relaygraph.nodes  # noqa: F401
    import relaygraph.observe  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(run_forked(json.loads(line))), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["serve"]:
        sys.exit("usage: _workers.py serve")
    serve()
