"""The notebooks in notebooks/ run top to bottom, offline, in a fresh kernel."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require_jupyter() -> None:
    try:
        import ipykernel  # noqa: F401
        import nbclient  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        if IN_CI:
            pytest.fail(f"CI=true but {exc.name} is not installed (pip install -e '.[dev]')")
        pytest.skip(f"{exc.name} is not installed; pip install -e '.[dev]' to run notebooks")


def test_there_are_notebooks() -> None:
    assert [p.name for p in NOTEBOOKS] == ["01_quickstart.ipynb",
                                           "02_review_and_timeline.ipynb",
                                           "03_crash_and_resume.ipynb",
                                           "04_agent_middleware.ipynb",
                                           "05_breaker_shared_by_workers.ipynb",
                                           "06_serving.ipynb",
                                           "07_contracts_binding_reconcile.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    _require_jupyter()
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    # the notebooks keep their data in a temporary directory; run them from one too
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    texts = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "Traceback" not in texts
    # printed for people: no float noise such as 4.0799999999999996e-05
    noise = re.search(r"\d\.\d{12,}", texts)
    assert noise is None, texts[max(0, noise.start() - 80):noise.end() + 20]
    assert list(tmp_path.iterdir()) == []  # nothing written next to the notebook
    rich = [o.get("data", {}) for c in nb.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("output_type") in ("execute_result",
                                                                     "display_data")]
    html = "".join(d.get("text/html", "") for d in rich)
    # every notebook draws its graph offline, as SVG (with Mermaid and ASCII alternatives)
    svg = next(d for d in rich if "image/svg+xml" in d)
    node = {"04_agent_middleware": "model",
            "07_contracts_binding_reconcile": "merge"}.get(path.stem, "check")
    assert "<svg" in svg["image/svg+xml"] and f">{node}</text>" in svg["image/svg+xml"]
    assert svg["text/vnd.mermaid"].startswith("---") or "graph TD" in svg["text/vnd.mermaid"]
    if path.stem in ("02_review_and_timeline", "03_crash_and_resume"):
        # the notebook timeline shows the tables the CLI's timeline shows
        for title in ("<p>handoffs</p>", "<p>guard decisions</p>", "<p>reviews</p>",
                      "cost per agent"):
            assert title in html, title
