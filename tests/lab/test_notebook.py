"""notebooks/04-sim-vs-real.ipynb: stored without outputs, papermill ``parameters`` cell,
hasim's public API only, and it runs (here on the session's lab results, ``rerun=False``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

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
    from hasim.analysis.report import NOTEBOOK_MODULES

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
def test_notebook_runs(quick_matrix: tuple[Path, pd.DataFrame], chain_dir: Path,
                       tmp_path: Path) -> None:
    """papermill, as tests/test_notebooks.py runs the other notebooks (its figures, their
    findings, the budget), on the session's results instead of a second lab run: the quick
    matrix and the etcd, keepalived and client-go cells the tests before this one ran
    (pytest runs tests/lab/ in file order; whatever of the chain is there is shown)."""
    import shutil
    import time

    from hasim.analysis.report import notebook_meta, run_notebook

    out, _ = quick_matrix
    results = tmp_path / "results"
    shutil.copytree(out, results)
    for f in chain_dir.glob("*.parquet"):
        shutil.copy(f, results / f.name)
    assert list(results.glob("lab-clientgo.parquet")), "the client-go test ran before"
    t0 = time.perf_counter()
    run = run_notebook(NOTEBOOK, tmp_path / "run", parameters={"out": str(results),
                                                                "rerun": False})
    assert run.ok, run.error
    want = notebook_meta(NOTEBOOK)["figures"]
    assert run.figures >= want and len(run.saved) == want, [p.name for p in run.saved]
    executed = json.loads(run.executed.read_text()) if run.executed else {"cells": []}
    findings = sum("**Finding.**" in "".join(o.get("data", {}).get("text/markdown", ""))
                   for c in executed["cells"] if c["cell_type"] == "code"
                   for o in c["outputs"])
    assert findings >= want
    assert time.perf_counter() - t0 < 180
