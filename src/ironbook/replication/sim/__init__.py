"""The deterministic simulator: the real protocol code on virtual time,
against in-memory engines with seeded faults."""

from ironbook.replication.sim.run import Mutation, SimOptions, SimResult, SimTiming, run_seed

__all__ = ["Mutation", "SimOptions", "SimResult", "SimTiming", "run_seed"]
