"""jgan's example programs, run from the repository root as modules.

``python -m examples.unrolled_mog``, ``python -m examples.dcgan --out runs/dcgan``...
Every program runs on one harness (``examples/_harness.py``: flags from a
config dataclass, one resume policy, interrupts, the metrics log); the
mixture-of-Gaussians experiment is importable as ``examples.mog``.
"""
