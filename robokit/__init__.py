"""robokit: the imitation-learning loop on a Franka arm (hardware, record, train, deploy)."""

__version__ = "0.1.0"
