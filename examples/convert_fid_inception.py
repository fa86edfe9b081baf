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

import argparse
import math
import pathlib
import sys
from collections.abc import Sequence

import jax
from flax import traverse_util

from jgan import models


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pth", type=pathlib.Path, help="the PyTorch state_dict of the FID Inception network")
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=None,
        help="the .npz to write, or a directory (default: the input with the suffix .npz)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> pathlib.Path:
    """Converts, re-reads the output to check it, and returns its path."""
    args = _parser().parse_args(argv)
    out = args.out
    if out is None:
        out = args.pth.with_suffix(".npz")
    elif out.is_dir():
        out = out / models.FID_WEIGHTS_NATIVE_FILENAME
    try:
        written = models.convert_fid_inception_weights(args.pth, out)
        variables = models.load_fid_inception(written)
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    leaves = jax.tree.leaves(variables)
    flat = traverse_util.flatten_dict(variables)
    n_params = sum(math.prod(v.shape) for k, v in flat.items() if k[0] == "params")
    print(f"wrote {written}: {len(leaves)} arrays, {n_params:,} parameters, {written.stat().st_size / 2**20:.1f} MiB")
    return written


if __name__ == "__main__":
    main()
