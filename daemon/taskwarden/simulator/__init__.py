"""A Digital River / Elastic Path API simulator for tests, the demo and benchmarks.

It is a real HTTP server on loopback: the client under test goes through real sockets,
real status codes and real faults (rate limits, 5xx, slow answers, bad JSON, dropped
connections), injected through the control interface under ``/_sim/``.
"""

from taskwarden.simulator.server import Simulator, running_simulator

__all__ = ["Simulator", "running_simulator"]
