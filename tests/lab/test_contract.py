"""``lab.parquet`` and the side-by-side outputs as docs/interfaces.md and docs/lab.md describe."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from hasim.lab import load_lab

pytestmark = pytest.mark.needs_lab


def test_lab_parquet_has_the_contract_columns(quick_matrix: tuple[Path, pd.DataFrame]) -> None:
    out, _ = quick_matrix
    df, table = load_lab(out)
    assert {"source", "trial", "metric", "value"} <= set(df.columns)
    assert set(df["source"]) == {"real", "sim"}
    assert {"detect_s", "failover_s", "check_rate_per_s"} <= set(df["metric"])
    assert (out / "lab-summary.csv").exists() and (out / "lab.png").stat().st_size > 1000
    assert {"real", "sim", "rel_diff", "agrees"} <= set(table.columns)
