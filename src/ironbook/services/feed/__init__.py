"""Feed processes: the simulated provider, the ingester and the settlement service."""
