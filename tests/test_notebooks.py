"""The notebooks of ``notebooks/``: stored clean, parameterised, on hasim's public API, and
executed (papermill, each in its own folder, results and figures in a temporary
directory). A notebook fails on any error, on fewer figures than its metadata declares
(``{"hasim": {"figures": N}}``), on a figure that cannot be read alone
(:func:`hasim.analysis.report.show` raises) and on a figure without a computed finding below it.
The lab notebook (``needs: lab``) runs in ``tests/lab/test_notebook.py``, on the
session's lab results.
"""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path
from typing import Any

import pytest

from hasim.analysis.report import NOTEBOOK_MODULES, notebook_meta, notebooks, run_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = notebooks(ROOT / "notebooks")
#: Each notebook must run within this at its default parameters (the issue's 3 minutes).
BUDGET_S = 180.0


def _nb(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_there_are_the_five_notebooks() -> None:
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01-compare-ha-modes", "02-health-check-overhead", "03-failover-latency",
                     "04-sim-vs-real", "05-assess-my-cluster"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_without_outputs_with_a_parameters_cell(path: Path) -> None:
    nb = _nb(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert notebook_meta(path)["figures"] >= 1
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and tagged[0] is code[0]
    params = "".join(code[0]["source"])
    assert "figures_dir" in params


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_uses_only_the_public_api(path: Path) -> None:
    for cell in _nb(path)["cells"]:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hasim"):
                assert all(not a.name.startswith("_") for a in node.names)
                if node.module in NOTEBOOK_MODULES:
                    continue
                # ``from hasim.analysis import checkload``: each name a module of the API
                for a in node.names:
                    assert f"{node.module}.{a.name}" in NOTEBOOK_MODULES, \
                        f"{path.name}: {node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("hasim.") or alias.name in NOTEBOOK_MODULES


def _findings(executed: dict[str, Any]) -> int:
    return sum("**Finding.**" in "".join(o.get("data", {}).get("text/markdown", ""))
               for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"])


#: The lab notebook is executed the same way by tests/lab/test_notebook.py, on the lab
#: results the session already has: a second run of the real lab here would add two
#: minutes to make test.
NOT_LAB = [p for p in NOTEBOOKS if notebook_meta(p).get("needs") != "lab"]


@pytest.mark.parametrize("path", NOT_LAB, ids=lambda p: p.stem)
def test_executes_with_its_figures_and_findings(path: Path, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    run = run_notebook(path, tmp_path)
    wall = time.perf_counter() - t0
    if run.skipped:
        pytest.skip(run.skipped)
    assert run.ok, run.error
    want = notebook_meta(path)["figures"]
    assert run.figures >= want, f"{run.figures} figure(s) shown, {want} expected"
    assert len(run.saved) == want, [p.name for p in run.saved]
    assert all(p.stat().st_size > 10_000 for p in run.saved)
    assert run.html is not None and run.html.stat().st_size > 0
    assert run.executed is not None
    assert _findings(_nb(run.executed)) >= want
    print(f"{path.stem}: {wall:.0f} s")
    assert wall < BUDGET_S, f"{path.stem} took {wall:.0f} s"
