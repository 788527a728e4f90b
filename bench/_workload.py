"""The benchmark workload: three agents in a loop, messages accumulating, a dict updated.

Deterministic: the text of every message comes from a seeded generator, so every saver
stores exactly the same states.
"""

from __future__ import annotations

import functools
import importlib
import random
from typing import Annotated, Any

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langgraph.channels import DeltaChannel
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

WORDS = (
    "order refund customer invoice shipment delayed carrier warehouse policy exception "
    "account billing charge duplicate credit card statement review approve escalate "
    "priority ticket agent research source evidence summary finding claim verify quote "
    "the a of to and in for on with is was that this it as by be are from at an or "
    "we will please thanks check confirm update status tracking number return label "
    "received damaged replacement item price discount total amount tax subtotal date"
).split()
AGENTS = ("researcher", "analyst", "critic")


def _vocab_text(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(n_words)]
    for i in range(0, n_words, rng.randint(9, 14)):
        words[i] = words[i].capitalize()
    if rng.random() < 0.5:
        words.append(f"#{rng.randint(10000, 99999)}")
    return " ".join(words) + "."


@functools.cache
def _prose_pool() -> str:
    """Real English prose: the docstrings of some standard-library modules (~150 kB,
    ~5,800 distinct words; what they say differs a little between Python versions)."""
    texts: dict[str, None] = {}
    for name in ("collections", "argparse", "asyncio.tasks", "json", "logging", "subprocess",
                 "unittest.case", "email.message", "http.client", "tarfile", "zipfile",
                 "pathlib", "typing", "dataclasses", "functools", "itertools", "threading",
                 "socket", "ssl", "decimal"):
        mod = importlib.import_module(name)
        for attr in dir(mod):
            doc = getattr(getattr(mod, attr, None), "__doc__", None)
            if isinstance(doc, str) and len(doc) > 200:
                texts[" ".join(doc.split())] = None
    return " ".join(texts)


def _prose_text(rng: random.Random, n_words: int) -> str:
    """An excerpt of real prose, about as long as ``n_words`` of the vocabulary text."""
    pool = _prose_pool()
    start = rng.randrange(0, len(pool) - 8 * n_words)
    return pool[start:start + 7 * n_words]


TEXTS = {"vocab": _vocab_text, "prose": _prose_text}


class BenchState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    notes: dict[str, Any]
    count: int
    target: int


def _add_many(state: list, writes: list) -> list:
    return functools.reduce(add_messages, writes, state)


class DeltaBenchState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], DeltaChannel(_add_many)]
    notes: dict[str, Any]
    count: int
    target: int


def _agent(name: str, _text: Any = _vocab_text):
    def node(state: dict) -> dict:
        n = state.get("count", 0) + 1
        rng = random.Random(f"{name}-{n}")
        msgs: list[AnyMessage] = []
        if n % 3 == 0:
            msgs.append(AIMessage(_text(rng, 55), id=f"{name}-{n}", tool_calls=[
                {"name": "lookup", "args": {"query": _text(rng, 6)}, "id": f"call-{n}"}]))
        else:
            msgs.append(AIMessage(_text(rng, 70), id=f"{name}-{n}"))
        if n % 5 == 0:
            msgs.append(ToolMessage(_text(rng, 30), tool_call_id=f"call-{n}", id=f"tool-{n}"))
        notes = dict(state.get("notes") or {})
        notes[name] = {"turn": n, "confidence": round(rng.random(), 3),
                       "open_questions": rng.randint(0, 4)}
        return {"messages": msgs, "notes": notes, "count": n}
    return node


def build(delta: bool = False, text: str = "vocab") -> StateGraph:
    """The workload graph. ``text``: ``"vocab"`` (words drawn from ~110, the default) or
    ``"prose"`` (excerpts of real English prose)."""
    b = StateGraph(DeltaBenchState if delta else BenchState)
    for name in AGENTS:
        b.add_node(name, _agent(name, TEXTS[text]))
    b.add_edge(START, AGENTS[0])
    b.add_edge(AGENTS[0], AGENTS[1])
    b.add_edge(AGENTS[1], AGENTS[2])

    def route(state: dict) -> str:
        return END if state["count"] >= state["target"] else AGENTS[0]

    b.add_conditional_edges(AGENTS[2], route)
    return b


# -- worker processes (bench_workers.py, bench_sqlite_workers.py) ----------------------


def run_worker(saver: Any, index: int, runs: int, threads: int, steps: int, start: Any,
               done: Any) -> None:
    """In a worker process: ``runs`` concurrent runs of the workload on ``saver``, each
    through ``threads`` threads of ``steps`` steps, once ``start`` is set (after a warm-up
    thread: statements compiled, pools filled); ``index`` is put on ``done`` after."""
    from concurrent.futures import ThreadPoolExecutor

    from langchain_core.messages import HumanMessage

    graph = build().compile(checkpointer=saver)

    def thread(tid: str) -> None:
        graph.invoke({"messages": [HumanMessage(f"case {tid}", id=f"in-{tid}")],
                      "count": 0, "target": steps},
                     {"configurable": {"thread_id": tid}, "recursion_limit": 4 * steps + 10})

    thread(f"warm-{index}")
    start.wait()
    with ThreadPoolExecutor(runs) as ex:
        list(ex.map(lambda i: [thread(f"w{index}-r{i}-t{k}") for k in range(threads)],
                    range(runs)))
    done.put(index)


def spawn_workers(target: Any, args_of: Any, n: int) -> tuple[list[Any], Any, Any]:
    """``n`` started processes (spawned: fresh interpreters) running
    ``target(*args_of(i), start, done)``; returns them, the start event and done queue."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(i), start, done)) for i in range(n)]
    for p in procs:
        p.start()
    return procs, start, done


def finish_workers(procs: list[Any], done: Any, what: str) -> float:
    """Wait for every worker to report done and exit cleanly; ``time.perf_counter()``
    when the last one reported done."""
    import time

    for _ in procs:
        done.get(timeout=1800)
    last = time.perf_counter()
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise SystemExit(f"a {what} worker failed (exit {p.exitcode})")
    return last
