"""Converts pytorch-fid's Inception weights (.pth) into jgan's native .npz.

The FID Inception weights are distributed as a PyTorch state_dict,
``pt_inception-2015-12-05-6726825d.pth``. jgan reads it without torch, so
this conversion is optional: ``jgan.models.load_fid_inception`` accepts the
``.pth`` directly. The ``.npz`` loads faster (no unpickling, no key mapping)
and needs nothing but numpy. Nothing is downloaded: fetch the file first, e.g.

    curl -LO https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

Usage::

    python -m examples.convert_fid_inception pt_inception-2015-12-05-6726825d.pth
    python -m examples.convert_fid_inception weights.pth --out ~/.cache/jgan/

The default output is the input with the suffix ``.npz``; an ``--out`` that
is a directory receives ``pt_inception-2015-12-05-6726825d.npz``, the name
``load_fid_inception(cache_dir=...)`` looks for.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Sequence

import jax
from flax import traverse_util

from examples import _harness as harness
from examples._harness import option
from jgan import models


@dataclasses.dataclass(frozen=True)
class Config:
    """The converter's arguments."""

    pth: str = option("", "the PyTorch state_dict of the FID Inception network (.pth)", positional=True)
    out: str | None = option(
        None, "the .npz to write, or a directory to write pt_inception-2015-12-05-6726825d.npz into"
        " (none: the input with the suffix .npz)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> pathlib.Path:
    """Converts, re-reads the output to check it, and returns its path."""

    def program(config, args, stop):
        pth = pathlib.Path(config.pth)
        out = pth.with_suffix(".npz") if config.out is None else pathlib.Path(config.out)
        if out.is_dir():
            out = out / models.FID_WEIGHTS_NATIVE_FILENAME
        written = models.convert_fid_inception_weights(pth, out)
        variables = models.load_fid_inception(written)
        leaves = jax.tree.leaves(variables)
        flat = traverse_util.flatten_dict(variables)
        n_params = sum(math.prod(v.shape) for k, v in flat.items() if k[0] == "params")
        print(f"wrote {written}: {len(leaves)} arrays, {n_params:,} parameters, {written.stat().st_size / 2**20:.1f} MiB")
        return written

    return harness.main(
        Config, program, argv=argv, doc=__doc__, prog="python -m examples.convert_fid_inception",
        out=None, resume=False, quiet=False,
    )  # fmt: skip


if __name__ == "__main__":
    main()
