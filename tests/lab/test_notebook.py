"""notebooks/04-sim-vs-real.ipynb: stored without outputs, papermill ``parameters`` cell,
hasim's public API only, and it runs (here on the session's lab results, ``rerun=False``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import matplotlib
import pandas as pd
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "04-sim-vs-real.ipynb"


def _code_cells() -> list[dict[str, object]]:
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_is_stored_clean_with_a_parameters_cell() -> None:
    cells = _code_cells()
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in cells)
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]  # type: ignore[attr-defined]
    assert len(tagged) == 1 and tagged[0] is cells[0]


def test_notebook_uses_only_the_public_api() -> None:
    from hasim.report import NOTEBOOK_MODULES

    for c in _code_cells():
        tree = ast.parse("".join(c["source"]))  # type: ignore[arg-type]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hasim"):
                assert node.module in NOTEBOOK_MODULES, node.module
                assert all(not a.name.startswith("_") for a in node.names)
            if isinstance(node, ast.Import):
                for a in node.names:
                    assert not a.name.startswith("hasim.") or a.name in NOTEBOOK_MODULES


@pytest.mark.needs_lab
def test_notebook_runs(quick_matrix: tuple[Path, pd.DataFrame]) -> None:
    out, _ = quick_matrix
    matplotlib.use("Agg")
    cells = _code_cells()
    ns: dict[str, object] = {}
    exec("".join(cells[0]["source"]), ns)  # type: ignore[arg-type]
    ns.update(out=str(out), rerun=False)
    for c in cells[1:]:
        exec("".join(c["source"]), ns)  # type: ignore[arg-type]
    table = ns["table"]
    assert isinstance(table, pd.DataFrame) and len(table)
