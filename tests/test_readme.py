"""The Python examples in README.md and docs/usage.md run as written."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "usage.md", ROOT / "docs" / "storage.md"]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text(encoding="utf-8")) if path.exists() else []


def test_docs_have_python_examples() -> None:
    assert sum(len(_blocks(p)) for p in DOCS) >= 4


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_python_blocks_run_in_order(path: Path, tmp_path: Path, monkeypatch) -> None:
    blocks = _blocks(path)
    if not blocks:
        assert path.name == "README.md"  # the usage guide must always have examples
        return
    # blocks of one file share a namespace (later blocks use earlier names), like a reader
    monkeypatch.chdir(tmp_path)  # examples may create SQLite files: keep them out of the repo
    # a real module, so that classes defined in the examples can be imported back by name
    # (checkpoint serializers and contract allowlists do that)
    module = types.ModuleType(f"docs_{path.stem}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{path.name}[python block {i}]", "exec", dont_inherit=True),
                 namespace)
        except Exception as exc:  # noqa: BLE001 - re-raised with the block number
            raise AssertionError(f"{path.name} python block {i} failed: {exc!r}") from exc
    assert os.getcwd() == str(tmp_path)


def test_the_readme_runs_twice_in_a_row_in_one_directory(tmp_path: Path, monkeypatch) -> None:
    # the quick start keeps its SQLite file: a second run must find it and still pass
    monkeypatch.chdir(tmp_path)
    for run in range(2):
        module = types.ModuleType(f"docs_readme_run{run}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        for i, code in enumerate(_blocks(ROOT / "README.md")):
            try:
                exec(compile(code, f"README.md[python block {i}]", "exec", dont_inherit=True),
                     module.__dict__)
            except Exception as exc:  # noqa: BLE001 - re-raised with the run and block
                raise AssertionError(f"run {run + 1}, python block {i}: {exc!r}") from exc
    assert (tmp_path / "relaygraph-readme.db").exists()
