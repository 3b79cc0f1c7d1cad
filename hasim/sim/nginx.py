"""nginx's ``stream`` proxy as kubespray's local LB uses it (docs/model.md, nginx).

The peer choice and failure accounting follow nginx's source line by line
(``src/stream/ngx_stream_upstream_round_robin.c``, ``..._least_conn_module.c``,
``ngx_stream_proxy_module.c``, 1.22-1.27):

- ``now`` is ``ngx_time()``: whole seconds of the wall clock.
- A peer is skipped while ``max_fails && fails >= max_fails && now - checked <=
  fail_timeout``. The chosen peer gets ``checked = now`` when ``now - checked >
  fail_timeout``, so the first connection routed to it after ``fail_timeout`` is the
  probe.
- ``least_conn`` takes the fewest ``conns/weight`` and breaks ties by smooth weighted round
  robin (``current_weight += effective_weight``, highest wins, winner ``-= total``): on a
  fresh worker the first connection goes to the FIRST server.
- A failed connect (refused, ``proxy_connect_timeout``) frees the peer with
  ``NGX_PEER_FAILED``: ``fails++``, ``accessed = checked = now``, ``effective_weight -=
  weight/max_fails``. A success is freed only when the session ENDS
  (``ngx_stream_proxy_finalize``); it resets ``fails`` if ``accessed < checked``.
- ``proxy_next_upstream`` retries the next peer after a connect failure, each peer at most
  once (``tries`` = number of peers, or ``proxy_next_upstream_tries``).
- No peer left: "all peers failed, mark them as live for quick recovery" (``fails = 0``
  for all) and the client is closed ("no live upstreams").
- A single server is never marked down (``peers->single``).
- Without ``zone``, each worker process keeps its own copy of all of this.
- Without ``listen ... reuseport`` the first idle worker accepts (``EPOLLEXCLUSIVE``):
  worker 0 at a node's load; with it, a hash spreads connections over the workers.
  Worker 0 is not idle while it tears down a session its client just closed: a client
  that redials at once (client-go after a failed HTTP/2 health check) can be woken into
  worker 1, whose own upstream state may pick the dead server first and cost a
  ``proxy_connect_timeout`` (the lab's client-go cell: ``redial_other_worker``).
- No active health checks: nginx OSS sends nothing to a healthy server.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from functools import partial
from typing import Any

import numpy as np

from hasim.sim.kernel import Environment, Wait
from hasim.sim.model import Model, builds
from hasim.sim.network import (
    BLACKHOLE,
    CLIENT_CLOSES,
    OK,
    REFUSED,
    RESET,
    Network,
    Proc,
    Session,
)
from hasim.sim.records import Recorder
from hasim.spec.scenario import NginxSpec

#: How long a worker stays busy with a session its client closed: nginx reads the FIN,
#: closes both sockets and frees the peer in well under a millisecond, and only a
#: client's immediate redial (the same instant in the simulator) meets it.
REDIAL_RACE_WINDOW = 0.001


class NginxPeer:
    """One ``server`` line as one worker sees it."""

    __slots__ = ("weight", "effective_weight", "current_weight", "conns", "fails", "accessed",
                 "checked")

    def __init__(self) -> None:
        self.weight = 1
        self.effective_weight = 1
        self.current_weight = 0
        self.conns = 0
        self.fails = 0
        self.accessed = 0
        self.checked = 0


class NginxUpstream:
    """The upstream state of ONE worker process (no ``zone``: not shared)."""

    def __init__(self, n: int, max_fails: int, fail_timeout: int, balance: str) -> None:
        self.peers = [NginxPeer() for _ in range(n)]
        self.max_fails = max_fails
        self.fail_timeout = fail_timeout
        self.least_conn = balance == "least_conn"
        self.single = n == 1

    def skipped(self, p: NginxPeer, now: int) -> bool:
        return bool(
            self.max_fails and p.fails >= self.max_fails and now - p.checked <= self.fail_timeout
        )

    def select(self, now: int, tried: set[int]) -> int | None:
        """The peer for a new connection, or None ("no live upstreams")."""
        if self.single:
            return None if 0 in tried else self._take(0, now, single=True)
        best = self._least_conn(now, tried) if self.least_conn else self._round_robin(now, tried)
        if best is None:
            # "all peers failed, mark them as live for quick recovery"
            for p in self.peers:
                p.fails = 0
            return None
        return self._take(best, now)

    def _take(self, i: int, now: int, single: bool = False) -> int:
        p = self.peers[i]
        if not single and now - p.checked > self.fail_timeout:
            p.checked = now
        p.conns += 1
        return i

    def _round_robin(self, now: int, tried: set[int]) -> int | None:
        best, total = None, 0
        for i, p in enumerate(self.peers):
            if i in tried or self.skipped(p, now):
                continue
            p.current_weight += p.effective_weight
            total += p.effective_weight
            if p.effective_weight < p.weight:
                p.effective_weight += 1
            if best is None or p.current_weight > self.peers[best].current_weight:
                best = i
        if best is not None:
            self.peers[best].current_weight -= total
        return best

    def _least_conn(self, now: int, tried: set[int]) -> int | None:
        best: int | None = None
        many = False
        for i, p in enumerate(self.peers):
            if i in tried or self.skipped(p, now):
                continue
            if best is None:
                best, many = i, False
                continue
            b = self.peers[best]
            if p.conns * b.weight < b.conns * p.weight:
                best, many = i, False
            elif p.conns * b.weight == b.conns * p.weight:
                many = True
        if best is None or not many:
            return best
        first = self.peers[best]
        total = 0
        for i in range(best, len(self.peers)):
            p = self.peers[i]
            if i in tried or self.skipped(p, now):
                continue
            if p.conns * first.weight != first.conns * p.weight:
                continue
            p.current_weight += p.effective_weight
            total += p.effective_weight
            if p.effective_weight < p.weight:
                p.effective_weight += 1
            if p.current_weight > self.peers[best].current_weight:
                best = i
        self.peers[best].current_weight -= total
        return best

    def free(self, i: int, now: int, failed: bool) -> bool:
        """Release a peer; True when this made it cross ``max_fails`` (now skipped)."""
        p = self.peers[i]
        p.conns -= 1
        if self.single:
            return False
        if failed:
            p.fails += 1
            p.accessed = now
            p.checked = now
            if self.max_fails:
                p.effective_weight -= p.weight // self.max_fails
                if p.effective_weight < 0:
                    p.effective_weight = 0
                return p.fails == self.max_fails
            return False
        if p.accessed < p.checked:
            p.fails = 0
        return False


class NginxProxy:
    """The nginx local LB on one host: ``workers`` processes, each with its own upstream."""

    def __init__(
        self,
        env: Environment,
        net: Network,
        rec: Recorder,
        host: str,
        servers: list[Proc],
        spec: NginxSpec,
        rng: np.random.Generator,
        clock_phase: float,
        name: str | None = None,
    ) -> None:
        self.env, self.net, self.rec = env, net, rec
        self.host = host
        self.proc: Proc = (host, "lb")
        self.name = name or f"{host}/lb"
        self.servers = servers
        self.spec = spec
        self.rng = rng
        self.clock_phase = clock_phase
        self.fail_timeout = int(math.ceil(spec.fail_timeout))
        self.workers: list[NginxUpstream] = []
        #: Per worker, when its client last closed a session on it (the worker is busy
        #: tearing it down for a moment).
        self._client_closed: list[float] = []
        self._fresh_workers()
        net.add_process(self.proc)
        net.watch(self.proc, self._on_state)

    def _fresh_workers(self) -> None:
        self.workers = [
            NginxUpstream(len(self.servers), self.spec.max_fails, self.fail_timeout,
                          self.spec.balance)
            for _ in range(self.spec.workers)
        ]
        self._client_closed = [-math.inf] * self.spec.workers

    def _on_state(self, up: bool) -> None:
        if up:  # a restarted nginx starts with fresh workers and no failure memory
            self._fresh_workers()

    def ngx_time(self) -> int:
        """nginx's cached wall clock, in whole seconds."""
        return int(self.env.now + self.clock_phase)

    def open_session(self, client: Proc) -> Generator[Wait, Any, Session | str]:
        """A client connects through nginx: a Session, or REFUSED/RESET for the client."""
        env, net = self.env, self.net
        if net.connect(client[0], self.proc) != OK:
            yield env.sleep(net.rtt if client[0] != self.host else 0.0)
            return REFUSED
        # Which worker accepts: without `reuseport` nginx (>= 1.11.3, accept_mutex off)
        # registers the shared listener with EPOLLEXCLUSIVE and the kernel wakes the first
        # worker idle in epoll_wait: worker 0, as a node's connections never keep it busy.
        # With `reuseport` the kernel hashes the 4-tuple over the workers' own sockets.
        w = 0
        if self.spec.reuseport and len(self.workers) > 1:
            w = int(self.rng.integers(len(self.workers)))
        elif len(self.workers) > 1:
            w = self._accepting_worker()
        up = self.workers[w]
        spec = self.spec
        n = len(self.servers)
        tries = n if spec.proxy_next_upstream_tries == 0 else min(n, spec.proxy_next_upstream_tries)
        started = env.now
        tried: set[int] = set()
        while True:
            now = self.ngx_time()
            probing = [up.max_fails and p.fails >= up.max_fails for p in up.peers]
            i = up.select(now, tried)
            if i is None:
                self.rec.state(env.now, f"lb[w{w}]", self.host, "*", "", "no-live-upstreams",
                               "all peers failed or tried")
                return RESET
            tried.add(i)
            srv = self.servers[i]
            kind = "passive" if probing[i] else "connection"
            self.rec.checks[(self.name, f"{srv[0]}/{srv[1]}", kind)] += 1
            outcome = yield from net.dial(self.host, srv, spec.proxy_connect_timeout)
            if outcome == OK:
                sess = Session(net, client, [(client[0], self.proc), (self.host, srv)], srv,
                               lb=self.name)
                sess.on_close.append(partial(self._finalize, up, i))
                env.process(self._idle_timer(sess))
                return sess
            tries -= 1
            if up.free(i, self.ngx_time(), failed=True):
                cause = "connect refused" if outcome == REFUSED else "proxy_connect_timeout"
                self.rec.state(env.now, f"lb[w{w}]", self.host, srv[0], "up", "down", cause)
            if (
                not spec.proxy_next_upstream
                or tries == 0
                or (spec.proxy_next_upstream_timeout
                    and env.now - started >= spec.proxy_next_upstream_timeout)
            ):
                return RESET
            if not net.is_alive(self.proc):
                return RESET

    def _accepting_worker(self) -> int:
        """The first worker idle in ``epoll_wait``: worker 0, unless a session its client
        closed an instant ago still keeps it busy; then, with the share the lab measured
        (``redial_other_worker``), the kernel wakes the next one first."""
        now = self.env.now
        for w, closed in enumerate(self._client_closed[:-1]):
            if now - closed > REDIAL_RACE_WINDOW:
                return w
            if float(self.rng.random()) >= self.spec.redial_other_worker:
                return w
        return len(self.workers) - 1

    def _finalize(self, up: NginxUpstream, i: int, sess: Session) -> None:
        if up not in self.workers:
            return  # the worker died with the process; its state is gone
        if sess.cause in CLIENT_CLOSES:
            self._client_closed[self.workers.index(up)] = self.env.now
        was_down = up.max_fails and up.peers[i].fails >= up.max_fails
        up.free(i, self.ngx_time(), failed=False)
        if was_down and up.peers[i].fails == 0:
            w = self.workers.index(up)
            srv = self.servers[i]
            self.rec.state(self.env.now, f"lb[w{w}]", self.host, srv[0], "down", "up",
                           "probe succeeded")

    def _idle_timer(self, sess: Session) -> Generator[Wait, Any, None]:
        """``proxy_timeout``: close when neither side has read or written for that long."""
        timeout = self.spec.proxy_timeout
        while sess.open:
            wait = sess.last_activity + timeout - self.env.now
            if wait > 1e-9:
                yield self.env.sleep(wait)
                continue
            sess.close("proxy_timeout", self.env.now)

    def __repr__(self) -> str:
        return f"NginxProxy({self.name}, {len(self.servers)} servers)"


__all__ = ["NginxPeer", "NginxProxy", "NginxUpstream", "BLACKHOLE"]


@builds("lb:nginx", stage="balancers")
def _build_nginx(m: Model, node: str, d: dict[str, Any]) -> None:
    if d["host"] in m.skip:
        return  # a sampled-out node's nginx has no active checks to aggregate
    m.entries[node] = NginxProxy(m.env, m.net, m.rec, d["host"],
                                 [m.proc(v) for v in m.g.successors(node)],
                                 m.spec.balancers.local_nginx(),
                                 m.rng["workers"], m.clock_phase)
