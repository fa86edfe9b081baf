"""The table benchmarks' cells: where a result lives, how it is read back, how it is printed.

``benchmarks.mog_table`` and ``benchmarks.stacked_table`` save each (dataset
or protocol, row) cell under ``--out/results/`` as soon as it is done and
rebuild their tables from every cell present.
"""

from __future__ import annotations

import json
import os

import numpy as np


def result_path(out: str, group: str, row: str, suffix: str = ".json") -> str:
    """The file of one cell: ``out/results/<group>__<row><suffix>``."""
    return os.path.join(out, "results", f"{group}__{row}{suffix}")


def load_result(path: str) -> dict | None:
    """A saved cell, or ``None`` when there is none."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def mean_se(values) -> str:
    """``"mean ± standard error"`` over seeds (``nan`` for the error of one seed)."""
    values = np.asarray(values, float)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{values.mean():.2f} ± {se:.2f}"


def reusable(old: dict | None, fields: dict, seeds: int) -> bool:
    """Whether a saved cell ``old`` was computed with these training ``fields`` and ``seeds`` seeds."""
    if old is None or old.get("seeds") != seeds:
        return False
    return {k: old["config"].get(k) for k in fields} == fields
