"""Virtual IPs in front of the external LB: keepalived VRRP and kube-vip (docs/model.md, the VIP).

keepalived 2.2, VRRP v2: the MASTER sends an advert every ``advert_int`` (A); a BACKUP of
priority p declares the master dead ``master_down_interval = 3A + skew`` after the last
advert it heard, ``skew = (256 - p)/256`` s. A master that crashes at ``t`` sent its last
advert at ``t - U(0, A)``, so the highest-priority backup takes the VIP ``3A + skew -
U(0, A)`` after the crash and announces it with gratuitous ARPs (clients follow at once).
A master stopped cleanly (fault ``stop``), or put in FAULT by its track script, sends a
priority-0 advert and drops the VIP at once: the backup takes over ``skew`` later
(``vrrp.c``: "Backup received priority 0 advertisement" sets its timer to the skew).
Instance ``i`` (0-based) has priority ``priority - i``; the first is configured ``state
MASTER``. With ``preempt`` (keepalived's default) a returning higher-priority instance
takes the VIP back when its own master-down timer runs out: ``3A + skew`` after it starts
for a plain instance, ``A + 1/256`` s only for a ``state MASTER`` one in a sync group (a
second move). keepalived runs on the LB host: the VIP moves when the host crashes or
vanishes, or when keepalived dies; when only HAProxy dies, only a ``track_script`` moves it.

Where the clients' packets for the VIP go (:attr:`Vip.arp`) is not who is MASTER
(:attr:`Vip.holder`): a keepalived killed with its kernel up leaves the address on its
interface, so until the new master's gratuitous ARPs the old node still answers: its LB
serves if alive, its kernel refuses (RST) if not. Only a power-off or a cut link makes the
clients' SYNs go unanswered.

kube-vip (kubespray: lease 5 s, renew deadline 3 s, retry 1 s) runs client-go leader
election: the holder renews a Kubernetes lease through its own apiserver every retry
period; when it stops renewing, another control-plane node acquires the lease once it has
expired on that candidate's own clock, at one of its jittered tries: takeover about the
lease duration after the holder stopped, within ``(L - R, L + 4.4 R)``.

After any move the new holder has no connection state: an old connection's next packet
gets RST and the client reconnects.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from hasim.sim.kernel import Environment, Wait
from hasim.sim.model import Model, builds
from hasim.sim.network import OK, RESET, Network, Proc, Session
from hasim.sim.records import Recorder
from hasim.spec.scenario import VipSpec

VIP_PROC: Proc = ("vip", "vip")
TIMEOUT = "timeout"
#: Linux ``TCP_RTO_MIN``: the first retransmission timeout on a LAN (then doubling).
RTO_MIN = 0.2
#: client-go ``leaderelection.JitterFactor`` (kube-vip's acquire loop).
JITTER_FACTOR = 1.2


class Vip:
    """A VIP held by one of several instances; clients dial the holder's target."""

    def __init__(
        self,
        env: Environment,
        net: Network,
        rec: Recorder,
        spec: VipSpec,
        hosts: list[str],
        targets: list[Any],
        rng: np.random.Generator,
        renews_ok: Callable[[str], bool] | None = None,
    ) -> None:
        self.env, self.net, self.rec, self.spec = env, net, rec, spec
        self.hosts = hosts
        #: What a client reaches through instance i: an LB with ``open_session``.
        self.targets = targets
        self.rng = rng
        self.kind = spec.kind
        self.priority = [spec.priority - i for i in range(len(hosts))]
        #: The keepalived MASTER (kube-vip: the lease holder), or None between holders.
        self.holder: int | None = 0
        #: The instance whose interface the clients' packets to the VIP reach: the last to
        #: send gratuitous ARPs while still carrying the address (see the module doc).
        self.arp: int | None = 0
        self.pending = False
        #: keepalived instances stopping cleanly or in FAULT: they sent a priority-0 advert.
        self._priority_zero: set[int] = set()
        #: Instances whose track script is failing (KO), and those it holds in FAULT.
        self.script_ko: set[int] = set()
        self.fault: set[int] = set()
        #: Instances up at the last change: one not in it has just (re)started.
        self._was_up = set(range(len(hosts)))
        #: Instances that lost contact while running (a cut link), see :meth:`_on_change`.
        self._cut_off: set[int] = set()
        #: kube-vip: whether instance host h can renew its lease (its apiserver answers).
        self.renews_ok = renews_ok or (lambda h: True)
        #: (time, from, to, lost_at, takeover_s) for each move
        self.moves: list[tuple[float, str, str, float, float]] = []
        self.agent = "keepalived" if self.kind == "keepalived" else "kube-vip"
        net.add_process(VIP_PROC)
        for h in hosts:
            net.add_process((h, self.agent))
        rec.state(0.0, self.agent, hosts[0], "vip", "vip-backup", "vip-master", "initial holder")
        net.on_change.append(self._on_change)
        #: Failovers waiting for a change (see :meth:`changed`).
        self._waiters: list[Callable[[], None]] = []
        if self.kind == "keepalived" and spec.track_script is not None:
            for i in range(len(hosts)):
                env.process(self._track_script(i))

    def effective_priority(self, i: int) -> int:
        """keepalived's ``effective_priority``: a failing script with a negative weight
        subtracts it; a passing one with a positive weight adds it."""
        w = self.spec.track_script.weight if self.spec.track_script is not None else 0
        ko = i in self.script_ko
        return self.priority[i] + (w if (w < 0 and ko) or (w > 0 and not ko) else 0)

    def _up(self, i: int) -> bool:
        h = self.hosts[i]
        return self._running(i) and i not in self.fault and (
            self.kind != "kube-vip" or self.renews_ok(h))

    def _running(self, i: int) -> bool:
        return self.net.is_alive((self.hosts[i], self.agent))

    def _heard(self, i: int) -> bool:
        """Whether the other running instances hear i's adverts. Behind a cut link they
        do not: a backup takes over while i stays MASTER on its own side, where no client
        follows it any more (:attr:`_cut_off`)."""
        others = [j for j in range(len(self.hosts))
                  if j != i and self._running(j) and j not in self._cut_off]
        return not others or any(self.net.reachable(self.hosts[j], self.hosts[i])
                                 for j in others)

    def stopping(self, procs: set[Proc]) -> None:
        """A fault ``stop`` is about to stop these processes cleanly: a keepalived among
        them sends a priority-0 advert and removes the VIP from its interface."""
        for i, h in enumerate(self.hosts):
            if (h, self.agent) in procs and self.kind == "keepalived":
                self._priority_zero.add(i)

    def _on_change(self) -> None:
        n = len(self.hosts)
        up = {i for i in range(n) if self._up(i)}
        returning = up - self._was_up
        self._was_up = up
        # A stopped or faulted instance that is up again advertises normally.
        self._priority_zero &= {i for i in range(n) if i not in up}
        self._cut_off &= up
        if self.pending:
            return
        holder = self.holder
        if self.kind == "keepalived" and holder is not None and holder in up \
                and not self._heard(holder):
            self._cut_off.add(holder)
        if holder is not None and holder in up and holder not in self._cut_off:
            if self.kind != "keepalived":
                return
            # A master behind a healed cut advertises again: its next advert (within
            # advert_int) makes a lower-priority holder step back, and it steps back
            # itself before a higher one.
            for i in sorted(self._cut_off):
                if self.net.reachable(self.hosts[holder], self.hosts[i]) and (
                        self.effective_priority(i) <= self.effective_priority(holder)
                        or not self.spec.preempt):
                    self._cut_off.discard(i)
            if self.spec.preempt:
                mine = self.effective_priority(holder)
                better = sorted((i for i in up if self.effective_priority(i) > mine and (
                    i not in self._cut_off
                    or self.net.reachable(self.hosts[holder], self.hosts[i]))),
                    key=lambda i: (-self.effective_priority(i), i))
                if better:
                    self.pending = True
                    self.env.process(self._preempt(better[0], better[0] in returning,
                                                   better[0] in self._cut_off))
            return
        self.pending = True
        self.env.process(self._failover(self.env.now))

    def _skew(self, i: int) -> float:
        return (256 - self.effective_priority(i)) / 256

    def _track_script(self, i: int) -> Generator[Wait, Any, None]:
        """``vrrp_script`` ``killall -0 haproxy`` every ``interval`` on instance i's host
        (from a random phase), ``fall`` failures in a row to KO and ``rise`` successes to
        OK (keepalived ``vrrp_track.c``); it runs only while keepalived does."""
        ts = self.spec.track_script
        assert ts is not None
        host = self.hosts[i]
        lb: Proc = (host, "external-lb")
        yield self.env.timeout(float(self.rng.uniform(0, ts.interval)))
        fails = oks = 0
        while True:
            if self.net.is_alive((host, self.agent)):
                if self.net.is_alive(lb):
                    fails, oks = 0, oks + 1
                    if i in self.script_ko and oks >= ts.rise:
                        self.script_ko.discard(i)
                        self.fault.discard(i)
                        self._on_change()
                else:
                    fails, oks = fails + 1, 0
                    if i not in self.script_ko and fails >= ts.fall:
                        self.script_ko.add(i)
                        if ts.weight == 0:
                            # FAULT state: priority-0 advert, VIP removed (vrrp.c
                            # vrrp_state_leave_master: "Entering FAULT STATE").
                            self.fault.add(i)
                            self._priority_zero.add(i)
                        self._on_change()
            else:
                fails = oks = 0  # a restarted keepalived starts its scripts afresh
            yield self.env.timeout(ts.interval)

    def _failover(self, lost_at: float) -> Generator[Wait, Any, None]:
        env, spec = self.env, self.spec
        old = self.holder
        if self.kind == "keepalived" and old is not None and old in self._priority_zero:
            # A priority-0 advert: the VIP leaves the old interface now, and each backup's
            # timer is set to its skew.
            last = lost_at
            self.arp = None
            delays = {i: self._skew(i) for i in range(len(self.hosts))}
        elif self.kind == "keepalived":
            a = spec.advert_int
            last = lost_at - float(self.rng.uniform(0, a))
            delays = {i: 3 * a + self._skew(i) for i in range(len(self.hosts))}
        else:
            r = spec.retry_period
            # The holder renewed every retry period (client-go ``renew()``): its last
            # renewal was up to one retry period before it stopped.
            last = lost_at - float(self.rng.uniform(0, r))
            delays = {i: self._acquire_after(last) - last for i in range(len(self.hosts))}
            if old is not None and self.net.is_alive((self.hosts[old], self.agent)):
                # Alive but unable to renew (its apiserver fails): it keeps answering ARP
                # for the VIP until ``renew()`` gives up, RenewDeadline after its first
                # failed try one retry period after the last renewal; then
                # OnStoppedLeading deletes the VIP (kube-vip ``clusterLeaderElection.go``).
                step_down = last + r + spec.renew_deadline
                if step_down > env.now:
                    yield env.timeout(step_down - env.now)
                if self._up(old):
                    self.pending = False  # renewals work again before the deadline
                    return
        while True:
            able = [i for i in range(len(self.hosts))
                    if i != old and self._up(i) and i not in self._cut_off]
            if not able:
                self.holder = None
                yield self._wait_change()
                if old is not None and self._up(old) and old not in self._cut_off:
                    self._set(old, lost_at, "holder back", old)
                    self.pending = False
                    return
                last = env.now
                continue
            best = min(able, key=lambda i: (delays[i], i))
            at = max(last + delays[best], env.now)
            self.holder = None
            if self.kind == "kube-vip":
                self.arp = None  # kube-vip's ARP responder died with it or stepped down
            yield env.timeout(at - env.now)
            if self._up(best):
                self._set(best, lost_at, "master down timer" if self.kind == "keepalived"
                          else "lease expired", old)
                self.pending = False
                self._on_change()
                return
            last = env.now

    def _try_gap(self) -> float:
        """client-go ``acquire()``: ``wait.JitterUntil(..., RetryPeriod, JitterFactor=1.2,
        sliding)``: tries ``retry_period x (1 + 1.2 U)`` apart."""
        return self.spec.retry_period * (1 + JITTER_FACTOR * float(self.rng.random()))

    def _acquire_after(self, renewed: float) -> float:
        """When a kube-vip candidate acquires a lease last renewed at ``renewed``.

        kube-vip runs client-go ``leaderelection.RunOrDie`` with its lease duration, renew
        deadline and retry period (``pkg/cluster/clusterLeaderElection.go``). A candidate
        judges expiry on its own clock (``isLeaseValid``: ``observedTime + LeaseDuration
        > now``), ``observedTime`` being the try at which it last saw the record change:
        its first try after the renewal (the forward recurrence time of its steady try
        loop: a length-biased gap, a uniform point within it). It acquires at its first
        try at least ``lease_duration`` after that. After a holder dies at ``t`` the
        takeover therefore lies in ``(t + L - R, t + L + 4.4 R)``: before, the model drew
        ``L + U(0, R)`` after the renewal and never exceeded ``t + L + R``.
        """
        r = self.spec.retry_period
        while True:  # length-biased gap by rejection: accept g with probability g / max
            g = self._try_gap()
            if float(self.rng.random()) * r * (1 + JITTER_FACTOR) <= g:
                break
        observed = renewed + g * float(self.rng.random())
        t = observed
        while t < observed + self.spec.lease_duration:
            t += self._try_gap()
        return t

    def _preempt(self, better: int, returning: bool, still_master: bool = False
                 ) -> Generator[Wait, Any, None]:
        """A higher-priority instance takes the VIP back (or over).

        keepalived (``vrrp_scheduler.c`` ``vrrp_init_state``) starts every non-owner
        instance in BACKUP with its master-down timer at ``3 advert_int + skew``; only an
        instance that a sync group holds in BACKUP gets the short ``advert_int + 1/256``
        s when configured ``state MASTER`` (``sync_group``, instance 0 here). In BACKUP
        with preempt it discards the current master's lower-priority adverts
        (``vrrp_state_backup``: "received lower priority advert - discarding") without
        resetting the timer, so it becomes MASTER when the timer runs out and the old
        master, hearing a higher priority, steps back. A backup that was already up (the
        master's priority fell: a track script's negative weight) last reset its timer at
        the last higher-priority advert, up to one ``advert_int`` ago. Before, the model
        took the VIP back ``advert_int + 1/256`` s after the return for every instance 0.
        """
        a = self.spec.advert_int
        if still_master:
            # a master behind a healed cut: the current holder hears its next advert
            delay = float(self.rng.uniform(0, a))
            self._cut_off.discard(better)
        elif returning and better == 0 and self.spec.sync_group:
            delay = a + 1 / 256
        else:
            delay = 3 * a + self._skew(better)
            if not returning:
                delay -= float(self.rng.uniform(0, a))
        back_at = self.env.now
        yield self.env.timeout(max(delay, 0.0))
        self.pending = False
        if self._up(better):
            self._set(better, back_at, "preempt: higher priority is back", self.holder)
        else:
            self._on_change()

    def _wait_change(self) -> simpy.Event:
        ev = self.env.event()

        def fire() -> None:
            if not ev.triggered:
                ev.succeed()
                self.net.on_change.remove(fire)
                if fire in self._waiters:
                    self._waiters.remove(fire)

        self.net.on_change.append(fire)
        self._waiters.append(fire)
        return ev

    def changed(self) -> None:
        """Something the network does not announce changed whether an instance can hold
        the VIP (kube-vip: etcd elected a leader, so renewals through the apiserver work
        again): wake a failover waiting for a change, and re-evaluate."""
        for fire in list(self._waiters):
            fire()
        self._on_change()

    def _set(self, new: int, lost_at: float, cause: str, old: int | None) -> None:
        prev_host = self.hosts[old] if old is not None else "-"
        new_host = self.hosts[new]
        self.moves.append((self.env.now, prev_host, new_host, lost_at, self.env.now - lost_at))
        if old is not None and old != new:
            self.rec.state(self.env.now, self.agent, prev_host, "vip", "vip-master",
                           "vip-backup", cause)
        self.rec.state(self.env.now, self.agent, new_host, "vip", "vip-backup", "vip-master", cause)
        if old != new:
            # A moved VIP: the new holder knows no old connection (RST on their next packet).
            self.net.new_epoch(VIP_PROC)
        self.holder = new
        self.arp = new  # its gratuitous ARPs steer the clients' packets to it
        if old != new:
            self._reset_stalled()

    def _answers(self, client: Proc) -> int | None:
        """The instance whose host a SYN to the VIP reaches now, if any (its LB then
        accepts it, or its kernel refuses it)."""
        i = self.arp
        if i is None or not self.net.reachable(client[0], self.hosts[i]):
            return None
        if self.kind == "kube-vip" and self.net.connect(
                client[0], (self.hosts[i], self.agent)) != OK:
            return None
        return i

    def open_session(self, client: Proc) -> Generator[Wait, Any, Session | str]:
        """Dial the VIP: the holder's LB, or no answer while the VIP is between holders.

        While nobody holds the VIP the SYN goes unanswered and the kernel retransmits it
        (``Network.syn_resends``; classic Linux: initial RTO 1 s, doubling,
        ``tcp_syn_retries`` 6: SYNs at 0, 1, 3, 7, 15, 31, 63 s, failure at 127 s; docs/model.md,
        clients). A retransmitted
        SYN that arrives after the VIP moved reaches the new holder and connects; the
        client's own dial or request timeout may end the attempt first (it interrupts
        this process). Before, the dial waited for the client's timeout even when the VIP
        had moved 3 s after the SYN, and an interrupt by that timeout crashed the run.
        """
        env = self.env
        holder = self._answers(client)
        if holder is None:
            start = env.now
            try:
                for t in self.net.syn_resends:  # the kernel's schedule (network spec)
                    yield env.timeout(start + t - env.now)
                    holder = self._answers(client)
                    if holder is not None:
                        break
                else:
                    # the last SYN's timer runs out: tcp_syn_retries exhausted
                    yield env.timeout(start + self.net.syn_give_up - env.now)
                    return TIMEOUT
            except simpy.Interrupt:
                return TIMEOUT  # the client's own timeout fired first
        got = yield from self.targets[holder].open_session(client)
        if isinstance(got, Session):
            got.add_hop(client[0], VIP_PROC)
            if VIP_PROC not in got.procs:  # unregistered with the others when it closes
                if isinstance(got.procs, set):
                    got.procs.add(VIP_PROC)
                else:
                    got.procs.append(VIP_PROC)
            self.net.register(got)  # idempotent for the hops already registered
        return got

    def _reset_stalled(self) -> None:
        """After a move, a connection with unacknowledged data (a request or ping sent into
        the dead holder) retransmits it, now to the new holder, which answers RST: the
        client learns at its next retransmission, not at its own timeout (Linux RTO:
        ``TCP_RTO_MIN`` 200 ms on a LAN, doubling per retry)."""
        for sess in list(self.net.sessions.get(VIP_PROC, ())):
            if sess.open and sess.unacked_since is not None:
                self.env.process(self._rst_on_retransmit(sess, sess.unacked_since))

    def _rst_on_retransmit(self, sess: Session, since: float
                           ) -> Generator[Wait, Any, None]:
        now = self.env.now
        rto = RTO_MIN
        at = since + rto
        while at < now:
            rto *= 2
            at += rto
        yield self.env.timeout(at - now)
        if sess.open and sess.unacked_since == since and sess.state() == RESET:
            sess.close("reset", self.env.now)


@builds("vip", stage="vip")
def _build_vip(m: Model, node: str, d: dict[str, Any]) -> None:
    spec = m.spec
    behind = list(m.g.successors(node))
    targets = [m.dialer_to(v) for v in behind]
    vspec = spec.balancers.external_haproxy().vip
    apis = m.apis
    vip = Vip(m.env, m.net, m.rec, vspec, [m.g.nodes[v]["host"] for v in behind], targets,
              m.rng["vip"], renews_ok=lambda h: apis.can_write((h, "apiserver")))
    if m.etcd.members:
        # kube-vip renews through the apiserver, so it can renew again when etcd elects a
        # leader, a change the network never announces.
        m.etcd.on_leader_change.append(vip.changed)
    m.entries[node] = m.vip = vip
    m.stop_hooks.append(vip.stopping)
