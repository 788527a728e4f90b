"""The ``relaygraph`` command line, on any graph.

Commands::

    relaygraph threads    [--status S] [--limit N]          threads and their status
    relaygraph timeline   THREAD                            steps, handoffs, guards, reviews, cost
    relaygraph reviews                                      pending reviews across threads
    relaygraph review     THREAD approve|edit|reject [field=value ...] [--reason R]
    relaygraph resume     THREAD [--approve]                continue a stopped or crashed run
    relaygraph costs      [--graph NAME] [--since DATE] [--per-day N]
    relaygraph db         upgrade|prune|stats
    relaygraph contracts  check | diff OLD NEW              threads that would not resume
    relaygraph serve      [NAME=module:attr ...] [--workers N]
    relaygraph demo       [--crash-after NODE] [--pause] [--interactive]

Every command takes ``--db URL`` (a SQLAlchemy URL: ``sqlite:///relaygraph.db``,
``postgresql+psycopg://user@host/db``, ``mysql+pymysql://user@host/db``) or ``--config FILE``
(the server's TOML file: its database and graphs), and ``--graph NAME=module:attr``
(repeatable) for the user's graphs; without any, the built-in examples. A thread's graph is
read from its checkpoint metadata (``graph_id``). ``--json`` prints JSON for scripts.

Exit status: 0 ok, 1 failed (one line on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from relaygraph import __version__
from relaygraph._errors import RelaygraphError
from relaygraph.cli import _contracts, _costs, _db, _reviews, _runs, _serve, _threads
from relaygraph.cli._common import CLIError, UsageError, graph_not_loaded, make_console

__all__ = ["CLIError", "UsageError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``relaygraph: error: ...``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"relaygraph: error: {message} (see: {self.prog} --help)\n")
        sys.exit(2)


class _SubParser(_Parser):
    """A command's parser: an option it does not know is its own error, so that the
    message points at the command's ``--help``, not at ``relaygraph --help``."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``relaygraph`` command."""
    parser = _Parser(
        prog="relaygraph",
        description="Multi-agent LangGraph workflows that hold up in production.")
    parser.add_argument("--version", action="version", version=f"relaygraph {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_SubParser)
    for module in (_threads, _reviews, _runs, _costs, _db, _serve, _contracts):
        module.register(sub)
    return parser


def _db_of(args: argparse.Namespace) -> str:
    return str(getattr(args, "db", None) or "the database")


def _db_options(args: argparse.Namespace) -> str:
    """The options that name the database, for the commands the errors suggest."""
    if getattr(args, "db", None):
        return shlex.join(["--db", args.db])
    if getattr(args, "config", None):
        return shlex.join(["--config", args.config])
    return "--db URL"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _import_from_cwd() -> None:
    # The installed ``relaygraph`` script starts with its own bin directory on sys.path,
    # not the current one: put the current directory first, as ``python -m`` and uvicorn
    # do, so that ``--graph support=myapp.graphs:builder`` finds the user's package.
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)


@contextmanager
def _quiet_serde_log() -> Iterator[None]:
    # LangGraph logs a warning for a class it may not load, and relaygraph's saver then
    # raises its own error about it: the error alone is the one line the CLI prints
    log = logging.getLogger("langgraph.checkpoint.serde.jsonplus")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return int(exc.code or 0)
    _import_from_cwd()
    console = make_console()
    from relaygraph.checkpointers import (
        CorruptCheckpointError,
        SchemaVersionError,
        SetupRequiredError,
    )

    def fail(message: str, status: int = 1) -> int:
        print(f"relaygraph: error: {message}", file=sys.stderr)
        return status

    try:
        with _quiet_serde_log():
            return int(args.func(args, console))
    except UsageError as exc:
        return fail(_one_line(exc), 2)
    except SchemaVersionError as exc:
        hint = (f"upgrade them with: relaygraph db upgrade {_db_options(args)}"
                if exc.found < exc.needed else "upgrade relaygraph")
        return fail(f"{_db_of(args)} holds relaygraph tables of schema version {exc.found}, "
                    f"this relaygraph uses {exc.needed}; {hint}")
    except SetupRequiredError:
        return fail(f"{_db_of(args)} has no relaygraph tables; create them with: "
                    f"relaygraph db upgrade {_db_options(args)}")
    except CorruptCheckpointError as exc:
        reason = graph_not_loaded(exc)
        return fail(f"thread {exc.thread_id!r} {reason}" if reason else _one_line(exc))
    except (RelaygraphError, sa.exc.SQLAlchemyError) as exc:
        return fail(_one_line(exc))
    except KeyboardInterrupt:
        print("relaygraph: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
