"""HAProxy 2.6 in ``mode tcp`` in front of the apiservers (docs/model.md, HAProxy).

Health checks follow ``src/check.c``: a counter ``health`` from 0 to ``rise+fall-1``,
starting at ``rise`` ("up, but will fall down at first failure", ``srv_settings_cpy``);
a failed check decrements it and, once below ``rise``, drops it to 0 (DOWN); a passed
check increments it and, on reaching ``rise``, raises it to full (UP). The next check
starts when the current one ends, after ``srv_getinter()``: ``inter`` at full health,
``downinter`` when DOWN, ``fastinter`` in between. The first check of server ``pos`` of
``n`` is ``inter*pos/n`` after start (``start_check_task``). A check's connect phase is
bounded by ``inter``, or by min(``inter``, ``timeout connect``) when ``timeout check`` is
also set (``tcpcheck_eval_connect``); the read phase by ``timeout check`` when set.

Connections follow ``src/backend.c``/``stream.c``: ``roundrobin`` or ``leastconn``
(``conns/eweight``, ``slowstart`` ramping the weight after a server comes UP); a failed
connect is retried ``retries`` times; after an immediate error (RST) a 1 s turn-around
(``min(1s, timeout connect)``) comes first, except when the retry is redispatched to
another server; ``option redispatch`` moves the retry to another server when the server
is not running, on the last retry, and on every retry when more than one server is up
and the algorithm is not hash-based (``stream_choose_redispatch``: roundrobin and
leastconn alike). Without ``timeout connect`` a connect
waits for the kernel (``tcp_syn_retries`` 6: 127 s). Established sessions survive a
mark-down unless ``shutdown_sessions`` (``on-marked-down shutdown-sessions``).
"""

from __future__ import annotations

from collections.abc import Generator
from functools import partial
from typing import Any

import numpy as np
import simpy

from hasim.sim.kernel import Environment, Wait
from hasim.sim.model import Model, builds
from hasim.sim.network import BLACKHOLE, OK, REFUSED, RESET, Network, Proc, Session
from hasim.sim.records import Recorder
from hasim.spec.scenario import _HAProxyBase


class HealthCounter:
    """HAProxy's per-server check counter (``check->health``)."""

    __slots__ = ("rise", "fall", "health")

    def __init__(self, rise: int, fall: int) -> None:
        self.rise = rise
        self.fall = fall
        self.health = rise  # up, but will fall down at first failure

    @property
    def up(self) -> bool:
        return self.health >= self.rise

    @property
    def full(self) -> int:
        return self.rise + self.fall - 1

    def report(self, passed: bool) -> str | None:
        """Apply one check result; returns ``"up"``/``"down"`` on a transition."""
        was_up = self.up
        if passed:
            if self.health < self.full:
                self.health += 1
                if self.health >= self.rise:
                    self.health = self.full
        elif self.health > 0:
            self.health -= 1
            if self.health < self.rise:
                self.health = 0
        if was_up and not self.up:
            return "down"
        if not was_up and self.up:
            return "up"
        return None


class Server:
    """One ``server`` line of an HAProxy instance."""

    __slots__ = ("proc", "counter", "conns", "last_pick", "up_since", "sessions")

    def __init__(self, proc: Proc, rise: int, fall: int) -> None:
        self.proc = proc
        self.counter = HealthCounter(rise, fall)
        self.conns = 0
        self.last_pick = -1.0
        self.up_since: float | None = None  # set when it comes UP after being DOWN
        self.sessions: set[Session] = set()


class HAProxy:
    """One HAProxy instance (the local LB on a node, or an external LB host).

    Slotted: its checkers read it on every check (see :class:`hasim.sim.clients.Client`)."""

    __slots__ = ("env", "net", "rec", "api_health", "connect_timeout", "generation", "host", "name",
                 "proc", "rng", "rr_next", "servers", "spec", "up")

    def __init__(
        self,
        env: Environment,
        net: Network,
        rec: Recorder,
        host: str,
        component: str,
        servers: list[Proc],
        spec: _HAProxyBase,
        rng: np.random.Generator,
        kernel_syn_timeout: float | None = None,
        api_health: Any = None,
    ) -> None:
        self.env, self.net, self.rec = env, net, rec
        self.host = host
        self.proc: Proc = (host, component)
        self.name = f"{host}/{component}"
        self.spec = spec
        self.servers = [Server(p, spec.rise, spec.fall) for p in servers]
        self.rr_next = 0
        self.rng = rng
        self.connect_timeout = spec.timeout_connect or kernel_syn_timeout or net.syn_give_up
        #: Callable (proc) -> bool: whether that apiserver's /healthz answers 200.
        self.api_health = api_health
        net.add_process(self.proc)
        #: Network.is_alive(self.proc), kept by _on_state (every change of it notifies).
        self.up = True
        net.watch(self.proc, self._on_state)
        self.generation = 0
        self._start_checks()

    # -- health checks --------------------------------------------------------------------
    def _start_checks(self) -> None:
        if not self.spec.check:
            return
        phase = float(self.rng.uniform(0.0, self.spec.inter))
        n = len(self.servers)
        for pos, srv in enumerate(self.servers):
            first = phase + self.spec.inter * pos / n
            self.env.process(self._checker(srv, first, self.generation))

    def _on_state(self, up: bool) -> None:
        self.up = up
        self.generation += 1
        if up:  # a restarted HAProxy forgets everything: servers start "up, going down"
            self.servers = [Server(s.proc, self.spec.rise, self.spec.fall) for s in self.servers]
            self._start_checks()

    def _interval(self, srv: Server) -> float:
        s = self.spec
        c = srv.counter
        if c.health == c.full:
            return s.inter
        if c.health == 0:
            return s.downinter or s.inter
        return s.fastinter or s.inter

    def _checker(self, srv: Server, first: float, gen: int) -> Generator[Wait, Any, None]:
        env, net, s = self.env, self.net, self.spec
        yield env.sleep(first)
        connect_limit = min(s.inter, s.timeout_connect) if (s.timeout_check and s.timeout_connect) \
            else s.inter
        # Loop invariants, bound once: a local HAProxy checks every 15 s for the whole run.
        checks = self.rec.tally((self.name, f"{srv.proc[0]}/{srv.proc[1]}", "active"))
        host, proc, counter = self.host, srv.proc, srv.counter
        rtt = net.rtt
        limit = s.timeout_check or max(s.inter - rtt, rtt)
        httpchk = s.check_type == "httpchk"
        # What a SYN to the server meets, and whether its host still answers when the
        # reply is due: re-read only when the network has changed (every change of what a
        # packet meets bumps Network.version), not two lookups in per-host tables on
        # every check of a 10,000-node cluster.
        seen, answer = -1, OK
        seen_reach, reach = -1, True
        while gen == self.generation and self.up:
            checks.n += 1
            if seen != net.version:
                seen, answer = net.version, net.connect(host, proc)
            outcome = answer
            if outcome == BLACKHOLE:
                outcome = yield from net.dial(host, proc, connect_limit)
            else:
                yield env.sleep(rtt)  # Network.dial of a SYN answered at once
            if outcome == REFUSED:
                passed, why = False, "Connection refused"
            elif outcome != OK:
                passed, why = False, "Layer4 timeout"
            else:
                reply = 2 * rtt + net.slow.get(proc, 0.0)  # TLS hello, then the GET
                if httpchk:
                    reply += rtt
                if reply > limit:
                    yield env.sleep(limit)
                    passed, why = False, "Layer7 timeout"
                else:
                    yield env.sleep(reply)
                    if seen_reach != net.version:
                        seen_reach, reach = net.version, net.reachable(host, proc[0])
                    if not reach:
                        # The host vanished (power-off, partition) while the check was in
                        # flight: no reply and no RST will ever come, so the check ends when
                        # its task expires (check.c/tcpcheck.c: `timeout check` after the
                        # connect, else `inter` from the start) as "Layer7 timeout", not
                        # at once with an error status.
                        yield env.sleep(limit - reply)
                        passed, why = False, "Layer7 timeout"
                    else:
                        healthy = self.api_health is None or self.api_health(proc)
                        passed = healthy or not httpchk
                        why = "Layer7 check passed" if passed else "Layer7 wrong status 500"
            if gen != self.generation:
                return
            change = counter.report(passed)
            if change is not None:
                self._transition(srv, change, why)
            yield env.sleep(self._interval(srv))

    def _transition(self, srv: Server, change: str, why: str) -> None:
        old = "up" if change == "down" else "down"
        self.rec.state(self.env.now, self.proc[1], self.host, srv.proc[0], old, change, why)
        if change == "up":
            srv.up_since = self.env.now
        elif self.spec.shutdown_sessions:
            for sess in list(srv.sessions):
                sess.close("shutdown-sessions", self.env.now)

    # -- load balancing -------------------------------------------------------------------
    def _running(self) -> list[Server]:
        if not self.spec.check:
            return self.servers
        return [s for s in self.servers if s.counter.up]

    def _weight(self, srv: Server) -> float:
        ss = self.spec.slowstart
        if ss and srv.up_since is not None:
            elapsed = self.env.now - srv.up_since
            if elapsed < ss:
                return max(elapsed / ss, 1.0 / 256)  # eweight never drops to 0 (BE_WEIGHT_SCALE)
        return 1.0

    def select(self, avoid: Server | None = None) -> Server | None:
        """The server for a new connection (``srvtoavoid`` on redispatch), None if none up."""
        up = self._running()
        if avoid is not None and len(up) > 1:
            up = [s for s in up if s is not avoid]
        if not up:
            return None
        if self.spec.balance == "roundrobin":
            n = len(self.servers)
            for k in range(n):
                srv = self.servers[(self.rr_next + k) % n]
                if srv in up:
                    self.rr_next = (self.servers.index(srv) + 1) % n
                    return srv
            return None
        # leastconn: fewest conns per unit of effective weight; equal keys go to the one
        # picked longest ago (a server is re-queued behind its equals when it is used).
        # fwlc_queue_srv: key `inflight ? (inflight + 1) * SRV_EWGHT_MAX / eweight : 0`:
        # an empty server comes first whatever its weight (the lab: a master back from a
        # crash got a connection as soon as it was UP, in spite of `slowstart 60s`), and a
        # busy one in slowstart (small eweight) is kept away.
        best = min(up, key=lambda s: ((s.conns + 1) / self._weight(s) if s.conns else 0.0,
                                      s.last_pick))
        best.last_pick = self.env.now
        return best

    def open_session(self, client: Proc) -> Generator[Wait, Any, Session | str]:
        """A client connects through this HAProxy: a Session, or REFUSED/RESET."""
        env, net, s = self.env, self.net, self.spec
        if net.connect(client[0], self.proc) != OK:
            if net.connect(client[0], self.proc) == REFUSED:
                yield env.sleep(net.rtt)
                return REFUSED
            yield env.sleep(1e9)  # unreachable LB: the client's own timeout ends this
            return RESET
        srv = self.select()
        retries_left = s.retries
        current: Server | None = None
        try:
            while True:
                if srv is None:
                    return RESET  # no server available: the client connection is closed
                current = srv
                attempt_at = env.now
                srv.conns += 1
                self.rec.checks[(self.name, f"{srv.proc[0]}/{srv.proc[1]}", "connection")] += 1
                outcome = yield from net.dial(self.host, srv.proc, self.connect_timeout)
                if outcome == OK:
                    sess = Session(net, client, [(client[0], self.proc), (self.host, srv.proc)],
                                   srv.proc, lb=self.name)
                    srv.sessions.add(sess)
                    sess.on_close.append(partial(self._release, srv))
                    current = None
                    env.process(self._idle_timer(sess))
                    return sess
                immediate = outcome == REFUSED
                srv.conns -= 1
                current = None
                if retries_left == 0 or not net.is_alive(self.proc):
                    return RESET
                retries_left -= 1
                # stream_choose_redispatch (2.6): with `option redispatch`, every
                # non-hash algorithm (roundrobin and leastconn alike) moves a failed
                # connect to another server at once when more than one server is up;
                # back_handle_st_cer waits the 1 s turn-around only when the retry stays
                # on the same server. The lab saw it: `master2 1/0/3 ... +1`, 0 ms.
                n_up = len(self._running())
                redispatch = s.redispatch and (
                    srv not in self._running() or retries_left == 0 or n_up > 1
                )
                if immediate and not (redispatch and n_up > 1):
                    yield env.sleep(min(1.0, self.connect_timeout))
                if redispatch:
                    srv = self.select(avoid=srv)
        except simpy.Interrupt:
            # The client gave up mid-connect. Without `option abortonclose` its FIN only
            # shuts the client side: HAProxy finishes the pending connect (and holds the
            # server's slot meanwhile), then closes the server side.
            if current is not None:
                env.process(self._finish_connect(current, attempt_at))
            return RESET

    def _finish_connect(self, srv: Server, attempt_at: float
                        ) -> Generator[Wait, Any, None]:
        left = attempt_at + self.connect_timeout - self.env.now
        outcome = yield from self.net.dial(self.host, srv.proc, max(left, 0.0))
        if outcome == OK:
            yield self.env.sleep(self.net.rtt)  # FIN to the server, its FIN back
        srv.conns -= 1

    def _release(self, srv: Server, sess: Session) -> None:
        srv.sessions.discard(sess)
        net = self.net
        if (sess.cause in ("haproxy timeout", "shutdown-sessions")
                or not net.is_alive(self.proc)
                or net.reachable(self.host, srv.proc[0])):
            srv.conns -= 1
            return
        # mode tcp without `option abortonclose`: a client that leaves closes its side
        # only; HAProxy keeps the server side, counted in the server's `served` (which
        # leastconn balances on), until the server's FIN gets through or `timeout
        # server`. The lab saw the blackholed-then-healed master get no traffic for it.
        self.env.process(self._linger(srv))

    def _linger(self, srv: Server) -> Generator[Wait, Any, None]:
        """Hold ``srv``'s slot while its half-closed connection waits for the path: the
        FIN is retransmitted from ``TCP_RTO_MIN`` (0.2 s) doubling (to ``TCP_RTO_MAX``,
        120 s); the first one after the path heals is answered one round trip later."""
        env, net = self.env, self.net
        deadline = env.now + self.spec.timeout_server
        rto = 0.2
        while env.now < deadline and not net.reachable(self.host, srv.proc[0]):
            yield env.sleep(min(rto, deadline - env.now))
            rto = min(2 * rto, 120.0)
        if env.now < deadline:
            yield env.sleep(net.rtt)
        srv.conns -= 1

    def _idle_timer(self, sess: Session) -> Generator[Wait, Any, None]:
        """``timeout server`` (nothing read from the server) and ``timeout client``."""
        s = self.spec
        while sess.open:
            deadline = min(sess.last_read + s.timeout_server, sess.last_activity + s.timeout_client)
            wait = deadline - self.env.now
            if wait > 1e-9:
                yield self.env.sleep(wait)
                continue
            sess.close("haproxy timeout", self.env.now)


@builds("lb:haproxy", "external-lb:haproxy", stage="balancers")
def _build_haproxy(m: Model, node: str, d: dict[str, Any]) -> None:
    """A local HAProxy (kubespray's template) or an instance of the external LB."""
    comp, spec = d["component"], m.spec
    servers = [m.proc(v) for v in m.g.successors(node)]
    b = spec.balancers
    hspec: _HAProxyBase = b.local_haproxy() if comp == "lb" else b.external_haproxy()
    if d["host"] in m.skip:  # a sampled-out node: its checks run in aggregate
        assert m.agg is not None
        m.agg.add(d["host"], comp, servers, hspec, m.rng["checks"])
        return
    m.entries[node] = HAProxy(m.env, m.net, m.rec, d["host"], comp, servers, hspec,
                              m.rng["checks"], spec.clients.tcp_syn_timeout, m.apis.healthy)
