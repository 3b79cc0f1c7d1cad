"""Batches: every scenario x sweep point x replication, run serially, on local processes
or on a Dask cluster, stored per run so that an interrupted batch resumes.

- Runs. A scenario's ``sweep`` keys make a cartesian product of points, each applied with
  :meth:`Scenario.with_overrides` after the ``--set`` overrides; each point runs
  ``replications`` times (or ``reps``).
- Seeds. Replication ``r`` of a scenario gets :func:`hasim.batches.seeds.run_seed` (base seed, r),
  the same for every HA mode and sweep point (common random numbers, see
  :mod:`hasim.batches.seeds`).
- Identity. ``run_id`` is a hash of the run's resolved config (scenario name, every knob
  after the overrides, the base seed) and its replication index: the same run has the
  same id in any batch, so a rerun skips it.
- Failures. An exception in a run is caught where it runs and recorded in its row
  (``status="error"``, ``error="Type: message"``); the batch goes on (as desmod's
  ``simulate_many``). Bad input is found before anything runs and raises
  :class:`~hasim.errors.ScenarioError`, leaving the result directory untouched.
- Storage. :mod:`hasim.batches.results`: atomic files per run, a completion marker last.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from hasim.batches.results import TABLES, ResultStore
from hasim.batches.seeds import run_seed
from hasim.errors import HasimError, ScenarioError
from hasim.spec.scenario import Scenario, load_scenario, scenario_from_dict

Executor = Literal["serial", "process", "dask"]
EXECUTORS: tuple[str, ...] = ("serial", "process", "dask")
#: Keys of a scenario that describe the batch, not one run: left out of ``run_id``.
BATCH_KEYS = ("sweep", "replications")


@dataclass(frozen=True)
class RunTask:
    """One run: a scenario with its overrides applied, a replication and its seed."""

    run_id: str
    index: int
    scenario: Scenario
    point: dict[str, Any]
    replication: int
    seed: int
    path: str | None

    @property
    def name(self) -> str:
        return self.scenario.name

    def base_row(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "run_id": self.run_id,
            "scenario": self.name,
            "path": self.path,
            "point": point_label(self.point),
        }
        row.update(self.point)
        row.update({"replication": self.replication, "seed": self.seed})
        return row


def point_label(point: Mapping[str, Any]) -> str:
    """A short label of a sweep point: ``key=value,key=value`` (``base`` without a sweep)."""
    if not point:
        return "base"
    return ",".join(f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in point.items())


def _short(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def run_id_of(config: Mapping[str, Any], replication: int) -> str:
    """The identity of a run: its resolved config (less the batch keys) and replication."""
    ident = {k: v for k, v in config.items() if k not in BATCH_KEYS}
    text = json.dumps({"config": ident, "replication": replication}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- input: files, overrides, sweep points ---------------------------------------------------


def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """``["key=value", ...]`` from the command line; each value is read as YAML."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise HasimError(f"--set {item!r}: expected key=value (e.g. duration=5m)")
        try:
            out[key] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise HasimError(f"--set {key}: the value is not valid YAML: {problem}") from None
    return out


def check_scenario(scenario: Scenario) -> None:
    """Beyond the schema: the topology builds, under each sweep value too (one key at a
    time: the cartesian product adds nothing a single value can break). Raises
    :class:`ScenarioError` naming ``sweep.KEY[i]``."""
    from hasim.graph.topology import build_topology

    build_topology(scenario)
    for key, values in scenario.spec.sweep.items():
        for i, value in enumerate(values):
            try:
                build_topology(scenario.with_overrides({key: value}))
            except ScenarioError as exc:
                where = f"{exc.field}: " if exc.field and exc.field != key else ""
                raise ScenarioError(f"value {value!r}: {where}{exc.problem}", file=scenario.path,
                                    field=f"sweep.{key}[{i}]") from None


def _with_set(scenario: Scenario, overrides: Mapping[str, Any]) -> Scenario:
    if not overrides:
        return scenario
    try:
        return scenario.with_overrides(overrides)
    except ScenarioError as exc:
        field_ = f"--set {exc.field}" if exc.field else "--set"
        raise ScenarioError(exc.problem, file=exc.file, field=field_, line=exc.line) from None


def points(scenario: Scenario) -> list[dict[str, Any]]:
    """The sweep points of a scenario: the cartesian product of its ``sweep`` values, in
    the order written (the last key varies fastest); ``[{}]`` without a sweep."""
    sweep = scenario.spec.sweep
    if not sweep:
        return [{}]
    keys = list(sweep)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*sweep.values())]


def _without_sweep(scenario: Scenario) -> Scenario:
    raw = {k: v for k, v in scenario.raw.items() if k != "sweep"}
    return scenario_from_dict(raw, scenario.path)


def plan(inputs: Sequence[str | os.PathLike[str] | Scenario], reps: int | None = None,
         overrides: Mapping[str, Any] | None = None) -> list[RunTask]:
    """Every run of a batch, in order; validates everything first (raises
    :class:`ScenarioError` on the first bad input, before any run)."""
    if reps is not None and reps < 1:
        raise HasimError(f"--reps must be at least 1, got {reps}")
    scenarios: list[Scenario] = []
    for item in inputs:
        s = item if isinstance(item, Scenario) else load_scenario(item)
        s = _with_set(s, overrides or {})
        check_scenario(s)
        scenarios.append(s)
    tasks: list[RunTask] = []
    seen: dict[str, str] = {}
    for s in scenarios:
        base = _without_sweep(s)
        n = reps if reps is not None else s.spec.replications
        for point in points(s):
            try:
                ps = base.with_overrides(point) if point else base
            except ScenarioError as exc:
                raise ScenarioError(f"sweep point {point_label(point)}: {exc.problem}",
                                    file=s.path, field=exc.field) from None
            config = ps.resolved()
            for r in range(n):
                rid = run_id_of(config, r)
                if rid in seen:
                    continue  # the same run asked twice (a file given twice, a repeated value)
                seen[rid] = s.name
                tasks.append(RunTask(rid, len(tasks), ps, dict(point), r,
                                     run_seed(ps.spec.seed, r), s.path))
    return tasks


# --- one run (executes in a worker) ----------------------------------------------------------


def _simulate(scenario: Scenario, seed: int) -> Any:
    from hasim.sim.engine import simulate

    return simulate(scenario, seed)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str) or (
        hasattr(value, "item") and getattr(value, "ndim", 1) == 0)


_threads_limited = False


def _one_thread_per_worker() -> None:
    """A batch runs one simulation per core: Arrow's thread pools (which Parquet writes
    and pandas' Arrow-backed strings use, sized to all cores by default) would put two
    threads of every worker on the same two cores. One each, once per process."""
    global _threads_limited
    if _threads_limited:
        return
    _threads_limited = True
    try:
        import pyarrow

        pyarrow.set_cpu_count(1)
        pyarrow.set_io_thread_count(1)
    except (ImportError, AttributeError):  # pragma: no cover - pyarrow is a dependency
        pass


def execute(task: RunTask, out: str | None, tables: Sequence[str] = TABLES
            ) -> tuple[dict[str, Any], dict[str, pd.DataFrame] | None]:
    """Run one task; never raises for a failure of the simulation itself.

    Returns its row and, when ``out`` is None, its tables (the caller stores them); with
    ``out`` the tables are written there by this process and None is returned in their
    place. Top level and argument-only, so that a spawned process or a Dask worker can
    import and call it.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    row = task.base_row()
    frames: dict[str, pd.DataFrame] = {}
    try:
        result = _simulate(task.scenario, task.seed)
        for name in tables:
            df = getattr(result, name, None)
            if isinstance(df, pd.DataFrame):
                frames[name] = df
        summary = {k: v for k, v in result.summary.items()
                   if _scalar(v) and k not in row and k != "wall_s"}
        row.update(status="ok", error=None)
        row["apiservers"] = len(task.scenario.cluster.members("kube-master"))
        row.update(summary)
    except Exception as exc:  # a failed run is a result: record it, go on
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
        frames = {}
    row["wall_s"] = time.perf_counter() - t0
    row["cpu_s"] = time.process_time() - c0  # below wall_s: the machine was shared
    _order(row)
    if out is None:
        return row, frames
    ResultStore(Path(out)).write_run(task.run_id, row, frames, task.scenario.resolved())
    return row, None


_FRONT = ("run_id", "scenario", "path", "point")
_AFTER_POINT = ("replication", "seed", "status", "error", "wall_s", "cpu_s", "events")


def _order(row: dict[str, Any]) -> None:
    """Fixed columns first, in place: id, scenario, point, sweep keys, replication..."""
    keys = list(row)
    sweep_keys = keys[len(_FRONT):keys.index("replication")]
    order = [*_FRONT, *sweep_keys, *[k for k in _AFTER_POINT if k in row]]
    order += [k for k in keys if k not in order]
    items = [(k, row[k]) for k in order]
    row.clear()
    row.update(items)


# --- executors ------------------------------------------------------------------------------


@dataclass
class _Progress:
    total: int
    done: int
    enabled: bool | None
    errors: int = 0
    bar: Any = field(default=None, repr=False)

    def __enter__(self) -> _Progress:
        from tqdm import tqdm

        class Bar(tqdm):
            # No monitor thread (tqdm starts one with its first bar, shown or not): the
            # workers are forked only from a process that runs no other thread
            # (_fork_ok). It only lowers a dynamic `miniters`; this bar has 1.
            monitor_interval = 0

        disable = (not sys.stderr.isatty()) if self.enabled is None else not self.enabled
        self.bar = Bar(total=self.total, initial=self.done, unit="run", file=sys.stderr,
                       disable=disable, dynamic_ncols=True, smoothing=0.1, miniters=1)
        return self

    def update(self, row: Mapping[str, Any]) -> None:
        if row.get("status") != "ok":
            self.errors += 1
            self.bar.set_postfix(errors=self.errors, refresh=False)
        self.bar.update(1)

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


Sink = Callable[[RunTask, dict[str, Any]], None]


def _run_serial(todo: Sequence[RunTask], out: Path, tables: Sequence[str], sink: Sink) -> None:
    for task in todo:
        row, _ = execute(task, str(out), tables)
        sink(task, row)


def _fork_ok() -> bool:
    """Whether a batch's worker processes may be forked from this one: on Linux, while it
    runs no thread but its main one.

    A forked worker starts with this process's imports done (hasim, pandas, distributed:
    otherwise 0.7-1.7 s per worker, on the cores the runs need) and leaves without
    tearing them down. But it also inherits every lock as it stood at the fork, and one
    that another thread held then stays held in the child for good. With the main thread
    alone there is no such lock (a Dask LocalCluster's own threads aside, below). A
    caller with threads of its own, a notebook kernel for one, gets each executor's
    other choice: forkserver for processes, spawn for Dask. macOS can fork too, but its
    system libraries do not survive it."""
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _mp_context() -> Any:
    """fork where :func:`_fork_ok` allows it: ProcessPoolExecutor forks every worker at
    the first submit, before it starts its own management thread. Otherwise forkserver
    where there is one (workers fork from a server that imported hasim once, not from
    this process and its threads); spawn elsewhere."""
    if _fork_ok():
        return multiprocessing.get_context("fork")
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["hasim.batches.batch", "hasim.sim.engine"])
        return ctx
    return multiprocessing.get_context("spawn")


def _worker_init(batch: int) -> None:
    """Workers leave Ctrl-C to the parent, which cancels what has not started and lets
    the running runs finish and store themselves; and they end with the batch's process
    (pid ``batch``).

    A pool's worker waits on its task queue once its run is stored. When the batch's
    process was killed alone (by the OOM killer, or a SIGKILL to its pid), nothing told
    the workers to leave: they stayed, each with its memory, until killed by hand, and
    so did a forkserver, which waits for its workers. On Linux a worker now ends with
    SIGTERM when the batch's process does (:func:`_end_with`). The run it had under way
    is lost, as the batch's own would be; a run's files are written atomically, and a
    rerun computes it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        _end_with(batch)
    _one_thread_per_worker()


def _end_with(batch: int) -> None:
    """SIGTERM to this worker when process ``batch`` ends: a thread waits on a pidfd of
    it. A forked worker is the batch's child; a forkserver's is the server's, and the
    server does not end before its workers (each holds its end of the pipe the server
    watches for the batch's), so the kernel's parent-death signal would not reach it:
    one mechanism for both. If the batch has already ended, the worker leaves at once."""
    import signal

    try:
        pidfd = os.pidfd_open(batch)
    except ProcessLookupError:
        os._exit(1)
    except OSError:  # pragma: no cover - a kernel older than 5.3
        return

    def watch() -> None:
        import select

        select.select([pidfd], [], [])  # readable once the process has ended
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="hasim-batch-watch", daemon=True).start()


def _run_process(todo: Sequence[RunTask], out: Path, tables: Sequence[str], sink: Sink,
                 jobs: int | None) -> None:
    from concurrent.futures.process import BrokenProcessPool

    workers = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context(),
                               initializer=_worker_init, initargs=(os.getpid(),))
    try:
        # Keep a bounded window in flight so memory stays flat on big batches.
        pending: dict[Future[Any], RunTask] = {}
        queue = iter(todo)
        window = workers * 4

        def refill() -> None:
            while len(pending) < window:
                task = next(queue, None)
                if task is None:
                    return
                pending[pool.submit(execute, task, str(out), tables)] = task

        refill()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                task = pending.pop(fut)
                try:
                    row, _ = fut.result()
                except BrokenProcessPool as exc:
                    row = _lost(task, exc)
                sink(task, row)
            refill()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _lost(task: RunTask, exc: BaseException) -> dict[str, Any]:
    """The row of a run whose worker died; no marker is written, so a rerun retries it."""
    row = task.base_row()
    row.update(status="error", error=f"{type(exc).__name__}: {exc}", wall_s=float("nan"))
    row["_lost"] = True
    return row


#: Dask settings for the workers (and the scheduler and nannies, in this process) of a
#: LocalCluster a batch starts. Each periodic callback of distributed takes the GIL from a
#: CPU-bound simulation, or a core from it; on an idle 2-worker cluster the defaults
#: below used 1.1 s of CPU per 10 s, these 0.16 s.
LOCAL_DASK_CONFIG: dict[str, Any] = {
    # The statistical profiler samples the running task's stack every 10 ms: the same 40
    # runs took 6 to 10 % longer on Dask's workers than one after the other here.
    "distributed.worker.profile.enabled": False,
    # The event loop's health check (20 ms by default: most of the idle CPU above); it
    # only warns when a loop was blocked longer than `limit` (3 s).
    "distributed.admin.tick.interval": "1s",
    # CPU, memory and network samples for the dashboard, which hasim does not start
    # (500 ms by default).
    "distributed.admin.system-monitor.interval": "5s",
    # The memory manager's look at each worker's RSS for its spill, pause and terminate
    # thresholds (100 ms by default); a simulation's memory grows over seconds.
    "distributed.worker.memory.monitor-interval": "1s",
}


def _local_cluster(workers: int) -> Any:
    """A LocalCluster of ``workers`` single-threaded worker processes, started under
    :data:`LOCAL_DASK_CONFIG` (its nannies hand the config to the workers they start; the
    scheduler and nannies read theirs as they start).

    The workers are forked from this process when :func:`_fork_ok` allows it
    (``distributed.worker.multiprocessing-method: fork``, one of the three methods
    distributed offers): spawned workers import distributed, pandas and hasim before
    their first run and tear them down when the cluster closes, 1.8-2.1 s of a batch's
    wall time on 2 cores against 0.2 s forked (docs/performance.md, seventh round). The
    other threads at a fork are then distributed's and multiprocessing's own (its event
    loop, the nannies' process watchers, one of which forks, and queue feeders), which
    reset what they hold in a forked child. After a first cluster, distributed keeps
    its offload thread, and a later one in this process is spawned. Forking from a
    server that imported hasim, as the process executor does otherwise, was measured
    and dropped: Dask's forkserver imports every optional package of distributed first,
    which cost more than the workers' own imports."""
    import logging

    import dask
    from distributed import LocalCluster

    config = dict(LOCAL_DASK_CONFIG)
    if _fork_ok():
        config["distributed.worker.multiprocessing-method"] = "fork"
    with dask.config.set(config):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                            dashboard_address=None, silence_logs=logging.ERROR)


def _run_dask(todo: Sequence[RunTask], store: ResultStore, tables: Sequence[str], sink: Sink,
              jobs: int | None, scheduler: str | None) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:  # pragma: no cover - the dask extra is not installed
        raise HasimError("executor dask needs dask.distributed: pip install 'hasim[dask]'"
                         ) from None
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as exc:
            raise HasimError(f"--scheduler {scheduler}: cannot reach the Dask scheduler: "
                             f"{exc}") from None
    else:
        workers = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
        cluster = _local_cluster(workers)
        client = Client(cluster)
    try:
        # A LocalCluster's workers share this machine's disk: each stores its own runs,
        # as the process executor's do (here, on two cores, this process writing every
        # run's Parquet files competed with the two workers for them). The tables of a
        # remote cluster's runs come back to this process, which stores them: its workers
        # need not see the result directory.
        local = cluster is not None
        out = str(store.root) if local else None
        if local:
            client.run(_one_thread_per_worker)
        futures = client.map(execute, list(todo), out=out, tables=tables, pure=False)
        by_key = {f.key: t for f, t in zip(futures, todo, strict=True)}
        for fut in as_completed(futures):
            task = by_key[fut.key]
            try:
                row, frames = fut.result()
            except Exception as exc:  # a worker died (KilledWorker) or similar
                sink(task, _lost(task, exc))
                continue
            if not local:
                store.write_run(task.run_id, row, frames or {}, task.scenario.resolved())
            sink(task, row)
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --- the batch -----------------------------------------------------------------------------


def _cost(task: RunTask) -> float:
    """A rough cost of a run, for scheduling: hosts x simulated seconds."""
    return len(task.scenario.cluster.hosts) * task.scenario.spec.duration


def default_out(tasks: Sequence[RunTask]) -> Path:
    """``results/<scenario name>``; for several scenarios their names joined by ``+``."""
    names = list(dict.fromkeys(t.name for t in tasks))
    label = "+".join(names)
    if len(label) > 80:
        label = "batch-" + hashlib.sha256(label.encode()).hexdigest()[:8]
    return Path("results") / label


def run_batch(
    paths_or_scenarios: str | os.PathLike[str] | Scenario
    | Sequence[str | os.PathLike[str] | Scenario],
    out: str | os.PathLike[str] | None = None,
    reps: int | None = None,
    executor: Executor = "process",
    scheduler: str | None = None,
    *,
    jobs: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    requests: bool = True,
    fresh: bool = False,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Run every scenario x sweep point x replication and store the results under ``out``.

    Returns ``runs.parquet`` as a DataFrame (one row per run, in batch order; the result
    directory in ``.attrs["out"]``). Runs
    already complete in ``out`` are not recomputed (``fresh=True`` recomputes them).
    ``executor``: ``serial``, ``process`` (``jobs`` processes, default all cores) or
    ``dask`` (a LocalCluster of ``jobs`` worker processes, or the cluster at
    ``scheduler``; giving ``scheduler`` implies ``dask``). ``overrides`` are dotted keys
    applied to every scenario before its sweep; ``requests=False`` does not store the
    per-request table. Bad input raises :class:`ScenarioError` before ``out`` is touched.
    """
    if isinstance(paths_or_scenarios, str | os.PathLike | Scenario):
        inputs: list[Any] = [paths_or_scenarios]
    else:
        inputs = list(paths_or_scenarios)
    if not inputs:
        raise HasimError("no scenario given")
    if scheduler:
        executor = "dask"
    if executor not in EXECUTORS:
        raise HasimError(f"unknown executor {executor!r}; one of: {', '.join(EXECUTORS)}")
    if jobs is not None and jobs < 1:
        raise HasimError(f"--jobs must be at least 1, got {jobs}")
    tasks = plan(inputs, reps, overrides)
    root = Path(out) if out is not None else default_out(tasks)
    if root.exists() and not root.is_dir():
        raise HasimError(f"--out {root}: is not a directory")
    tables = [t for t in TABLES if requests or t != "requests"]

    store = ResultStore(root)
    root.mkdir(parents=True, exist_ok=True)
    store.clean_temp()
    rows: dict[str, dict[str, Any]] = {}
    todo: list[RunTask] = []
    for task in tasks:
        mark = None if fresh else store.marker(task.run_id)
        if mark is not None and store.is_done(task.run_id, tables):
            rows[task.run_id] = mark["row"]
        else:
            todo.append(task)

    def sink(task: RunTask, row: dict[str, Any]) -> None:
        rows[task.run_id] = row
        bar.update(row)

    if executor != "serial":
        # Longest first: a big run started last would leave the other workers idle.
        todo.sort(key=lambda t: (-_cost(t), t.index))
    with _Progress(len(tasks), len(tasks) - len(todo), progress) as bar:
        if todo:
            if executor == "serial":
                _run_serial(todo, root, tables, sink)
            elif executor == "process":
                _run_process(todo, root, tables, sink, jobs)
            else:
                _run_dask(todo, store, tables, sink, jobs, scheduler)
    ordered = [{k: v for k, v in rows[t.run_id].items() if not k.startswith("_")}
               for t in tasks if t.run_id in rows]
    df = store.write_index(copy.deepcopy(ordered))
    df.attrs["out"] = str(root)
    return df
