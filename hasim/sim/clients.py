"""API clients: kubelet, kube-proxy and the connection they hold (docs/model.md, clients).

Each client process keeps ONE connection (client-go multiplexes every request of a
process over one HTTP/2 connection) and dials a new one when it has none. What ends a
connection depends on the client profile:

- ``modern`` (k8s >= 1.20, k8s #95981): the HTTP/2 health check. ``ReadIdleTimeout``
  after the last frame READ, a PING is sent; no answer within ``PingTimeout`` closes the
  connection and fails its in-flight requests (``golang.org/x/net/http2``
  ``closeForLostPing``).
- ``legacy`` (< 1.11): nothing; a silently dead connection lives until the kernel gives
  up retransmitting (``tcp_retries2``, about 924 s; k8s #41185, #48638).
- ``closeconns`` (1.11-1.19): as legacy, but the kubelet drops all its connections from
  the second consecutive failed heartbeat (``onRepeatedHeartbeatFailure``, k8s #63492).
- ``disable_http2`` (DISABLE_HTTP2): HTTP/1.1, a timed-out request closes its own
  connection; the kubelet's repeated-failure hook applies too (k8s #108107).

Kubelet: the node lease controller (``component-helpers/.../lease/controller.go``)
syncs every ``renew_interval`` (``wait.JitterUntil``, sliding, jitter 0.04) and tries an
update up to 5 times (``maxUpdateRetries``), calling the repeated-failure hook when
``i > 0``; node status is fetched every ``status_update_frequency`` with 5 tries
(``nodeStatusUpdateRetry``). Its heartbeat requests time out after min(status update
frequency, lease duration) (``cmd/kubelet/app/server.go``). kube-proxy: list, then a
long watch (``timeoutSeconds`` in [5, 10) min), re-listing after an error with the
reflector's backoff (0.8 s, doubling, cap 30 s, jitter 1.0).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from hasim.graph.topology import CNI_AGENTS
from hasim.sim.apiserver import Apiservers, ClusterState
from hasim.sim.kernel import Environment, Wait
from hasim.sim.model import Model, builds
from hasim.sim.network import BLACKHOLE, OK, REFUSED, RESET, Network, Proc, Session
from hasim.sim.records import FOLD, Recorder
from hasim.spec.scenario import ClientsSpec, KubeletSpec

TIMEOUT = "timeout"
ERROR = "error"

Opener = Callable[[Proc], Generator[Wait, Any, "Session | str"]]


class DirectDialer:
    """A client that connects straight to one apiserver (the default, non-HA mode)."""

    def __init__(self, env: Environment, net: Network, target: Proc,
                 syn_timeout: float | None = None):
        self.env, self.net, self.target = env, net, target
        self.syn_timeout = syn_timeout or net.syn_give_up
        self.name = f"{target[0]}/{target[1]}"

    def open_session(self, client: Proc) -> Generator[Wait, Any, Session | str]:
        # Unanswered, the kernel resends the SYN and gives up after tcp_syn_retries. The
        # client's own dial timeout (client-go ``net.Dialer{Timeout: 30s}``, or the
        # request's) usually ends the wait first: Client._dial stops waiting then.
        outcome = yield from self.net.dial(client[0], self.target, self.syn_timeout)
        if outcome == OK:
            yield self.env.sleep(self.net.rtt)  # then TLS
            return Session(self.net, client, [(client[0], self.target)], self.target)
        if outcome == REFUSED:
            return REFUSED
        return TIMEOUT


class Client:
    """One client process (kubelet, kube-proxy...) and its single connection.

    Slotted, as are its subclasses: every heartbeat reads a handful of these attributes,
    and in a 10,000-node run an instance dict is one more cache miss per event."""

    __slots__ = ("env", "net", "rec", "apis", "host", "proc", "name", "dialer", "spec", "sess",
                 "_rows", "ping", "up")

    def __init__(
        self,
        env: Environment,
        net: Network,
        rec: Recorder,
        apis: Apiservers,
        host: str,
        component: str,
        dialer: Any,
        spec: ClientsSpec,
    ) -> None:
        self.env, self.net, self.rec, self.apis = env, net, rec, apis
        self.host = host
        self.proc: Proc = (host, component)
        self.name = f"{host}/{component}"
        self.dialer = dialer
        self.spec = spec
        self.sess: Session | None = None
        # The hot path adds its request records straight to the log's latest rows (the
        # fields Recorder.request takes, one Python call less per request), and folds
        # them into the log's columns once they reach FOLD items.
        self._rows = rec.requests.rows
        self.ping = spec.profile == "modern" and not spec.disable_http2 and (
            spec.http2_read_idle_timeout > 0
        )
        net.add_process(self.proc)
        #: Whether the process runs: Network.is_alive(proc), kept up to date by the
        #: watcher below (every change of it notifies), read where every beat asks.
        self.up = True
        net.watch(self.proc, self._on_state)

    def _on_state(self, up: bool) -> None:
        self.up = up
        if not up and self.sess is not None:
            self.sess.close("client died", self.env.now)
            self.sess = None

    @property
    def alive(self) -> bool:
        return self.net.is_alive(self.proc)

    def wait_alive(self, period: float) -> Generator[Wait, Any, None]:
        while not self.alive:
            yield self.env.sleep(period)

    def close(self, cause: str) -> None:
        if self.sess is not None:
            self.sess.close(cause, self.env.now)
            self.sess = None

    # -- dialling -------------------------------------------------------------------------
    def _dial(self, limit: float) -> Generator[Wait, Any, Session | str]:
        env = self.env
        proc = env.process(self.dialer.open_session(self.proc))
        limit = min(limit, self.spec.dial_timeout)
        timer = env.timeout(limit)
        yield proc | timer
        if not proc.triggered:
            # The client gives up and closes its socket. A proxy in between does not stop
            # its upstream connect for that: nginx's stream proxy does not watch the client
            # while it connects upstream (it still counts a proxy_connect_timeout against
            # the server), nor does HAProxy without ``option abortonclose``; it meets the
            # closed client only afterwards. So the attempt runs on and a session it yields
            # is closed at once. (Interrupting it instead crashed the run whenever a
            # proxy's connect outlasted the request, e.g. nginx's default
            # proxy_connect_timeout 60s against the kubelet's 10 s.)
            proc.callbacks.append(self._abandoned)
            return TIMEOUT
        result = proc.value
        if isinstance(result, Session):
            if not self.alive:
                result.close("client died", env.now)
                return ERROR
            self.sess = result
            if self.ping:
                env.process(self._pinger(result))
        return result  # type: ignore[return-value]

    def _abandoned(self, ev: simpy.Event) -> None:
        if ev.ok and isinstance(ev.value, Session):
            ev.value.close("client gave up", self.env.now)

    # -- one request ----------------------------------------------------------------------
    def request(self, kind: str, timeout: float, write: bool = False
                ) -> Generator[Wait, Any, str]:
        """One API request within ``timeout``; records it and returns its outcome.

        The exchange on the connection is written out here rather than in a generator of
        its own: every heartbeat goes through this code, and one generator per request
        costs less than two (the same events, in the same order)."""
        env = self.env
        start = env.now
        deadline = start + timeout
        sess = self.sess
        if sess is None or sess.closed_at is not None:
            self.sess = None
            got = yield from self._dial(timeout)
            if not isinstance(got, Session):
                outcome = TIMEOUT if got == BLACKHOLE else got
                self.rec.requests.append((self.name, self.host, start, env.now, outcome, "",
                                          kind))
                return outcome
            sess = got
        now = env.now
        sess.last_activity = now
        backend = sess.backend
        state = sess.state()
        if state == OK:
            d = sess.delay() + (self.apis.serve_time(backend) if backend else 0.0)
            if now + d > deadline:
                yield env.sleep(max(deadline - now, 0.0))
                outcome = self._timed_out(sess)
            else:
                yield env.sleep(d)
                if sess.closed_at is not None:
                    outcome = RESET
                else:
                    sess.last_read = sess.last_activity = env.now
                    sess.unacked_since = None
                    if write and backend and not self.apis.can_write(backend):
                        outcome = yield from self._write_failed(sess, backend, deadline)
                    else:
                        outcome = OK
        elif state == RESET:
            sess.close("reset", now)
            if self.sess is sess:
                self.sess = None
            yield env.sleep(self.net.rtt)
            outcome = RESET
        else:
            self._unacked(sess)
            broken = sess.wait_broken()
            timer = env.timeout(max(deadline - now, 0.0))
            yield broken | timer
            outcome = RESET if broken.triggered else self._timed_out(sess)
        rows = self._rows
        rows += (self.name, self.host, start, env.now, outcome, backend[0] if backend else "",
                 kind)
        if len(rows) >= FOLD:
            self.rec.requests.fold()
        return outcome

    def _write_failed(self, sess: Session, backend: Proc, deadline: float
                      ) -> Generator[Wait, Any, str]:
        """A write etcd cannot commit: it fails at once when etcd is out of reach, else
        its proposal hangs until etcd's request timeout ("etcdserver: request timed out")
        or the client's deadline, whichever is first; it is not retried to a new leader
        (docs/lab.md, etcd writes)."""
        stall = self.apis.write_stall(backend)
        if stall is None:
            return ERROR
        env = self.env
        if env.now + stall >= deadline:
            yield env.sleep(max(deadline - env.now, 0.0))
            return self._timed_out(sess)
        yield env.sleep(stall)
        return ERROR

    def _timed_out(self, sess: Session) -> str:
        if self.spec.disable_http2:  # HTTP/1.1: the timed-out request's connection goes
            sess.close("request timeout", self.env.now)
        return TIMEOUT

    def _unacked(self, sess: Session) -> None:
        if sess.unacked_since is None:
            sess.unacked_since = self.env.now
            self.env.process(self._retransmit(sess, self.env.now))

    def _retransmit(self, sess: Session, since: float) -> Generator[Wait, Any, None]:
        """tcp_retries2: the kernel gives up on unacknowledged data and errors the socket."""
        yield self.env.sleep(self.spec.tcp_retries2_timeout)
        if sess.open and sess.unacked_since == since:
            sess.close("tcp_retries2", self.env.now)

    def _pinger(self, sess: Session) -> Generator[Wait, Any, None]:
        """client-go's HTTP/2 health check on one connection."""
        env, spec = self.env, self.spec
        idle = spec.http2_read_idle_timeout
        while sess.open:
            wait = sess.last_read + idle - env.now
            if wait > 1e-9:
                yield env.sleep(wait)
                continue
            sess.last_activity = env.now
            state = sess.state()
            if state == OK:
                yield env.sleep(sess.delay())
                if sess.open:
                    sess.last_read = sess.last_activity = env.now
                    sess.unacked_since = None
                continue
            if state == RESET:
                sess.close("reset", env.now)
                return
            self._unacked(sess)
            broken = sess.wait_broken()
            yield broken | env.timeout(spec.http2_ping_timeout)
            if sess.open:
                self.rec.state(env.now, self.proc[1], self.host, sess.backend[0] if sess.backend
                               else "", "connected", "closed", "http2: client connection lost")
                sess.close("http2 ping timeout", env.now)
            return


class Kubelet(Client):
    """The kubelet: node lease renewals and node status, over one connection."""

    __slots__ = ("kspec", "state", "rng", "hb_timeout", "redial_on_failure", "boot",
                 "lease_offset", "status_offset")

    def __init__(self, *args: Any, kubelet: KubeletSpec, state: ClusterState,
                 rng: np.random.Generator, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kspec = kubelet
        self.state = state
        self.rng = rng
        self.hb_timeout = min(kubelet.status_update_frequency, kubelet.lease_duration)
        self.redial_on_failure = self.spec.profile == "closeconns" or self.spec.disable_http2
        self.boot = float(rng.uniform(0, 1.0))
        self.lease_offset = self.boot + float(rng.uniform(0, kubelet.renew_interval))
        self.status_offset = self.boot + float(rng.uniform(0, kubelet.status_update_frequency))

    def start(self) -> None:
        self.env.process(self._register())
        self.env.process(self._lease_loop())
        self.env.process(self._status_loop())

    def _register(self) -> Generator[Wait, Any, None]:
        """At start the kubelet registers its node: the node's FIRST apiserver connection,
        before kube-proxy (a pod the kubelet itself starts) exists (KS #2150)."""
        yield self.env.sleep(self.boot)
        yield from self.request("register", self.hb_timeout, write=True)

    def _lease_loop(self) -> Generator[Wait, Any, None]:
        k = self.kspec
        # A lease renewal every renew_interval, sliding, jitter 0.04 (wait.JitterUntil).
        return self._beats("lease", self.lease_offset, k.renew_interval, 0.04, renews=True)

    def _status_loop(self) -> Generator[Wait, Any, None]:
        # A PATCH of nodes/status: a write, so it needs etcd's quorum like the lease.
        # (kube-proxy's list is a read with resourceVersion=0, answered from the
        # apiserver's watch cache without etcd: it stays write=False.)
        return self._beats("status", self.status_offset, self.kspec.status_update_frequency,
                           0.0, renews=False)

    def _beats(self, kind: str, offset: float, period: float, jitter: float, renews: bool
               ) -> Generator[Wait, Any, None]:
        """A heartbeat every ``period`` (times 1 + ``jitter`` x U, drawn after each beat):
        up to 5 tries (``maxUpdateRetries`` / ``nodeStatusUpdateRetry``), the repeated-
        failure hook from the second failed try on; a renewed lease is stored.

        The tries are written out in this loop rather than in a generator of their own,
        which every heartbeat would create and pass through."""
        env = self.env
        hb_timeout = self.hb_timeout
        yield env.sleep(offset)
        while True:
            if not self.up:
                yield from self.wait_alive(period)
            ok = False
            for i in range(5):
                if not self.up:
                    break
                outcome = yield from self.request(kind, hb_timeout, write=True)
                if outcome == OK:
                    ok = True
                    break
                if i > 0 and self.redial_on_failure:
                    self.close("repeated heartbeat failure")
            if ok and renews:
                self.state.lease_renewed[self.host] = env.now
            if jitter:
                yield env.sleep(period * (1 + jitter * float(self.rng.random())))
            else:
                yield env.sleep(period)


#: The watches each client process holds, as its client-go reflectors open them. With
#: HTTP/2 a process's watches and requests share ONE connection, which is what hasim
#: models for it; over HTTP/1.1 (``clients.disable_http2``, and every client before
#: Kubernetes 1.5, whose client-go turned HTTP/2 on by default: k8s PR #32231 after the
#: 1.4 attempt #28114 was reverted) every watch is a connection of its own. kubelet
#: (``NewMainKubelet``): its pods (the apiserver config source), its own node and the
#: services (for pods' environment variables); kube-proxy: services and endpoints.
KUBELET_WATCHES = ("pods", "nodes", "services")
KUBE_PROXY_WATCHES = ("services", "endpoints")


class Reflector(Client):
    """One client-go reflector: list, then watch, over its own connection; re-list after
    a failure. A process with several (over HTTP/1.1) has one per watch, all under the
    process's name: its requests are the process's."""

    __slots__ = ("rng", "offset")

    LIST_TIMEOUT = 60.0
    #: client-go's reflector: a watch that ends within 1 s with no event is "very short"
    #: and counts as an error (``watchHandler``).
    SHORT_WATCH = 1.0
    #: client-go's dialer sets ``net.Dialer{KeepAlive: 30s}``; Go applies it as both
    #: TCP_KEEPIDLE and TCP_KEEPINTVL (``net/tcpsockopt_unix.go``), and Linux gives up
    #: after ``tcp_keepalive_probes`` = 9 unanswered probes: an idle connection whose peer
    #: vanished errors 30 + 9 x 30 = 300 s after the last packet received.
    KEEPALIVE_IDLE = 30.0
    KEEPALIVE_PROBES = 9
    #: How often a watch hung behind a local LB re-looks at its path once the server's
    #: end of it is due: the server retransmits its FIN, which gets through once a
    #: partition heals.
    KEEPALIVE_RECHECK = 30.0

    def __init__(self, *args: Any, rng: np.random.Generator, offset: float,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = rng
        self.offset = offset

    def start(self) -> None:
        self.env.process(self._run())

    def _run(self) -> Generator[Wait, Any, None]:
        env, spec = self.env, self.spec
        yield env.sleep(self.offset)
        backoff = spec.watch_backoff_initial
        while True:
            yield from self.wait_alive(spec.watch_backoff_cap)
            outcome = yield from self.request("list", self.LIST_TIMEOUT)
            while outcome == OK and self.sess is not None:
                backoff = spec.watch_backoff_initial
                opened = env.now
                outcome = yield from self._watch(self.sess)
                if outcome == TIMEOUT or env.now - opened < self.SHORT_WATCH:
                    break
                # The watch ended as a stream ends: the server's timeoutSeconds, or the
                # far side closed (a FIN or RST read, e.g. the LB's proxy_timeout or a
                # crashed apiserver behind it). client-go's reflector (watchHandler
                # returns nil) opens the next watch at once from its resourceVersion, no
                # re-list, no backoff; only a lost connection (ping timeout, tcp_retries2,
                # keepalive: an error event), a watch shorter than 1 s ("very short
                # watch") or a failed re-watch ends ListAndWatch into the backoff.
                outcome = yield from self.request("watch", self.LIST_TIMEOUT)
            # The reflector's backoff (jitter 1.0: a wait in [b, 2b)).
            yield env.sleep(backoff * (1 + float(self.rng.random())))
            backoff = min(2 * backoff, spec.watch_backoff_cap)

    def _watch(self, sess: Session) -> Generator[Wait, Any, str]:
        """Wait on the watch until the server ends it, or the connection is found dead.

        The server ends a watch after ``timeoutSeconds`` (in [5, 10) min) with a FIN; if
        the path is blackholed by then, that FIN never arrives and the reflector keeps
        waiting. (Before this fix the watch "ended" on its timer even with the server
        powered off, and the re-list started a fresh tcp_retries2 clock: a legacy
        kube-proxy behind nginx looked dead for 20 min instead of nginx's 10 min
        ``proxy_timeout``.) What ends a hung watch: the HTTP/2 ping (modern), nginx
        ``proxy_timeout`` or HAProxy ``timeout server``/``client`` (they close the session),
        or the kernel's keepalive on the client's own socket when that first hop is the
        blackholed one (a direct connection, or one to an external LB):
        ``KEEPALIVE_IDLE`` x (1 + ``KEEPALIVE_PROBES``) after the last packet received.
        Keepalive probes go every ``KEEPALIVE_IDLE`` of silence and an answered one
        counts as a packet received, so the check runs on that grid. nginx and HAProxy do
        not set keepalive on their upstream sockets by default (``proxy_socket_keepalive
        off``, no ``option srvtcpka``): behind a local LB only the LB's timers apply.
        """
        env, net = self.env, self.net
        length = 300.0 * (1 + float(self.rng.random()))  # minWatchTimeout x [1, 2)
        broken = sess.wait_broken()
        end_at = env.now + length
        src, dst, _epoch = sess.hops[0]
        own_socket_remote = src != dst[0]
        dead_after = self.KEEPALIVE_IDLE * (1 + self.KEEPALIVE_PROBES)
        rx = sess.last_read  # the last packet received on the client's own socket
        while not broken.triggered:
            now = env.now
            state = sess.state()
            if now >= end_at - 1e-9:
                if state == OK:
                    return OK  # the server ended the watch; the reflector starts a new one
                if state == RESET:
                    sess.close("reset", now)
                    break
            if own_socket_remote:
                if net.reachable(src, dst[0]):
                    rx = max(rx, sess.last_read, now)  # a keepalive probe is answered
                    if state == RESET:  # ... with RST: the peer forgot the connection
                        sess.close("reset", now)
                        break
                elif now >= max(rx, sess.last_read) + dead_after - 1e-9:
                    sess.close("tcp keepalive", now)
                    break
                wake = self.KEEPALIVE_IDLE
            else:
                wake = self.KEEPALIVE_RECHECK  # a late FIN once a blackhole heals
            if now < end_at - 1e-9:
                wake = min(wake, end_at - now) if own_socket_remote else end_at - now
            yield broken | env.timeout(wake)
        cause = sess.cause
        lost = {"http2 ping timeout", "tcp_retries2", "tcp keepalive"}
        outcome = TIMEOUT if cause in lost else RESET
        if self.sess is sess:
            self.sess = None
        self.rec.request(self.name, self.host, env.now, env.now, outcome,
                         sess.backend[0] if sess.backend else "", "watch")
        return outcome


class DaemonSetPod(Reflector):
    """A client that runs as a pod on every node: it starts after its kubelet has
    registered the node, 2-10 s into the run."""

    __slots__ = ()

    def __init__(self, *args: Any, rng: np.random.Generator, **kwargs: Any) -> None:
        super().__init__(*args, rng=rng, offset=float(rng.uniform(2.0, 10.0)), **kwargs)


class KubeProxy(DaemonSetPod):
    """kube-proxy: its services reflector (over HTTP/1.1 its endpoints watch is a second
    :class:`Reflector` of the same process, started with it)."""

    __slots__ = ()


class CniAgent(DaemonSetPod):
    """Today's CNI agent as an apiserver client (calico-node with its Kubernetes datastore,
    flannel's ``--kube-subnet-mgr``, cilium): a DaemonSet pod that lists and watches the
    apiserver through client-go, like kube-proxy, on one HTTP/2 connection. Its watches
    keep the node's pod network up to date; while it is cut off the existing routes keep
    working and new pods wait."""

    __slots__ = ()


@builds("kubelet", stage="clients")
def _build_kubelet(m: Model, node: str, d: dict[str, Any]) -> None:
    if d["host"] in m.skip:
        return
    spec, host = m.spec, d["host"]
    k = Kubelet(m.env, m.net, m.rec, m.apis, host, "kubelet", m.dialer_for(node), spec.clients,
                kubelet=spec.kubelet, state=m.state, rng=m.rng["clients"])
    m.add_client(k, d)
    m.nodes.append(host)
    _watch_connections(m, node, d, KUBELET_WATCHES, k.boot)


@builds("kube-proxy", stage="clients")
def _build_kube_proxy(m: Model, node: str, d: dict[str, Any]) -> None:
    if d["host"] in m.skip:
        return
    spec, host = m.spec, d["host"]
    p = KubeProxy(m.env, m.net, m.rec, m.apis, host, "kube-proxy", m.dialer_for(node),
                  spec.clients, rng=m.rng["clients"])
    m.add_client(p, d)
    _watch_connections(m, node, d, KUBE_PROXY_WATCHES[1:], p.offset)


def _watch_connections(m: Model, node: str, d: dict[str, Any], watches: tuple[str, ...],
                       offset: float) -> None:
    """Over HTTP/1.1 (``clients.disable_http2``) each further watch of a client process is
    a :class:`Reflector` on a connection of its own, started with the process."""
    if m.spec.clients.disable_http2:
        m.starters += [Reflector(m.env, m.net, m.rec, m.apis, d["host"], d["component"],
                                 m.dialer_for(node), m.spec.clients, rng=m.rng["clients"],
                                 offset=offset) for _watch in watches]


@builds(*CNI_AGENTS, stage="clients")
def _build_cni_agent(m: Model, node: str, d: dict[str, Any]) -> None:
    if d["host"] in m.skip:
        return
    m.add_client(CniAgent(m.env, m.net, m.rec, m.apis, d["host"], d["component"],
                          m.dialer_for(node), m.spec.clients, rng=m.rng["cni"]), d)
