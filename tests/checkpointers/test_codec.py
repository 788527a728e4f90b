"""Value encoding: the fast message decoder and the compression formats."""

from __future__ import annotations

import zlib

import ormsgpack
import pytest
import zstandard
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from relaygraph.checkpointers import (
    BlockedTypeError,
    RelaygraphSerializer,
    SQLAlchemySaver,
    default_serde,
)
from relaygraph.checkpointers._codec import _decompress, dump, load, pack, unpack
from relaygraph.checkpointers._zdict import ZDICT_V1, ZDICT_ZS_V1, ZDICT_ZS_V2

MESSAGES = [
    HumanMessage("plain text", id="h1"),
    HumanMessage([{"type": "text", "text": "a block"}, {"type": "image", "url": "u"}],
                 name="ann", id="h2", additional_kwargs={"k": [1, 2]}),
    SystemMessage("you are terse", id="s1"),
    AIMessage("calling", id="a1", tool_calls=[{"name": "lookup", "args": {"q": "x"},
                                               "id": "c1"}],
              usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
              response_metadata={"model_name": "scripted", "finish_reason": "tool_calls"}),
    AIMessage("", id="a2", invalid_tool_calls=[{"name": "bad", "args": "{", "id": "c2",
                                                "error": "json", "type": "invalid_tool_call"}]),
    AIMessage("no id"),
    ToolMessage("result", tool_call_id="c1", id="t1", artifact={"rows": [1, 2]},
                status="error"),
    ChatMessage("hi", role="critic", id="c"),
    FunctionMessage("out", name="fn", id="f"),
    RemoveMessage(id="h1"),
]


def _same(a: object, b: object) -> None:
    assert type(a) is type(b)
    assert a == b
    assert a.model_fields_set == b.model_fields_set  # type: ignore[attr-defined]
    assert a.__dict__ == b.__dict__
    assert a.__pydantic_extra__ == b.__pydantic_extra__  # type: ignore[attr-defined]


def test_fast_decoder_rebuilds_every_message_class_exactly() -> None:
    ours = default_serde()
    reference = JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
    data = reference.dumps_typed(MESSAGES)
    fast, slow = ours.loads_typed(data), reference.loads_typed(data)
    assert len(fast) == len(slow) == len(MESSAGES)
    for a, b, original in zip(fast, slow, MESSAGES, strict=True):
        _same(a, b)
        assert type(a) is type(original) and a == original and a.__dict__ == original.__dict__
    # they behave as validated messages do
    for a, b in zip(fast, slow, strict=True):
        assert a.model_dump() == b.model_dump() and repr(a) == repr(b)
        assert a.model_copy(update={"id": "new"}) == b.model_copy(update={"id": "new"})
        a.name = "renamed"  # assignment works, and is seen by dumps
        assert a.model_dump()["name"] == "renamed"
    # fresh objects on every call: nothing handed out twice
    again = ours.loads_typed(data)
    assert all(x is not y and x.__dict__ is not y.__dict__
               for x, y in zip(fast, again, strict=True))


def test_messages_are_encoded_as_langgraph_encodes_them() -> None:
    # the encoder writes LangChain's message classes itself: the very bytes LangGraph's
    # serializer writes, nested values and subclasses (which take LangGraph's path) too
    class Custom(AIMessage):
        extra_field: str = "x"

    reference = JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
    values = [MESSAGES, {"nested": [MESSAGES[0], {"deeper": MESSAGES[-1]}]},
              Custom("sub", id="s1"), AIMessage("t", additional_kwargs={"when": (1, 2)})]
    for value in values:
        assert default_serde().dumps_typed(value) == reference.dumps_typed(value)
    assert default_serde().loads_typed(default_serde().dumps_typed(MESSAGES)) == MESSAGES


def _ext(module: str, name: str, kwargs: object) -> bytes:
    return ormsgpack.packb([ormsgpack.Ext(5, ormsgpack.packb([module, name, kwargs,
                                                              "model_validate_json"]))])


def test_older_message_shapes_take_the_validating_path() -> None:
    # a message stored by an older LangChain: tool calls only in additional_kwargs,
    # no tool_calls field; validation upgrades it, as LangGraph's own decoder does
    legacy = {"content": "x", "additional_kwargs": {"tool_calls": [{
        "id": "c9", "type": "function",
        "function": {"name": "lookup", "arguments": "{\"q\": 1}"}}]},
        "response_metadata": {}, "type": "ai", "name": None, "id": "old", "example": False}
    (msg,) = default_serde().loads_typed(("msgpack", _ext("langchain_core.messages.ai",
                                                          "AIMessage", legacy)))
    assert isinstance(msg, AIMessage)
    assert msg.tool_calls == [{"name": "lookup", "args": {"q": 1}, "id": "c9",
                               "type": "tool_call"}]


def test_a_wrong_type_tag_is_not_trusted() -> None:
    fields = HumanMessage("x", id="1").model_dump()
    fields["type"] = "ai"  # claims to be something else: validation decides
    (msg,) = default_serde().loads_typed(
        ("msgpack", _ext("langchain_core.messages.human", "HumanMessage", fields)))
    reference = JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
    (ref,) = reference.loads_typed(
        ("msgpack", _ext("langchain_core.messages.human", "HumanMessage", fields)))
    assert type(msg) is type(ref) and msg == ref


def test_unknown_classes_are_refused_not_called() -> None:
    with pytest.raises(BlockedTypeError, match="os.system"):
        default_serde().loads_typed(
            ("msgpack", _ext("os", "system", {"command": "echo hacked"})))
    # LangGraph's fallback on request: the raw data, still never called
    (val,) = RelaygraphSerializer(on_blocked="plain").loads_typed(
        ("msgpack", _ext("os", "system", {"command": "echo hacked"})))
    assert val == {"command": "echo hacked"}


def test_values_are_compressed_with_zstd_and_read_back() -> None:
    serde = default_serde()
    value = [HumanMessage("the same words again " * 40, id=str(i)) for i in range(5)]
    type_, blob = dump(serde, value, compress=True)
    assert type_.endswith("|zf") and len(blob) < len(serde.dumps_typed(value)[1]) // 4
    assert load(serde, type_, blob) == value
    t, b = pack({"k": [0, "msgpack", b"x" * 500]}, compress=True)
    assert unpack(t, b, "frame", "th") == {"k": [0, "msgpack", b"x" * 500]}
    # large values (segments) take the stronger level, and read back the same way
    big = [HumanMessage(f"message {i} " + "lorem ipsum dolor " * 30, id=str(i))
           for i in range(60)]
    type_, blob = dump(serde, big, compress=True)
    assert len(serde.dumps_typed(big)[1]) > 16_384 and type_.endswith("|zf")
    assert load(serde, type_, blob) == big
    # small values are stored as they are
    assert dump(serde, "short", compress=True)[0] == "msgpack"


def test_rows_written_with_zlib_stay_readable() -> None:
    raw = ormsgpack.packb({"a": 1})
    co = zlib.compressobj(6, zdict=ZDICT_V1)
    assert _decompress("rg1|zd", co.compress(raw) + co.flush()) == ("rg1", raw)
    assert _decompress("rg1|z", zlib.compress(raw)) == ("rg1", raw)


def _fixed(dict_data: bytes, dict_type: int) -> zstandard.ZstdCompressor:
    d = zstandard.ZstdCompressionDict(dict_data, dict_type=dict_type)
    return zstandard.ZstdCompressor(dict_data=d, write_content_size=True, write_dict_id=False)


def test_rows_written_with_the_raw_content_dictionary_stay_readable() -> None:
    """``|zs`` rows (earlier versions): the same content without entropy tables."""
    raw = ormsgpack.packb({"messages": ["the same words again " * 10]})
    old = _fixed(ZDICT_ZS_V1, zstandard.DICT_TYPE_RAWCONTENT).compress(raw)
    assert _decompress("rg1|zs", old) == ("rg1", raw)
    # the two dictionaries are not interchangeable: each tag reads with its own
    new = dump(default_serde(), ["the same words again " * 10], compress=True)
    assert new[0] == "msgpack|zf"
    with pytest.raises(zstandard.ZstdError):
        _decompress("msgpack|zs", new[1])


def test_the_fixed_dictionary_carries_entropy_tables_that_small_rows_use() -> None:
    d = zstandard.ZstdCompressionDict(ZDICT_ZS_V2, dict_type=zstandard.DICT_TYPE_FULLDICT)
    assert d.dict_id() != 0 and ZDICT_ZS_V2.endswith(ZDICT_ZS_V1)
    assert ZDICT_ZS_V2[:4] == b"\x37\xa4\x30\xec"  # zstd's dictionary magic
    # a step's rows: a few messages LangGraph serialized, none of them in the dictionary
    serde = default_serde()
    rows = [[
        AIMessage(f"Reviewed case {i}: the invoice total of {i * 37} was charged twice; "
                  f"refund issued to card ending {1000 + i}.", id=f"run-{i:04x}",
                  tool_calls=[{"name": "refund", "args": {"case": i}, "id": f"call_{i}"}]),
        ToolMessage(f"refund #{i} queued", tool_call_id=f"call_{i}", id=f"t{i}")]
        for i in range(40)]
    with_tables = sum(len(dump(serde, r, compress=True)[1]) for r in rows)
    raw_content = _fixed(ZDICT_ZS_V1, zstandard.DICT_TYPE_RAWCONTENT)
    without = sum(len(raw_content.compress(serde.dumps_typed(r)[1])) for r in rows)
    # each row starts from the dictionary's tables instead of writing its own
    assert with_tables < without * 0.95, (with_tables, without)


def test_a_corrupt_compressed_frame_is_a_clear_error(tmp_path) -> None:
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp_path}/c.db") as saver:
        saver.setup()
        cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        cp = empty_checkpoint()
        cp["channel_values"] = {"notes": "n" * 2000}
        cp["channel_versions"] = {"notes": saver.get_next_version(None)}
        saver.put(cfg, cp, {}, dict(cp["channel_versions"]))
        with saver.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE relaygraph_blobs SET blob = x'28b52ffd00'")
        from relaygraph.checkpointers import CorruptCheckpointError

        with pytest.raises(CorruptCheckpointError, match="thread 't'"):
            saver.get_tuple(cfg)


def test_delta_channel_snapshots_decode_like_langgraphs() -> None:
    from langgraph.checkpoint.serde.types import _DeltaSnapshot

    reference = JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
    data = reference.dumps_typed(_DeltaSnapshot(MESSAGES))
    ours, theirs = default_serde().loads_typed(data), reference.loads_typed(data)
    assert type(ours) is type(theirs) is _DeltaSnapshot
    for a, b in zip(ours.value, theirs.value, strict=True):
        _same(a, b)


def test_the_checkpoint_id_is_stored_once_and_comes_back(tmp_path) -> None:
    with SQLAlchemySaver.from_conn_string(f"sqlite:///{tmp_path}/i.db") as saver:
        saver.setup()
        cfg = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
        cp = empty_checkpoint()
        cp["channel_values"] = {"n": 1}
        cp["channel_versions"] = {"n": saver.get_next_version(None)}
        saver.put(cfg, cp, {}, dict(cp["channel_versions"]))
        with saver.engine.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT type, checkpoint FROM relaygraph_checkpoints").one()
        assert "id" not in load(saver.serde, row[0], row[1])  # the row's key holds it
        got = saver.get_tuple(cfg).checkpoint
        assert got["id"] == cp["id"] and got["channel_values"] == {"n": 1}
