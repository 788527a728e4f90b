"""The default serializer: strict (no pickle, allowlist), yet contracts come back whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel

from relaygraph.checkpointers import BlockedTypeError, SQLAlchemySaver, allow, default_serde

SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from decimal import Decimal
    from langgraph.checkpoint.base import empty_checkpoint
    from relaygraph.checkpointers import SQLAlchemySaver
    from checkpointers._graphs import Ticket

    url, phase = sys.argv[1], sys.argv[2]
    cfg = {{"configurable": {{"thread_id": "contract", "checkpoint_ns": ""}}}}
    with SQLAlchemySaver.from_conn_string(url) as saver:
        saver.setup()
        if phase == "write":
            cp = empty_checkpoint()
            cp["channel_values"] = {{"case": Ticket(order_id="A-1", amount=Decimal("12.40"))}}
            cp["channel_versions"] = {{"case": saver.get_next_version(None)}}
            saver.put(cfg, cp, {{}}, dict(cp["channel_versions"]))
        else:
            value = saver.get_tuple(cfg).checkpoint["channel_values"]["case"]
            print(type(value).__module__, type(value).__name__, repr(value.amount))
""")


def test_contract_comes_back_as_its_class_in_a_new_process(backend) -> None:
    tests = str(Path(__file__).resolve().parents[1])
    run = [sys.executable, "-c", SCRIPT.format(tests=tests), backend.url]
    subprocess.run([*run, "write"], check=True, timeout=120)
    out = subprocess.run([*run, "read"], check=True, timeout=120, capture_output=True,
                         text=True).stdout.split()
    assert out == ["checkpointers._graphs", "Ticket", "Decimal('12.40')"]


class Unregistered(BaseModel):
    x: int


def test_other_classes_need_allow(sqlite_backend) -> None:
    serde = default_serde()
    data = serde.dumps_typed(Unregistered(x=1))
    with pytest.raises(BlockedTypeError, match="allow\\(Unregistered\\)"):
        serde.loads_typed(data)  # blocked: never constructed, never raw data either
    allow(Unregistered)
    assert serde.loads_typed(data) == Unregistered(x=1)


def test_no_pickle_even_when_asked(sqlite_backend) -> None:
    import pickle

    import pytest

    with SQLAlchemySaver.from_conn_string(sqlite_backend.url) as saver:
        with pytest.raises(NotImplementedError, match="pickle"):
            saver.serde.loads_typed(("pickle", pickle.dumps(1)))
