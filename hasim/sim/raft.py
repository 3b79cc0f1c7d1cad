"""One etcd member's raft timers and votes, as etcd 3.4's ``raft/raft.go`` keeps them.

What decides how long a leader election takes, and why some take more than one term
(docs/model.md, etcd):

- Time runs in ticks of one ``heartbeat_interval`` H, on each member's own ticker, whose
  phase is set when the member starts. ``electionElapsed`` counts the member's ticks since
  it last heard from a leader (or granted a vote, or changed term); the member campaigns at
  the tick where it reaches ``randomizedElectionTimeout``, a whole number of ticks drawn
  from [E/H, 2E/H) (``electionTimeout + rand.Intn(electionTimeout)``) whenever the member
  changes term or state (``reset``).
- CheckQuorum is on in etcd: a member that knows a leader and heard from it less than
  E/H ticks ago ignores a vote request ("lease is not expired"). The first follower to time
  out can fire while the other is one tick short of E/H: its request is ignored, and
  without pre-vote the other follower then campaigns in the same term, is refused (the
  first one voted for itself) and both wait a fresh timeout: a second term.
- Pre-vote (``--pre-vote``): a member asks first whether it could win, without raising its
  term or drawing a new timeout; an ignored pre-vote costs no term, so the second follower
  wins at its own timeout.

hasim evaluates these rules only at the instants a member campaigns, not at every tick.
Messages arrive at once (a LAN round trip is three orders below a tick); the winner leads
one round trip after its request (two with pre-vote).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Floating slack when a time falls exactly on a tick (a member's own campaign does).
_EPS = 1e-9


@dataclass(slots=True)
class RaftMember:
    """What raft keeps per member that matters to an election."""

    #: The member's ticker: its ticks fall at ``phase + k * H``.
    phase: float
    term: int
    #: The term this member last voted in (itself included, as a candidate).
    voted: int
    #: Whether it knows a leader (raft's ``r.lead != None``): CheckQuorum's lease applies.
    lead: bool
    #: When ``electionElapsed`` was last set to 0.
    reset: float
    #: ``randomizedElectionTimeout``, in ticks.
    timeout_ticks: int
    #: The tick at which ``electionElapsed`` reaches ``timeout_ticks``: it campaigns.
    fire: float = 0.0


class RaftTimers:
    """Ticks and timeouts of one cluster's members (``heartbeat_interval`` H and
    ``election_timeout`` E, as etcd turns them into ``ElectionTicks = E / H``)."""

    def __init__(self, heartbeat_interval: float, election_timeout: float,
                 rng: np.random.Generator) -> None:
        self.h = heartbeat_interval
        # etcd's config: ElectionTicks = int(ElectionMs / TickMs).
        self.election_ticks = max(1, int(election_timeout / heartbeat_interval + _EPS))
        self.rng = rng

    def phase(self) -> float:
        """A ticker started at a random instant."""
        return float(self.rng.uniform(0.0, self.h))

    def draw(self) -> int:
        """``randomizedElectionTimeout = electionTimeout + rand.Intn(electionTimeout)``."""
        n = self.election_ticks
        return n + int(self.rng.integers(n))

    def ticks(self, phase: float, since: float, until: float) -> int:
        """How many ticks of a ticker at ``phase`` fall in (since, until]."""
        h = self.h
        return math.floor((until - phase) / h + _EPS) - math.floor((since - phase) / h + _EPS)

    def tick_from(self, phase: float, at: float) -> float:
        """The first tick at or after ``at``."""
        h = self.h
        return phase + math.ceil((at - phase) / h - _EPS) * h

    def last_tick(self, phase: float, at: float) -> float:
        """The latest tick at or before ``at`` (a leader's last heartbeat)."""
        h = self.h
        return phase + math.floor((at - phase) / h + _EPS) * h

    def restart_timer(self, m: RaftMember, at: float, fresh: bool = True) -> None:
        """raft's ``reset`` at ``at``: ``electionElapsed = 0`` and (unless ``fresh`` is
        False, as for a pre-candidate) a new randomized timeout; ``fire`` follows."""
        m.reset = at
        if fresh:
            m.timeout_ticks = self.draw()
        h = self.h
        first = m.phase + (math.floor((at - m.phase) / h + _EPS) + 1) * h
        m.fire = first + (m.timeout_ticks - 1) * h

    def in_lease(self, m: RaftMember, at: float) -> bool:
        """CheckQuorum: ``r.lead != None && r.electionElapsed < r.electionTimeout``."""
        return m.lead and self.ticks(m.phase, m.reset, at) < self.election_ticks


def pre_vote(timers: RaftTimers, c: RaftMember, peers: list[RaftMember], at: float
             ) -> tuple[int, int]:
    """``c`` becomes a pre-candidate at ``at`` and asks ``peers``: (grants, counting its
    own, and the highest term a peer answered with). No receiver changes state."""
    c.lead = False
    timers.restart_timer(c, at, fresh=False)  # becomePreCandidate: no new timeout
    grants, higher = 1, c.term
    for v in peers:
        if timers.in_lease(v, at):
            continue  # ignored
        if v.term > c.term:  # MsgPreVote for term + 1 is refused by a member at term + 1
            higher = max(higher, v.term)
            continue
        grants += 1
    return grants, higher


def vote(timers: RaftTimers, c: RaftMember, peers: list[RaftMember], at: float) -> int:
    """``c`` becomes a candidate at ``at`` (a new term, its own vote, a new timeout) and
    asks ``peers``; returns the grants, its own counted."""
    c.term += 1
    c.voted = c.term
    c.lead = False
    timers.restart_timer(c, at)
    grants = 1
    for v in peers:
        if timers.in_lease(v, at):
            continue  # ignored: it does not even learn the term
        if v.term > c.term:
            continue  # a request from a stale term is dropped
        if v.term < c.term:  # becomeFollower(term, None): new term, timer reset
            v.term = c.term
            v.lead = False
            timers.restart_timer(v, at)
        if v.voted != c.term and not v.lead:  # one vote per term
            v.voted = c.term
            timers.restart_timer(v, at, fresh=False)  # a real vote zeroes electionElapsed
            grants += 1
    return grants


def adopt(timers: RaftTimers, c: RaftMember, term: int, at: float) -> None:
    """``c`` learns of a higher term (a refused pre-vote): it follows it, with no leader."""
    c.term = term
    c.lead = False
    timers.restart_timer(c, at)
