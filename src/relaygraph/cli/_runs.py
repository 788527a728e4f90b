"""``relaygraph resume`` (continue a stopped or crashed run) and ``relaygraph demo``."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import uuid
from typing import Any

from rich.console import Console

from relaygraph.cli._common import (
    DEFAULT_DEMO_DB,
    CLIError,
    Leases,
    UsageError,
    check_database,
    common_options,
    open_saver,
    print_json,
    short,
    status_of,
    workspace,
)


def register(sub: Any) -> None:
    resume = sub.add_parser("resume", help="continue a run that stopped or crashed")
    resume.add_argument("thread", metavar="THREAD")
    resume.add_argument("--approve", action="store_true",
                        help="approve, as reviewer 'cli', the reviews the run meets on the way "
                        "(the demo's auto-approval); without it the run pauses at them")
    common_options(resume)
    resume.set_defaults(func=cmd_resume)

    demo = sub.add_parser("demo", help="run the customer-refund example offline, with a "
                          "crash-resume and a human review")
    demo.add_argument("--db", default=DEFAULT_DEMO_DB, help=f"database URL ({DEFAULT_DEMO_DB})")
    demo.add_argument("--thread", help="thread id (default: a new one); an existing thread "
                      "is continued")
    demo.add_argument("--interactive", action="store_true",
                      help="ask for the review decision instead of auto-approving")
    demo.add_argument("--pause", action="store_true",
                      help="stop at the review; run again with the same --thread to resume")
    demo.add_argument("--crash-after", metavar="NODE",
                      help="end the process hard right after NODE's checkpoint, and print "
                      "the relaygraph resume command that finishes the run")
    demo.add_argument("--confidence", type=_fraction, default=0.92,
                      help="confidence the scripted intake reports (0.92); below 0.8 the "
                      "guard retries once, then escalates to a human")
    demo.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(func=cmd_demo)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


# ----------------------------------------------------------------------------- resume


def _auto_approve(graph: Any, config: Any, snap: Any) -> dict[str, Any]:
    from relaygraph.nodes._review import submit_review

    decision = {"action": "approve", "reviewer": "cli", "comment": "approved by resume --approve"}
    submit_review(graph, config, decision, interrupt_id=snap.interrupts[0].id)
    return decision


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.durable import LeaseStore, ThreadBusyError, leased
    from relaygraph.serve._threads import thread_config

    ws = workspace(args)
    check_database(ws.db, must_exist=True)
    with open_saver(ws.db, setup=False) as saver:
        gid, graph = ws.graph_for_thread(saver, args.thread)
        leases = Leases(saver)
        before = status_of(graph, args.thread, leases)
        config = thread_config(args.thread, gid)
        if before.status == "running":
            raise CLIError(f"thread {args.thread!r} is running in another process (it holds "
                           "the thread's lease); nothing to resume")
        if before.status == "finished":
            raise CLIError(f"thread {args.thread!r} has finished; nothing to resume")
        if before.status == "waiting" and not args.approve:
            raise CLIError(f"thread {args.thread!r} is waiting for a review, not stopped; "
                           f"decide it with: relaygraph review {args.thread} approve "
                           f"{ws.options} (or resume --approve)")
        store = LeaseStore.from_saver(saver)
        store.setup()
        run = leased(graph, store)
        decisions = []
        try:
            if before.status in ("interrupted", "failed"):
                # invoke(None) applies the writes stored before the stop and runs what is left
                run.invoke(None, config)
            snap = graph.get_state(config)
            while args.approve and snap.interrupts:
                decisions.append(_auto_approve(run, config, snap))
                snap = graph.get_state(config)
        except ThreadBusyError:
            raise CLIError(f"thread {args.thread!r} is running in another process") from None
        except Exception:  # noqa: BLE001 - a node raised: the thread is "failed", shown below
            pass
        after = status_of(graph, args.thread, Leases(saver))
        values = graph.get_state(config).values
    if args.json:
        print_json({"thread_id": args.thread, "graph_id": gid, "was": before.status,
                    "approved": len(decisions), **after.as_dict()})
    else:
        from relaygraph.cli._threads import render_status

        console.print(f"thread {args.thread} was {before.status}"
                      + (f" before {', '.join(before.next)}" if before.next else "")
                      + "; resumed from its last checkpoint"
                      + (f", {len(decisions)} review(s) approved" if decisions else ""))
        render_status(console, after, args.thread, ws.options, values)
    return 1 if after.status == "failed" else 0


# ----------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from relaygraph.graphs.examples import EXAMPLES
    from relaygraph.graphs.examples import refund as refund_example
    from relaygraph.serve._loader import compile_on
    from relaygraph.serve._threads import thread_config

    url = args.db
    check_database(url, must_exist=False)
    example = EXAMPLES["refund"]
    thread_id = args.thread or f"refund-{uuid.uuid4().hex[:8]}"
    config = thread_config(thread_id, example.name)
    builder = refund_example.build_refund_graph(confidence=args.confidence)
    if args.crash_after is not None and args.crash_after not in builder.nodes:
        raise UsageError(f"--crash-after {args.crash_after!r} is not a node of the refund "
                         f"graph; nodes: {', '.join(builder.nodes)}")
    console.rule("[bold]relaygraph demo: customer refund")
    console.print(f"database [cyan]{url}[/cyan]   thread [cyan]{thread_id}[/cyan]")

    with open_saver(url, setup=True) as saver:
        graph = compile_on(builder, saver)
        if args.crash_after:
            return _crash_after(console, graph, saver, config, example, args)
        snap = graph.get_state(config)
        report = status_of(graph, thread_id, Leases(saver))
        if not snap.values:
            console.print("\n[bold]1. run[/bold] intake → handoff RefundCase → confidence guard "
                          "→ resolver → human review → issue")
            graph.invoke(example.make_input(), config)
        elif report.status == "running":
            raise CLIError(f"thread {thread_id!r} is running in another process")
        elif report.status == "waiting":
            console.print("\n[bold]1. found[/bold] this thread paused at a review in the database")
        elif report.resumable:
            console.print(f"\n[bold]1. found[/bold] an {report.status} run in the database "
                          f"(next: {', '.join(report.next)}); resuming it")
            graph.invoke(None, config)
        snap = graph.get_state(config)
        if not snap.interrupts:
            console.print("\nthis thread has finished")
            _summary(console, graph, thread_id, url, saver)
            return 0
        _render_paused(console, snap)
        if args.pause:
            console.print(f"\nstopped here. decide with: [bold]relaygraph review {thread_id} "
                          f"approve --db {url}[/bold]  (or run the demo again with --thread "
                          f"{thread_id})")
            return 0
    # The saver and its engine are closed and the graph object is dropped: all that is left
    # of the run is what the database holds, as after a crash.
    del graph, saver

    console.print("\n[bold]2. crash-resume[/bold] the graph and its database connection are "
                  "gone; a new graph object reads the thread back from the database")
    with open_saver(url, setup=False) as saver:
        fresh = compile_on(refund_example.build_refund_graph(confidence=args.confidence), saver)
        snap = fresh.get_state(config)
        step = (snap.metadata or {}).get("step", "?")
        console.print(f"   restored at step {step}: next {', '.join(snap.next)}, "
                      f"{len(snap.interrupts)} open review")
        review_no = 0
        while snap.interrupts:  # a low-confidence case meets the escalation review first
            review_no += 1
            request = snap.interrupts[0].value
            node = request.get("node", "review") if isinstance(request, dict) else "review"
            try:
                decision = _decide(console, request, fresh, config,
                                   interactive=args.interactive)
            except EOFError:  # Ctrl-D, or a script's input ran out: nothing was decided
                console.print()
                raise CLIError(
                    f"the input ended before a review decision; the run waits at {node}: "
                    f"decide it with: relaygraph review {thread_id} approve "
                    f"{shlex.join(['--db', url])}") from None
            console.print(f"\n[bold]{2 + review_no}. review[/bold] at {node}: "
                          f"{decision['action']} by {decision.get('reviewer') or 'reviewer'}; "
                          "the run continues from the checkpoint")
            snap = fresh.get_state(config)
            if snap.interrupts:
                _render_paused(console, snap)
        _summary(console, fresh, thread_id, url, saver)
    return 0


def _crash_after(console: Console, graph: Any, saver: Any, config: Any, example: Any,
                 args: argparse.Namespace) -> int:
    """Run until ``args.crash_after`` has checkpointed, then end the process hard."""
    from relaygraph.nodes._review import submit_review

    node = args.crash_after
    stopping = graph.copy(update={"interrupt_after_nodes": [node]})
    snap = stopping.get_state(config)
    thread_id = config["configurable"]["thread_id"]
    if snap.values and not snap.next and not snap.interrupts:
        raise CLIError(f"thread {thread_id!r} has already finished; start a new one")
    stopping.invoke(None if snap.values else example.make_input(), config, durability="sync")
    while True:
        snap = stopping.get_state(config)
        if snap.interrupts:  # reviews before the crash point are approved, as in the demo
            submit_review(stopping, config, {"action": "approve", "reviewer": "demo",
                                             "comment": "auto-approved"},
                          interrupt_id=snap.interrupts[0].id)
            continue
        break
    if not snap.next:
        console.print(f"the run finished without stopping after {node!r} (it did not run)")
        return 0
    # the demo approves its reviews itself; the resumed run does the same
    command = ["relaygraph", "resume", thread_id, "--db", args.db, "--approve"]
    console.print(f"\n[bold red]crashing[/bold red] right after {node!r}: its checkpoint is in "
                  f"the database, next would be {', '.join(snap.next)}")
    console.print(f"finish the run with:\n  {shlex.join(command)}")
    sys.stdout.flush()
    sys.stderr.flush()
    # a hard end: no cleanup, no lease release, no engine disposal, as a killed worker
    os._exit(1)


def _decide(console: Console, request: Any, graph: Any, config: Any, *,
            interactive: bool) -> dict[str, Any]:
    """Ask for (or auto-approve) one review and submit it; returns the decision."""
    from relaygraph.nodes._review import InvalidReviewDecision, submit_review

    for attempt in range(3):
        decision = (_ask_decision(console, request) if interactive else
                    {"action": "approve", "reviewer": "demo", "comment": "auto-approved"})
        try:
            submit_review(graph, config, decision)
            return decision
        except InvalidReviewDecision as exc:
            if not interactive or attempt == 2:
                raise CLIError(f"review refused: {exc}") from None
            console.print(f"[red]refused:[/red] {exc}")
    raise AssertionError("unreachable")  # pragma: no cover


def _render_paused(console: Console, snap: Any) -> None:
    request = snap.interrupts[0].value
    console.print(f"   paused before [bold]{', '.join(snap.next)}[/bold]: a human must review")
    if isinstance(request, dict):
        subject = request.get("value", request.get("subject"))
        console.print(f"   under review: {short(subject, 100)}")
        if request.get("guard_route") in ("escalate", "halt") and request.get("guard_reason"):
            console.print(f"   why: guard {request.get('guard')}: {request['guard_reason']}")


def _ask_decision(console: Console, request: Any) -> dict[str, Any]:
    import json

    from rich.prompt import Prompt

    value = request.get("value") if isinstance(request, dict) else request
    console.print(f"\n[bold]review request[/bold] ({request.get('policy_reason', '')})")
    console.print_json(json.dumps(value, default=str))
    actions = list(request.get("actions") or ["approve", "edit", "reject"])
    action = Prompt.ask("decision", choices=actions, default=actions[0], console=console)
    decision: dict[str, Any] = {"action": action, "reviewer": "cli"}
    while action == "edit" and "edits" not in decision:
        raw = Prompt.ask('edits as JSON, e.g. {"amount": "200.00"}', console=console)
        try:
            edits = json.loads(raw)
        except ValueError:
            edits = None
        if isinstance(edits, dict):
            decision["edits"] = edits
        else:
            console.print(f"[red]not a JSON object:[/red] {short(raw, 40)!r}")
    if action == "reject":
        decision["reason"] = Prompt.ask("reason", console=console)
    else:
        comment = Prompt.ask("comment", default="", console=console)
        if comment:
            decision["comment"] = comment
    return decision


def _summary(console: Console, graph: Any, thread_id: str, db: str, saver: Any) -> None:
    from relaygraph.cli._threads import render_result, render_status
    from relaygraph.observe import timeline
    from relaygraph.serve._threads import thread_config

    tl = timeline(graph, thread_config(thread_id))
    console.print("\n[bold]steps[/bold] (rebuilt from the checkpoints in the database)")
    console.print(tl)
    report = status_of(graph, thread_id, Leases(saver))
    render_status(console, report, thread_id, shlex.join(["--db", db]), tl.values)
    render_result(console, report, tl.values)
