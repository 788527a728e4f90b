"""With LangSmith tracing on, the runs posted to the endpoint carry relaygraph's metadata.

A small LangSmith-compatible server on 127.0.0.1 records what the client posts
(multipart or JSON batch ingest, optionally zstd/gzip-compressed); the traced graph runs
in a subprocess so that the tracing environment does not leak into other tests.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class _Recorder(BaseHTTPRequestHandler):
    runs: dict[str, dict[str, Any]]

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _body(self) -> bytes:
        data = self.rfile.read(int(self.headers.get("content-length") or 0))
        encoding = (self.headers.get("content-encoding") or "").lower()
        if encoding == "zstd":
            import zstandard

            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        elif encoding == "gzip":
            data = gzip.decompress(data)
        return data

    def _merge(self, op: str, run_id: str, field: str | None, value: Any) -> None:
        run = self.server.runs.setdefault(run_id, {"id": run_id})  # type: ignore[attr-defined]
        self.server.ops.append((op, run_id, field))  # type: ignore[attr-defined]
        if field is None:
            extra = value.pop("extra", None) if isinstance(value, dict) else None
            run.update(value)
            if extra:
                run.setdefault("extra", {}).update(extra)
        elif field == "extra":
            run.setdefault("extra", {}).update(value)
        else:
            run[field] = value

    def _reply(self, code: int = 200, body: bytes = b"{}") -> None:
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        if self.path.startswith("/info"):
            self._reply(body=json.dumps({"version": "0.10.0", "instance_flags": {},
                                         "batch_ingest_config": {}}).encode())
        else:
            self._reply(404)

    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        ctype = self.headers.get("content-type", "")
        if self.path.startswith("/runs/multipart"):
            msg = BytesParser(policy=HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                op, run_id, *rest = name.split(".")
                payload = part.get_payload(decode=True)
                if op in ("post", "patch"):
                    self._merge(op, run_id, rest[0] if rest else None, json.loads(payload))
        elif self.path.startswith("/runs/batch"):
            data = json.loads(body)
            for op in ("post", "patch"):
                for run in data.get(op) or []:
                    self._merge(op, run["id"], None, run)
        elif self.path.rstrip("/") == "/runs":
            run = json.loads(body)
            self._merge("post", run["id"], None, run)
        self._reply()

    def do_PATCH(self) -> None:  # noqa: N802
        body = json.loads(self._body())
        run_id = self.path.rstrip("/").split("/")[-1]
        self._merge("patch", run_id, None, body)
        self._reply()


@pytest.fixture
def langsmith_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.runs = {}  # type: ignore[attr-defined]
    server.ops = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


SCRIPT = textwrap.dedent("""
    from typing import Any
    from langchain_core.messages import AIMessage
    from langchain_core.tracers.langchain import wait_for_all_tracers
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import START, StateGraph
    from langgraph.types import Command

    from relaygraph.graphs import RelayState
    from relaygraph.nodes import HumanReview, track_agent
    from relaygraph.observe import Pricing, annotate_guard_decision

    class S(RelayState, total=False):
        messages: list
        draft: dict
        sent: bool

    def intake(state):
        msg = AIMessage("draft", id="m1", response_metadata={"model_name": "model-a"},
                        usage_metadata={"input_tokens": 1000, "output_tokens": 500,
                                        "total_tokens": 1500})
        return {"messages": [msg], "draft": {"text": "hello"}}

    def check(state):
        decision = {"guard": "check", "score": 0.55, "threshold": 0.8, "failed_checks": [],
                    "route": "escalate", "breaker_state": "closed", "at": "t"}
        annotate_guard_decision(decision)
        return {"guard_log": [decision]}

    def send(state):
        return {"sent": True}

    b = StateGraph(S)
    b.add_node("intake", track_agent(intake, name="intake",
                                     pricing=Pricing({"model-a": (1.0, 2.0)})))
    b.add_node("check", check)
    b.add_node("review", HumanReview("draft", on_approve="send", on_reject="send",
                                     agent="intake"))
    b.add_node("send", send)
    b.add_edge(START, "intake")
    b.add_edge("intake", "check")
    b.add_edge("check", "review")
    graph = b.compile(checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "traced"}}
    graph.invoke({}, cfg)
    out = graph.invoke(Command(resume={"action": "approve", "reviewer": "ana"}), cfg)
    assert out["sent"] is True
    wait_for_all_tracers()
    print("ok")
""")


def test_posted_runs_carry_relaygraph_metadata(langsmith_server, tmp_path) -> None:
    port = langsmith_server.server_address[1]
    env = {
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
        "LANGSMITH_ENDPOINT": f"http://127.0.0.1:{port}", "LANGSMITH_TRACING": "true",
        "LANGSMITH_API_KEY": "test", "LANGSMITH_PROJECT": "relaygraph-tests",
    }
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
    runs = list(langsmith_server.runs.values())
    assert runs, "the client posted no runs"

    def meta(run: dict) -> dict:
        return (run.get("extra") or {}).get("metadata") or {}

    [intake] = [r for r in runs if r.get("name") == "intake"]
    m = meta(intake)
    assert m["relaygraph_agent"] == "intake"
    assert m["relaygraph_cost"] == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert m["relaygraph_input_tokens"] == 1000 and m["relaygraph_output_tokens"] == 500
    assert m["relaygraph_models"] == ["model-a"]
    assert "relaygraph" in intake["tags"] and "relaygraph:agent:intake" in intake["tags"]

    [check] = [r for r in runs if r.get("name") == "check"]
    assert meta(check)["relaygraph_guard_route"] == "escalate"
    assert meta(check)["relaygraph_guard_score"] == 0.55
    assert "relaygraph:guard:escalate" in check["tags"]

    reviews = [r for r in runs if r.get("name") == "review"]
    approved = [r for r in reviews if meta(r).get("relaygraph_review") == "approve"]
    assert len(approved) == 1, [meta(r) for r in reviews]
    m = meta(approved[0])
    assert m["relaygraph_reviewer"] == "ana"
    assert m["relaygraph_agent"] == "intake"
    assert m["relaygraph_guard_route"] == "escalate"
    assert m["relaygraph_review_policy_reason"].startswith("review: no autonomy policy")
    assert "relaygraph:review:approve" in approved[0]["tags"]
    # the first execution, which paused the run, is marked as a requested review
    requested = [r for r in reviews if meta(r).get("relaygraph_review") == "requested"]
    assert len(requested) == 1 and "relaygraph:review:requested" in requested[0]["tags"]
    assert "relaygraph:review:requested" not in approved[0]["tags"]
    # plain nodes are not tagged
    [send] = [r for r in runs if r.get("name") == "send"]
    assert "relaygraph" not in (send.get("tags") or [])
