"""Reading rows that may not be what the saver wrote.

Stored rows can be damaged (a disk, a bad restore, a hand edit) or hostile (a database
shared with less trusted code). Every read decodes them inside :func:`reading`, so that
whatever a malformed row makes a decoder raise reaches the caller as one error,
:class:`CorruptCheckpointError`, naming the thread and checkpoint. Nothing stored is ever
executed: rows are msgpack, zstd and JSON, never pickle, and classes load only from the
serializer's allowlist.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import zstandard
from langgraph.checkpoint.base import CheckpointMetadata

from relaygraph.checkpointers._errors import CheckpointerError, CorruptCheckpointError

#: what decoding a malformed row raises besides relaygraph's own errors (msgpack and
#: JSON decode errors are ValueErrors)
_MALFORMED = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError,
              RecursionError, UnicodeError, zstandard.ZstdError)


@contextmanager
def reading(thread_id: str, checkpoint_id: str | None) -> Iterator[None]:
    """Decode stored rows of a checkpoint: whatever a malformed row raises becomes a
    :class:`CorruptCheckpointError` naming the thread and checkpoint."""
    try:
        yield
    except CorruptCheckpointError as exc:
        if exc.checkpoint_id is None:
            exc.checkpoint_id = checkpoint_id
        raise
    except CheckpointerError:
        raise
    except _MALFORMED as exc:
        where = f"checkpoint {checkpoint_id!r}" if checkpoint_id else "checkpoints"
        raise CorruptCheckpointError(
            f"{where} of thread {thread_id!r} hold stored data that is not what the saver "
            f"wrote ({type(exc).__name__}: {exc})", thread_id=thread_id,
            checkpoint_id=checkpoint_id) from exc


def load_metadata(text: str | None, thread_id: str, checkpoint_id: str) -> CheckpointMetadata:
    """A checkpoint row's metadata: a JSON object, else :class:`CorruptCheckpointError`."""
    if not text:
        return {}
    try:
        md = json.loads(text)
    except ValueError as exc:
        raise CorruptCheckpointError(
            f"the metadata of checkpoint {checkpoint_id!r} of thread {thread_id!r} is not "
            f"JSON: {exc}", thread_id=thread_id, checkpoint_id=checkpoint_id) from exc
    if not isinstance(md, dict):
        raise CorruptCheckpointError(
            f"the metadata of checkpoint {checkpoint_id!r} of thread {thread_id!r} is a JSON "
            f"{type(md).__name__}, not an object", thread_id=thread_id,
            checkpoint_id=checkpoint_id)
    return cast(CheckpointMetadata, md)
