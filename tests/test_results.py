"""The result store (hasim.batches.results): atomic files, completion markers, reading back.

A run is done only when its marker, written last, and every table file it lists exist;
temporary files of a killed writer are never mistaken for results; reading a table
gives the runs of runs.parquet in batch order with each run's rows in their own order.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from hasim.batches.results import (
    ResultStore,
    load_results,
    load_runs,
    load_table,
    runs_frame,
    write_parquet,
)


def _frame(n: int, start: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"client": [f"c{i}" for i in range(n)],
                         "latency_s": [start + i for i in range(n)]})


def _store_run(store: ResultStore, rid: str, n: int, status: str = "ok") -> None:
    row = {"run_id": rid, "scenario": "s", "point": "base", "replication": 0, "seed": 1,
           "status": status, "error": None if status == "ok" else "Boom: x", "wall_s": 0.1}
    tables = {"failovers": _frame(n), "node_status": _frame(0)} if status == "ok" else {}
    store.write_run(rid, row, tables, {"name": "s"})


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "t" / "x.parquet"
    write_parquet(path, _frame(3))
    assert pd.read_parquet(path).equals(_frame(3))

    class Boom(Exception):
        pass

    bad = _frame(2)
    bad.to_parquet = lambda *a, **k: (_ for _ in ()).throw(Boom())  # type: ignore[method-assign]
    with pytest.raises(Boom):
        write_parquet(path, bad)
    assert pd.read_parquet(path).equals(_frame(3))  # the old file is intact
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.parquet"]


def test_done_needs_the_marker_and_every_listed_table(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    # Tables written, then killed before the marker: not done.
    write_parquet(store.table_path("failovers", "a"), _frame(2))
    assert not store.is_done("a", ["failovers"])
    _store_run(store, "a", 2)
    assert ResultStore(tmp_path).is_done("a", ["failovers", "node_status"])
    # Asking for a table the run did not store (requests) makes it not done.
    assert not ResultStore(tmp_path).is_done("a", ["failovers", "requests"])
    # A lost table file makes it not done.
    store.table_path("node_status", "a").unlink()
    assert not ResultStore(tmp_path).is_done("a", ["failovers", "node_status"])
    # A run that raised is not done: a rerun tries it again.
    _store_run(store, "b", 0, status="error")
    assert not ResultStore(tmp_path).is_done("b", ["failovers"])


def test_a_torn_marker_is_not_done_and_temp_files_are_cleaned(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    store.marker_path("c").parent.mkdir(parents=True)
    store.marker_path("c").write_text('{"row": {"status": "o')  # not via os.replace
    assert store.marker("c") is None and not store.is_done("c", [])
    (tmp_path / "failovers").mkdir()
    (tmp_path / "failovers" / ".tmp-abc.parquet").write_bytes(b"half")
    (tmp_path / ".tmp-x.parquet").write_bytes(b"half")
    assert store.clean_temp() == 2
    assert not list(tmp_path.rglob(".tmp-*"))


def test_marker_keeps_the_row_and_its_column_order(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    _store_run(store, "a", 1)
    mark = json.loads(store.marker_path("a").read_text())
    assert list(mark["row"]) == ["run_id", "scenario", "point", "replication", "seed",
                                 "status", "error", "wall_s"]
    assert mark["tables"] == ["failovers", "node_status"]
    assert json.loads(store.config_path("a").read_text()) == {"name": "s"}


def test_load_table_follows_runs_parquet(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    for rid, n in (("b", 2), ("a", 3), ("old", 4)):
        _store_run(store, rid, n)
    # The index lists b then a; "old" (an earlier batch) is on disk but not listed.
    store.write_index([store.marker("b")["row"], store.marker("a")["row"]])  # type: ignore[index]
    fo = load_table(tmp_path, "failovers")
    assert list(fo["run_id"]) == ["b", "b", "a", "a", "a"]
    assert list(fo["client"]) == ["c0", "c1", "c0", "c1", "c2"]
    assert list(fo.columns) == ["run_id", "client", "latency_s"]
    ns = load_table(tmp_path, "node_status")  # empty in every run
    assert len(ns) == 0 and "run_id" in ns.columns
    res = load_results(tmp_path)
    assert list(res.runs["run_id"]) == ["b", "a"]
    assert res.failovers.equals(fo)
    assert res.config("a") == {"name": "s"}
    assert set(res.tables()) == {"failovers", "node_status"}
    with pytest.raises(FileNotFoundError):
        load_runs(tmp_path / "nowhere")


def test_runs_frame_keeps_numbers_and_encodes_mixed_sweep_values() -> None:
    df = runs_frame([
        {"run_id": "a", "cluster.generate.nodes": 10, "faults": [{"at": 1}], "x": True},
        {"run_id": "b", "cluster.generate.nodes": 100, "faults": [], "x": "text"},
    ])
    assert df["cluster.generate.nodes"].tolist() == [10, 100]
    assert df["faults"].tolist() == ['[{"at": 1}]', "[]"]
    assert df["x"].tolist() == ["true", '"text"']
    df.to_parquet(os.devnull)  # storable as Parquet


def test_non_finite_figures_survive(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    row = {"run_id": "a", "status": "ok", "failover_max_s": math.inf, "x": math.nan}
    store.write_run("a", row, {}, {})
    back = ResultStore(tmp_path).marker("a")["row"]  # type: ignore[index]
    assert back["failover_max_s"] == math.inf and math.isnan(back["x"])


def test_sweep_keys_of_every_scenario_stay_between_point_and_replication() -> None:
    """Two scenarios of one batch sweep different keys: both keys are sweep columns."""
    from hasim.batches.results import runs_frame
    from hasim.batches.summarize import sweep_columns

    rows = [
        {"run_id": "a", "scenario": "s1", "point": "x=1", "x": 1, "replication": 0,
         "status": "ok"},
        {"run_id": "b", "scenario": "s2", "point": "y=2", "y": 2, "replication": 0,
         "status": "ok"},
    ]
    df = runs_frame(rows)
    assert sweep_columns(df) == ["x", "y"]
    assert list(df.columns) == ["run_id", "scenario", "point", "x", "y", "replication",
                                "status"]
