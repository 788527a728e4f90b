"""The fixed preset dictionaries for stored values (format tags ``|zf`` and ``|zs`` zstd,
``|zd`` zlib), and the zstd levels every row is compressed at.

The dictionary holds the msgpack framing LangGraph's serializer writes for LangChain messages and
channel maps, so that small rows (one message, one step's writes) compress well. It is
part of the storage format: never change these bytes; add a new tag instead.
"""

import base64

#: zstd levels, with the fixed dictionary and with a thread's alike: rows up to
#: ``SMALL_MAX`` bytes (a step's rows) at the first, larger ones (segments, written every
#: ``segment_every`` steps) at the second. Small rows compress as well at level 1 as at
#: 9, twice as fast; segments gain ~6% at 5, and only ~1% more at 9, which takes three
#: times as long (~0.8 ms for a 24 kB segment). Either way smaller than zlib -6 with the
#: same dictionary, and ~3x faster to read. (Levels are not part of the stored format.)
LEVELS = (1, 5)
SMALL_MAX = 16_384

ZDICT_V1 = (
    b'\x91\xc8\x01.\x05\x94\xbalangchain_core.me'
    b'ssages.ai\xa9AIMessage\x89\xa7con'
    b'tent\xa0\xb1additional_kwargs\x80'
    b'\xb1response_metadata\x82\xaamode'
    b'l_name\xa0\xadfinish_reason\xa4st'
    b'op\xa4type\xa2ai\xa4name\xc0\xa2id\xa5run-'
    b'0\xaatool_calls\x91\x84\xa4name\xa6look'
    b'up\xa4args\x81\xa5query\xa0\xa2id\xa6call_'
    b'0\xa4type\xa9tool_call\xb2invalid'
    b'_tool_calls\x90\xaeusage_metad'
    b'ata\x83\xacinput_tokens\x00\xadoutpu'
    b't_tokens\x00\xactotal_tokens\x00\xb3'
    b'model_validate_json\x91\xc7\xb1\x05\x94'
    b'\xbalangchain_core.messages'
    b'.ai\xa9AIMessage\x89\xa7content\xa0\xb1'
    b'additional_kwargs\x80\xb1respo'
    b'nse_metadata\x80\xa4type\xa2ai\xa4na'
    b'me\xc0\xa2id\xa5run-1\xaatool_calls\x90'
    b'\xb2invalid_tool_calls\x90\xaeusa'
    b'ge_metadata\xc0\xb3model_valid'
    b'ate_json\x91\xc7\x86\x05\x94\xbdlangchain_'
    b'core.messages.human\xacHuma'
    b'nMessage\x86\xa7content\xa0\xb1addit'
    b'ional_kwargs\x80\xb1response_m'
    b'etadata\x80\xa4type\xa5human\xa4name'
    b'\xc0\xa2id\xa1h\xb3model_validate_js'
    b'on\x91\xc7\xb6\x05\x94\xbclangchain_core.m'
    b'essages.tool\xabToolMessage'
    b'\x89\xa7content\xa0\xb1additional_kw'
    b'args\x80\xb1response_metadata\x80'
    b'\xa4type\xa4tool\xa4name\xa6lookup\xa2i'
    b'd\xa1t\xactool_call_id\xa6call_0\xa8'
    b'artifact\xc0\xa6status\xa7success'
    b'\xb3model_validate_json\x91\xc7\x89\x05'
    b'\x94\xbelangchain_core.message'
    b's.system\xadSystemMessage\x86\xa7'
    b'content\xa0\xb1additional_kwar'
    b'gs\x80\xb1response_metadata\x80\xa4t'
    b'ype\xa6system\xa4name\xc0\xa2id\xa1s\xb3mo'
    b'del_validate_json\x83\xaabranc'
    b'h:to:\xc0\xa8messages\x90\xa9__start'
    b'__\xc0'
)


#: LangGraph's checkpoint framing (a checkpoint body, a task's writes, task paths and
#: reserved channel names) with placeholder values, written once and frozen here.
_CHECKPOINT_FRAMING = (
    b'\x86\xa1v\x04\xa2ts\xd9 2026-01-01T00:00:00.000'
    b'000+00:00\xa2id\xd9$1f000000-0000-6000'
    b'-8000-000000000000\xb0channel_versi'
    b'ons\x84\xa9__start__\xb3000000000001.0000'
    b'00\xa8messages\xb3000000000001.000000\xaf'
    b'branch:to:agent\xb3000000000001.000'
    b'000\xae__pregel_tasks\xb3000000000001.'
    b'000000\xadversions_seen\x84\xa9__input__\x80'
    b'\xa9__start__\x81\xa9__start__\xb30000000000'
    b'01.000000\xa5agent\x81\xafbranch:to:agent'
    b'\xb3000000000001.000000\xa5tools\x81\xafbran'
    b'ch:to:tools\xb3000000000001.000000\xb0'
    b'updated_channels\x92\xa8messages\xafbranc'
    b'h:to:tools\x94\x94\x00\xa8messages\xa7msgpack\xc4\x00'
    b'\x94\x01\xafbranch:to:tools\xa7msgpack\xc4\x00\x94\xff\xa9_'
    b'_error__\xa7msgpack\xc4\x00\x94\xfd\xad__interrupt'
    b'__\xa7msgpack\xc4\x00~__pregel_pull, ~__p'
    b'regel_push, __pregel_tasks __res'
    b'ume__ __scheduled__ __return__ '
)

ZDICT_ZS_V1 = _CHECKPOINT_FRAMING + ZDICT_V1
"""The zstd dictionary (format tag ``|zs``): checkpoint framing, then ``ZDICT_V1``
(zstd weighs the end of a raw dictionary most). Part of the storage format too."""

_ENTROPY_V2 = base64.b64decode(
    "N6Qw7L+IFSpIEKBDnA7DMKeCW+Jp+HcnE4fBgHmLBHQ1Erj2oVjAsGgnyUEkVXSV3XZa2fElqXbO"
    "OfSPi5Nrhn5qIiK8OvsB1qDrE8aP9q0F0wEADBgXVYsy7QwAAARAwA0cIyozPxAJaaEwNAhhchwA"
    "AAAAcBgAGAAMAKB2IAAAAADUiMoiAsLxAbJcJMeSGIVhKAYVlMwAAAAAAQAAAAQAAAAIAAAA"
)

ZDICT_ZS_V2 = _ENTROPY_V2 + ZDICT_ZS_V1
"""The zstd dictionary rows are written with (format tag ``|zf``): ``ZDICT_ZS_V1``'s content
behind zstd's dictionary header, whose literal and sequence tables a row starts from
instead of building and storing its own (``bench/make_zdict.py`` says how they were made).
Part of the storage format too."""
