"""The simulated city of Dongguan: realistic sensor readings with scripted
incidents and ground truth, for demos, tests and load tests (``cityops simulate``).

The generator is pure: the same topology, seed and options (with ``start_ms``
set) give byte-identical messages. See ``streams.sim.engine`` for how rate,
speed and reporting periods relate.
"""

from streams.sim.engine import SimOptions, Simulation, generate, ground_truth
from streams.sim.messages import SimMessage
from streams.sim.runner import SimSummary, run, simulate

__all__ = ["SimMessage", "SimOptions", "SimSummary", "Simulation", "generate", "ground_truth", "run", "simulate"]
