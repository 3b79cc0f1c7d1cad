"""Real next to simulated: the long-format rows of real lab trials with the machine's
contention, the acceptance test of a cell, and its one-line report (issue 21)."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasim.lab.contention import kept_trials


def real_rows(label: str, trials: int, trial: Callable[[], dict[str, Any]]
               ) -> list[dict[str, Any]]:
    """``trials`` real trials as long-format rows, each with the machine's contention
    while it ran (:mod:`hasim.lab.contention`)."""
    from hasim.lab.contention import Watch

    rows = []
    for i in range(trials):
        with Watch() as w:
            r = trial()
        r.update(w.result.metrics())
        rows += [{"cell": label, "source": "real", "trial": i, "metric": k, "value": float(v)}
                 for k, v in r.items()]
    return rows


def judge(df: pd.DataFrame, metric: str = "election_s") -> dict[str, Any]:
    """The lab's acceptance for one cell: the simulated median within 15 % (or 0.3 s) of
    the real one, and with 20 or more real trials a two-sample KS test p > 0.01. Real
    trials flagged as taken under contention (:mod:`hasim.lab.contention`) are left out
    and counted (``contended``); when every one was, all are judged and
    ``all_contended`` says so (a verdict on a loaded machine, rather than none)."""
    from scipy.stats import ks_2samp

    real_rows = df[df["source"] == "real"]
    flags = real_rows[real_rows["metric"] == "contended"].set_index("trial")["value"]
    bad = set(flags[flags > 0].index)
    measured = real_rows[real_rows["metric"] == metric]
    kept, every = kept_trials(measured["trial"], bad)
    mine = measured[measured["trial"].isin(kept)]
    real = mine["value"].to_numpy()
    sim = df[(df["source"] == "sim") & (df["metric"] == metric)]["value"].to_numpy()
    mr, ms = float(np.median(real)), float(np.median(sim))
    ok = abs(ms - mr) <= max(0.15 * mr, 0.3)
    p = float(ks_2samp(real, sim).pvalue) if len(real) >= 20 else float("nan")
    if len(real) >= 20:
        ok = ok and p > 0.01
    return {"real_median": mr, "sim_median": ms, "real_n": len(real), "sim_n": len(sim),
            "ks_p": p, "agrees": ok, "contended": len(bad), "all_contended": every}


def report(what: str, j: dict[str, Any]) -> None:
    p = "" if np.isnan(j["ks_p"]) else f", KS p {j['ks_p']:.3g}"
    left = ("; every trial under contention, all judged" if j.get("all_contended")
            else f"; {j['contended']} trial(s) under contention left out" if j["contended"]
            else "")
    print(f"{what}: real median {j['real_median']:.3f} s (n={j['real_n']}), sim median "
          f"{j['sim_median']:.3f} s (n={j['sim_n']}){p}: "
          f"{'agrees' if j['agrees'] else 'DISAGREES'}{left}", flush=True)


def pick(flag: str, text: str, known: Collection[str]) -> list[str]:
    """The comma-separated names of a lab CLI option, each one of ``known``."""
    from hasim.errors import HasimError

    names = [n.strip() for n in text.split(",")]
    bad = [n for n in names if n not in known]
    if bad:
        raise HasimError(f"{flag}: unknown {bad[0]!r}; known: {', '.join(known)}")
    return names


def save_cells(frames: list[pd.DataFrame], out: str | os.PathLike[str], filename: str
               ) -> tuple[pd.DataFrame, Path]:
    """The cells' long tables as one, written to ``out/filename``: the table and the path."""
    both = pd.concat(frames, ignore_index=True)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    both.to_parquet(path / filename)
    return both, path / filename
