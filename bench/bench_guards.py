"""What a ConfidenceGuard after each agent costs a multi-agent workload.

Workload: three deterministic agents in a chain (intake -> resolver -> writer). Each
agent calls a chat model (LangChain's fake list model, so every call goes through the
real ``BaseChatModel`` machinery), parses its JSON answer and appends a message; the
messages channel grows through ``add_messages``. The guard is a ``ConfidenceGuard``
(score path plus one rule) on every agent's output. Every run is a new thread on the
chosen checkpointer.

Reported: median agent steps/s of each variant over the repeats (within a repeat the
variants take turns every ``--chunk`` runs, so machine noise hits all alike) and the
ratio to the unguarded graph; a guard costs ``1 - ratio`` of the workload's throughput.
Two guarded variants: a guard node after each agent (one more graph step and checkpoint
per verdict), and each agent wrapped with its guard (``guard.wrap(agent)``: the verdict
runs in the agent's own step).

    python bench/bench_guards.py                       # InMemorySaver
    python bench/bench_guards.py --saver sqlite        # relaygraph's SQLAlchemySaver
    python bench/bench_guards.py --runs 300 --repeats 9
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

from relaygraph.graphs import RelayState, merge_dicts
from relaygraph.guards import ConfidenceGuard, Rule

AGENTS = ("intake", "resolver", "writer")


class BenchState(RelayState):
    messages: Annotated[list[AnyMessage], add_messages]
    outputs: Annotated[dict[str, Any], merge_dicts]


def agent(name: str) -> Callable[[BenchState], dict[str, Any]]:
    answers = [
        json.dumps({"agent": name, "summary": f"{name} handled case {i}", "amount": 10 + i,
                    "confidence": 0.9})
        for i in range(5)
    ]
    model = FakeListChatModel(responses=answers)

    def node(state: BenchState) -> dict[str, Any]:
        prompt = [SystemMessage(f"You are the {name} agent."), *state["messages"][-6:]]
        reply = model.invoke(prompt)
        data = json.loads(str(reply.content))
        return {
            "messages": [AIMessage(content=reply.content, name=name)],
            "outputs": {name: data},
        }

    return node


def guard_for(name: str, nxt: str) -> ConfidenceGuard:
    return ConfidenceGuard(
        score=f"outputs.{name}.confidence", threshold=0.8,
        checks=[Rule(lambda v: v > 0, "amount must be positive",
                     path=f"outputs.{name}.amount", name="positive_amount")],
        on_pass=nxt, on_retry=name, max_retries=1,
    )


def build(variant: str, checkpointer: Any) -> Any:
    """``plain``: no guards; ``node``: a guard node after each agent; ``wrapped``: each
    agent wrapped with its guard (`GuardedAgent`, same step)."""
    b = StateGraph(BenchState)
    b.add_edge(START, AGENTS[0])
    for i, name in enumerate(AGENTS):
        nxt = AGENTS[i + 1] if i + 1 < len(AGENTS) else END
        if variant == "plain":
            b.add_node(name, agent(name))
            b.add_edge(name, nxt)
        elif variant == "node":
            b.add_node(name, agent(name))
            b.add_node(f"check_{name}", guard_for(name, nxt))
            b.add_edge(name, f"check_{name}")
        else:
            b.add_node(name, guard_for(name, nxt).wrap(agent(name)))
    return b.compile(checkpointer=checkpointer)


def run_chunk(graph: Any, first: int, count: int, tag: str) -> float:
    """Seconds to run ``count`` fresh threads through ``graph``."""
    start = time.perf_counter()
    for i in range(first, first + count):
        out = graph.invoke(
            {"messages": [HumanMessage(f"Case {i}: refund order A-{i} for 12.40")]},
            {"configurable": {"thread_id": f"{tag}-{i}"}},
        )
        assert len(out["messages"]) == 1 + len(AGENTS)
    return time.perf_counter() - start


def one_repeat(graphs: dict[str, Any], runs: int, chunk: int, tag: str) -> dict[str, float]:
    """Agent steps/s of each variant over ``runs`` threads, interleaved in chunks so that
    a burst of load from other processes hits every variant alike."""
    spent = dict.fromkeys(graphs, 0.0)
    names = list(graphs)
    for c, first in enumerate(range(0, runs, chunk)):
        count = min(chunk, runs - first)
        rotated = names[c % len(names):] + names[: c % len(names)]
        for k in rotated:
            spent[k] += run_chunk(graphs[k], first, count, f"{tag}-{k}")
    return {k: runs * len(AGENTS) / t for k, t in spent.items()}


def make_saver(kind: str, workdir: Path) -> Any:
    if kind == "memory":
        return InMemorySaver()
    import sqlalchemy as sa

    from relaygraph.checkpointers import SQLAlchemySaver

    url = (f"sqlite:///{workdir / 'bench.db'}" if kind == "sqlite"
           else "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    saver = SQLAlchemySaver(sa.create_engine(url))
    saver.setup()
    return saver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs (threads) per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=10, help="runs per interleaved chunk")
    parser.add_argument("--saver", choices=["memory", "sqlite", "postgres"], default="memory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        saver = make_saver(args.saver, Path(tmp))
        graphs = {v: build(v, saver) for v in ("plain", "node", "wrapped")}
        one_repeat(graphs, 10, 5, "warm-up")
        rates: dict[str, list[float]] = {k: [] for k in graphs}
        ratios: dict[str, list[float]] = {k: [] for k in graphs if k != "plain"}
        for r in range(args.repeats):
            got = one_repeat(graphs, args.runs, args.chunk, f"r{r}")
            for k, v in got.items():
                rates[k].append(v)
            for k in ratios:
                ratios[k].append(got[k] / got["plain"])

    print(f"ConfidenceGuard after each of {len(AGENTS)} agents; saver={args.saver}, "
          f"{args.runs} runs x {args.repeats} repeats")
    labels = {"plain": "no guards", "node": "guard nodes", "wrapped": "GuardedAgent"}
    print(f"{'variant':<14}{'median agent steps/s':>22}{'min':>9}{'max':>9}"
          f"{'ratio vs plain':>16}{'guard cost':>12}")
    for k, v in rates.items():
        med = statistics.median(ratios[k]) if k in ratios else 1.0
        print(f"{labels[k]:<14}{statistics.median(v):>22.1f}{min(v):>9.1f}{max(v):>9.1f}"
              f"{med:>16.3f}{1 - med:>12.1%}")
    print("ratio = median over repeats of (variant steps/s / plain steps/s in the same repeat);"
          " target: guard cost <= 10%")


if __name__ == "__main__":
    main()
