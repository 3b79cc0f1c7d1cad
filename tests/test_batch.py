"""Batches (hasim.batches.batch): the runs a batch makes, their seeds, the executors, failures,
and resuming after a kill.

What is proved:
- seeds follow hasim.batches.seeds' rule (SeedSequence(base).spawn(r+1)[r]) and are shared by
  every HA mode and sweep point of one replication (common random numbers);
- serial, process and Dask executors give identical tables for the same runs, with
  their workers forked or not; they fork only from a process without other threads;
- a run that raises is recorded (status, "Type: message") and the batch goes on;
- a batch killed with SIGKILL part-way and rerun ends with exactly the tables of an
  uninterrupted batch, and the rerun recomputes only the missing runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import hasim
from hasim.batches.batch import RunTask, parse_set, plan, run_batch
from hasim.batches.results import TABLES, load_results
from hasim.batches.seeds import run_seed
from hasim.cli import main
from hasim.errors import HasimError

ROOT = Path(__file__).resolve().parent.parent
SCEN = ROOT / "scenarios"
SMALL = {"duration": "3m", "cluster.generate.nodes": 3}


def _small(name: str, **extra: object) -> hasim.Scenario:
    return hasim.load_scenario(SCEN / name).with_overrides({**SMALL, **extra})


def _default() -> hasim.Scenario:
    """default-mode has inline hosts (no generate): only shortened."""
    return hasim.load_scenario(SCEN / "default-mode.yaml").with_overrides({"duration": "3m"})


def assert_same_results(a: Path, b: Path) -> None:
    """Every table of two result directories equal, run by run and row by row; the runs
    index equal but for wall_s and cpu_s (they measure the machine, not the model)."""
    ra, rb = load_results(a), load_results(b)
    machine = ["wall_s", "cpu_s"]
    pd.testing.assert_frame_equal(ra.runs.drop(columns=machine), rb.runs.drop(columns=machine))
    for table in TABLES:
        files_a = sorted(p.name for p in (a / table).glob("*.parquet"))
        files_b = sorted(p.name for p in (b / table).glob("*.parquet"))
        assert files_a == files_b, table
        pd.testing.assert_frame_equal(ra[table], rb[table], obj=table)
    for d in (a, b):
        assert not [p for p in d.rglob(".tmp-*")], "temporary files left behind"


# --- the runs of a batch ---------------------------------------------------------------------


def test_seed_rule_is_seedsequence_spawn() -> None:
    for base in (0, 7, 2**40):
        children = np.random.SeedSequence(base).spawn(4)
        for r, child in enumerate(children):
            expect = int(child.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
            assert run_seed(base, r) == expect
    assert len({run_seed(0, r) for r in range(100)}) == 100
    assert run_seed(0, 0) != run_seed(1, 0)


def test_plan_sweep_points_replications_and_common_seeds() -> None:
    local = _small("local-lb.yaml", **{"sweep": {
        "balancers.local.fail_timeout": ["5s", "10s", "30s"],
        "clients.profile": ["modern", "legacy"]}})
    default = _default()
    tasks = plan([local, default], reps=2)
    assert len(tasks) == 3 * 2 * 2 + 2
    # Cartesian product in the order written, the last key varying fastest.
    first = [t.point for t in tasks if t.replication == 0 and t.name == "local-lb"]
    assert first[:2] == [{"balancers.local.fail_timeout": "5s", "clients.profile": "modern"},
                         {"balancers.local.fail_timeout": "5s", "clients.profile": "legacy"}]
    for t in tasks:
        assert t.seed == run_seed(0, t.replication)  # not the point, not the mode
        applied = t.scenario.spec
        for key, value in t.point.items():
            got = applied.model_dump(mode="json")
            for part in key.split("."):
                got = got[part]
            assert got == (5.0 if value == "5s" else 10.0 if value == "10s" else
                           30.0 if value == "30s" else value)
    ids = [t.run_id for t in tasks]
    assert len(set(ids)) == len(ids)
    assert ids == [t.run_id for t in plan([local, default], reps=2)]  # deterministic
    # More replications keep the ids of the first ones: a rerun with --reps 3 adds runs.
    more = {t.run_id for t in plan([local, default], reps=3)}
    assert set(ids) < more


def test_seed_follows_the_base_seed_and_set_applies_before_the_sweep() -> None:
    s = _small("local-lb.yaml", sweep={"duration": ["1m", "2m"]})
    tasks = plan([s], reps=1, overrides={"seed": 5, "clients.profile": "legacy"})
    assert [t.seed for t in tasks] == [run_seed(5, 0)] * 2
    assert {t.scenario.spec.clients.profile for t in tasks} == {"legacy"}
    assert [t.scenario.spec.duration for t in tasks] == [60.0, 120.0]  # sweep after --set


def test_parse_set_reads_yaml() -> None:
    assert parse_set(["a.b=3", "c=[1, 2]", "d=10s", "e=true", "f="]) == {
        "a.b": 3, "c": [1, 2], "d": "10s", "e": True, "f": ""}
    with pytest.raises(HasimError, match="key=value"):
        parse_set(["novalue"])


# --- executors ---------------------------------------------------------------------------


def _batch(out: Path, executor: str, **kw: object) -> pd.DataFrame:
    scenarios = [_small("local-lb.yaml"), _default()]
    return run_batch(scenarios, out=out, reps=2, executor=executor,  # type: ignore[arg-type]
                     progress=False, **kw)


def _no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    """The executors' other start method (forkserver, spawn), as in a process with
    threads of its own. The forked path is tested in fresh processes below: this one may
    run threads that earlier tests left (distributed's offload thread)."""
    import hasim.batches.batch as batch

    monkeypatch.setattr(batch, "_fork_ok", lambda: False)


def test_serial_and_process_give_identical_tables(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _no_fork(monkeypatch)
    runs = _batch(tmp_path / "serial", "serial")
    assert list(runs["status"]) == ["ok"] * 4
    assert list(runs["scenario"]) == ["local-lb"] * 2 + ["default-mode"] * 2
    _batch(tmp_path / "process", "process", jobs=2)
    assert_same_results(tmp_path / "serial", tmp_path / "process")
    # The stored tables are the simulator's, with run_id in front.
    res = load_results(tmp_path / "serial")
    row = runs.iloc[0]
    direct = hasim.simulate(_small("local-lb.yaml"), seed=int(row["seed"]))
    mine = res["failovers"]
    mine = mine[mine["run_id"] == row["run_id"]].drop(columns="run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, direct.failovers, check_dtype=False)
    assert row["events"] == direct.summary["events"]
    assert res.config(row["run_id"]) == _small("local-lb.yaml").resolved()


def test_dask_local_cluster_gives_identical_tables(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    _no_fork(monkeypatch)
    _batch(tmp_path / "serial", "serial")
    _batch(tmp_path / "dask", "dask", jobs=2)  # LocalCluster, 2 spawned worker processes
    assert_same_results(tmp_path / "serial", tmp_path / "dask")


def test_forked_dask_workers_give_identical_tables(tmp_path: Path) -> None:
    """``hasim run --executor dask`` in a fresh process, which runs no other thread: its
    LocalCluster's workers are forked (see the next test)."""
    pytest.importorskip("distributed")
    path = tmp_path / "small.yaml"
    path.write_text((SCEN / "local-lb.yaml").read_text())
    args = ["--reps", "2", "--set", "duration=3m", "--set", "cluster.generate.nodes=3", "-q"]
    done = subprocess.run([sys.executable, "-m", "hasim", "run", str(path), "--out",
                           str(tmp_path / "dask"), "--executor", "dask", "--jobs", "2",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert main(["run", str(path), "--out", str(tmp_path / "serial"), "--executor",
                 "serial", *args]) == 0
    assert_same_results(tmp_path / "serial", tmp_path / "dask")


# What a batch's worker sees of its parent: a value set at run time in the parent (not in
# any source file) is there in a forked worker only. Run as a script in a fresh process.
_START_PROBE = """
import json, sys, threading
from concurrent.futures import ProcessPoolExecutor

import distributed

import hasim.batches.batch as hb


def seen():
    import hasim.batches.batch
    return getattr(hasim.batches.batch, "probe", None)


def probe():
    fork_ok = hb._fork_ok()
    with ProcessPoolExecutor(1, mp_context=hb._mp_context()) as pool:
        process = pool.submit(seen).result()
    with hb._local_cluster(1) as cluster, distributed.Client(cluster) as client:
        dask = list(client.run(seen).values())
    return {"fork_ok": fork_ok, "process": process, "dask": dask}


if __name__ == "__main__":
    hb.probe = "set in the parent"
    report = {"alone": probe()}
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        report["with a thread"] = probe()
    finally:
        stop.set()
        other.join()
    print(json.dumps(report))
"""


def test_workers_fork_only_from_a_process_without_other_threads(tmp_path: Path) -> None:
    """Both executors fork their workers from a process that runs no thread but its
    main one (a forked child starts with the imports done); from one with another thread
    (a notebook kernel has several) the process pool's workers fork from a forkserver and
    Dask's are spawned: neither sees the parent's run-time state."""
    pytest.importorskip("distributed")
    script = tmp_path / "probe.py"
    script.write_text(_START_PROBE)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["alone"] == {"fork_ok": True, "process": "set in the parent",
                               "dask": ["set in the parent"]}
    assert report["with a thread"] == {"fork_ok": False, "process": None, "dask": [None]}


def test_a_local_cluster_runs_with_the_quiet_dask_settings() -> None:
    """The LocalCluster a batch starts: every worker runs its periodic callbacks at
    LOCAL_DASK_CONFIG's intervals, not distributed's defaults (a 20 ms event-loop tick, a
    100 ms memory monitor, a 10 ms profiler), and this process's config is left as it
    was."""
    distributed = pytest.importorskip("distributed")
    import dask
    from dask.utils import parse_timedelta

    from hasim.batches.batch import LOCAL_DASK_CONFIG, _local_cluster

    before = dask.config.get("distributed.admin.tick.interval")

    def seen(dask_worker: Any) -> dict[str, Any]:
        pcs = dask_worker.periodic_callbacks  # milliseconds
        return {"periods": {k: pcs[k].callback_time / 1000 if k in pcs else None
                            for k in ("tick", "monitor", "memory_monitor", "profile")},
                "config": {k: dask.config.get(k) for k in LOCAL_DASK_CONFIG}}

    with _local_cluster(2) as cluster, distributed.Client(cluster) as client:
        workers = client.run(seen)
    assert len(workers) == 2

    def period(key: str) -> float:
        return float(parse_timedelta(LOCAL_DASK_CONFIG[key]))

    for got in workers.values():
        assert got["config"] == LOCAL_DASK_CONFIG
        assert got["periods"] == {
            "tick": period("distributed.admin.tick.interval"),
            "monitor": period("distributed.admin.system-monitor.interval"),
            "memory_monitor": period("distributed.worker.memory.monitor-interval"),
            "profile": None}
    assert dask.config.get("distributed.admin.tick.interval") == before


@pytest.mark.slow
def test_dask_cluster_at_a_scheduler_address(tmp_path: Path) -> None:
    """``--scheduler ADDRESS``: an existing cluster (here a LocalCluster of 2 worker
    processes started by the test); the tables come back to the client, which stores them."""
    distributed = pytest.importorskip("distributed")
    import logging

    _batch(tmp_path / "serial", "serial")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as c:
        _batch(tmp_path / "remote", "process", scheduler=c.scheduler_address)
    assert_same_results(tmp_path / "serial", tmp_path / "remote")


# --- failures ----------------------------------------------------------------------------


def test_a_run_that_raises_is_recorded_and_the_batch_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import hasim.batches.batch as batch

    real = batch._simulate

    def flaky(scenario: hasim.Scenario, seed: int) -> object:
        if scenario.spec.clients.profile == "legacy":
            raise RuntimeError(f"no legacy today (seed {seed})")
        return real(scenario, seed)

    monkeypatch.setattr(batch, "_simulate", flaky)
    path = tmp_path / "s.yaml"
    path.write_text((SCEN / "local-lb.yaml").read_text() +
                    "sweep: {clients.profile: [modern, legacy, closeconns]}\n")
    out = tmp_path / "out"
    code = main(["run", str(path), "--reps", "2", "--out", str(out), "--executor", "serial",
                 "--set", "duration=2m", "-q"])
    assert code == 1  # an internal error in some runs: the batch still completed
    err = capsys.readouterr().err
    assert "2 of 6 runs failed" in err and "Traceback" not in err
    runs = pd.read_parquet(out / "runs.parquet")
    assert len(runs) == 6
    bad = runs[runs["clients.profile"] == "legacy"]
    assert list(bad["status"]) == ["error", "error"]
    assert all(e.startswith("RuntimeError: no legacy today (seed ") for e in bad["error"])
    good = runs[runs["clients.profile"] != "legacy"]
    assert (good["status"] == "ok").all() and good["error"].isna().all()
    fo = load_results(out)["failovers"]
    assert set(fo["run_id"]) == set(good["run_id"])  # no table rows for failed runs
    assert (out / "summary.csv").exists()

    # Fixed: the rerun computes the failed runs only.
    monkeypatch.setattr(batch, "_simulate", real)
    marks = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    assert main(["run", str(path), "--reps", "2", "--out", str(out), "--executor", "serial",
                 "--set", "duration=2m", "-q"]) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*.json")}
    changed = {n for n in after if after[n] != marks.get(n)}
    assert changed == {f"run-{r}.json" for r in bad["run_id"]}
    assert (pd.read_parquet(out / "runs.parquet")["status"] == "ok").all()


def test_a_dead_worker_is_recorded_without_a_marker(tmp_path: Path) -> None:
    from hasim.batches.batch import _lost

    task = plan([_small("local-lb.yaml")], reps=1)[0]
    assert isinstance(task, RunTask)
    row = _lost(task, RuntimeError("worker died"))
    assert row["status"] == "error" and "worker died" in row["error"]


# --- kill and resume ---------------------------------------------------------------------


REPS = 10


def _cmd(out: Path, executor: str) -> list[str]:
    return [sys.executable, "-m", "hasim", "run", str(SCEN / "local-lb.yaml"),
            str(SCEN / "default-mode.yaml"), "--reps", str(REPS), "--out", str(out),
            "--executor", executor, "--jobs", "2", "-q", "--set", "duration=10m"]


def _wait_for_runs(out: Path, proc: subprocess.Popen[Any], runs: int) -> None:
    """Until the batch ``proc`` has stored ``runs`` runs in ``out`` (their completion
    markers), or has ended, or 120 s have passed."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "runs").glob("run-*.json"))) >= runs:
            return
        time.sleep(0.01)


def test_sigkill_then_rerun_gives_exactly_the_uninterrupted_tables(tmp_path: Path) -> None:
    total = 2 * REPS
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(_cmd(killed, "process"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for_runs(killed, proc, 3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the batch and its workers, at once
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    before = {p.name: p.stat().st_mtime_ns for p in (killed / "runs").glob("run-*.json")}
    assert 3 <= len(before) < total, f"killed after {len(before)} of {total} runs"

    rerun = subprocess.run(_cmd(killed, "process"), cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (killed / "runs").glob("run-*.json")}
    assert len(after) == total
    assert all(after[n] == t for n, t in before.items())  # done runs were not recomputed

    # The same batch, uninterrupted (in this process, serially).
    clean = tmp_path / "clean"
    run_batch([SCEN / "local-lb.yaml", SCEN / "default-mode.yaml"], out=clean, reps=REPS,
              executor="serial", overrides={"duration": "10m"}, progress=False)
    assert_same_results(killed, clean)


_LONG_BATCH = """
import sys, threading

from hasim import load_scenario
from hasim.batches.batch import run_batch

if __name__ == "__main__":
    if sys.argv[3] == "with a thread":  # the pool's workers then fork from a forkserver
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    runs = load_scenario(sys.argv[2]).with_overrides({"duration": "10m"})
    run_batch(runs, out=sys.argv[1], reps=50, executor="process", jobs=2, progress=False)
"""


@pytest.mark.parametrize("caller", ["alone", "with a thread"])
def test_the_pools_workers_end_when_the_batch_is_killed_alone(tmp_path: Path,
                                                              caller: str) -> None:
    """SIGKILL to the batch's process only, not its group (the OOM killer's way): its
    pool's workers end too, forked, or from a forkserver, which then ends with its
    resource tracker."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "batch.py"
    script.write_text(_LONG_BATCH)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out),
                             str(SCEN / "local-lb.yaml"), caller], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)

    def running(p: Any) -> bool:  # an orphan's zombie, if nobody reaps it, has ended
        try:
            return bool(p.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    try:
        _wait_for_runs(out, proc, 2)  # the workers are up and storing runs
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        started = psutil.Process(proc.pid).children(recursive=True)
        # Two forked workers; or a forkserver, its two workers and a resource tracker.
        assert len(started) == (2 if caller == "alone" else 4), [p.cmdline() for p in started]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30
        while any(running(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in started if running(p)], [p.cmdline() for p in started]
    finally:
        try:  # whatever is left of the batch: its process group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


# --- figures -----------------------------------------------------------------------------


def test_plot_draws_the_standard_figures(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``hasim plot``: ECDF and box plots always, the check rate against cluster size only
    when a batch sweeps ``cluster.generate.nodes``, a NotReady timeline, a topology per
    scenario; and a directory that is not a result directory is bad input (exit 2)."""
    s = _small("local-lb.yaml", duration="1m",
               sweep={"cluster.generate.nodes": [2, 4]})
    run_batch([s, _default()], out=tmp_path / "r", reps=2, executor="serial", progress=False)
    assert main(["plot", str(tmp_path / "r")]) == 0
    names = sorted(p.name for p in (tmp_path / "r" / "plots").glob("*.png"))
    assert names == ["check-rate-vs-size.png", "failover-boxplots.png", "failover-ecdf.png",
                     "not-ready-timeline.png", "topology-default-mode.png",
                     "topology-local-lb.png"]
    run_batch([_default()], out=tmp_path / "d", reps=1, executor="serial", progress=False)
    assert main(["plot", str(tmp_path / "d"), "--out", str(tmp_path / "p")]) == 0
    assert not (tmp_path / "p" / "check-rate-vs-size.png").exists()
    capsys.readouterr()
    assert main(["plot", str(tmp_path)]) == 2
    assert "runs.parquet" in capsys.readouterr().err
