"""One lab plan, run as real trials and as simulated ones with the same timeline.

A trial: the LB starts at time 0 (nginx or HAProxy with a fresh state, from
:func:`hasim.graph.render.render_config`), the clients at ``LOAD_START``, the scenario's faults
at their ``at`` plus the trial's ``shift``, and the trial ends ``observe`` seconds after
the last fault event. The shift of trial ``i`` of ``n`` is the ``(i + 0.5) / n`` quantile
of ``spread`` (nginx's 1 s clock); with HAProxy's ``httpchk`` the real trials place the
fault at that quantile of the target's check interval after its last check seen by the
stub (:meth:`RealLab._lock_phase`). The fault's phase against the LB's clock or check
schedule is thus sampled evenly rather than at random, so that a few real trials already
give a median close to the distribution's; the simulator draws its own check phase per
trial and runs more trials.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hasim.errors import HasimError
from hasim.graph.render import backends, balancer_node, render_config
from hasim.graph.topology import build_topology
from hasim.lab.faults import FaultActions, LabFault, plan_faults
from hasim.lab.load import LoadSpec
from hasim.lab.measure import Request, TrialRecords
from hasim.lab.netns import Namespace, stopping
from hasim.lab.runner import LOAD_SCRIPT, Balancer, Stubs, start_balancer
from hasim.lab.simload import balancer_spec, simulate_lab, with_host_kernel
from hasim.lab.stubs import HEALTHZ, make_certificate
from hasim.sim.records import FaultRecord
from hasim.spec.scenario import NginxSpec, Scenario

LB_ADDRESS = "127.0.0.1"
LB_PORT = 6443
STUB_PORT = 6443
#: Seconds from the LB's start to the clients' first request.
LOAD_START = 0.3
#: The simulator's round trip in the lab: loopback inside one namespace.
LAB_RTT = 0.0001


def stub_address(i: int) -> str:
    """The lab address of the ``i``-th backend (on the namespace's ``lo``)."""
    return f"127.0.1.{i + 1}"


@dataclass
class LabPlan:
    """What a lab run does, derived from a scenario."""

    scenario: Scenario
    host: str
    kind: str  # nginx | haproxy
    component: str  # lb | external-lb
    #: (backend name, lab address, port) in upstream order.
    servers: list[tuple[str, str, int]]
    faults: list[LabFault]
    load: LoadSpec
    spread: float
    observe: float
    #: The real trials place the fault against the LB's observed check schedule.
    phase_locked: bool = False

    @property
    def backends(self) -> list[str]:
        return [name for name, _, _ in self.servers]

    def shift(self, i: int, n: int) -> float:
        return (i + 0.5) / n * self.spread

    def duration(self, shift: float) -> float:
        last = max(f.at + (f.duration or 0.0) for f in self.faults)
        return last + shift + self.observe

    def scenario_for(self, shift: float, rtt: float = LAB_RTT) -> Scenario:
        """The scenario with the faults shifted and the lab's round trip (what the
        simulator runs for one trial)."""
        overrides: dict[str, object] = {"network.rtt": rtt}
        for i, f in enumerate(self.scenario.spec.faults):
            assert f.at is not None
            overrides[f"faults.{i}.at"] = f.at + shift
        overrides["duration"] = self.duration(shift)
        return self.scenario.with_overrides(overrides)


def lab_host(scenario: Scenario) -> str:
    """The first host that runs a load balancer (a node's local LB or an external LB)."""
    g = build_topology(scenario)
    for _, d in g.nodes(data=True):
        if d["component"] in ("lb", "external-lb"):
            return str(d["host"])
    raise HasimError(f"{scenario.path or scenario.name}: no load balancer in this scenario: "
                     "the lab measures nginx or HAProxy (balancers.local or balancers.external)")


def plan_lab(scenario: Scenario, host: str | None = None, load: LoadSpec | None = None
             ) -> LabPlan:
    """The lab plan of ``scenario`` (raises :class:`HasimError` on what it cannot do)."""
    host = host or lab_host(scenario)
    g = build_topology(scenario)
    node = balancer_node(g, host)
    d = g.nodes[node]
    kind = "nginx" if d["component"] == "lb" and d.get("kind") == "nginx" else "haproxy"
    servers = [(name, stub_address(i), STUB_PORT)
               for i, (name, _, _) in enumerate(backends(g, node))]
    load = load or LoadSpec()
    faults = plan_faults(scenario, host, [s[0] for s in servers])
    for f in faults:
        if f.at < LOAD_START + 0.5:
            raise HasimError(f"{scenario.path or scenario.name}: faults[{f.fault_id}].at: "
                             f"the lab needs at least {LOAD_START + 0.5:g}s of traffic before "
                             "a fault")
    timeouts = max(load.short_timeout, load.long_timeout if load.long_clients else 0.0)
    recovery = any(f.duration is not None for f in faults)
    blackhole = any(f.kind != "crash" for f in faults)
    if kind == "nginx":
        n = balancer_spec(scenario, d["component"], kind)
        assert isinstance(n, NginxSpec)
        spread = 1.0  # ngx_time(): whole seconds
        # The next new connection to the dead server fails (after the connect timeout at
        # worst); a long-lived client on it times out, waits for its next slot, redials and
        # may meet another worker's first failed connect.
        detect = 1.0 / max(load.rate, 0.1) + (n.proxy_connect_timeout if blackhole else 0.0)
        observe = detect + timeouts + load.long_period + n.proxy_connect_timeout + 0.5
        if recovery:
            observe += n.fail_timeout + 2.0
    else:
        h = balancer_spec(scenario, d["component"], kind)
        assert not isinstance(h, NginxSpec)
        fi = h.fastinter or h.inter
        # docs/model.md, HAProxy: a check of a blackholed server lasts min(inter, timeout connect).
        check_d = min(h.inter, h.timeout_connect or h.inter) if blackhole else 0.01
        spread = h.inter if h.check else 1.0
        detect = (h.inter + h.fall * check_d + (h.fall - 1) * fi) if h.check else 0.0
        observe = detect + timeouts + load.long_period + 0.5
        if recovery:
            observe += (h.downinter or h.inter) + h.rise * (fi + 0.1) + 2.0
    bs = balancer_spec(scenario, d["component"], kind)
    locked = not isinstance(bs, NginxSpec) and bs.check and bs.check_type == "httpchk"
    return LabPlan(scenario, host, kind, d["component"], servers, faults, load, spread, observe,
                   phase_locked=locked)


# --- real trials -----------------------------------------------------------------------------


class RealLab:
    """The namespace, the stubs and the certificate of a run; one LB per trial."""

    def __init__(self, plan: LabPlan, run_dir: Path | None = None,
                 on_event: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self._tmp = None
        if run_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="hasim-lab-")
            run_dir = Path(self._tmp.name)
        self.run_dir = run_dir
        self.on_event = on_event or (lambda _msg: None)
        self.ns: Namespace | None = None
        self.stubs: Stubs | None = None

    def __enter__(self) -> RealLab:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.ns = Namespace.create([addr for _, addr, _ in self.plan.servers])
            self.on_event(f"namespace {self.ns.name}")
            cert, key = make_certificate(self.run_dir, [a for _, a, _ in self.plan.servers])
            self.stubs = Stubs(self.ns, self.run_dir, self.plan.servers, cert, key)
            self.stubs.start_all()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.stubs is not None:
            self.stubs.stop_all()
        if self.ns is not None:
            self.ns.delete()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def trial(self, i: int, n: int) -> TrialRecords:
        """Real trial ``i`` of ``n``: the faults shifted by the ``(i + 0.5) / n`` quantile
        of ``plan.spread``, or, when the LB sends health checks the stubs log, placed at
        that quantile of the target's check interval after its last check (see
        :meth:`_lock_phase`)."""
        plan, ns, stubs = self.plan, self.ns, self.stubs
        assert ns is not None and stubs is not None
        for s in stubs.servers.values():
            if s.proc is None:
                stubs.start(s.name)
        actions = FaultActions(ns, stubs)
        u = (i + 0.5) / n
        shift: float | None = None if plan.phase_locked else u * plan.spread
        duration = plan.duration(plan.spread * 1.1 if shift is None else shift)
        name, text = render_config(plan.scenario, plan.host, listen=f"{LB_ADDRESS}:{LB_PORT}",
                                   servers=plan.servers)
        tdir = self.run_dir / f"trial-{i}"
        tdir.mkdir(exist_ok=True)
        lb: Balancer | None = None
        loadgen: subprocess.Popen[bytes] | None = None
        applied: dict[int, tuple[float, float | None]] = {}
        try:
            cfg = {"load": plan.load.as_dict(), "address": LB_ADDRESS, "port": LB_PORT,
                   "host": self._client_host()}
            (tdir / "load.json").write_text(json.dumps(cfg))
            loadgen = ns.popen([sys.executable, "-I", str(LOAD_SCRIPT), str(tdir / "load.json"),
                                str(tdir / "requests.jsonl")], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert loadgen.stdout is not None and loadgen.stdin is not None
            if loadgen.stdout.readline().strip() != b"ready":
                raise RuntimeError("the load generator did not start")
            lb = start_balancer(ns, tdir, name, text, LB_ADDRESS, LB_PORT)
            t0 = time.monotonic()
            loadgen.stdin.write(json.dumps({"t0": t0, "t_start": t0 + LOAD_START,
                                            "t_end": t0 + duration}).encode() + b"\n")
            loadgen.stdin.close()
            if shift is None:
                shift = self._lock_phase(t0, u)
            events = sorted([(f.at + shift, 0, f) for f in plan.faults] +
                            [(f.at + shift + f.duration, 1, f) for f in plan.faults
                             if f.duration is not None], key=lambda e: (e[0], e[1]))
            for at, undo, f in events:
                if stopping.wait(max(0.0, t0 + at - time.monotonic())):
                    raise HasimError("lab run interrupted")
                if undo:
                    t = actions.undo(f)
                    applied[f.fault_id] = (applied[f.fault_id][0], t - t0)
                    self.on_event(f"trial {i}: {f.kind} {f.target} undone at {t - t0:.3f}s")
                else:
                    t = actions.apply(f)
                    applied[f.fault_id] = (t - t0, None)
                    self.on_event(f"trial {i}: {f.kind} {f.target} at {t - t0:.3f}s")
            try:
                loadgen.wait(timeout=max(0.0, t0 + duration - time.monotonic()) + 15)
            except subprocess.TimeoutExpired:
                raise HasimError("the load generator did not finish in time") from None
            if loadgen.returncode != 0:
                err = loadgen.stderr.read().decode() if loadgen.stderr else ""
                raise RuntimeError(f"load generator failed ({loadgen.returncode}): {err[-2000:]}")
            lb.stop(ns)
            states = lb.states(plan.host, plan.component,
                               {f"{a}:{p}": n for n, a, p in plan.servers}, t0)
        finally:
            if loadgen is not None and loadgen.poll() is None:
                ns.kill(loadgen)
            if lb is not None:
                lb.stop(ns)
            actions.reset()
        requests: list[Request] = [
            (str(r[0]), str(r[1]), float(r[2]), float(r[3]), str(r[4]), str(r[5]), str(r[6]))
            for r in map(json.loads, (tdir / "requests.jsonl").read_text().splitlines())]
        checks = {n: [t - t0 for t, p in stubs.requests(n)
                      if p == HEALTHZ and t0 <= t <= t0 + duration] for n in plan.backends}
        faults = [FaultRecord(f.fault_id, f.kind, f.target, applied[f.fault_id][0],
                              applied[f.fault_id][1], frozenset(f.stubs),
                              frozenset((s, "apiserver") for s in f.stubs))
                  for f in plan.faults if f.fault_id in applied]
        return TrialRecords(requests, states, faults, checks,
                            self._clients(), duration, plan.host, plan.backends,
                            {"shift": shift})

    def _lock_phase(self, t0: float, u: float) -> float:
        """The fault shift that puts the first fault ``u`` of a check interval after the
        target's last health check.

        HAProxy starts each server's checks at a fixed offset from its own start
        (``start_check_task``), so fixed shifts would meet the same check phase in every
        run and bias the median by up to a sixth of ``inter`` with three trials; locking
        to the observed schedule samples the phase at exact quantiles instead. The
        simulator draws its phase at random per trial (``hasim.sim.haproxy``)."""
        plan, stubs = self.plan, self.stubs
        assert stubs is not None
        first = min(plan.faults, key=lambda f: f.at)
        if stopping.wait(max(0.0, t0 + first.at - time.monotonic())):
            raise HasimError("lab run interrupted")
        seen = {name: [t - t0 for t, p in stubs.requests(name) if p == HEALTHZ and t >= t0]
                for name in plan.backends}
        target = seen.get(first.stubs[0], []) if first.stubs else []
        if not target:
            return u * plan.spread
        gaps = sorted(b - a for ts in seen.values() for a, b in zip(ts, ts[1:], strict=False))
        period = gaps[len(gaps) // 2] if gaps else plan.spread
        locked = target[-1] + u * period
        now = time.monotonic() - t0
        while locked < now + 0.002:
            locked += period
        return locked - first.at

    def _client_host(self) -> str:
        return self.plan.host if self.plan.component == "lb" else "lab"

    def _clients(self) -> dict[str, tuple[str, str]]:
        h = self._client_host()
        out = {f"{h}/short": (h, "short")}
        out.update({f"{h}/long-{k}": (h, "long") for k in range(self.plan.load.long_clients)})
        return out


# --- simulated trials ------------------------------------------------------------------------


def sim_trial(plan: LabPlan, i: int, n: int, seed: int) -> TrialRecords:
    """Simulated trial ``i`` of ``n`` (seed ``seed + i``)."""
    shift = plan.shift(i, n)
    scen = with_host_kernel(plan.scenario_for(shift))
    st = simulate_lab(scen, plan.host, plan.load, seed + i, LOAD_START, plan.duration(shift))
    return TrialRecords(st.requests, st.states, st.faults, st.check_times, st.clients,
                        st.duration, plan.host, plan.backends, {"shift": shift})

