"""The lab's keepalived cells: two real keepalived 2.2 (Debian's ``keepalived``) in front
of two LB stand-ins, a client dialing their VIP, and the VIP's move after each fault of
docs/model.md, the VIP; beside it the simulator's VIP under the same settings (docs/lab.md,
"keepalived").

The network is four namespaces the lab creates: a switch (a bridge) and three hosts
wired to it by veth pairs, ``lb1`` 10.231.0.1, ``lb2`` 10.231.0.2 and ``client``
10.231.0.3, all /24, no route out. ``lb1`` and ``lb2`` run keepalived (VRRP v2,
``advert_int 1``, priorities 100 and 99, ``lb1`` configured ``state MASTER``, preempt
on: the defaults hasim models) holding the VIP 10.231.0.100, and an LB stand-in: a TCP
server on port 6443 that answers with its host's name. The client starts a connect to
the VIP every :data:`PROBE_EVERY_S` (each with a 1 s timeout) and logs when each started
and what it met: ``lb1``, ``lb2``, ``refused`` (RST) or ``unanswered``.

Faults, on ``lb1`` while it holds the VIP:

- ``kill``: ``kill -9`` of keepalived's process group (its LB keeps running);
- ``crash``: ``kill -9`` of keepalived and of the LB (the kernel stays up);
- ``stop``: SIGTERM to keepalived (``systemctl stop``);
- ``link``: ``lb1``'s switch port set down (a cut link);
- ``lb``: the LB killed, keepalived alive, with or without a ``vrrp_script`` (a TCP
  connect to the local port) in ``track_script``;
- ``preempt``: after a ``stop`` moved the VIP, keepalived on ``lb1`` started again.

``move_s`` is the time from the fault (for ``preempt``: from the restart) to the first
probe answered by the other instance. ``during`` shares say what the probes started in
between met. Every namespace and process a trial starts is removed when it ends, even
on failure (:mod:`hasim.lab.netns`).

    python -m hasim.lab.keepalived [--cells kill,stop,...] [--trials 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasim.errors import HasimError, exit_status
from hasim.lab.judge import judge, pick, real_rows, report, save_cells
from hasim.lab.netns import Namespace

SUBNET = "10.231.0"
VIP = f"{SUBNET}.100"
PORT = 6443
PROBE_EVERY_S = 0.02
ADVERT_INT = 1.0
PRIORITIES = (100, 99)
#: The ``vrrp_script`` of the track-script cell: interval 1 s, fall 2, rise 1, weight 0.
SCRIPT = (1, 2, 1, 0)

#: cell name -> (fault, track script?): what each cell does to ``lb1``.
CELLS: dict[str, tuple[str, bool]] = {
    "kill": ("kill", False),
    "crash": ("crash", False),
    "stop": ("stop", False),
    "link": ("link", False),
    "lb-no-script": ("lb", False),
    "lb-script": ("lb", True),
    "preempt": ("preempt", False),
}
#: What the model says a client dialing the VIP meets between the fault and the move
#: (docs/model.md, "The VIP"). With a track script: refused by lb1's kernel until the
#: script's FAULT, then nothing while the VIP is off lb1's interface (the backup's skew).
EXPECTED_DURING: dict[str, tuple[str, ...]] = {
    "kill": ("lb1",), "crash": ("refused",), "stop": ("unanswered",),
    "link": ("unanswered",), "lb-no-script": ("refused",),
    "lb-script": ("refused", "unanswered"), "preempt": ("lb2",)}
#: How long a trial waits for the move (the no-script cell: to show there is none).
WAIT_S = 8.0

_LB = """
import socket, sys
name = sys.argv[1].encode()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(128)
while True:
    c, _ = s.accept()
    try: c.sendall(name)
    finally: c.close()
"""

_PROBER = """
import socket, sys, threading, time
vip, port, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
lock = threading.Lock()
def one(t0):
    s = socket.socket(); s.settimeout(1.0)
    try:
        s.connect((vip, port)); got = s.recv(16).decode() or "closed"
    except ConnectionRefusedError: got = "refused"
    except OSError: got = "unanswered"
    finally: s.close()
    with lock: print(f"{t0:.6f} {got}", flush=True)
while True:
    threading.Thread(target=one, args=(time.time(),), daemon=True).start()
    time.sleep(every)
"""


def available() -> str | None:
    """Why the cells cannot run here, or None."""
    from shutil import which

    if os.geteuid() != 0:
        return "the keepalived cells need root (network namespaces)"
    for tool in ("keepalived", "ip", "bash"):
        if which(tool) is None:
            return f"{tool} is missing (make system-deps installs it)"
    return None


def _conf(host: int, track: bool) -> str:
    state = "MASTER" if host == 0 else "BACKUP"
    interval, fall, rise, weight = SCRIPT
    script = (f"""vrrp_script chk_lb {{
    script "/usr/bin/timeout 1 /usr/bin/bash -c '</dev/tcp/127.0.0.1/{PORT}'"
    interval {interval}
    fall {fall}
    rise {rise}
    weight {weight}
}}
""" if track else "")
    tracked = "    track_script {\n        chk_lb\n    }\n" if track else ""
    return f"""global_defs {{
    script_user root
    enable_script_security
    vrrp_garp_master_delay 5
}}
{script}vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {PRIORITIES[host]}
    advert_int {ADVERT_INT:g}
    virtual_ipaddress {{
        {VIP}/24
    }}
{tracked}}}
"""


@dataclass
class Pair:
    """The four namespaces and what runs in them."""

    switch: Namespace
    hosts: list[Namespace]
    client: Namespace
    workdir: Path
    track: bool
    keepalived: list[subprocess.Popen[Any] | None]
    lbs: list[subprocess.Popen[Any] | None]
    prober: subprocess.Popen[str] | None = None
    #: (start, outcome) of every probe of the VIP, appended by the reader thread.
    probes: list[tuple[float, str]] = field(default_factory=list)

    def start_lb(self, i: int) -> None:
        self.lbs[i] = self.hosts[i].popen([sys.executable, "-c", _LB, f"lb{i + 1}", str(PORT)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_keepalived(self, i: int) -> None:
        conf = self.workdir / f"lb{i + 1}.conf"
        conf.write_text(_conf(i, self.track))
        pid = self.workdir / f"lb{i + 1}"
        self.keepalived[i] = self.hosts[i].popen(
            ["keepalived", "--dont-fork", "--log-console", "--vrrp", "-f", str(conf),
             "-p", f"{pid}.pid", "-r", f"{pid}.vrrp.pid", "-c", f"{pid}.check.pid"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, proc: subprocess.Popen[Any] | None, host: int,
             sig: int = signal.SIGKILL) -> None:
        if proc is None:
            return
        if sig == signal.SIGKILL:
            self.hosts[host].kill(proc)
            _wait_group_gone(proc.pid)
        else:
            with suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def reset(self) -> None:
        """Both keepalived and LBs stopped, the VIP off both interfaces, the link up."""
        for i in range(2):
            self.kill(self.keepalived[i], i)
            self.keepalived[i] = None
            self.kill(self.lbs[i], i)
            self.lbs[i] = None
            with suppress(Exception):  # the address a kill -9 left behind
                self.hosts[i].exec_check(["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"])
        # keepalived refuses to start over its own stale pid files
        for f in self.workdir.glob("*.pid"):
            f.unlink()
        self.switch.exec_check(["ip", "link", "set", "p1", "up"])
        self.client.exec_check(["ip", "neigh", "flush", "all"])


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    """Until no live process is left in process group ``pgid``: keepalived's VRRP child,
    orphaned by the kill -9 of its parent, dies a moment later (a zombie no longer runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = False
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                live = True
                break
        if not live:
            return
        time.sleep(0.01)


def _probe_reader(p: subprocess.Popen[str], out: list[tuple[float, str]]) -> None:
    assert p.stdout is not None
    for line in p.stdout:
        t, _, got = line.strip().partition(" ")
        with suppress(ValueError):
            out.append((float(t), got))


@contextmanager
def pair(track: bool = False) -> Iterator[Pair]:
    """The lab's VRRP network, removed on exit."""
    created: list[Namespace] = []
    p: Pair | None = None
    workdir = Path(tempfile.mkdtemp(prefix="hasim-keepalived-"))
    try:
        sw = Namespace.create()
        created.append(sw)
        hosts = []
        sw.exec_check(["ip", "link", "add", "br0", "type", "bridge"])
        sw.exec_check(["ip", "link", "set", "br0", "up"])
        for n in range(3):
            h = Namespace.create()
            created.append(h)
            sw.exec_check(["ip", "link", "add", f"p{n + 1}", "type", "veth", "peer", "name",
                           "eth0", "netns", h.name])
            sw.exec_check(["ip", "link", "set", f"p{n + 1}", "master", "br0", "up"])
            h.exec_check(["ip", "addr", "add", f"{SUBNET}.{n + 1}/24", "dev", "eth0"])
            h.exec_check(["ip", "link", "set", "eth0", "up"])
            hosts.append(h)
        p = Pair(sw, hosts[:2], hosts[2], workdir, track, [None, None], [None, None])
        p.prober = p.client.popen([sys.executable, "-u", "-c", _PROBER, VIP, str(PORT),
                                   str(PROBE_EVERY_S)], stdout=subprocess.PIPE, text=True,
                                  stderr=subprocess.DEVNULL)
        threading.Thread(target=_probe_reader, args=(p.prober, p.probes), daemon=True).start()
        yield p
    finally:
        if p is not None:
            for i in range(2):
                with suppress(Exception):
                    p.kill(p.keepalived[i], i)
        for ns in reversed(created):
            with suppress(Exception):
                ns.delete()
        for f in workdir.glob("*"):
            with suppress(OSError):
                f.unlink()
        with suppress(OSError):
            workdir.rmdir()


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise HasimError(f"keepalived lab: {what} within {timeout:g} s")
        time.sleep(0.02)


def _answered_by(p: Pair, name: str, since: float) -> float | None:
    ts = [t for t, got in list(p.probes) if got == name and t >= since]
    return min(ts) if ts else None


def real_trial(p: Pair, fault: str, rng: np.random.Generator) -> dict[str, Any]:
    """One trial on a fresh pair of keepalived: lb1 holds the VIP, the fault, the move."""
    p.reset()
    for i in range(2):
        p.start_lb(i)
    time.sleep(0.2)
    p.start_keepalived(0)
    p.start_keepalived(1)
    t_start = time.time()
    _wait(lambda: _answered_by(p, "lb1", t_start) is not None, 15, "lb1 never served the VIP")
    # a random phase against lb1's advert timer
    time.sleep(1.0 + float(rng.uniform(0, ADVERT_INT)))
    other = "lb2"
    if fault == "preempt":
        p.kill(p.keepalived[0], 0, signal.SIGTERM)
        t_stop = time.time()
        _wait(lambda: _answered_by(p, "lb2", t_stop) is not None, 10, "lb2 never took over")
        p.keepalived[0].wait(timeout=5)  # type: ignore[union-attr]
        time.sleep(1.0 + float(rng.uniform(0, ADVERT_INT)))
        other = "lb1"
    t0 = time.time()
    if fault == "kill":
        p.kill(p.keepalived[0], 0)
    elif fault == "crash":
        p.kill(p.keepalived[0], 0)
        p.kill(p.lbs[0], 0)
    elif fault == "stop":
        p.kill(p.keepalived[0], 0, signal.SIGTERM)
    elif fault == "link":
        p.switch.exec_check(["ip", "link", "set", "p1", "down"])
    elif fault == "lb":
        p.kill(p.lbs[0], 0)
    elif fault == "preempt":
        p.start_keepalived(0)
    deadline = time.monotonic() + WAIT_S
    moved = None
    while time.monotonic() < deadline and moved is None:
        time.sleep(0.05)
        moved = _answered_by(p, other, t0)
    time.sleep(1.2)  # the probes started before the move, unanswered ones too, report
    end = moved if moved is not None else t0 + WAIT_S
    during = [got for t, got in list(p.probes) if t0 + 0.05 <= t < end - 0.05]
    row: dict[str, Any] = {"moved": float(moved is not None),
                           "move_s": (moved - t0) if moved is not None else np.nan}
    for what in ("lb1", "lb2", "refused", "unanswered"):
        row[f"during_{what}"] = during.count(what) / len(during) if during else np.nan
    return row


def sim_trials(cell: str, trials: int, seed: int = 0) -> list[dict[str, Any]]:
    """The simulator's VIP moves after the cell's fault (extlb1 = lb1), one seed each."""
    import hasim
    from hasim.spec.scenario import scenario_from_dict

    fault, track = CELLS[cell]
    kind, target = {
        "kill": ("crash", "extlb1/keepalived"), "crash": ("crash", "extlb1"),
        "stop": ("stop", "extlb1/keepalived"), "link": ("partition", "extlb1"),
        "lb": ("lb-crash", "extlb1"), "preempt": ("stop", "extlb1/keepalived"),
    }[fault]
    vip: dict[str, Any] = {"kind": "keepalived", "advert_int": f"{ADVERT_INT:g}s",
                           "priority": PRIORITIES[0]}
    if track:
        interval, fall, rise, weight = SCRIPT
        vip["track_script"] = {"interval": f"{interval}s", "fall": fall, "rise": rise,
                               "weight": weight}
    f: dict[str, Any] = {"kind": kind, "at": "10s", "target": target}
    faults = [f]
    if kind == "partition":
        # the switch port down: lb1 hears and reaches neither its VRRP peer nor anyone
        f["peers"] = "extlb2"
        faults.append({**f, "peers": "all"})
    if fault == "preempt":
        f["duration"] = "10s"  # keepalived starts again at 20 s
    sc = scenario_from_dict({
        "name": f"lab-keepalived-{cell}",
        "cluster": {"generate": {"masters": 1, "etcd": 1, "nodes": 1},
                    "vars": {"loadbalancer_apiserver": {"address": VIP, "port": PORT}}},
        "balancers": {"external": {"kind": "haproxy", "instances": 2, "vip": vip}},
        "faults": faults,
        "duration": f"{20 + WAIT_S + 2:g}s",
    })
    out = []
    # The real side sees a move at its next probe: one every PROBE_EVERY_S from a phase
    # the fault does not know, so the simulated move is observed the same way.
    probe_phase = np.random.default_rng(seed).uniform(0, PROBE_EVERY_S, trials)
    for i in range(trials):
        mv = hasim.simulate(sc, seed=seed + i).vip_moves
        if fault == "preempt":
            back = mv[(mv["to"] == "extlb1") & (mv["time"] >= 20)]
            out.append({"move_s": float(back["time"].iloc[0] - 20 + probe_phase[i])
                        if len(back) else np.nan,
                        "moved": float(len(back) > 0)})
        else:
            take = mv[(mv["from"] == "extlb1") & (mv["time"] <= 10 + WAIT_S)]
            out.append({"move_s": float(take["time"].iloc[0] - 10 + probe_phase[i])
                        if len(take) else np.nan,
                        "moved": float(len(take) > 0)})
    return out


def cell(name: str, trials: int, sim_trials_n: int = 100, seed: int = 0) -> pd.DataFrame:
    """Real and simulated trials of one cell, in the lab's long format."""
    fault, track = CELLS[name]
    label = f"keepalived {name}"
    rng = np.random.default_rng(seed)
    with pair(track) as p:
        rows = real_rows(label, trials, lambda: real_trial(p, fault, rng))
    for i, r in enumerate(sim_trials(name, sim_trials_n)):
        rows += [{"cell": label, "source": "sim", "trial": i, "metric": k, "value": v}
                 for k, v in r.items()]
    return pd.DataFrame(rows)


def during_share(df: pd.DataFrame, what: str | Sequence[str]) -> float:
    """The mean share of probes between fault and move that met ``what`` (one outcome or
    several), over the real trials."""
    names = [what] if isinstance(what, str) else list(what)
    real = df[(df["source"] == "real") & df["metric"].isin([f"during_{w}" for w in names])]
    return float(real.groupby("trial")["value"].sum().mean())


#: The cells of ``make calibrate``.
CALIBRATION = {"quick": ["kill", "stop"], "full": list(CELLS)}


def run_cells(out: str | os.PathLike[str], trials: int, names: Sequence[str]) -> pd.DataFrame:
    """Each cell judged, printed, and all written to ``out/lab-keepalived.parquet``."""
    why = available()
    if why:
        raise HasimError(why)
    frames = []
    for name in names:
        df = cell(name, trials)
        frames.append(df)
        moved = df[(df["source"] == "real") & (df["metric"] == "moved")]["value"]
        what = f"keepalived {name}: VIP move seen by a client"
        if moved.sum() == 0:
            sim_moved = df[(df["source"] == "sim") & (df["metric"] == "moved")]["value"]
            verdict = "agrees" if sim_moved.sum() == 0 else "DISAGREES"
            print(f"{what}: no move within {WAIT_S:g} s in {len(moved)} real trials, "
                  f"{int(sim_moved.sum())} of {len(sim_moved)} simulated moved: {verdict}",
                  flush=True)
        else:
            report(what, judge(df, "move_s"))
        expected = EXPECTED_DURING[name]
        print(f"keepalived {name}: meanwhile a client met {' or '.join(expected)} in "
              f"{during_share(df, expected):.0%} of its dials (the model: every dial)",
              flush=True)
    both, path = save_cells(frames, out, "lab-keepalived.parquet")
    print(f"keepalived trials in {path}", flush=True)
    return both


def calibrate(out: str | os.PathLike[str], trials: int, matrix: str = "full") -> pd.DataFrame:
    return run_cells(out, trials, CALIBRATION[matrix])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hasim.lab.keepalived", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default=",".join(CALIBRATION["quick"]),
                        help=f"comma-separated of: {', '.join(CELLS)}")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--out", default="results/lab-keepalived")
    args = parser.parse_args(argv)
    return exit_status(lambda: run_cells(args.out, args.trials,
                                         pick("--cells", args.cells, CELLS)))


if __name__ == "__main__":
    sys.exit(main())
