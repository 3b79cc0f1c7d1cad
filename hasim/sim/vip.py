"""Virtual IPs in front of the external LB: keepalived VRRP and kube-vip (MODEL.md §2.3).

keepalived 2.2, VRRP v2: the MASTER sends an advert every ``advert_int`` (A); a BACKUP of
priority p declares the master dead ``master_down_interval = 3A + skew`` after the last
advert it heard, ``skew = (256 - p)/256`` s. A master that crashes at ``t`` sent its last
advert at ``t - U(0, A)``, so the highest-priority backup takes the VIP ``3A + skew -
U(0, A)`` after the crash and announces it with gratuitous ARPs (clients follow at once).
Instance ``i`` (0-based) has priority ``priority - i``; the first starts as MASTER. With
``preempt`` (keepalived's default) a returning higher-priority instance takes the VIP
back on the next advert it hears (a second move). keepalived runs on the LB host: the
VIP moves when the host crashes or vanishes, not when only HAProxy dies (no track script).

kube-vip (kubespray: lease 5 s, renew deadline 3 s, retry 1 s): the holder renews a
Kubernetes lease through its own apiserver; when it stops renewing, another control-plane
node acquires the lease once it has expired, on its next retry: takeover about the lease
duration after the holder's last renewal.

After any move the new holder has no connection state: an old connection's next packet
gets RST and the client reconnects.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from hasim.scenario import VipSpec
from hasim.sim.network import OK, Network, Proc, Session
from hasim.sim.records import Recorder

VIP_PROC: Proc = ("vip", "vip")
TIMEOUT = "timeout"


class Vip:
    """A VIP held by one of several instances; clients dial the holder's target."""

    def __init__(
        self,
        env: simpy.Environment,
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
        self.holder: int | None = 0
        self.pending = False
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

    def _up(self, i: int) -> bool:
        h = self.hosts[i]
        return self.net.is_alive((h, self.agent)) and (
            self.kind != "kube-vip" or self.renews_ok(h)
        )

    def _on_change(self) -> None:
        if self.pending:
            return
        holder = self.holder
        if holder is not None and self._up(holder):
            if self.kind == "keepalived" and self.spec.preempt:
                better = [i for i in range(len(self.hosts)) if i < holder and self._up(i)]
                if better:
                    self.pending = True
                    self.env.process(self._preempt(better[0]))
            return
        self.pending = True
        self.env.process(self._failover(self.env.now))

    def _failover(self, lost_at: float) -> Generator[simpy.Event, Any, None]:
        env, spec = self.env, self.spec
        old = self.holder
        if self.kind == "keepalived":
            a = spec.advert_int
            last = lost_at - float(self.rng.uniform(0, a))
            delays = {i: 3 * a + (256 - self.priority[i]) / 256 for i in range(len(self.hosts))}
        else:
            r = spec.retry_period
            last = lost_at - float(self.rng.uniform(0, r))
            # each candidate retries every r with its own phase; it acquires on its first
            # retry after the lease expired.
            delays = {i: spec.lease_duration + float(self.rng.uniform(0, r))
                      for i in range(len(self.hosts))}
        while True:
            able = [i for i in range(len(self.hosts)) if i != old and self._up(i)]
            if not able:
                self.holder = None
                yield self._wait_change()
                if old is not None and self._up(old):
                    self._set(old, lost_at, "holder back", old)
                    self.pending = False
                    return
                last = env.now
                continue
            best = min(able, key=lambda i: (delays[i], i))
            at = max(last + delays[best], env.now)
            self.holder = None  # while nobody answers ARP for the VIP, packets go nowhere
            yield env.timeout(at - env.now)
            if self._up(best):
                self._set(best, lost_at, "master down timer" if self.kind == "keepalived"
                          else "lease expired", old)
                self.pending = False
                self._on_change()
                return
            last = env.now

    def _preempt(self, better: int) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(float(self.rng.uniform(0, self.spec.advert_int)))
        self.pending = False
        if self._up(better):
            self._set(better, self.env.now, "preempt: higher priority is back", self.holder)

    def _wait_change(self) -> simpy.Event:
        ev = self.env.event()

        def fire() -> None:
            if not ev.triggered:
                ev.succeed()
                self.net.on_change.remove(fire)

        self.net.on_change.append(fire)
        return ev

    def _set(self, new: int, lost_at: float, cause: str, old: int | None) -> None:
        prev_host = self.hosts[old] if old is not None else "-"
        new_host = self.hosts[new]
        self.moves.append((self.env.now, prev_host, new_host, lost_at, self.env.now - lost_at))
        if old is not None and old != new:
            self.rec.state(self.env.now, self.agent, prev_host, "vip", "vip-master", "vip-backup", cause)
        self.rec.state(self.env.now, self.agent, new_host, "vip", "vip-backup", "vip-master", cause)
        if old != new:
            # A moved VIP: the new holder knows no old connection (RST on their next packet).
            self.net.epoch[VIP_PROC] = self.net.epoch.get(VIP_PROC, 0) + 1
        self.holder = new

    def open_session(self, client: Proc) -> Generator[simpy.Event, Any, Session | str]:
        """Dial the VIP: the holder's LB, or no answer while the VIP is between holders."""
        holder = self.holder
        if holder is None or self.net.connect(client[0], (self.hosts[holder], self.agent)) != OK:
            yield self.env.timeout(1e9)  # SYNs into the void: the client's timeout ends this
            return TIMEOUT
        got = yield from self.targets[holder].open_session(client)
        if isinstance(got, Session):
            got.hops.insert(0, (client[0], VIP_PROC, self.net.epoch.get(VIP_PROC, 0)))
        return got  # type: ignore[no-any-return]
