"""Odds feed adapters: typed provider messages, the provider interface, the
built-in simulator and the JetStream stream that carries a producer's feed."""
