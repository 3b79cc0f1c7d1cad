"""The result directory of a batch: Parquet files written per run, atomically.

Layout of ``DIR``::

    runs.parquet               one row per run of the last batch (the index)
    summary.csv                figures with confidence intervals (hasim.batches.summarize)
    runs/run-<id>.json         completion marker of one run: its runs.parquet row
    configs/run-<id>.json      the run's resolved config (every knob, defaults included)
    <table>/run-<id>.parquet   one file per run per result table, with a ``run_id`` column

Every file is written to a temporary file in its own directory and moved into place
with :func:`os.replace`, so a reader (or a batch killed at any instant) sees either the
whole file or none. A run's marker is written LAST: a run is done when its marker and
the table files its marker lists exist. Rerunning a batch skips the runs that are done
and recomputes the others (runs that raised included), whose half-written files are
simply replaced; since a run is deterministic given its ``run_id`` (config +
replication -> seed), the directory then holds exactly what an uninterrupted batch
writes.

``runs.parquet`` lists the runs of the last batch written into ``DIR``. Files of runs
outside it (an earlier batch with other scenarios or values) are kept, never deleted,
and ignored by :func:`load_table`; rerunning that earlier batch finds them done.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

#: Result tables stored per run, in this order (``requests`` is optional: it can be big).
TABLES = (
    "failovers",
    "detections",
    "health_checks",
    "node_status",
    "state_changes",
    "availability",
    "elections",
    "vip_moves",
    "requests",
)
RUNS_FILE = "runs.parquet"
SUMMARY_FILE = "summary.csv"
MARKERS = "runs"
CONFIGS = "configs"
_TMP_PREFIX = ".tmp-"


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the file into place in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path: Path, data: Any, sort_keys: bool = True) -> None:
    """Write ``data`` as JSON, atomically."""
    text = json.dumps(data, indent=1, sort_keys=sort_keys, default=_json_default)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    _atomic_write(path, write)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    """Write ``df`` (without its index) as Parquet, atomically."""
    _atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def with_run_id(df: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """``df`` with a leading ``run_id`` column (a copy)."""
    out = df.reset_index(drop=True).copy()
    if "run_id" in out.columns:
        out = out.drop(columns="run_id")
    out.insert(0, "run_id", pd.Series([run_id] * len(out), dtype=object))
    return out


@dataclass
class ResultStore:
    """Reads and writes one result directory (see the module docstring)."""

    root: Path
    _markers: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # --- paths ---
    def marker_path(self, run_id: str) -> Path:
        return self.root / MARKERS / f"run-{run_id}.json"

    def config_path(self, run_id: str) -> Path:
        return self.root / CONFIGS / f"run-{run_id}.json"

    def table_path(self, table: str, run_id: str) -> Path:
        return self.root / table / f"run-{run_id}.parquet"

    # --- state ---
    def clean_temp(self) -> int:
        """Remove temporary files a killed batch left behind; returns how many."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for sub in [self.root, *[p for p in self.root.iterdir() if p.is_dir()]]:
            for tmp in sub.glob(f"{_TMP_PREFIX}*"):
                try:
                    tmp.unlink()
                    removed += 1
                except OSError:
                    pass
        return removed

    def marker(self, run_id: str) -> dict[str, Any] | None:
        """The completion marker of a run (its row), or None when it is not done."""
        if run_id in self._markers:
            return self._markers[run_id]
        path = self.marker_path(run_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        self._markers[run_id] = data
        return data

    def is_done(self, run_id: str, tables: Sequence[str]) -> bool:
        """Whether the run is complete with every table in ``tables``."""
        mark = self.marker(run_id)
        if mark is None:
            return False
        if mark["row"].get("status") != "ok":
            return False  # a run that raised is tried again (the bug may be fixed)
        written = set(mark.get("tables", ()))
        return all(t in written and self.table_path(t, run_id).exists() for t in tables)

    def write_run(self, run_id: str, row: Mapping[str, Any], tables: Mapping[str, pd.DataFrame],
                  config: Mapping[str, Any]) -> None:
        """Store one run: its config, its tables, then its marker (last)."""
        write_json(self.config_path(run_id), dict(config))
        for name, df in tables.items():
            write_parquet(self.table_path(name, run_id), with_run_id(df, run_id))
        marker = {"row": _plain(dict(row)), "tables": sorted(tables)}
        write_json(self.marker_path(run_id), marker, sort_keys=False)  # keeps column order
        self._markers[run_id] = json.loads(json.dumps(marker, default=_json_default))

    def write_index(self, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
        """Write ``runs.parquet`` from the rows of a batch (in batch order)."""
        df = runs_frame(rows)
        write_parquet(self.root / RUNS_FILE, df)
        return df


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if hasattr(v, "item") and not isinstance(v, str | bytes):
            v = v.item()
        out[k] = v
    return out


def runs_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows of runs as a DataFrame; sweep values of mixed types become JSON text."""
    rows = [dict(r) for r in rows]
    df = pd.DataFrame(rows)
    # A batch of scenarios with different sweep keys: keep every row's sweep keys together
    # between `point` and `replication` (pandas would put a later scenario's keys last).
    sweep: dict[str, None] = {}
    for r in rows:
        keys = list(r)
        if "point" in keys and "replication" in keys:
            sweep.update(dict.fromkeys(keys[keys.index("point") + 1:keys.index("replication")]))
    if sweep and "point" in df.columns and "replication" in df.columns:
        cols = [c for c in df.columns if c not in sweep]
        at = cols.index("point") + 1
        df = df[cols[:at] + list(sweep) + cols[at:]]
    for col in df.columns:
        values = [v for v in df[col] if not _missing(v)]
        kinds = {_kind(v) for v in values}
        if len(kinds) > 1 or kinds & {"other"}:
            df[col] = [None if _missing(v) else json.dumps(v, sort_keys=True) for v in df[col]]
    return df


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "str"
    return "other"


# --- reading back ------------------------------------------------------------------------


def load_runs(directory: str | os.PathLike[str]) -> pd.DataFrame:
    """``runs.parquet`` of a result directory: one row per run of its last batch."""
    path = Path(directory) / RUNS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory}: no {RUNS_FILE} (not a hasim result directory?)")
    return pd.read_parquet(path)


def load_table(directory: str | os.PathLike[str], table: str,
               run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One result table of a directory, every run of ``runs.parquet`` (or ``run_ids``)
    concatenated in run order, each run's rows in their own order, with ``run_id``."""
    root = Path(directory)
    if run_ids is None:
        run_ids = list(load_runs(root)["run_id"])
    frames = []
    for rid in run_ids:
        path = root / table / f"run-{rid}.parquet"
        if path.exists():
            frames.append(pd.read_parquet(path))
    non_empty = [f for f in frames if len(f)]
    if non_empty:
        return pd.concat(non_empty, ignore_index=True)
    if frames:
        return frames[0]
    return pd.DataFrame({"run_id": pd.Series([], dtype=object)})


def load_config(directory: str | os.PathLike[str], run_id: str) -> dict[str, Any]:
    """The resolved config a run was simulated with."""
    path = Path(directory) / CONFIGS / f"run-{run_id}.json"
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


@dataclass
class Results:
    """A result directory read back: ``runs`` and every table by name (``results["failovers"]``
    or ``results.failovers``), each table loaded on first use."""

    directory: Path
    runs: pd.DataFrame
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def __getitem__(self, table: str) -> pd.DataFrame:
        if table not in self._tables:
            self._tables[table] = load_table(self.directory, table, list(self.runs["run_id"]))
        return self._tables[table]

    def __getattr__(self, name: str) -> pd.DataFrame:
        if name in TABLES:
            return self[name]
        raise AttributeError(name)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every stored table by name (those with at least one file)."""
        return {t: self[t] for t in TABLES if (self.directory / t).is_dir()}

    def config(self, run_id: str) -> dict[str, Any]:
        return load_config(self.directory, run_id)


def load_results(directory: str | os.PathLike[str]) -> Results:
    """Read a result directory written by ``hasim run`` / :func:`hasim.run_batch`."""
    root = Path(directory)
    return Results(root, load_runs(root))
