"""The lab's client-go cells: Go's real HTTP/2 stack, configured as client-go configures
it, holding a long watch through the real nginx or HAProxy to stub apiservers that speak
HTTP/2 over TLS; the watch's master blackholed; when the client gives the dead
connection up and when it is served again. Beside it the simulator's client-go
(:class:`hasim.sim.clients.Client` and its ``_pinger``) through the engine's own LB
under the same timers (docs/lab.md, "client-go").

What runs, in one network namespace (:mod:`hasim.lab.netns`), as in the nginx/HAProxy
cells: three Go stub apiservers (``hasim/lab/go/clientgo.go serve``) on
127.0.1.1-3:6443, the LB of a one-node kubespray scenario (the text of
:func:`hasim.graph.render.render_config`) on 127.0.0.1:6443, and one Go client
(``clientgo.go client``): an ``http.Transport`` with client-go's settings and
``golang.org/x/net/http2`` ``ReadIdleTimeout`` / ``PingTimeout`` (k8s PR #95981), one
watch held open and opened again at once when it ends, optionally a ``/lease`` request
every ``beat`` on the same connection (a kubelet's lease loop).

A trial waits until the watch is open, then 1 s plus a share of ``ReadIdleTimeout``
(the health check's phase; over the trials, evenly spread quantiles), and blackholes
the watch's backend (iptables DROP of its address both ways,
:meth:`Namespace.blackhole`). Metrics:

- ``lost_s``: the fault to the client's ``http2: client connection lost``. With no
  traffic the health check fires ``ReadIdleTimeout`` after the last frame read and
  gives up ``PingTimeout`` later: ``lost_s`` ~ U(PingTimeout, ReadIdle + PingTimeout];
  with beats every ``b`` s the last read is at most ``b`` before the fault.
- ``rewatch_s``: the loss to the next open watch (a new connection through the LB);
- ``back_s``: the fault to that open watch, ``lost_s + rewatch_s``;
- ``connect_timeouts`` (real only): nginx's ``upstream timed out ... while connecting``
  lines after the fault: the redial met a worker whose balancer picked the dead master.

Every process and the namespace are removed when a trial ends, even on failure.

    python -m hasim.lab.clientgo [--cells nginx-watch,haproxy-watch] [--trials 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hasim.errors import HasimError, exit_status
from hasim.lab.judge import judge, pick, real_rows, report, save_cells
from hasim.lab.matrix import HAPROXY_SHORT, NGINX_SHORT, lab_scenario
from hasim.sim.clients import Client
from hasim.sim.kernel import Environment, Wait
from hasim.sim.network import OK

SOURCE = Path(__file__).with_name("go") / "clientgo.go"
#: Debian's golang-golang-x-net-dev puts x/net here (a GOPATH layout).
GOPATH = Path("/usr/share/gocode")
LB_ADDR, LB_PORT = "127.0.0.1", 6443
#: Each (re)opened watch must be answered within this (client-go's own dial timeout).
WATCH_OPEN_TIMEOUT = 30.0
#: Beyond the health check's own ReadIdle + Ping: the redial (at worst one
#: proxy_connect_timeout of 1 s on the dead master first) and plenty of scheduling slack.
OBSERVE_SLACK_S = 11.0


@dataclass(frozen=True)
class Cell:
    """One cell: the LB and the client's HTTP/2 health-check timers."""

    name: str
    lb: str  # "nginx" or "haproxy"
    read_idle: float
    ping: float
    beat: float = 0.0  # 0: the watch alone

    def scenario(self, at: float = 5.0) -> Any:
        """The one-node lab scenario (kubespray's LB, short timings) with the client's
        timers and a blackhole of the first master at ``at``."""
        lb = NGINX_SHORT if self.lb == "nginx" else HAPROXY_SHORT
        sc = lab_scenario(lb, "blackhole", f"clientgo-{self.name}", at=at)
        return sc.with_overrides({"clients.http2_read_idle_timeout": self.read_idle,
                                  "clients.http2_ping_timeout": self.ping})

    def observe(self) -> float:
        """How long a trial may wait for the loss and the new watch after the fault."""
        return self.read_idle + self.ping + OBSERVE_SLACK_S


#: The cells. Scaled timers (2 s / 1 s) keep a trial to seconds; ``client-go`` is
#: client-go's own (``ReadIdleTimeout`` 30 s, ``PingTimeout`` 15 s).
CELLS: dict[str, Cell] = {c.name: c for c in (
    Cell("nginx-watch", "nginx", 2.0, 1.0),
    Cell("haproxy-watch", "haproxy", 2.0, 1.0),
    Cell("nginx-beats", "nginx", 2.0, 1.0, beat=0.5),
    Cell("nginx-client-go", "nginx", 30.0, 15.0),
    Cell("haproxy-client-go", "haproxy", 30.0, 15.0),
)}
CALIBRATION: dict[str, list[str]] = {
    "quick": ["nginx-watch", "haproxy-watch"],
    "full": ["nginx-watch", "haproxy-watch", "nginx-beats", "nginx-client-go",
             "haproxy-client-go"],
}


# --- the Go program ----------------------------------------------------------------------------
def available() -> str | None:
    """None when the cells can run here, else why not."""
    if os.geteuid() != 0:
        return "the client-go cells need root (network namespaces)"
    for tool, pkg in (("go", "golang-go"), ("nginx", "nginx"), ("haproxy", "haproxy"),
                      ("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {pkg}; make system-deps)"
    if not (GOPATH / "src/golang.org/x/net/http2").is_dir():
        return ("golang.org/x/net is not installed (Debian package golang-golang-x-net-dev; "
                "make system-deps)")
    return None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hasim"


def binary() -> Path:
    """The compiled Go program, built once per version of its source."""
    if (why := available()) is not None:
        raise HasimError(why)
    digest = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:12]
    out = _cache_dir() / f"clientgo-{digest}"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH),
           "GOCACHE": str(_cache_dir() / "go-build"), "CGO_ENABLED": "0"}
    done = subprocess.run(["go", "build", "-o", str(tmp), str(SOURCE)], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise HasimError(f"{SOURCE}: go build failed: {done.stderr.strip()[-800:]}")
    tmp.replace(out)
    return out


class Events:
    """The JSON lines a Go process prints, collected by a thread as they come."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.items: list[dict[str, Any]] = []
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True, name="clientgo-out")
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            with self._cv:
                self.items.append(ev)
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str
             ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for ev in self.items:
                    if match(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._thread.is_alive()):
                    seen = ", ".join(e.get("ev", "?") for e in self.items[-6:])
                    raise HasimError(f"client-go lab: no {what} within {timeout:g} s "
                                     f"(last events: {seen or 'none'})")
                self._cv.wait(min(left, 0.05))

    def join(self) -> None:
        self._thread.join(timeout=2)


# --- a real trial ------------------------------------------------------------------------------
def real_trial(cell: Cell, phase: float) -> dict[str, Any]:
    """One blackhole of the watch's master, ``1 s + phase`` after the watch opened; the
    metrics of the module's docstring."""
    from hasim.graph.render import backends, balancer_node, render_config
    from hasim.graph.topology import build_topology
    from hasim.lab.netns import Namespace
    from hasim.lab.runner import _wait_listening, start_balancer
    from hasim.lab.stubs import make_certificate
    from hasim.lab.trials import STUB_PORT, stub_address

    exe = binary()
    sc = cell.scenario()
    g = build_topology(sc)
    names = [name for name, _, _ in backends(g, balancer_node(g, "node1"))]
    servers = [(name, stub_address(i), STUB_PORT) for i, name in enumerate(names)]
    by_name = {name: addr for name, addr, _ in servers}
    filename, text = render_config(sc, "node1", listen=f"{LB_ADDR}:{LB_PORT}", servers=servers)
    with tempfile.TemporaryDirectory(prefix="hasim-clientgo-") as tmp, \
            Namespace.create(list(by_name.values())) as ns:
        run = Path(tmp)
        cert, key = make_certificate(run, list(by_name.values()))
        for name, addr, port in servers:
            log = open(run / f"{name}.log", "wb")  # noqa: SIM115 (closed with the dir)
            p = ns.popen([str(exe), "serve", "-addr", f"{addr}:{port}", "-name", name,
                          "-cert", str(cert), "-key", str(key)],
                         stdout=log, stderr=subprocess.STDOUT)
            _wait_listening(p, addr, port, f"stub {name}",
                            lambda n=name: (run / f"{n}.log").read_text(errors="replace"))
        lb = start_balancer(ns, run, filename, text, LB_ADDR, LB_PORT)
        client = ns.popen([str(exe), "client", "-url", f"https://{LB_ADDR}:{LB_PORT}",
                           "-read-idle", f"{cell.read_idle:g}s", "-ping", f"{cell.ping:g}s",
                           "-beat", f"{cell.beat:g}s"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        events = Events(client)
        try:
            opened = events.wait(lambda e: e["ev"] == "watch-open", 10.0, "open watch")
            if opened.get("proto") != "HTTP/2.0":
                raise HasimError(f"client-go lab: the watch speaks {opened.get('proto')}, "
                                 "not HTTP/2 (ALPN through the LB)")
            target = str(opened["backend"])
            time.sleep(max(0.0, opened["t"] + 1.0 + phase - time.time()))
            before = time.time()
            ns.blackhole(by_name[target])
            t_f = time.time()
            lost = events.wait(lambda e: e["ev"] == "watch-lost" and e["t"] > before,
                               cell.read_idle + cell.ping + 5.0, "lost watch")
            back = events.wait(lambda e: e["ev"] == "watch-open" and e["t"] > lost["t"],
                               cell.observe(), "watch opened again")
            mono_f = time.monotonic() - (time.time() - t_f)
        finally:
            ns.terminate(client)
            events.join()
            lb.stop(ns)
    timeouts = [t for t, line in lb.lines
                if t >= mono_f and "upstream timed out" in line and "connecting" in line]
    return {"lost_s": lost["t"] - t_f, "rewatch_s": back["t"] - lost["t"],
            "back_s": back["t"] - t_f, "fault_after_open_s": t_f - opened["t"],
            "fault_spread_s": t_f - before,
            "connect_timeouts": float(len(timeouts)),
            "same_backend": float(back["backend"] == target)}


# --- the simulated side ------------------------------------------------------------------------
class SimClientGo(Client):
    """What the Go client does, on the engine's client-go connection model: one watch
    re-opened at once when its connection ends, and optionally a request every ``beat``.
    The HTTP/2 health check is the engine's own (``Client._pinger``)."""

    __slots__ = ("beat", "events")

    def __init__(self, *args: Any, beat: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beat = beat
        self.events: list[tuple[str, float, str]] = []

    def start(self) -> None:
        self.env.process(self._watch_loop())

    def _watch_loop(self) -> Generator[Wait, Any, None]:
        env = self.env
        beats = self.beat > 0
        while True:
            outcome = yield from self.request("watch", WATCH_OPEN_TIMEOUT)
            sess = self.sess
            if outcome != OK or sess is None:
                self.events.append(("watch-failed", env.now, outcome))
                yield env.sleep(0.01)
                continue
            self.events.append(("watch-open", env.now, sess.backend[0] if sess.backend else ""))
            if beats:
                # Go's transport keeps ONE HTTP/2 connection per host: requests started
                # while the first is being dialled end up on it (a second connection
                # that completes is closed, x/net/http2 addConnIfNeeded). So the beats
                # start on the watch's connection.
                beats = False
                env.process(self._beat_loop())
            yield sess.wait_broken()
            self.events.append(("watch-lost", env.now, sess.cause))
            if self.sess is sess:
                self.sess = None

    def _beat_loop(self) -> Generator[Wait, Any, None]:
        env = self.env
        while True:
            outcome = yield from self.request("lease", 10.0)
            self.events.append(("beat", env.now, outcome))
            yield env.sleep(self.beat)


#: The simulated client starts here (the LB starts at 0), as the real one does once the
#: LB listens.
SIM_CLIENT_START = 0.3


def sim_trial(cell: Cell, seed: int, overrides: Mapping[str, Any] | None = None,
              phase: float | None = None) -> dict[str, float]:
    """One simulated trial: the same blackhole 1 s plus ``phase`` (default: a random share
    of ``ReadIdleTimeout``) after the watch opened, read off the client's events;
    ``overrides`` are dotted scenario keys."""
    from hasim.lab.simload import lab_part, with_host_kernel
    from hasim.sim.engine import streams
    from hasim.sim.faults import FaultInjector

    rng = streams(seed)
    drawn = float(rng["faults"].uniform(0.0, cell.read_idle))
    phase = drawn if phase is None else phase
    # The watch opens within a few round trips of the client's start.
    at = SIM_CLIENT_START + 1.0 + phase
    sc = with_host_kernel(cell.scenario(at))
    if overrides:
        sc = sc.with_overrides(overrides)
    part = lab_part(sc, "node1", rng)
    env, rec, net = part.env, part.rec, part.net
    client = SimClientGo(env, net, rec, part.apis, "node1", "clientgo", part.lb,
                         sc.spec.clients, beat=cell.beat)
    env.process(_start_later(env, client))
    FaultInjector(env, net, rec, sc, rng["faults"]).start()
    env.run(until=at + cell.observe())
    ev = client.events
    lost = next((t for k, t, _ in ev if k == "watch-lost" and t >= at), None)
    if lost is None:
        return {"lost_s": float("inf"), "rewatch_s": float("inf"), "back_s": float("inf")}
    back = next((t for k, t, _ in ev if k == "watch-open" and t >= lost), float("inf"))
    return {"lost_s": lost - at, "rewatch_s": back - lost, "back_s": back - at}


def _start_later(env: Environment, client: SimClientGo
                 ) -> Generator[Wait, Any, None]:
    yield env.timeout(SIM_CLIENT_START)
    client.start()


# --- cells -------------------------------------------------------------------------------------
def cell_frame(cell: Cell, trials: int, sim_trials_n: int = 100, seed: int = 0
               ) -> pd.DataFrame:
    """Real and simulated trials of one cell in the lab's long format (``cell``,
    ``source``, ``trial``, ``metric``, ``value``)."""
    label = f"client-go {cell.name}"
    # The real trials' phases are the (i + 0.5)/n quantiles of U(0, ReadIdleTimeout), in a
    # random order: a trial's loss is fixed by its phase to the millisecond, so random
    # phases would make a few trials' median a draw of the phases, not of the program
    # (8 random phases put it 4.5 s below the population's at 30 s / 15 s). The simulated
    # side draws its phases at random.
    # What is spread is the fault's phase in the ping cycle, (1 s + phase) mod
    # ReadIdleTimeout: never 0, where a PING leaves at the instant of the fault.
    order = np.random.default_rng(seed).permutation(trials)
    phases = iter([((k + 0.5) / trials * cell.read_idle - 1.0) % cell.read_idle
                   for k in order])
    rows = real_rows(label, trials, lambda: real_trial(cell, next(phases)))
    for i in range(sim_trials_n):
        for k, v in sim_trial(cell, seed + i).items():
            rows.append({"cell": label, "source": "sim", "trial": i, "metric": k,
                         "value": float(v)})
    return pd.DataFrame(rows)


def run_cells(out: str | os.PathLike[str], trials: int, names: Sequence[str],
              sim_trials_n: int = 100) -> pd.DataFrame:
    """Each cell judged on ``lost_s`` and ``back_s``, printed, and all written to
    ``out/lab-clientgo.parquet``."""
    if (why := available()) is not None:
        raise HasimError(why)
    binary()
    frames: list[pd.DataFrame] = []
    both, path = pd.DataFrame(), Path(out) / "lab-clientgo.parquet"
    for name in names:
        cell = CELLS[name]
        df = cell_frame(cell, trials, sim_trials_n)
        frames.append(df)
        # Written after every cell: a later cell that fails loses nothing measured.
        both, path = save_cells(frames, out, "lab-clientgo.parquet")
        for metric, what in (("lost_s", "blackholed -> connection given up"),
                             ("back_s", "blackholed -> watch open again")):
            report(f"client-go {name}: {what}", judge(df, metric))
        real = df[(df["source"] == "real") & (df["metric"] == "connect_timeouts")]["value"]
        print(f"client-go {name}: redials that met the dead master first (a connect "
              f"timeout): {int((real > 0).sum())} of {len(real)}", flush=True)
    print(f"client-go trials in {path}", flush=True)
    return both


def calibrate(out: str | os.PathLike[str], trials: int, matrix: str = "full") -> pd.DataFrame:
    return run_cells(out, trials, CALIBRATION[matrix])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hasim.lab.clientgo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default=",".join(CALIBRATION["quick"]),
                        help=f"comma-separated of: {', '.join(CELLS)}")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--sim-trials", type=int, default=100)
    parser.add_argument("--out", default="results/lab-clientgo")
    args = parser.parse_args(argv)

    def command() -> None:
        run_cells(args.out, args.trials, pick("--cells", args.cells, CELLS), args.sim_trials)

    return exit_status(command)


if __name__ == "__main__":
    sys.exit(main())
