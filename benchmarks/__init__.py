"""jgan's benchmarks, run from the repository root as modules.

``python -m benchmarks.unroll_k``, ``python -m benchmarks.mog_table``,
``python -m benchmarks.metrics``; they import the examples' experiment
modules (``examples.mog``) as modules.
"""
