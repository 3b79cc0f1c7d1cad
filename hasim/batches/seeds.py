"""The seed of each run of a batch: common random numbers across HA modes and sweep points.

A batch runs every scenario x sweep point x replication. The seed handed to
:func:`hasim.simulate` depends on the scenario's base ``seed`` and the replication index
ONLY::

    seed(base, r) = SeedSequence(entropy=base, spawn_key=(r,)).generate_state(1, uint64) >> 1

which is the state of ``SeedSequence(base).spawn(r + 1)[r]``: the r-th independent child
stream of the base seed. It does not depend on the sweep point, the scenario's name, the
order the runs are scheduled in, nor the process or machine that runs them. So

- the HA modes compared in one replication (scenario files with the same base ``seed``)
  see the same random numbers: the same client phases, the same random fault times
  (common random numbers, which make the difference between two modes far less noisy
  than either mode alone);
- a sweep point sees the same random numbers as its neighbours, so a curve over a swept
  knob is smooth rather than jittered by sampling;
- replications are independent streams (SeedSequence's spawn guarantees), so a Student t
  interval over replications is sound.

The engine then spawns one stream per purpose (arrivals, faults, checks...) from this
seed (``hasim.sim.engine.streams``). The seed is stored in ``runs.parquet``: any run can
be replayed alone with ``hasim.simulate(scenario_with_its_overrides, seed=...)``.
"""

from __future__ import annotations

import numpy as np


def run_seed(base_seed: int, replication: int) -> int:
    """The seed of replication ``replication`` of a scenario whose ``seed`` is
    ``base_seed`` (a non-negative int below 2**63, so it fits an int64 column)."""
    if base_seed < 0 or replication < 0:
        raise ValueError("seeds and replication indices are non-negative")
    ss = np.random.SeedSequence(entropy=base_seed, spawn_key=(replication,))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
