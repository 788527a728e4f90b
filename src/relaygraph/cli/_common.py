"""What every command shares: errors, options, the database, the graphs, output."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console

from relaygraph._errors import RelaygraphError

DEFAULT_DEMO_DB = "sqlite:///relaygraph-demo.db"


class CLIError(RelaygraphError):
    """A user-facing failure: printed as one line, exit status 1."""


class UsageError(RelaygraphError):
    """A command line that cannot work as given: printed as one line, exit status 2."""


# ----------------------------------------------------------------------------- options


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a bad value is a usage error, exit status 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def common_options(parser: argparse.ArgumentParser, *, graphs: bool = True,
                   db_default: str | None = None) -> None:
    """``--db``, ``--config``, ``--graph`` (repeatable) and ``--json``."""
    parser.add_argument("--db", default=db_default, metavar="URL",
                        help="database URL (default: the config file's [database] url)")
    parser.add_argument("--config", metavar="FILE",
                        help="the server's TOML config file: database and [graphs]")
    if graphs:
        parser.add_argument("--graph", action="append", default=[], dest="graph_specs",
                            metavar="NAME=module:attr",
                            help="a graph to read threads with (repeatable); default: the "
                            "config's graphs, else the built-in examples")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, for scripts")


# ----------------------------------------------------------------------------- databases

_CONNECT_TIMEOUTS = {"postgresql": {"connect_timeout": 5}, "mysql": {"connect_timeout": 5},
                     "mariadb": {"connect_timeout": 5}}


def redact(url: sa.URL) -> str:
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
                           f"relaygraph db upgrade --db {url}")
    try:
        engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool,
                                  connect_args=_CONNECT_TIMEOUTS.get(backend, {}))
    except sa.exc.NoSuchModuleError:
        raise CLIError(f"unknown database scheme {parsed.drivername!r} in {redact(parsed)}; "
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
        raise CLIError(f"cannot connect to {redact(parsed)}: {reason}") from None
    finally:
        engine.dispose()
    return parsed


@contextmanager
def open_saver(url: str, *, setup: bool) -> Iterator[Any]:
    """Open relaygraph's SQL checkpointer on ``url`` (and run its migrations if ``setup``).

    The default serializer rebuilds every class the loaded graphs keep in state
    (`relaygraph.serve._loader.compile_on` allows them).
    """
    from relaygraph.checkpointers import SQLAlchemySaver

    with SQLAlchemySaver.from_conn_string(url) as saver:
        if setup:
            saver.setup()
        yield saver


def graph_not_loaded(exc: BaseException) -> str | None:
    """What to do about a checkpoint holding a class no loaded graph declares, or None.

    The saver refuses such a value (`BlockedTypeError`, reported as a
    `CorruptCheckpointError`); on the command line the fix is to load the thread's graph.
    """
    from relaygraph.checkpointers import BlockedTypeError, CorruptCheckpointError

    if not isinstance(exc, CorruptCheckpointError):
        return None
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, BlockedTypeError):
        cause = cause.__cause__
    if cause is None or cause.method is not None:
        return None
    return (f"holds a {cause.module}.{cause.name}, a class of a graph that is not loaded; "
            "pass its graph with --graph NAME=module:attr (or --config FILE)")


# ----------------------------------------------------------------------------- graphs


@dataclass
class Workspace:
    """The database URL and the graph objects a command works with."""

    db: str
    objects: dict[str, Any]
    from_examples: bool
    compiled: dict[str, Any] = field(default_factory=dict)
    options: str = ""
    """``--config``, ``--db`` and ``--graph`` as given, for the commands the CLI prints."""

    def compile(self, saver: Any) -> dict[str, Any]:
        """Every graph compiled on ``saver``, by graph id."""
        from relaygraph.serve._loader import compile_on

        if not self.compiled:
            self.compiled = {name: compile_on(obj, saver) for name, obj in self.objects.items()}
        return self.compiled

    def graph_for_thread(self, saver: Any, thread_id: str) -> tuple[str, Any]:
        """The graph id and compiled graph a thread belongs to (from its metadata).

        Raises:
            CLIError: the thread does not exist, or its graph is not loaded.
        """
        from relaygraph.serve._threads import thread_graph_id

        graphs = self.compile(saver)
        try:
            gid = thread_graph_id(saver, thread_id)
        except KeyError:
            raise CLIError(f"thread {thread_id!r} not found in {self.db}; list threads with: "
                           f"relaygraph threads {self.options}") from None
        if gid is None:
            if len(graphs) == 1:
                return next(iter(graphs.items()))
            raise CLIError(
                f"thread {thread_id!r} has no graph_id in its checkpoint metadata and "
                f"{len(graphs)} graphs are loaded ({', '.join(sorted(graphs))}); pass only "
                "its graph with --graph NAME=module:attr")
        if gid not in graphs:
            hint = ("pass it with --graph " + f"{gid}=module:attr")
            raise CLIError(f"thread {thread_id!r} belongs to graph {gid!r}, which is not "
                           f"loaded (loaded: {', '.join(sorted(graphs)) or 'none'}); {hint}")
        return gid, graphs[gid]


def check_graph_spec(spec: str) -> str:
    """A ``NAME=module:attr`` graph spec, checked for its shape before anything is imported.

    Raises:
        UsageError: a part is missing or the name is not a valid graph name.
    """
    from relaygraph._errors import ConfigurationError
    from relaygraph.serve._loader import check_graph_name

    name, _, target = spec.partition("=")
    module, colon, attr = target.partition(":")
    if not (colon and module.strip() and attr.strip()):
        raise UsageError("--graph takes NAME=module:attr (e.g. "
                         f"refund=myapp.graphs:refund), got {spec!r}")
    try:
        check_graph_name(name.strip())
    except ConfigurationError as exc:
        raise UsageError(f"graph {spec!r}: {exc}") from None
    return spec


def workspace(args: argparse.Namespace, *, need_db: bool = True) -> Workspace:
    """Resolve ``--db``, ``--config`` and ``--graph`` into a `Workspace`.

    Raises:
        UsageError: no database given anywhere, or a malformed ``--graph`` spec.
        CLIError: a config file or graph module that cannot be loaded.
    """
    from relaygraph.serve._loader import load_graph_spec

    config = None
    if getattr(args, "config", None):
        try:
            from relaygraph.serve._config import load_config
        except ImportError as exc:
            raise CLIError(f"reading a config file needs the 'serve' extra ({exc.name} is "
                           "missing); install it with: pip install 'relaygraph[serve]'") from None
        config = load_config(args.config)
    db = args.db or (config.database_url if config is not None else None)
    if need_db and not db:
        raise UsageError("no database: pass --db URL or --config FILE with a [database] url")
    specs = list(getattr(args, "graph_specs", []) or [])
    objects: dict[str, Any] = {}
    if config is not None:
        for name, target in config.graphs.items():
            objects[name] = load_graph_spec(f"{name}={target}")[1]
    for spec in specs:
        name, obj = load_graph_spec(check_graph_spec(spec))
        objects[name] = obj
    from_examples = not objects
    if from_examples:
        from relaygraph.graphs.examples import EXAMPLES

        objects = {name: ex.build for name, ex in EXAMPLES.items()}
    options = (["--config", args.config] if getattr(args, "config", None) else []) + (
        ["--db", args.db] if args.db else [])
    for spec in specs:
        options += ["--graph", spec]
    return Workspace(db=db or "", objects=objects, from_examples=from_examples,
                     options=shlex.join(options))


# ----------------------------------------------------------------------------- output


def make_console() -> Console:
    # tables need room: when the output is not a terminal, do not wrap at 80 columns
    # no highlighting and no wrapping of plain lines: the commands the CLI prints (resume,
    # review) must stay copyable, with no colour codes inside paths
    return Console(width=None if sys.stdout.isatty() else 140, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=_json_default, sort_keys=False) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def waiting_label(waiting_on: list[Mapping[str, Any]]) -> str:
    """What a waiting thread waits for, in a few words: ``review at review (resolution)``."""
    parts = []
    for w in waiting_on:
        value = w.get("value")
        node = w.get("node") or (value.get("node") if isinstance(value, Mapping) else None)
        if isinstance(value, Mapping) and value.get("kind") == "human_review":
            subject = value.get("subject")
            parts.append(f"review at {node or '?'}" + (f" ({subject})" if subject else ""))
        else:
            parts.append(f"input at {node or '?'}: {short(value, 40)}")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- status


class Leases:
    """Who holds which thread: the lease table on the saver's database, if it has one."""

    def __init__(self, saver: Any) -> None:
        from relaygraph.durable import LeaseStore, leases_table

        engine = saver.engine
        self.store: Any = None
        if sa.inspect(engine).has_table(leases_table.name):
            self.store = LeaseStore.from_saver(saver)

    def running(self, thread_id: str) -> bool:
        return self.store is not None and self.store.current(thread_id) is not None


def status_of(graph: Any, thread_id: str, leases: Leases) -> Any:
    """`relaygraph.observe.thread_status` of a thread, with a live lease meaning running."""
    from relaygraph.observe import thread_status
    from relaygraph.serve._threads import thread_config

    return thread_status(graph.get_state(thread_config(thread_id)),
                         running=leases.running(thread_id))
