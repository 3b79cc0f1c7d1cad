"""The lab's etcd cell: a real three-member etcd 3.4 (Debian's ``etcd-server``) on
loopback, its leader killed with SIGKILL, and the time until a survivor leads; beside it
the simulator's elections under the same timers (docs/lab.md, "etcd").

A trial starts a fresh cluster (data directories on tmpfs: an fsync stall is not what is
measured), waits until it has a leader and every member answers, kills the leader's
process with ``kill -9``, then polls the two survivors' ``/v3/maintenance/status`` (the
gRPC gateway, JSON over HTTP) every 2 ms until one of them reports a new leader in a
higher term. ``election_s`` is that instant minus the kill; ``rounds`` is how many terms
the election took (1: the first candidate won). Every process and directory a trial
starts is removed when it ends, even on failure.

The simulated side runs hasim's :class:`~hasim.sim.etcd.EtcdCluster` in a three-master
scenario whose first member's etcd crashes (``master1/etcd``), under the same
``heartbeat_interval`` / ``election_timeout``, and reads ``lost_at`` to ``time`` off the
``elections`` table.

    python -m hasim.lab.etcd [--settings etcd-defaults,kubespray-2026] [--trials 10]
                             [--pre-vote] [--stop] [--writes 1,15]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hasim.errors import HasimError, exit_status
from hasim.lab.judge import judge, pick, real_rows, report, save_cells

#: name -> (heartbeat ms, election ms): etcd's own defaults, kubespray today
#: (roles/etcd_defaults: "250", "5000") and kargo of 2016 (election 10000, etcd.j2).
SETTINGS: dict[str, tuple[int, int]] = {
    "etcd-defaults": (100, 1000),
    "kubespray-2026": (250, 5000),
    "kubespray-2016": (100, 10000),
}
MEMBERS = 3
POLL_S = 0.002


@dataclass(frozen=True)
class Member:
    name: str
    client_port: int
    peer_port: int

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def status(member: Member, timeout: float = 0.5) -> dict[str, Any]:
    """``/v3/maintenance/status`` of one member: ``header.member_id``, ``leader``,
    ``raftTerm``."""
    req = urllib.request.Request(f"{member.client_url}/v3/maintenance/status", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback)
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def available() -> str | None:
    """None when the cell can run here, else why not."""
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian package etcd-server; make system-deps)"
    return None


@contextmanager
def etcd_cluster(heartbeat_ms: int, election_ms: int, pre_vote: bool = False
                 ) -> Iterator[tuple[list[Member], dict[str, subprocess.Popen[bytes]]]]:
    """Three etcd members on 127.0.0.1, started and always stopped (SIGKILL) and removed."""
    if (why := available()) is not None:
        raise HasimError(why)
    ports = _free_ports(2 * MEMBERS)
    members = [Member(f"m{i}", ports[2 * i], ports[2 * i + 1]) for i in range(MEMBERS)]
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="hasim-etcd-", dir=shm))
    initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for m in members:
            cmd = ["etcd", "--name", m.name, "--data-dir", str(root / m.name),
                   "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                   "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                   "--initial-cluster", initial, "--initial-cluster-state", "new",
                   "--initial-cluster-token", root.name,
                   "--heartbeat-interval", str(heartbeat_ms),
                   "--election-timeout", str(election_ms),
                   f"--pre-vote={'true' if pre_vote else 'false'}",
                   "--log-level", "error", "--logger", "zap"]
            log = open(root / f"{m.name}.log", "wb")  # noqa: SIM115 (closed with the dir)
            procs[m.name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            # Each member's raft ticker starts with the member: started back to back,
            # their tick phases would be nearly aligned, and a CheckQuorum second term
            # needs the other follower one tick behind the first candidate (docs/model.md,
            # etcd). Real members boot at unrelated instants, as the model draws them.
            time.sleep(random.uniform(0.0, heartbeat_ms / 1000.0))
        yield members, procs
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


def _leader(members: Sequence[Member], deadline: float) -> tuple[Member, int]:
    """The member that leads (and the term) once all members agree on one."""
    while time.monotonic() < deadline:
        try:
            docs = [status(m) for m in members]
        except OSError:
            time.sleep(0.05)
            continue
        leaders = {int(d.get("leader", 0)) for d in docs}
        if len(leaders) == 1 and 0 not in leaders:
            lead = leaders.pop()
            for m, d in zip(members, docs, strict=True):
                if int(d["header"]["member_id"]) == lead:
                    return m, int(d["raftTerm"])
        time.sleep(0.05)
    raise HasimError("etcd: the cluster elected no leader in time (see its logs)")


def _kill(proc: subprocess.Popen[bytes]) -> float:
    """SIGKILL the member and return when it is gone (reaped): the fault's instant.
    Until then it may still commit what it holds."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    return time.monotonic()


def _new_leader(survivors: Sequence[Member], term: int) -> int | None:
    """The term in which a survivor reports a leader elected after ``term``, if any yet."""
    for m in survivors:
        try:
            d = status(m, timeout=0.2)
        except OSError:
            continue
        if int(d.get("leader", 0)) and int(d["raftTerm"]) > term:
            return int(d["raftTerm"])
    return None


def real_trial(heartbeat_ms: int, election_ms: int, pre_vote: bool = False,
               stop: bool = False) -> dict[str, Any]:
    """One kill of the leader (or with ``stop``, a SIGTERM: etcd's graceful stop, which
    hands leadership to a follower before exiting); ``election_s`` and ``rounds``."""
    e = election_ms / 1000.0
    with etcd_cluster(heartbeat_ms, election_ms, pre_vote) as (members, procs):
        lead, term = _leader(members, time.monotonic() + 30 + 4 * e)
        time.sleep(3 * heartbeat_ms / 1000.0)  # steady heartbeats before the fault
        survivors = [m for m in members if m is not lead]
        if stop:
            t0 = time.monotonic()
            os.killpg(procs[lead.name].pid, signal.SIGTERM)
        else:
            t0 = _kill(procs[lead.name])
        deadline = t0 + 20 * e + 10
        while time.monotonic() < deadline:
            if (new := _new_leader(survivors, term)) is not None:
                return {"election_s": time.monotonic() - t0, "rounds": new - term}
            time.sleep(POLL_S)
    raise HasimError("etcd: no new leader after the kill (see the member logs)")


def put(member: Member, timeout: float) -> tuple[bool, float, str]:
    """One ``/v3/kv/put`` (the gRPC gateway): (succeeded, seconds, error text)."""
    import base64
    import urllib.error

    body = json.dumps({"key": base64.b64encode(b"hasim").decode(),
                       "value": base64.b64encode(b"lab").decode()}).encode()
    req = urllib.request.Request(f"{member.client_url}/v3/kv/put", data=body,
                                 headers={"Content-Type": "application/json"})
    t = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (loopback)
            resp.read()
        return True, time.monotonic() - t, ""
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        return False, time.monotonic() - t, text
    except OSError as exc:  # the client's own timeout, a refused connection
        return False, time.monotonic() - t, repr(exc)


#: When the probe write is proposed after the leader's death: well inside the election
#: (no survivor times out before E - H), so the survivor still forwards to the dead leader.
PROBE_AFTER_S = 0.05


def write_trial(heartbeat_ms: int, election_ms: int, client_timeout: float
                ) -> dict[str, Any]:
    """Writes to a survivor while the leader is killed, each with ``client_timeout``.

    - ``probe_s``: a put proposed :data:`PROBE_AFTER_S` after the leader's death, during
      the election: how long it took, ``probe_ok`` whether it succeeded and
      ``server_timeout`` whether etcd's "request timed out" ended it;
    - a client loop of puts (one at a time) throughout: ``writes_back_s`` (the death to
      the first put that succeeds again) and ``in_flight_s``/``in_flight_ok`` for the put
      under way at the death. That put is either lost with the leader (it hangs like the
      probe) or already on a survivor's log, and then the new leader commits it at the
      election's end: both happen (docs/lab.md);
    - ``election_s``: when a survivor first reported the new leader (polled every 10 ms
      beside the writes), so that the in-flight put can be set against it."""
    import threading

    e = election_ms / 1000.0
    with etcd_cluster(heartbeat_ms, election_ms) as (members, procs):
        lead, term = _leader(members, time.monotonic() + 30 + 4 * e)
        survivor = next(m for m in members if m is not lead)
        time.sleep(3 * heartbeat_ms / 1000.0)
        log: list[tuple[float, bool, float, str]] = []
        probe: list[tuple[bool, float, str]] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                start = time.monotonic()
                ok, took, err = put(survivor, client_timeout)
                log.append((start, ok, took, err))

        th = threading.Thread(target=loop, daemon=True)
        th.start()
        time.sleep(0.2)
        t0 = _kill(procs[lead.name])
        time.sleep(max(0.0, t0 + PROBE_AFTER_S - time.monotonic()))
        pt = threading.Thread(target=lambda: probe.append(put(survivor, client_timeout)),
                              daemon=True)
        pt.start()
        deadline = t0 + 5 + 2 * e + 20 * e + client_timeout + 10
        elected: float | None = None
        survivors = [m for m in members if m is not lead]
        try:
            while time.monotonic() < deadline:
                if elected is None and _new_leader(survivors, term) is not None:
                    elected = time.monotonic() - t0
                if (elected is not None and probe
                        and any(ok and start >= t0 for start, ok, _, _ in log[-3:])):
                    break
                time.sleep(0.01)
        finally:
            stop.set()
            th.join(timeout=client_timeout + 5 + 2 * e + 5)
            pt.join(timeout=client_timeout + 5 + 2 * e + 5)
    after = [(s, ok, took, err) for s, ok, took, err in log if s + took > t0]
    # A put the dead leader committed just before dying does not count as back.
    ok_at = [s + took for s, ok, took, _ in after if ok and (s >= t0 or s + took > t0 + 0.05)]
    if not ok_at or not probe or elected is None:
        raise HasimError("etcd: no put succeeded after the leader was killed")
    first = after[0]
    p_ok, p_took, p_err = probe[0]
    return {"probe_s": p_took, "probe_ok": float(p_ok),
            "server_timeout": float("request timed out" in p_err),
            "writes_back_s": min(ok_at) - t0, "in_flight_s": first[2],
            "in_flight_ok": float(first[1]), "election_s": elected}


def sim_trials(heartbeat_ms: int, election_ms: int, trials: int, seed: int = 0,
               pre_vote: bool = False, stop: bool = False) -> list[dict[str, Any]]:
    """The simulator's elections after the first member's etcd crashes (or is stopped),
    ``trials`` seeds: ``election_s`` and ``rounds`` (the terms it took)."""
    import hasim
    from hasim.spec.scenario import scenario_from_dict

    e = election_ms / 1000.0
    sc = scenario_from_dict({
        "name": "lab-etcd", "cluster": {"rules": "kubespray-2026-01",
                                        "generate": {"masters": 3, "etcd": 3, "nodes": 0}},
        "etcd": {"heartbeat_interval": f"{heartbeat_ms}ms",
                 "election_timeout": f"{election_ms}ms", "pre_vote": pre_vote},
        "faults": [{"at": "10s", "target": "master1/etcd", "kind": "stop" if stop else "crash"}],
        "duration": f"{10 + 8 * e + 5:g}s",
    })
    out = []
    for i in range(trials):
        r = hasim.simulate(sc, seed=seed + i)
        el = r.elections
        first = el[el["lost_at"] >= 10.0 - 1e-9].sort_values("time").iloc[0]
        out.append({"election_s": float(first["time"] - first["lost_at"]),
                    "rounds": int(first["term"]) - 1})  # the initial leader held term 1
    return out


def label(name: str, pre_vote: bool = False, stop: bool = False) -> str:
    """An election cell's name: the setting, and its variant."""
    return f"etcd {name}" + (" pre-vote" if pre_vote else "") + (" stop" if stop else "")


def cell(name: str, trials: int, sim_trials_n: int = 200, pre_vote: bool = False,
         stop: bool = False) -> pd.DataFrame:
    """Real and simulated trials of one setting, in the lab's long format: ``cell``,
    ``source`` (real/sim), ``trial``, ``metric``, ``value``."""
    hb, el = SETTINGS[name]
    name_ = label(name, pre_vote, stop)
    rows = real_rows(name_, trials, lambda: real_trial(hb, el, pre_vote, stop))
    for i, r in enumerate(sim_trials(hb, el, sim_trials_n, pre_vote=pre_vote, stop=stop)):
        rows += [{"cell": name_, "source": "sim", "trial": i, "metric": k, "value": float(r[k])}
                 for k in ("election_s", "rounds")]
    return pd.DataFrame(rows)


def second_terms(df: pd.DataFrame) -> dict[str, tuple[int, int]]:
    """Per source, (elections that took more than one term, elections): the share the
    tick rules predict is H/E at three members without pre-vote (docs/model.md, etcd)."""
    r = df[df["metric"] == "rounds"]
    return {src: (int((g["value"] > 1).sum()), len(g)) for src, g in r.groupby("source")}


def write_cell(name: str, client_timeout: float, trials: int, sim_trials_n: int = 200
               ) -> pd.DataFrame:
    """Writes through the leader's death, real and simulated, in the long format.

    The simulated ``writes_back_s`` is the model's rule
    (:func:`hasim.sim.etcd.writes_back_after`: writes proposed before the new leader hang
    until etcd's request timeout, 5 s + 2E, or the client's, and fail) applied to the
    model's own elections under the same timers."""
    from hasim.sim.etcd import request_timeout, writes_back_after
    from hasim.spec.scenario import EtcdSpec

    hb, el = SETTINGS[name]
    label = f"etcd writes {name} timeout {client_timeout:g}s"
    rows = real_rows(label, trials, lambda: write_trial(hb, el, client_timeout))
    spec = EtcdSpec(heartbeat_interval=hb / 1000.0, election_timeout=el / 1000.0)
    for i, r in enumerate(sim_trials(hb, el, sim_trials_n)):
        rows.append({"cell": label, "source": "sim", "trial": i, "metric": "writes_back_s",
                     "value": writes_back_after(r["election_s"], client_timeout, spec)})
        # A write proposed during the election hangs until etcd's request timeout or the
        # client's (EtcdCluster.stalls, Client._write_failed).
        rows.append({"cell": label, "source": "sim", "trial": i, "metric": "probe_s",
                     "value": min(request_timeout(spec), client_timeout)})
    return pd.DataFrame(rows)


#: The etcd cells of ``make calibrate``: (setting, client timeouts of the write cells).
CALIBRATION: dict[str, list[tuple[str, tuple[float, ...]]]] = {
    "quick": [("etcd-defaults", (1.0, 15.0))],
    "full": [("etcd-defaults", (1.0, 15.0)), ("kubespray-2026", (15.0,)),
             ("kubespray-2016", ())],
}


def calibrate(out: str | os.PathLike[str], trials: int, matrix: str = "full"
              ) -> pd.DataFrame:
    """The etcd cells of the calibration (:data:`CALIBRATION`)."""
    return run_cells(out, trials, CALIBRATION[matrix], stop=matrix == "full")


def run_cells(out: str | os.PathLike[str], trials: int,
              cells: Sequence[tuple[str, tuple[float, ...]]], pre_vote: bool = False,
              stop: bool = False) -> pd.DataFrame:
    """Per setting, the election cell (and with ``stop`` the graceful-stop cell) and a
    write cell per client timeout: judged, printed, and written to
    ``out/lab-etcd.parquet``."""
    frames = []
    for name, timeouts in cells:
        df = cell(name, trials, pre_vote=pre_vote)
        frames.append(df)
        report(f"{label(name, pre_vote)}: leader killed -> new leader", judge(df))
        terms = second_terms(df)
        print("  in a second term or later: "
              + ", ".join(f"{src} {k} of {n}" for src, (k, n) in sorted(terms.items())),
              flush=True)
        if stop:
            sdf = cell(name, trials, pre_vote=pre_vote, stop=True)
            frames.append(sdf)
            report(f"{label(name, pre_vote)}: leader stopped (SIGTERM) -> new leader",
                   judge(sdf))
        for t in timeouts:
            wdf = write_cell(name, t, trials)
            frames.append(wdf)
            report(f"etcd {name}: a write proposed during the election, client timeout "
                    f"{t:g} s", judge(wdf, "probe_s"))
            report(f"etcd {name}: writes back, client timeout {t:g} s",
                    judge(wdf, "writes_back_s"))
    both, path = save_cells(frames, out, "lab-etcd.parquet")
    print(f"etcd trials in {path}", flush=True)
    return both


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hasim.lab.etcd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", default="etcd-defaults",
                        help=f"comma-separated of: {', '.join(SETTINGS)}")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--pre-vote", action="store_true")
    parser.add_argument("--stop", action="store_true",
                        help="also a cell per setting whose leader is stopped with SIGTERM")
    parser.add_argument("--writes", metavar="SECONDS,...",
                        help="also the write cells, one per client timeout (e.g. 1,15)")
    parser.add_argument("--out", default="results/lab-etcd")
    args = parser.parse_args(argv)

    def command() -> None:
        names = pick("--settings", args.settings, SETTINGS)
        timeouts = tuple(float(x) for x in args.writes.split(",")) if args.writes else ()
        run_cells(args.out, args.trials, [(n, timeouts) for n in names], args.pre_vote,
                  args.stop)

    return exit_status(command)


if __name__ == "__main__":
    sys.exit(main())
