"""How the entropy tables of the fixed zstd dictionary (``ZDICT_ZS_V2``) were made.

    pip install backports.zstd        # Python < 3.14; 3.14 has compression.zstd
    python bench/make_zdict.py        # prints the tables, base64, for _zdict.py

``ZDICT_ZS_V2`` is ``ZDICT_ZS_V1``'s content with zstd's dictionary header in front: the
literal (Huffman) and sequence (FSE) tables that a row compressed with it starts from.
Without them zstd builds and writes new tables for every row, which on a step's rows of
a few hundred bytes costs more than finding the matches and takes ~30 bytes of the row.

The tables are zstd's own (``finalize_dict``, which counts every byte value at least
once, so that any row can use them) over the rows the saver compresses while running the
benchmark workload from a URL: 10 threads of 31 steps with the workload's vocabulary and
10 with excerpts of real prose. The output is part of the storage format: it was made
once and frozen; running this again need not reproduce it byte for byte (the prose
comes from the standard library's docstrings), and must never replace it.
"""

from __future__ import annotations

import base64
import sys
import tempfile
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage

sys.path.insert(0, str(Path(__file__).parent))
from _workload import build  # noqa: E402

from relaygraph.checkpointers import SQLAlchemySaver, _codec  # noqa: E402
from relaygraph.checkpointers._zdict import LEVELS, ZDICT_ZS_V1  # noqa: E402


def samples(threads: int = 10, steps: int = 31) -> list[bytes]:
    """Every row the saver compresses while running the workload, as it was given."""
    rows: list[bytes] = []
    compress = _codec._compress

    def keep(type_: str, data: bytes, *args: Any) -> tuple[str, bytes]:
        if len(data) >= _codec.COMPRESS_MIN:
            rows.append(bytes(data))
        return compress(type_, data, *args)

    _codec._compress = keep  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for text in ("vocab", "prose"):
                url = f"sqlite:///{tmp}/{text}.db"
                with SQLAlchemySaver.from_conn_string(url, thread_dictionaries=False) as saver:
                    saver.setup()
                    graph = build(text=text).compile(checkpointer=saver)
                    for i in range(threads):
                        graph.invoke({"messages": [HumanMessage(f"case {i}", id=f"in-{i}")],
                                      "count": 0, "target": steps},
                                     {"configurable": {"thread_id": f"{text}-{i}"},
                                      "recursion_limit": 4 * steps + 10}, durability="sync")
    finally:
        _codec._compress = compress  # type: ignore[assignment]
    return rows


def main() -> None:
    try:
        from compression.zstd import ZstdDict, finalize_dict  # type: ignore[import-not-found]
    except ImportError:
        from backports.zstd import ZstdDict, finalize_dict  # type: ignore[import-not-found]
    rows = samples()
    full = finalize_dict(ZstdDict(ZDICT_ZS_V1, is_raw=True), rows, len(ZDICT_ZS_V1) + 1024,
                         LEVELS[0]).dict_content
    if not full.endswith(ZDICT_ZS_V1):
        raise SystemExit("finalize_dict did not keep the content whole")
    header = full[: -len(ZDICT_ZS_V1)]
    print(f"# {len(rows)} rows, {sum(map(len, rows))} bytes; header {len(header)} bytes",
          file=sys.stderr)
    text = base64.b64encode(header).decode()
    for i in range(0, len(text), 76):
        print(f'    "{text[i:i + 76]}"')


if __name__ == "__main__":
    main()
