"""Chaos testing of a real local cluster: a recorded client workload, a
seeded fault schedule, and a checker that judges the history against the log."""
