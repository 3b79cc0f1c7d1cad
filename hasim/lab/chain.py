"""The rest of the chain beside the LB cells: the real etcd, keepalived and client-go
cells (:mod:`hasim.lab.etcd`, :mod:`hasim.lab.keepalived`, :mod:`hasim.lab.clientgo`) run
together, read back, and judged in one table, for ``make calibrate`` and notebook 04.

Each part writes its own long table (``lab-etcd.parquet``, ``lab-keepalived.parquet``,
``lab-clientgo.parquet``: ``cell``, ``source``, ``trial``, ``metric``, ``value``);
:func:`chain_table` judges each cell's headline metrics by :func:`hasim.lab.judge.judge`
(the simulated median within 15 % or 0.3 s of the real one, KS p > 0.01 from 20 real
trials, contended trials left out).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from hasim.lab.judge import judge

#: part -> (its file, the metrics judged, by cell-name prefix).
PARTS: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "etcd": ("lab-etcd.parquet", {"etcd writes": ("probe_s", "writes_back_s"),
                                  "etcd": ("election_s",)}),
    "keepalived": ("lab-keepalived.parquet", {"keepalived": ("move_s",)}),
    "clientgo": ("lab-clientgo.parquet", {"client-go": ("lost_s", "back_s")}),
}


def run_chain(out: str | os.PathLike[str], trials: int, matrix: str = "quick",
              parts: Sequence[str] = tuple(PARTS)) -> pd.DataFrame:
    """The ``matrix`` cells of each part, ``trials`` real trials each, written to ``out``;
    returns :func:`load_chain` of it."""
    from hasim.lab import clientgo, etcd, keepalived

    runners = {"etcd": etcd.calibrate, "keepalived": keepalived.calibrate,
               "clientgo": clientgo.calibrate}
    for part in parts:
        runners[part](out, trials, matrix)
    return load_chain(out)


def load_chain(out: str | os.PathLike[str]) -> pd.DataFrame:
    """Every part's trials found in ``out`` (a ``part`` column added); empty if none."""
    frames = []
    for part, (name, _) in PARTS.items():
        path = Path(out) / name
        if path.exists():
            frames.append(pd.read_parquet(path).assign(part=part))
    if not frames:
        return pd.DataFrame(columns=["cell", "source", "trial", "metric", "value", "part"])
    return pd.concat(frames, ignore_index=True)


def _judged(part: str, cell: str) -> tuple[str, ...]:
    prefixes = PARTS[part][1]
    best = max((p for p in prefixes if cell.startswith(p)), key=len, default=None)
    return prefixes[best] if best is not None else ()


def chain_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per judged (cell, metric): real and simulated medians, trials, KS p, the
    contended trials left out (all judged when every one was), and the verdict."""
    rows = []
    for (part, cell), g in df.groupby(["part", "cell"], sort=False):
        for metric in _judged(str(part), str(cell)):
            mine = g[g["metric"].isin([metric, "contended"])]
            real = mine[(mine["source"] == "real") & (mine["metric"] == metric)]["value"]
            if real.isna().all() or not len(real):
                continue  # e.g. a VIP that never moved: no time to compare
            j = judge(mine, metric)
            rows.append({"part": part, "cell": cell, "metric": metric,
                         "real": j["real_median"], "sim": j["sim_median"],
                         "n_real": j["real_n"], "n_sim": j["sim_n"], "ks_p": j["ks_p"],
                         "contended": j["contended"], "all_contended": j["all_contended"],
                         "agrees": bool(j["agrees"])})
    return pd.DataFrame(rows, columns=["part", "cell", "metric", "real", "sim", "n_real",
                                       "n_sim", "ks_p", "contended", "all_contended",
                                       "agrees"])
