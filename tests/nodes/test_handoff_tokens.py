"""Token counting: tiktoken only when it loads offline, else the documented approximation."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import pytest

from relaygraph.nodes import TokenCounter, _tokens, approx_tokens, default_counter


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tokens, "_cache", {})


@pytest.mark.parametrize("text,expected", [
    ("", 0),
    ("hello", 2),                             # hell|o
    ("a b c", 3),
    ("refund 1234.50!", 7),                   # refu|nd 123|4 . 50 !
    ("line\nnext", 3),                        # line, newline, next
    ("snake_case_name", 6),                   # snak|e _ case _ name
])
def test_approx_rule(text: str, expected: int) -> None:
    assert approx_tokens(text) == expected


def test_approx_is_close_to_a_quarter_of_characters_on_prose() -> None:
    prose = ("The customer reports that the zipper of the rain jacket broke after two days "
             "and asks for a refund to the original card. ") * 20
    assert 0.8 < approx_tokens(prose) / (len(prose) / 4) < 1.3


def test_forced_approximation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAYGRAPH_TOKENIZER", "approx")
    counter = default_counter()
    assert isinstance(counter, TokenCounter)
    assert counter.name == "approx-v1" and counter.count("hello") == 2


def test_no_cached_encoding_means_approximation(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELAYGRAPH_TOKENIZER", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert default_counter().name == "approx-v1"


def test_a_corrupt_cached_encoding_is_never_handed_to_tiktoken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken would re-download a file whose hash is wrong: it must not get the chance."""
    monkeypatch.delenv("RELAYGRAPH_TOKENIZER", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    blob, _ = _tokens._TIKTOKEN_BLOBS["cl100k_base"]
    (tmp_path / hashlib.sha1(blob.encode()).hexdigest()).write_bytes(b"not an encoding")

    def no_tiktoken(*a: object, **k: object) -> None:
        raise AssertionError("tiktoken.get_encoding must not be called")

    monkeypatch.setitem(sys.modules, "tiktoken",
                        types.SimpleNamespace(get_encoding=no_tiktoken))
    assert default_counter().name == "approx-v1"


def test_a_verified_cached_encoding_is_used(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The wiring to tiktoken, with a stand-in module and a cache file of known hash."""
    monkeypatch.delenv("RELAYGRAPH_TOKENIZER", raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    data = b"stand-in encoding file"
    blob = "https://example.invalid/cl100k_base.tiktoken"
    monkeypatch.setitem(_tokens._TIKTOKEN_BLOBS, "cl100k_base",
                        (blob, hashlib.sha256(data).hexdigest()))
    (tmp_path / hashlib.sha1(blob.encode()).hexdigest()).write_bytes(data)

    class Encoding:
        def encode(self, text: str, disallowed_special: object = ()) -> list[int]:
            return [0] * len(text.split())

    monkeypatch.setitem(sys.modules, "tiktoken",
                        types.SimpleNamespace(get_encoding=lambda name: Encoding()))
    counter = default_counter()
    assert counter.name == "tiktoken:cl100k_base"
    assert counter.count("three little words") == 3


def test_count_many_adds_overhead() -> None:
    counter = TokenCounter("t", len)
    assert counter.count_many(["ab", "cde"], per_item=4) == 2 + 3 + 8
