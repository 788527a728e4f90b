"""Starting a real server (uvicorn subprocess on a free loopback port) for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

KEY_ACME = "acme-key-0123456789abcdef"
KEY_ACME_BOB = "acme-bob-key-0123456789ab"
KEY_GLOBEX = "globex-key-0123456789abcd"
API_KEYS = f"acme:ana:{KEY_ACME},acme:bob:{KEY_ACME_BOB},globex:{KEY_GLOBEX}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Live:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, key: str | None = KEY_ACME, timeout: float = 60) -> httpx.Client:
        headers = {"x-api-key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def live_server(tmp: Path, *, database_url: str, specs: Sequence[str] = (),
                config: str | None = None, workers: int = 1,
                env: Mapping[str, str] | None = None, cli: bool = False) -> Iterator[Live]:
    """Run ``uvicorn --factory relaygraph.serve._server:app_factory`` until the block ends.

    With ``cli=True`` the server is started as users start it: ``relaygraph serve SPEC...
    --db URL --workers N --host --port [--config FILE]``.
    """
    import json

    port = free_port()
    log = tmp / f"server-{port}.log"
    environ = {**os.environ, "RELAYGRAPH_API_KEYS": API_KEYS,
               "RELAYGRAPH_DATABASE_URL": database_url,
               "RELAYGRAPH_SERVE_GRAPHS": json.dumps(list(specs)),
               "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "src")]),
               **(env or {})}
    if config is not None:
        cfg = tmp / f"relaygraph-{port}.toml"
        cfg.write_text(config)
        environ["RELAYGRAPH_SERVE_CONFIG"] = str(cfg)
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "relaygraph.serve._server:app_factory",
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--log-level", "warning", "--timeout-graceful-shutdown", "20"]
    if cli:
        for name in ("RELAYGRAPH_DATABASE_URL", "RELAYGRAPH_SERVE_GRAPHS",
                     "RELAYGRAPH_SERVE_CONFIG"):
            environ.pop(name, None)
        cmd = [sys.executable, "-m", "relaygraph", "serve", *specs, "--db", database_url,
               "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port)]
        if config is not None:
            cmd += ["--config", str(tmp / f"relaygraph-{port}.toml")]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=environ,
                                cwd=str(tmp))
    live = Live(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}:\n"
                                   f"{live.output()[-3000:]}")
            try:
                if httpx.get(f"{live.url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not become ready:\n{live.output()[-3000:]}")
            time.sleep(0.1)
        yield live
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
