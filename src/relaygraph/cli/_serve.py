"""``relaygraph serve``: the HTTP server (LangServe routes, LangGraph's protocol, inbox)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from relaygraph.cli._common import CLIError, UsageError, check_graph_spec


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve graphs over HTTP with a review inbox")
    serve.add_argument("specs", nargs="*", metavar="NAME=module:attr",
                       help="graphs to serve (default: the config's, else the examples)")
    serve.add_argument("--graph", action="append", default=[], dest="graph_specs",
                       metavar="NAME=module:attr", help="a graph to serve (repeatable)")
    serve.add_argument("--config", metavar="FILE", help="the server's TOML config file")
    serve.add_argument("--db", metavar="URL", help="database URL (overrides the config's)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes (1)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace, console: Console) -> int:
    specs = list(args.specs) + list(args.graph_specs)
    for spec in specs:
        check_graph_spec(spec)
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be in 1..65535, got {args.port}")
    if args.db:
        from relaygraph.cli._common import check_database

        check_database(args.db, must_exist=False)
    try:
        from relaygraph.serve._server import run_server
    except ImportError as exc:
        raise CLIError(f"serving needs the 'serve' extra ({exc.name} is missing); install it "
                       "with: pip install 'relaygraph[serve]'") from None
    run_server(specs, args.config, host=args.host, port=args.port, workers=args.workers,
               database_url=args.db, announce=lambda: console.print(
                   f"serving on http://{args.host}:{args.port}  (review inbox: /inbox)"))
    return 0
