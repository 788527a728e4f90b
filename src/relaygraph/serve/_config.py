"""The server's configuration file (TOML): graphs, database, API keys, limits, retention.

Example ``relaygraph.toml``::

    [database]
    url = "postgresql+psycopg://app@db/relaygraph"

    [graphs]
    refund = "myapp.graphs:refund"          # NAME = "module:attr"

    [auth]
    # keys are read from the environment, never written here in plain text:
    # RELAYGRAPH_API_KEYS="acme:...,globex:ana:..." or one variable per key:
    keys = [{tenant = "acme", reviewer = "ana", key_env = "ACME_ANA_KEY"}]
    anonymous = false                       # true: no keys, one tenant (development only)

    [limits]
    max_body_bytes = 1000000
    run_timeout = 300                       # seconds; 0 = none
    enqueue_wait = 30
    lease_ttl = 30
    page_size = 50

    [retention]
    strategy = "delete"                     # or "prune" (keep the latest checkpoint)
    sweep_interval = 300
    [retention.graphs]
    refund = "30d"                          # seconds, or "45m", "12h", "30d"
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relaygraph._errors import ConfigurationError
from relaygraph.serve._auth import Principal, add_key, keys_from_env
from relaygraph.serve._context import ServerSettings

DEFAULT_DATABASE_URL = "sqlite:///relaygraph.db"

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class ServerConfig:
    """A parsed configuration: graph specs, database URL, keys and settings."""

    graphs: dict[str, str] = field(default_factory=dict)
    database_url: str = DEFAULT_DATABASE_URL
    keys: dict[str, Principal] = field(default_factory=dict)
    anonymous: bool = False
    settings: ServerSettings = field(default_factory=ServerSettings)


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a number or ``"90s"``, ``"45m"``, ``"12h"``, ``"30d"``."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{where} must be a duration, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ConfigurationError(
        f"{where} must be seconds or a duration like '45m', '12h', '30d', got {value!r}")


def _table(data: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigurationError(f"{path}: [{key}] must be a table, got {type(value).__name__}")
    return value


def _unknown(section: str, got: Mapping[str, Any], known: set[str], path: Path) -> None:
    extra = sorted(set(got) - known)
    if extra:
        raise ConfigurationError(
            f"{path}: unknown key(s) {extra} in [{section}]; known: {sorted(known)}")


def _keys(auth: Mapping[str, Any], path: Path, environ: Mapping[str, str]
          ) -> dict[str, Principal]:
    keys: dict[str, Principal] = {}
    entries = auth.get("keys", [])
    if not isinstance(entries, list):
        raise ConfigurationError(f"{path}: auth.keys must be a list of tables")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "tenant" not in entry:
            raise ConfigurationError(f"{path}: auth.keys[{i}] needs at least tenant and "
                                     f"key_env (or key)")
        _unknown(f"auth.keys[{i}]", entry, {"tenant", "reviewer", "key", "key_env"}, path)
        if "key_env" in entry:
            key = environ.get(str(entry["key_env"]))
            if not key:
                raise ConfigurationError(
                    f"{path}: auth.keys[{i}] reads its key from ${entry['key_env']}, which is "
                    f"not set")
        elif "key" in entry:
            key = str(entry["key"])
        else:
            raise ConfigurationError(f"{path}: auth.keys[{i}] needs key_env (or key)")
        tenant = str(entry["tenant"])
        add_key(keys, key, Principal(tenant, str(entry.get("reviewer") or tenant)))
    return keys


def load_config(path: str | Path | None, *, environ: Mapping[str, str] | None = None
                ) -> ServerConfig:
    """Read a config file (None: defaults) and merge ``RELAYGRAPH_API_KEYS``.

    Raises:
        ConfigurationError: unreadable TOML, unknown keys, wrong types, with the file name.
    """
    env = os.environ if environ is None else environ
    env_keys = keys_from_env(env)
    if path is None:
        return ServerConfig(keys=env_keys)
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the config file {p}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{p} is not valid TOML: {exc}") from exc
    _unknown("top level", data, {"database", "graphs", "auth", "limits", "retention"}, p)
    database = _table(data, "database", p)
    _unknown("database", database, {"url"}, p)
    graphs = _table(data, "graphs", p)
    for name, spec in graphs.items():
        if not isinstance(spec, str):
            raise ConfigurationError(f"{p}: graphs.{name} must be 'module:attr', got {spec!r}")
    auth = _table(data, "auth", p)
    _unknown("auth", auth, {"keys", "anonymous"}, p)
    keys = _keys(auth, p, env)
    for key, principal in env_keys.items():
        add_key(keys, key, principal)
    limits = _table(data, "limits", p)
    known_limits = {"max_body_bytes", "run_timeout", "enqueue_wait", "lease_ttl", "page_size",
                    "max_page_size", "drain_timeout"}
    _unknown("limits", limits, known_limits, p)
    retention = _table(data, "retention", p)
    _unknown("retention", retention, {"strategy", "sweep_interval", "graphs"}, p)
    kw: dict[str, Any] = {}
    for name in ("max_body_bytes", "page_size", "max_page_size"):
        if name in limits:
            if not isinstance(limits[name], int) or isinstance(limits[name], bool):
                raise ConfigurationError(f"{p}: limits.{name} must be an integer")
            kw[name] = limits[name]
    for name in ("enqueue_wait", "lease_ttl", "drain_timeout"):
        if name in limits:
            kw[name] = parse_duration(limits[name], f"limits.{name}")
    if "run_timeout" in limits:
        t = parse_duration(limits["run_timeout"], "limits.run_timeout")
        kw["run_timeout"] = t if t > 0 else None
    ttl = retention.get("graphs", {})
    if not isinstance(ttl, dict):
        raise ConfigurationError(f"{p}: [retention.graphs] must be a table")
    kw["retention"] = {g: parse_duration(v, f"retention.graphs.{g}") for g, v in ttl.items()}
    if "strategy" in retention:
        kw["retention_strategy"] = retention["strategy"]
    if "sweep_interval" in retention:
        kw["sweep_interval"] = parse_duration(retention["sweep_interval"],
                                              "retention.sweep_interval")
    try:
        settings = ServerSettings(**kw)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{p}: {exc}") from None
    url = database.get("url", DEFAULT_DATABASE_URL)
    if not isinstance(url, str):
        raise ConfigurationError(f"{p}: database.url must be a string")
    anonymous = auth.get("anonymous", False)
    if not isinstance(anonymous, bool):
        raise ConfigurationError(f"{p}: auth.anonymous must be true or false")
    return ServerConfig(graphs=dict(graphs), database_url=url, keys=keys,
                        anonymous=anonymous, settings=settings)
