"""``run_lab``: a scenario's N real trials and its simulated ones, side by side."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from hasim.lab import compare, prereq
from hasim.lab.contention import Watch
from hasim.lab.load import LoadSpec
from hasim.lab.measure import trial_metrics
from hasim.lab.netns import cleanup_all, exit_on_signals, stopping
from hasim.lab.trials import LabPlan, RealLab, plan_lab, sim_trial
from hasim.spec.scenario import Scenario

#: Simulated trials per scenario by default: each draws its own check phase, and the
#: median of 100 is within about 5 % of an interval of the distribution's.
SIM_TRIALS = 100


def _rows(source: str, trial: int, plan: LabPlan, metrics: dict[str, float], shift: float
          ) -> list[dict[str, object]]:
    return [{"source": source, "trial": trial, "metric": m, "value": float(v),
             "scenario": plan.scenario.name, "shift": shift} for m, v in metrics.items()]


def measure_scenario(scenario: Scenario, trials: int = 5, *, sim_trials: int | None = None,
            load: LoadSpec | None = None, host: str | None = None, seed: int = 0,
            real: bool = True, log: Callable[[str], None] | None = None,
            run_dir: Path | None = None) -> pd.DataFrame:
    """The long table (``compare.COLUMNS``) of ``trials`` real and ``sim_trials``
    simulated trials of ``scenario`` (default: ``SIM_TRIALS``)."""
    log = log or (lambda _m: None)
    plan = plan_lab(scenario, host, load)
    n_sim = sim_trials if sim_trials is not None else max(SIM_TRIALS, trials)
    rows: list[dict[str, object]] = []
    if threading.current_thread() is threading.main_thread():
        stopping.clear()  # a new top-level run (run_matrix clears it for its threads)
    if real:
        prereq.require()
        with exit_on_signals(), RealLab(plan, run_dir, on_event=log) as lab:
            for i in range(trials):
                with Watch() as w:
                    rec = lab.trial(i, trials)
                m = {**trial_metrics(rec), **w.result.metrics()}
                log(f"{scenario.name}: real trial {i + 1}/{trials}: " + _brief(m))
                rows += _rows("real", i, plan, m, float(rec.extra["shift"]))
    for j in range(n_sim):
        rec = sim_trial(plan, j, n_sim, seed)
        rows += _rows("sim", j, plan, trial_metrics(rec), plan.shift(j, n_sim))
    log(f"{scenario.name}: {n_sim} simulated trials done")
    return pd.DataFrame(rows, columns=compare.COLUMNS)


def _brief(m: dict[str, float]) -> str:
    keys = ("detect_s", "failover_s", "check_rate_per_s")
    return ", ".join(f"{k}={m[k]:.3f}" for k in keys if not math.isnan(m.get(k, math.nan)))


def write(df: pd.DataFrame, out: str | Path, name: str = "lab") -> tuple[pd.DataFrame, Path]:
    """Write ``DIR/lab.parquet``, ``DIR/lab-summary.csv`` and ``DIR/lab.png``; returns the
    side-by-side table and the directory."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out / f"{name}.parquet", index=False)
    table = compare.side_by_side(df)
    table.to_csv(out / f"{name}-summary.csv", index=False)
    compare.plot(df, out / f"{name}.png")
    return table, out


def _logger(quiet: bool) -> Callable[[str], None]:
    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return log


def _write_and_show(df: pd.DataFrame, out: str | Path, quiet: bool) -> None:
    table, where = write(df, out)
    if not quiet:
        print(compare.format_table(table))
        print(f"\nwritten: {where / 'lab.parquet'}, {where / 'lab-summary.csv'}, "
              f"{where / 'lab.png'}")


def run_lab(scenario: Scenario, trials: int = 5, out: str | Path = "results/lab", *,
            sim_trials: int | None = None, load: LoadSpec | None = None,
            host: str | None = None, seed: int = 0, quiet: bool = False) -> pd.DataFrame:
    """Run ``trials`` real trials of ``scenario`` (nginx or HAProxy from
    ``render_config``, stub apiservers, real faults, in a network namespace) and the same
    scenario in the simulator; write ``out/lab.parquet`` (columns ``source``, ``trial``,
    ``metric``, ``value``, ...), ``out/lab-summary.csv`` and ``out/lab.png``; print the
    side-by-side table; return the long table.

    Raises :class:`hasim.lab.prereq.LabUnavailable` (a :class:`hasim.HasimError`) when
    the machine lacks root or a tool, and :class:`hasim.HasimError` for a scenario the lab
    cannot reproduce.
    """
    df = measure_scenario(scenario, trials, sim_trials=sim_trials, load=load, host=host,
                          seed=seed, log=_logger(quiet))
    _write_and_show(df, out, quiet)
    return df


def run_matrix(scenarios: Sequence[Scenario], trials: int, out: str | Path, *,
               parallel: int = 1, sim_trials: int | None = None, load: LoadSpec | None = None,
               quiet: bool = False) -> pd.DataFrame:
    """:func:`measure_scenario` for every scenario (``parallel`` at a time, each in its own
    namespace), written together as one ``lab.parquet`` under ``out``."""
    prereq.require()
    stopping.clear()

    log = _logger(quiet)

    def one(s: Scenario) -> pd.DataFrame:
        # Real trials only: the simulated ones (CPU-bound, in this process) come after
        # every cell's real trials, so they never steal the CPU from a cell being timed.
        return measure_scenario(s, trials, sim_trials=0, load=load, log=log)

    with exit_on_signals():
        if parallel > 1:
            pool = ThreadPoolExecutor(max_workers=parallel)
            try:
                parts = list(pool.map(one, scenarios))
            except BaseException:
                # Ctrl-C or a failed cell: stop the other cells now (their processes and
                # namespaces go, so their threads fail fast) rather than at their end.
                cleanup_all()
                raise
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            parts = [one(s) for s in scenarios]
        parts += [measure_scenario(s, trials, sim_trials=sim_trials, load=load, real=False,
                                   log=log)
                  for s in scenarios]
    df = pd.concat(parts, ignore_index=True)
    _write_and_show(df, out, quiet)
    return df


def load_lab(out: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A written lab result: (long table, side-by-side table)."""
    df = pd.read_parquet(Path(out) / "lab.parquet")
    return df, compare.side_by_side(df)
