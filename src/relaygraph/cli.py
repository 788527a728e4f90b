"""The ``relaygraph`` command line.

Commands::

    relaygraph demo      [--db URL] [--thread ID] [--interactive] [--pause]
    relaygraph threads   --db URL
    relaygraph timeline  THREAD --db URL [--graph ID]
    relaygraph serve     --db URL [--host 127.0.0.1] [--port 8000]
    relaygraph setup     --db URL

Every command takes a SQLAlchemy URL (``sqlite:///relaygraph.db``,
``postgresql+psycopg://user@host/db``, ``mysql+pymysql://user@host/db``). Bad URLs and
unreachable databases print one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from langgraph.checkpoint.base import BaseCheckpointSaver
from rich.console import Console

from relaygraph._errors import RelaygraphError

DEFAULT_DEMO_DB = "sqlite:///relaygraph-demo.db"


class CLIError(RelaygraphError):
    """A user-facing error: printed as one line, exit status 1."""


# ----------------------------------------------------------------------------- databases

_CONNECT_TIMEOUTS = {"postgresql": {"connect_timeout": 5}, "mysql": {"connect_timeout": 5},
                     "mariadb": {"connect_timeout": 5}}


def _redact(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def check_database(url: str, *, must_exist: bool) -> sa.URL:
    """Validate a database URL and make sure the database answers.

    Args:
        url: a SQLAlchemy URL.
        must_exist: for SQLite files, refuse a file that does not exist yet (read-only
            commands should not create empty databases).

    Raises:
        CLIError: the URL is malformed, its driver is missing, or the database is unreachable.
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise CLIError(
            f"not a database URL: {url!r}; expected e.g. sqlite:///relaygraph.db or "
            "postgresql+psycopg://user@127.0.0.1:5432/db") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database or ""
        if must_exist and db not in ("", ":memory:") and not Path(db).exists():
            raise CLIError(f"database file {db!r} does not exist; create it with: "
                           f"relaygraph setup --db {url}")
    try:
        engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool,
                                  connect_args=_CONNECT_TIMEOUTS.get(backend, {}))
    except sa.exc.NoSuchModuleError:
        raise CLIError(f"unknown database scheme {parsed.drivername!r} in {_redact(parsed)}; "
                       "use sqlite://, postgresql+psycopg:// or mysql+pymysql://") from None
    except ImportError as exc:
        extra = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}.get(backend, "dev")
        raise CLIError(f"the driver for {parsed.drivername!r} is not installed ({exc.name}); "
                       f"install it with: pip install 'relaygraph[{extra}]'") from None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise CLIError(f"cannot connect to {_redact(parsed)}: {reason}") from None
    finally:
        engine.dispose()
    return parsed


@contextmanager
def open_saver(url: str, *, setup: bool) -> Iterator[BaseCheckpointSaver]:
    """Open relaygraph's SQL checkpointer on ``url`` (and run its migrations if ``setup``)."""
    from relaygraph.checkpointers import SQLAlchemySaver
    from relaygraph.graphs import examples

    # the serializer rebuilds the examples' contracts from checkpoints (strict msgpack)
    with SQLAlchemySaver.from_conn_string(url, serde=examples.serde()) as saver:
        if setup:
            saver.setup()
        yield saver


def compiled_examples(saver: BaseCheckpointSaver) -> dict[str, Any]:
    """Every example workflow compiled on ``saver``, by graph id."""
    from relaygraph.graphs.examples import EXAMPLES

    return {name: ex.build().compile(checkpointer=saver) for name, ex in EXAMPLES.items()}


# ----------------------------------------------------------------------------- commands


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.graphs.examples import EXAMPLES
    from relaygraph.serve._threads import thread_config

    url = args.db
    check_database(url, must_exist=False)
    example = EXAMPLES["refund"]
    thread_id = args.thread or f"refund-{uuid.uuid4().hex[:8]}"
    config = thread_config(thread_id, example.name)
    console.rule("[bold]relaygraph demo: customer refund")
    console.print(f"database [cyan]{url}[/cyan]   thread [cyan]{thread_id}[/cyan]")

    with open_saver(url, setup=True) as saver:
        graph = _demo_graph(args).compile(checkpointer=saver)
        snap = graph.get_state(config)
        if not snap.values:
            console.print("\n[bold]1. run[/bold] intake → handoff RefundCase → confidence guard "
                          "→ resolver → human review")
            graph.invoke(example.make_input(), config)
        elif snap.interrupts:
            console.print("\n[bold]1. found[/bold] this thread paused at a review in the database")
        elif snap.next:
            console.print("\n[bold]1. found[/bold] an unfinished run in the database; resuming it")
            graph.invoke(None, config)
        snap = graph.get_state(config)
        if not snap.interrupts:
            console.print("\nthis thread has finished")
            _render_summary(console, graph, config)
            return 0
        _render_paused(console, snap)
        if args.pause:
            console.print(f"\nstopped here. resume later with: [bold]relaygraph demo --db {url} "
                          f"--thread {thread_id}[/bold]")
            return 0
    # The saver and its engine are closed and the graph object is dropped: all that is left
    # of the run is what the database holds, as after a crash.
    del graph, saver

    console.print("\n[bold]2. crash-resume[/bold] the graph and its database connection are "
                  "gone; a new graph object reads the thread back from the database")
    with open_saver(url, setup=False) as saver:
        fresh = _demo_graph(args).compile(checkpointer=saver)
        snap = fresh.get_state(config)
        step = (snap.metadata or {}).get("step", "?")
        console.print(f"   restored at step {step}: next {', '.join(snap.next)}, "
                      f"{len(snap.interrupts)} open review")
        review_no = 0
        while snap.interrupts:  # a low-confidence case meets the escalation review first
            review_no += 1
            request = snap.interrupts[0].value
            node = request.get("node", "review") if isinstance(request, dict) else "review"
            decision = _decide(console, request, fresh, config, interactive=args.interactive)
            console.print(f"\n[bold]{2 + review_no}. review[/bold] at {node}: "
                          f"{decision['action']} by {decision.get('reviewer') or 'reviewer'}; "
                          "the run continues from the checkpoint")
            snap = fresh.get_state(config)
            if snap.interrupts:
                _render_paused(console, snap)
        _render_summary(console, fresh, config)
    return 0


def _demo_graph(args: argparse.Namespace) -> Any:
    from relaygraph.graphs.examples import refund

    return refund.build_refund_graph(confidence=args.confidence)


def _decide(console: Console, request: Any, graph: Any, config: Any, *,
            interactive: bool) -> dict[str, Any]:
    """Ask for (or auto-approve) one review and submit it; returns the decision."""
    from relaygraph.serve._reviews import InvalidReviewDecision, submit_review

    for attempt in range(3):
        decision = (_render_ask_decision(console, request) if interactive else
                    {"action": "approve", "reviewer": "demo", "comment": "auto-approved"})
        try:
            submit_review(graph, config, decision)
            return decision
        except InvalidReviewDecision as exc:
            if not interactive or attempt == 2:
                raise CLIError(f"review refused: {exc}") from None
            console.print(f"[red]refused:[/red] {exc}")
    raise AssertionError("unreachable")  # pragma: no cover


def _cmd_threads(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.serve._threads import list_threads

    check_database(args.db, must_exist=True)
    with open_saver(args.db, setup=False) as saver:
        threads = list_threads(saver, compiled_examples(saver), limit=args.limit)
    _render_threads(console, threads)
    return 0


def _cmd_timeline(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.serve._threads import thread_config, thread_graph_id

    check_database(args.db, must_exist=True)
    with open_saver(args.db, setup=False) as saver:
        graphs = compiled_examples(saver)
        try:
            gid = args.graph or thread_graph_id(saver, args.thread)
        except KeyError:
            raise CLIError(f"thread {args.thread!r} not found in {args.db}; list threads with: "
                           f"relaygraph threads --db {args.db}") from None
        if gid is None and len(graphs) == 1:
            gid = next(iter(graphs))
        if gid not in graphs:
            raise CLIError(f"thread {args.thread!r} belongs to graph {gid!r}, which this command "
                           f"does not know; known graphs: {', '.join(sorted(graphs))}")
        _render_summary(console, graphs[gid], thread_config(args.thread))
    return 0


def _cmd_serve(args: argparse.Namespace, console: Console) -> int:
    check_database(args.db, must_exist=False)
    try:
        import uvicorn

        from relaygraph.serve import create_app
    except ImportError as exc:
        raise CLIError(f"serving needs the 'serve' extra ({exc.name} is missing); install it "
                       "with: pip install 'relaygraph[serve]'") from None
    with open_saver(args.db, setup=True) as saver:
        app = create_app(compiled_examples(saver), checkpointer=saver)
        console.print(f"serving on http://{args.host}:{args.port}  (review inbox: /inbox)")
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _cmd_setup(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.guards import SQLBreakerStore
    from relaygraph.nodes import SQLAutonomyStore

    parsed = check_database(args.db, must_exist=False)
    with open_saver(args.db, setup=True) as saver:
        # the same database also holds circuit-breaker state and autonomy records
        engine = saver.engine  # type: ignore[attr-defined]
        SQLBreakerStore(engine).setup()
        SQLAutonomyStore(engine).setup()
        tables = sorted(t for t in sa.inspect(engine).get_table_names()
                        if t.startswith("relaygraph_"))
    console.print(f"relaygraph tables are ready in {_redact(parsed)}: {', '.join(tables)}")
    return 0


# ----------------------------------------------------------------------------- rendering


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _render_paused(console: Console, snap: Any) -> None:
    request = snap.interrupts[0].value
    console.print(f"   paused before [bold]{', '.join(snap.next)}[/bold]: a human must review")
    if isinstance(request, dict):
        subject = request.get("value", request.get("subject"))
        console.print(f"   under review: {_short(subject, 100)}")
        if request.get("guard_route") in ("escalate", "halt") and request.get("guard_reason"):
            console.print(f"   why: guard {request.get('guard')}: {request['guard_reason']}")


def _render_ask_decision(console: Console, request: Any) -> dict[str, Any]:
    import json

    from rich.prompt import Prompt

    value = request.get("value") if isinstance(request, dict) else request
    console.print(f"\n[bold]review request[/bold] ({request.get('policy_reason', '')})")
    console.print_json(json.dumps(value, default=str))
    actions = list(request.get("actions") or ["approve", "edit", "reject"])
    action = Prompt.ask("decision", choices=actions, default=actions[0], console=console)
    decision: dict[str, Any] = {"action": action, "reviewer": "cli"}
    if action == "edit":
        raw = Prompt.ask('edits as JSON, e.g. {"amount": "200.00"}', console=console)
        try:
            decision["edits"] = json.loads(raw)
        except ValueError:
            decision["edits"] = {"_unparsed": raw}
    if action == "reject":
        decision["reason"] = Prompt.ask("reason", console=console)
    else:
        comment = Prompt.ask("comment", default="", console=console)
        if comment:
            decision["comment"] = comment
    return decision


def _render_summary(console: Console, graph: Any, config: Any) -> None:
    from rich.table import Table

    from relaygraph.observe import timeline

    tl = timeline(graph, config)
    values = tl.values or {}
    console.print("\n[bold]steps[/bold] (rebuilt from the checkpoints in the database)")
    console.print(tl)

    handoffs = values.get("handoffs") or []
    if handoffs:
        t = Table(title="handoffs", title_justify="left")
        for col in ("contract", "tokens", "ratio", "verbatim checks", "repairs", "failure"):
            t.add_column(col)
        for h in handoffs:
            checks = ", ".join(f"{k} {'ok' if v.get('passed') else 'FAILED'}"
                               for k, v in (h.get("verbatim") or {}).items())
            t.add_row(h.get("contract", "?"),
                      f"{h.get('source_tokens')} → {h.get('brief_tokens')}",
                      f"{float(h.get('ratio') or 0):.0%}", checks or "-",
                      str(h.get("repairs", 0)), h.get("failure") or "-")
        console.print(t)

    guards = values.get("guard_log") or []
    if guards:
        t = Table(title="guard decisions", title_justify="left")
        for col in ("guard", "score", "threshold", "route", "breaker", "failed checks"):
            t.add_column(col)
        for g in guards:
            score = g.get("score")
            t.add_row(g.get("guard", "?"), "-" if score is None else f"{score:.2f}",
                      str(g.get("threshold")),
                      g.get("route", "?") + (f" → {g['goto']}" if g.get("goto") else ""),
                      str(g.get("breaker_state") or "-"),
                      ", ".join(g.get("failed_checks") or []) or "-")
        console.print(t)

    reviews = values.get("reviews") or []
    if reviews:
        t = Table(title="reviews", title_justify="left")
        for col in ("node", "decision", "reviewer", "comment", "policy"):
            t.add_column(col)
        for r in reviews:
            t.add_row(r.get("node", "?"), str(r.get("decision")), str(r.get("reviewer") or "-"),
                      str(r.get("comment") or "-"), _short(r.get("policy_reason") or "-", 40))
        console.print(t)

    snap = graph.get_state(config)
    if snap.interrupts:
        console.print("[yellow]status: waiting for a human review[/yellow]")
    elif snap.next:
        console.print(f"[yellow]status: pending, next: {', '.join(snap.next)}[/yellow]")
    else:
        reviews = values.get("reviews") or []
        last = reviews[-1].get("decision") if reviews else None
        outcome = {"approve": "approved", "edit": "approved with edits",
                   "reject": "rejected", "skipped": "approved by policy"}.get(str(last), "")
        console.print(f"[green]status: finished{', ' + outcome if outcome else ''}[/green]")
        result = values.get("resolution")
        if result is not None:
            data = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
            console.print(f"result: {data}")


def _render_threads(console: Console, threads: Sequence[Any]) -> None:
    from rich.table import Table

    if not threads:
        console.print("no threads in this database")
        return
    t = Table(title=f"{len(threads)} thread(s)", title_justify="left")
    for col in ("thread", "graph", "status", "step", "checkpoints", "updated", "next"):
        t.add_column(col)
    for th in threads:
        t.add_row(th.thread_id, th.graph_id or "-", th.status, str(th.step), str(th.checkpoints),
                  th.updated_at or "-", ", ".join(th.next) or "-")
    console.print(t)


# ----------------------------------------------------------------------------- parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``relaygraph`` command."""
    parser = argparse.ArgumentParser(
        prog="relaygraph",
        description="Multi-agent LangGraph workflows that hold up in production.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the customer-refund example offline, with a "
                          "crash-resume and a human review")
    demo.add_argument("--db", default=DEFAULT_DEMO_DB, help=f"database URL ({DEFAULT_DEMO_DB})")
    demo.add_argument("--thread", help="thread id (default: a new one); an existing thread "
                      "paused at the review is resumed")
    demo.add_argument("--interactive", action="store_true",
                      help="ask for the review decision instead of auto-approving")
    demo.add_argument("--pause", action="store_true",
                      help="stop at the review; run again with the same --thread to resume")
    demo.add_argument("--confidence", type=_fraction, default=0.92,
                      help="confidence the scripted intake reports (0.92); below 0.8 the "
                      "guard retries once, then escalates to a human")
    demo.set_defaults(func=_cmd_demo)

    threads = sub.add_parser("threads", help="list threads in a database")
    threads.add_argument("--db", required=True, help="database URL")
    threads.add_argument("--limit", type=int, default=50, help="newest N threads (50)")
    threads.set_defaults(func=_cmd_threads)

    tl = sub.add_parser("timeline", help="show one thread's steps, handoffs, guards, reviews "
                        "and cost")
    tl.add_argument("thread", metavar="THREAD", help="thread id")
    tl.add_argument("--db", required=True, help="database URL")
    tl.add_argument("--graph", help="graph id (default: recorded on the thread)")
    tl.set_defaults(func=_cmd_timeline)

    serve = sub.add_parser("serve", help="serve the example graphs over HTTP with a review inbox")
    serve.add_argument("--db", required=True, help="database URL")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=_cmd_serve)

    setup = sub.add_parser("setup", help="create or migrate relaygraph's tables")
    setup.add_argument("--db", required=True, help="database URL")
    setup.set_defaults(func=_cmd_setup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    args = build_parser().parse_args(argv)
    # tables need room: when the output is not a terminal, do not wrap at 80 columns
    console = Console(width=None if sys.stdout.isatty() else 140)
    from relaygraph.checkpointers import SchemaVersionError, SetupRequiredError

    try:
        return int(args.func(args, console))
    except SchemaVersionError as exc:
        hint = (f"upgrade them with: relaygraph setup --db {args.db}"
                if exc.found < exc.needed else "upgrade relaygraph")
        print(f"relaygraph: error: {args.db} holds relaygraph tables of schema version "
              f"{exc.found}, this relaygraph uses {exc.needed}; {hint}", file=sys.stderr)
        return 1
    except SetupRequiredError:
        print(f"relaygraph: error: {args.db} has no relaygraph tables; create them with: "
              f"relaygraph setup --db {args.db}", file=sys.stderr)
        return 1
    except (RelaygraphError, sa.exc.SQLAlchemyError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"relaygraph: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("relaygraph: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
