"""The notebooks as a report: figures a reader can read alone, and ``make report``.

In a notebook:

- :func:`show` checks that a figure stands on its own (a title, and a label on every axis
  that shows data), displays it as a PNG and, given ``figures_dir``, saves it there.
- :func:`say` displays Markdown, the finding under a figure, written from computed values.

Outside: :func:`run_notebook` executes a notebook with papermill in its own folder (its
``parameters`` cell overridden: results and figures go where the caller says) and writes
the executed notebook and its HTML; ``python -m hasim.analysis.report`` does it for every notebook
of ``notebooks/`` into ``results/report/`` (``make report``). A notebook whose metadata
says ``{"hasim": {"needs": "lab"}}`` is skipped with the reason when the lab's
prerequisites (root, nginx, HAProxy...) are missing.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where ``make report`` writes: ``<name>.html``, ``<name>.ipynb`` and ``figures/<name>/``.
REPORT_DIR = Path("results/report")
#: The modules a notebook may import from hasim: its public API for notebooks.
NOTEBOOK_MODULES = frozenset({
    "hasim", "hasim.analysis.checkload", "hasim.analysis.claims", "hasim.analysis.compare",
    "hasim.analysis.failover", "hasim.analysis.formulas", "hasim.analysis.modes",
    "hasim.lab",
    "hasim.analysis.incidents", "hasim.analysis.overhead", "hasim.analysis.plots",
    "hasim.analysis.report", "hasim.assessment.figures", "hasim.batches.summarize",
})
NOTEBOOK_DIR = Path("notebooks")
DPI = 110


# --- in a notebook -----------------------------------------------------------------------------


def figure_problems(fig: Any) -> list[str]:
    """What keeps a figure from being read without the notebook: no title (neither the
    figure's nor every panel's), or an axis without a label on a panel that shows data."""
    problems = []
    axes = [ax for ax in fig.get_axes() if ax.get_visible() and ax.has_data()
            and getattr(ax, "_colorbar", None) is None]
    for cax in fig.get_axes():
        if getattr(cax, "_colorbar", None) is not None and not (cax.get_ylabel()
                                                                or cax.get_xlabel()):
            problems.append("a colour bar without a label")
    suptitle = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
    if not suptitle and not all(ax.get_title() for ax in axes):
        problems.append("no title (fig.suptitle or a title on every panel)")
    for i, ax in enumerate(axes):
        for axis in ("x", "y"):
            label = ax.get_xlabel() if axis == "x" else ax.get_ylabel()
            shared = [o for o in axes if o is not ax and
                      (ax.get_shared_x_axes() if axis == "x" else ax.get_shared_y_axes()
                       ).joined(ax, o)]
            named = label or any((o.get_xlabel() if axis == "x" else o.get_ylabel())
                                 for o in shared)
            if not named:
                problems.append(f"panel {i} ({ax.get_title() or 'untitled'}): no {axis} label")
    return problems


def show(fig: Any, name: str, figures_dir: str | Path | None = None) -> Path | None:
    """Display ``fig`` as a PNG (and save it as ``figures_dir/name.png``), then close it.

    Raises ValueError when :func:`figure_problems` finds something missing."""
    import matplotlib.pyplot as plt

    problems = figure_problems(fig)
    if problems:
        plt.close(fig)
        raise ValueError(f"figure {name!r} cannot be read alone: " + "; ".join(problems))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    path = None
    if figures_dir is not None:
        path = Path(figures_dir) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    plt.close(fig)
    try:
        from IPython.display import Image, display
    except ImportError:  # outside IPython: saving is all
        return path
    display(Image(data=buf.getvalue(), format="png"))
    return path


def say(text: str) -> None:
    """Display Markdown (a finding written from computed values); print it outside IPython."""
    try:
        from IPython.display import Markdown, display
    except ImportError:
        print(text)
        return
    display(Markdown(text))


def fmt(x: float, unit: str = "", digits: int = 2) -> str:
    """A number for prose: ``12 s``, ``0.43 s``, ``1,250 nodes``; ``n/a`` for NaN, ``never``
    for infinity."""
    import math

    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "never"
    ax = abs(x)
    if ax >= 100 or float(x).is_integer():
        text = f"{x:,.0f}"
    elif ax >= 10:
        text = f"{x:.1f}"
    else:
        text = f"{x:.{digits}g}"
    return f"{text} {unit}".strip() if unit else text


def md_table(df: Any, digits: int = 2) -> str:
    """A DataFrame as a Markdown table (numbers through :func:`fmt`), for :func:`say`."""
    cols = [str(c) for c in df.columns]

    def cell(v: Any) -> str:
        if isinstance(v, float | int) and not isinstance(v, bool):
            return fmt(float(v), digits=digits)
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def fmt_range(lo: float, hi: float, unit: str = "", digits: int = 2) -> str:
    """``12 s`` when both ends print the same, else ``12 s to 15 s``."""
    a, b = fmt(lo, unit, digits), fmt(hi, unit, digits)
    return a if a == b else f"{a} to {b}"


# --- running notebooks -------------------------------------------------------------------------


@dataclass
class NotebookRun:
    """One executed notebook: where it went, how long it took, what it showed."""

    notebook: Path
    executed: Path | None = None
    html: Path | None = None
    wall_s: float = 0.0
    figures: int = 0
    saved: list[Path] = field(default_factory=list)
    error: str | None = None
    skipped: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def notebook_meta(path: str | Path) -> dict[str, Any]:
    """The ``hasim`` entry of a notebook's metadata (``needs``, ``figures``)."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    meta: dict[str, Any] = nb.get("metadata", {}).get("hasim", {})
    return meta


def parameters_of(path: str | Path) -> list[str]:
    """The names the notebook's ``parameters`` cell assigns."""
    import ast

    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell["metadata"].get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            return [t.id for node in tree.body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
    return []


def missing_needs(path: str | Path) -> str | None:
    """Why a notebook cannot run here (its ``needs``), or None."""
    needs = notebook_meta(path).get("needs")
    if needs == "lab":
        from hasim.lab import prereq

        gaps = prereq.missing()
        if gaps:
            return "lab unavailable: " + "; ".join(gaps)
    return None


def count_png(executed: dict[str, Any]) -> int:
    """PNG outputs of an executed notebook (one per displayed figure)."""
    return sum(1 for c in executed.get("cells", []) if c.get("cell_type") == "code"
               for o in c.get("outputs", []) if "image/png" in o.get("data", {}))


def run_notebook(path: str | Path, out: str | Path, parameters: Mapping[str, Any] | None = None,
                 html: bool = True, timeout: float = 900) -> NotebookRun:
    """Execute one notebook with papermill in its own folder.

    ``out``: the executed notebook (``<name>.ipynb``), its HTML (``<name>.html``) and its
    figures (``figures/<name>/``, passed as the ``figures_dir`` parameter when the
    notebook has one; ``out_dir``, when it has one, is ``out/data/<name>``). Other
    ``parameters`` override the notebook's own. Errors are returned, not raised.
    """
    import papermill

    nb_path = Path(path).resolve()
    out = Path(out).resolve()
    name = nb_path.stem
    run = NotebookRun(nb_path)
    why = missing_needs(nb_path)
    if why:
        run.skipped = why
        return run
    declared = parameters_of(nb_path)
    params: dict[str, Any] = {}
    figures = out / "figures" / name
    if "figures_dir" in declared:
        params["figures_dir"] = str(figures)
    if "out_dir" in declared:
        params["out_dir"] = str(out / "data" / name)
    params.update(parameters or {})
    out.mkdir(parents=True, exist_ok=True)
    executed = out / f"{name}.ipynb"
    t0 = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(nb_path), str(executed), parameters=params, cwd=str(nb_path.parent),
            kernel_name="python3", progress_bar=False, log_output=False,
            request_save_on_cell_execute=False, execution_timeout=timeout)
    except Exception as exc:  # a failing cell: papermill saved the notebook up to it
        run.error = _error_text(exc)
    run.wall_s = time.perf_counter() - t0
    if executed.exists():
        run.executed = executed
        data = json.loads(executed.read_text(encoding="utf-8"))
        run.figures = count_png(data)
        if html:
            run.html = _to_html(executed, out / f"{name}.html")
    if figures.is_dir():
        run.saved = sorted(figures.glob("*.png"))
    return run


def _error_text(exc: Exception) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "exec_count", None)
    where = f" (cell {cell})" if cell is not None else ""
    return f"{ename}: {evalue}{where}"


def _to_html(executed: Path, html: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html.write_text(body, encoding="utf-8")
    return html


def notebooks(folder: str | Path = NOTEBOOK_DIR) -> list[Path]:
    """The notebooks of a folder, in name order (checkpoints left out)."""
    return sorted(p for p in Path(folder).glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hasim.analysis.report",
        description="Execute the notebooks into HTML and PNG (make report).")
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to run (default: every notebooks/*.ipynb)")
    parser.add_argument("--out", type=Path, default=REPORT_DIR)
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"),
                        help="override a parameter of every notebook (value read as YAML)")
    args = parser.parse_args(argv)
    import yaml

    params = {k: yaml.safe_load(v) for k, v in args.parameter}
    paths = args.notebooks or notebooks()
    failed = 0
    for path in paths:
        print(f"{path}: running...", flush=True)
        run = run_notebook(path, args.out, params)
        if run.skipped:
            print(f"  skipped: {run.skipped}")
        elif run.ok:
            print(f"  {run.wall_s:.0f} s, {run.figures} figure(s): {run.html}")
        else:
            failed += 1
            print(f"  FAILED after {run.wall_s:.0f} s: {run.error}", file=sys.stderr)
    print(f"report in {args.out}/ (HTML per notebook, PNG figures in figures/)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

