"""Tests of jgan.augment (DiffAugment).

- each op equals a numpy twin, a Python loop over the batch written in the
  reference's own formulation (translation: pad by one zero pixel and clamp
  the source index into the padding; cutout: clamp the square's indices
  into the image and zero them), non-square images, shifts past the border,
  squares at the corners;
- ``DiffAugment`` equals the twins composed with the parameters it drew
  (recorded through ``draw``), and those parameters lie in the paper's
  ranges and reach both ends of them;
- what holds of the values: translation and cutout stay within
  [min(x, 0), max(x, 0)]; color may leave [−1, 1] but keeps the spread
  (brightness), each pixel's channel mean (saturation) and each image's
  mean (contrast);
- gradients: cutout's is the mask, translation's the indicator of the pixels
  that stay in view, moved back by the shift; the whole policy against
  finite differences (``jax.test_util.check_grads``);
- the identities: a zero shift, a zero-size cutout, zero ratios, an empty
  policy, saturation on one channel;
- keys: the same key repeats the augmentation, another key changes it;
- ``draw``: two halves augmented with a fake two-device ``draw`` equal the
  whole batch with the identity draw; so does ``jax.shard_map`` over two
  devices with ``draw_local``, and ``jax.jit`` on a batch sharded over an
  ``Explicit`` mesh;
- bad inputs raise errors naming the argument;
- hypothesis: translating by (dy, dx) and back restores the interior and
  zeroes the rest.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

from jgan import augment
from jgan._parallel import draw_local

SHAPE = (6, 7, 9, 2)  # batch, height, width, channels: non-square, odd sides


def identity_draw(key, sampler, n):
    return sampler(key, n)


def half_draw(half):
    """A fake device ``half`` of 2: its ``n`` rows of ``sampler(key, 2n)``."""

    def draw(key, sampler, n):
        return sampler(key, 2 * n)[half * n : (half + 1) * n]

    return draw


def recording_draw(record):
    def draw(key, sampler, n):
        value = sampler(key, n)
        record.append(value)
        return value

    return draw


def augment_recording(part, x, key):
    """``part(x)`` with the identity draw, compiled, and the parameters it drew (in draw order)."""

    def run(x, key):
        drawn = []
        return part(x, key=key, draw=recording_draw(drawn)), drawn

    out, drawn = jax.jit(run)(x, key)
    return out, [np.asarray(d) for d in drawn]


def images(seed=0, shape=SHAPE):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ---------------------------------------------------------------------------
# numpy twins: Python loops over the batch, in the reference's formulation.


def np_brightness(x, delta):
    return np.stack([x[b] + delta[b] for b in range(len(x))])


def np_saturation(x, factor):
    out = []
    for b in range(len(x)):
        mean = x[b].mean(axis=-1, keepdims=True)
        out.append((x[b] - mean) * factor[b] + mean)
    return np.stack(out)


def np_contrast(x, factor):
    return np.stack([(x[b] - x[b].mean()) * factor[b] + x[b].mean() for b in range(len(x))])


def np_translate(x, shifts):
    """The reference's gather: pad one zero pixel around, clamp the source index into [0, size + 1]."""
    _, height, width, _ = x.shape
    out = np.zeros_like(x)
    for b in range(len(x)):
        padded = np.pad(x[b], ((1, 1), (1, 1), (0, 0)))
        for i in range(height):
            for j in range(width):
                source_i = np.clip(i - shifts[b, 0] + 1, 0, height + 1)
                source_j = np.clip(j - shifts[b, 1] + 1, 0, width + 1)
                out[b, i, j] = padded[source_i, source_j]
    return out


def np_cutout_mask(shape, centers, size, *, clamp=False):
    """The square's pixels set to zero: those outside the image dropped, or with ``clamp`` moved
    onto the border as the reference does (the same for the centres it draws, see
    ``test_reference_clamping_is_clipping``)."""
    batch, height, width, _ = shape
    size_r, size_c = size
    mask = np.ones((batch, height, width, 1), np.float32)
    for b in range(batch):
        for i in range(size_r):
            for j in range(size_c):
                row = centers[b, 0] - size_r // 2 + i
                col = centers[b, 1] - size_c // 2 + j
                if clamp:
                    row, col = np.clip(row, 0, height - 1), np.clip(col, 0, width - 1)
                elif not (0 <= row < height and 0 <= col < width):
                    continue
                mask[b, row, col] = 0
    return mask


def np_cutout(x, centers, size):
    return x * np_cutout_mask(x.shape, centers, size)


# Shared compiled functions.
translate = jax.jit(augment.translate)
cutout = jax.jit(augment.cutout, static_argnums=2)


@functools.lru_cache(maxsize=None)
def jitted(part):
    """``part(x, key=key, draw=identity_draw)`` compiled once per part."""
    return jax.jit(lambda x, key: part(x, key=key, draw=identity_draw))


# ---------------------------------------------------------------------------
# The ops against their twins.

RNG = np.random.default_rng(1)
SHIFTS = np.array([[0, 0], [1, -2], [-3, 4], [7, 0], [-8, 9], [2, -10]], np.int32)  # past the borders too
CENTERS = np.array([[0, 0], [6, 8], [3, 4], [0, 8], [6, 0], [7, 9]], np.int32)  # corners, and one past them


def test_color_ops_match_twins():
    x = images()
    delta = RNG.uniform(-0.5, 0.5, SHAPE[0]).astype(np.float32)
    saturation = RNG.uniform(0, 2, SHAPE[0]).astype(np.float32)
    contrast = RNG.uniform(0.5, 1.5, SHAPE[0]).astype(np.float32)
    np.testing.assert_allclose(augment.adjust_brightness(x, delta), np_brightness(x, delta), atol=1e-6)
    np.testing.assert_allclose(augment.adjust_saturation(x, saturation), np_saturation(x, saturation), atol=1e-6)
    np.testing.assert_allclose(augment.adjust_contrast(x, contrast), np_contrast(x, contrast), atol=1e-6)


def test_translate_matches_twin():
    x = images()
    out = translate(x, SHIFTS)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, np_translate(x, SHIFTS))
    # The reference's zero padding: a shift of (1, −2) leaves row 0 and the last two columns empty.
    assert np.all(np.asarray(out)[1, 0] == 0) and np.all(np.asarray(out)[1, :, -2:] == 0)
    # Shifts of the whole size or more leave nothing.
    assert np.all(np.asarray(out)[3:] == 0)


@pytest.mark.parametrize("size", [(1, 1), (3, 4), (4, 5), (7, 9), (10, 12)])
def test_cutout_matches_twin(size):
    x = images()
    out = cutout(x, CENTERS, size)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, np_cutout(x, CENTERS, size))


def test_reference_clamping_is_clipping():
    """For every centre the reference draws (0 .. side − (size mod 2)), its clamped indices
    zero exactly the clipped square."""
    for height, size in [(7, 1), (7, 4), (8, 3), (8, 4), (5, 5), (4, 0)]:
        centres = np.array([[c, 0] for c in range(height + 1 - size % 2)], np.int32)
        shape = (len(centres), height, 1, 1)
        np.testing.assert_array_equal(
            np_cutout_mask(shape, centres, (size, 1), clamp=True) if size else np.ones(shape, np.float32),
            np_cutout_mask(shape, centres, (size, 1)),
        )


def test_cutout_square_clipped_at_the_border():
    """A 4x4 square centred on the top-left corner keeps its 2x2 inside quarter."""
    out = np.asarray(augment.cutout(jnp.ones((1, 7, 9, 1)), jnp.array([[0, 0]]), 4))[0, :, :, 0]
    assert out.sum() == 7 * 9 - 4
    assert np.all(out[:2, :2] == 0)


# ---------------------------------------------------------------------------
# DiffAugment: the composition of the twins, with its draws in the paper's ranges.


def diffaugment_twin(x, part, drawn):
    """The twins applied in ``part.policy``'s order to the parameters ``drawn`` (in draw order)."""
    drawn = list(drawn)
    _, height, width, _ = x.shape
    for name in part.policy:
        if name == "color":
            x = np_brightness(x, drawn.pop(0))
            x = np_saturation(x, drawn.pop(0))
            x = np_contrast(x, drawn.pop(0))
        elif name == "translation":
            x = np_translate(x, drawn.pop(0))
        else:
            size = (augment.cutout_size(height, part.cutout_ratio), augment.cutout_size(width, part.cutout_ratio))
            x = np_cutout(x, drawn.pop(0), size)
    assert not drawn
    return x


@pytest.mark.parametrize(
    "part",
    [
        augment.DiffAugment(),
        augment.DiffAugment(("cutout", "translation", "color"), translation_ratio=0.3, cutout_ratio=0.25),
    ],
    ids=["paper", "reordered"],
)
def test_diffaugment_is_the_twins_composed(part):
    x = images(2)
    out, drawn = augment_recording(part, x, jax.random.key(3))
    assert len(drawn) == 5  # brightness, saturation, contrast, shifts, centres
    np.testing.assert_allclose(out, diffaugment_twin(x, part, drawn), atol=1e-5)


def test_diffaugment_draws_in_the_paper_ranges():
    """512 images of 7x9: every parameter in its range, and both ends of the integer ranges reached."""
    x = jnp.zeros((512, 7, 9, 1))
    _, drawn = augment_recording(augment.DiffAugment(), x, jax.random.key(0))
    brightness, saturation, contrast, shifts, centres = drawn
    for values, low, high in [(brightness, -0.5, 0.5), (saturation, 0, 2), (contrast, 0.5, 1.5)]:
        assert values.shape == (512,) and values.min() >= low and values.max() < high
        assert values.min() < low + 0.05 and values.max() > high - 0.05
    # Shifts: int(7/8 + 0.5) = 1 row, int(9/8 + 0.5) = 1 column either way.
    assert shifts.shape == (512, 2)
    assert set(shifts[:, 0]) == {-1, 0, 1} and set(shifts[:, 1]) == {-1, 0, 1}
    # Cutout sides int(3.5 + 0.5) = 4 rows and int(4.5 + 0.5) = 5 columns; centres
    # 0 .. 7 (even side: 0 .. height) and 0 .. 8 (odd side: 0 .. width − 1).
    assert set(centres[:, 0]) == set(range(8)) and set(centres[:, 1]) == set(range(9))
    assert augment.translation_bound(32, 0.125) == 4 and augment.cutout_size(32, 0.5) == 16


# ---------------------------------------------------------------------------
# What holds of the values.


def test_translation_and_cutout_stay_in_range():
    for x in [images(4), images(5) * 0.5 + 0.5]:  # in [−1, 1]; in [0, 1]
        low, high = min(x.min(), 0), max(x.max(), 0)
        part = augment.DiffAugment(("translation", "cutout"))
        for seed in range(3):
            out = np.asarray(jitted(part)(x, jax.random.key(seed)))
            assert out.shape == x.shape and out.min() >= low and out.max() <= high
            # Every value out is 0 or one of the image's own values.
            for b in range(len(x)):
                assert np.all(np.isin(out[b], np.append(x[b], 0)))


def test_color_leaves_the_range_but_keeps_its_invariants():
    x = images(6)
    delta = np.array([0.49, -0.49, 0.1, 0.0, -0.3, 0.2], np.float32)
    bright = np.asarray(augment.adjust_brightness(x, delta))
    np.testing.assert_allclose(np.ptp(bright, axis=(1, 2, 3)), np.ptp(x, axis=(1, 2, 3)), atol=1e-6)
    # The color part can leave [−1, 1] (as in the reference): images near 0.9, over 16 draws.
    out = jitted(augment.DiffAugment(("color",)))(np.full((16, 4, 4, 3), 0.9, np.float32), jax.random.key(0))
    assert float(jnp.max(out)) > 1.0
    factor = np.linspace(0, 1.9, SHAPE[0]).astype(np.float32)
    saturated = np.asarray(augment.adjust_saturation(x, factor))
    np.testing.assert_allclose(saturated.mean(-1), x.mean(-1), atol=1e-6)
    assert np.allclose(saturated[0], x[0].mean(-1, keepdims=True), atol=1e-6)  # s = 0: grey
    contrasted = np.asarray(augment.adjust_contrast(x, factor + 0.5))
    np.testing.assert_allclose(contrasted.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=1e-6)


# ---------------------------------------------------------------------------
# Gradients.


def test_cutout_gradient_is_the_mask():
    x = images(7)
    size = (3, 4)
    grad = jax.grad(lambda x: jnp.sum(augment.cutout(x, CENTERS, size)))(x)
    np.testing.assert_array_equal(grad, np.broadcast_to(np_cutout_mask(x.shape, CENTERS, size), x.shape))


def test_translate_gradient_is_the_shifted_indicator():
    x = images(8)
    _, height, width, _ = x.shape
    grad = np.asarray(jax.grad(lambda x: jnp.sum(translate(x, SHIFTS)))(x))
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    for b in range(len(x)):
        # Pixel (p, q) is seen iff (p + dy, q + dx) is inside the image.
        seen = (rows + SHIFTS[b, 0] >= 0) & (rows + SHIFTS[b, 0] < height)
        seen = seen & (cols + SHIFTS[b, 1] >= 0) & (cols + SHIFTS[b, 1] < width)
        np.testing.assert_array_equal(grad[b], np.broadcast_to(seen[..., None], x.shape[1:]).astype(np.float32))
    # A weighted sum: the weights moved back by the shift (translating by −shift).
    w = images(9)
    grad = jax.grad(lambda x: jnp.sum(w * translate(x, SHIFTS)))(x)
    np.testing.assert_array_equal(grad, np_translate(w, -SHIFTS))


def test_diffaugment_gradient_matches_finite_differences():
    x = images(10, (2, 8, 8, 3))
    key = jax.random.key(11)
    part = augment.DiffAugment()
    w = jnp.asarray(images(12, (2, 8, 8, 3)))
    f = jax.jit(lambda x: jnp.sum(w * part(x, key=key, draw=identity_draw)))
    grad = jax.grad(f)(x)
    assert float(jnp.max(jnp.abs(grad))) > 0.1
    # The policy is linear in x for a given key: the difference quotient is exact up to rounding.
    check_grads(f, (jnp.asarray(x),), order=1, modes=("rev",), eps=1e-2, atol=2e-2, rtol=2e-2)


# ---------------------------------------------------------------------------
# Identities.


def test_identities():
    x = images(13)
    zeros = np.zeros((SHAPE[0], 2), np.int32)
    np.testing.assert_array_equal(translate(x, zeros), x)
    np.testing.assert_array_equal(cutout(x, CENTERS, 0), x)
    np.testing.assert_array_equal(cutout(x, CENTERS, (0, 5)), x)
    key = jax.random.key(0)
    for part in [
        augment.DiffAugment(()),
        augment.DiffAugment(("translation",), translation_ratio=0.0),
        augment.DiffAugment(("cutout",), cutout_ratio=0.0),
    ]:
        np.testing.assert_array_equal(part(x, key=key, draw=identity_draw), x)
    grey = images(14, (4, 5, 5, 1))
    np.testing.assert_array_equal(augment.adjust_saturation(grey, np.array([0.0, 0.5, 1.5, 2.0])), grey)


# ---------------------------------------------------------------------------
# Keys and draws.


def test_same_key_same_augmentation_other_key_differs():
    x = images(15)
    run = jitted(augment.DiffAugment())
    a, b, c = run(x, jax.random.key(1)), run(x, jax.random.key(1)), run(x, jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    for name in augment.POLICIES:  # each op on its own changes with the key too
        run = jitted(augment.DiffAugment((name,)))
        assert not np.array_equal(run(x, jax.random.key(1)), run(x, jax.random.key(2))), name


def test_two_fake_devices_equal_one():
    x = images(16, (8, 8, 8, 3))
    part = augment.DiffAugment()
    key = jax.random.key(17)
    whole = jitted(part)(x, key)
    halves = [
        jax.jit(lambda x, key: part(x, key=key, draw=half_draw(h)))(x[h * 4 : (h + 1) * 4], key) for h in range(2)
    ]
    np.testing.assert_allclose(jnp.concatenate(halves), whole, atol=1e-6)


def test_shard_map_and_sharded_jit_equal_one_device():
    """Two devices: ``shard_map`` with ``draw_local``, and ``jit`` on an ``Explicit`` mesh."""
    x = images(18, (8, 8, 8, 3))
    part = augment.DiffAugment()
    key = jax.random.key(19)
    whole = jitted(part)(x, key)
    mesh = jax.make_mesh((2,), ("batch",), devices=jax.devices()[:2])
    mapped = jax.jit(
        jax.shard_map(
            lambda x, key: part(x, key=key, draw=functools.partial(draw_local, axis_name="batch")),
            mesh=mesh,
            in_specs=(P("batch"), P()),
            out_specs=P("batch"),
        )
    )
    sharded = jax.device_put(x, NamedSharding(mesh, P("batch")))
    np.testing.assert_allclose(mapped(sharded, key), whole, atol=1e-6)
    out = jitted(part)(sharded, key)
    assert out.sharding.spec[0] == "batch"
    np.testing.assert_allclose(out, whole, atol=1e-6)


# ---------------------------------------------------------------------------
# Bad inputs.


def test_policy_forms():
    """A list or the reference's comma-separated string become a tuple (hashable: a static part)."""
    assert augment.DiffAugment(["color", "cutout"]).policy == ("color", "cutout")
    assert augment.DiffAugment("color, cutout").policy == ("color", "cutout")
    assert hash(augment.DiffAugment("color,cutout")) == hash(augment.DiffAugment(("color", "cutout")))
    assert augment.DiffAugment().policy == ("color", "translation", "cutout")


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: augment.DiffAugment(("color", "flip")), ValueError, "policy.*'flip'"),
        (lambda: augment.DiffAugment("color,rotate"), ValueError, "policy.*'rotate'"),
        (lambda: augment.DiffAugment(3), TypeError, "policy"),
        (lambda: augment.DiffAugment(translation_ratio=-0.1), ValueError, "translation_ratio"),
        (lambda: augment.DiffAugment(translation_ratio=1.5), ValueError, "translation_ratio"),
        (lambda: augment.DiffAugment(cutout_ratio=float("nan")), ValueError, "cutout_ratio"),
        (lambda: augment.DiffAugment(cutout_ratio="0.5"), TypeError, "cutout_ratio"),
    ],
)
def test_bad_parts(make, error, match):
    with pytest.raises(error, match=match):
        make()


KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda x: augment.DiffAugment()(x[0], key=KEY, draw=identity_draw), ValueError, "DiffAugment x.*4-D"),
        (lambda x: augment.DiffAugment()(x.astype(np.int32), key=KEY, draw=identity_draw), TypeError, "floating"),
        (lambda x: augment.translate(x[..., 0], SHIFTS), ValueError, "translate x"),
        (lambda x: augment.translate(x, SHIFTS[:, :1]), ValueError, "translate shifts"),
        (lambda x: augment.translate(x, SHIFTS.astype(np.float32)), TypeError, "translate shifts.*integers"),
        (lambda x: augment.cutout(x, CENTERS, -1), ValueError, "cutout size"),
        (lambda x: augment.cutout(x, CENTERS, 2.5), TypeError, "cutout size"),
        (lambda x: augment.cutout(x, CENTERS, (1, 2, 3)), ValueError, "cutout size"),
        (lambda x: augment.cutout(x, CENTERS[:3], 2), ValueError, "cutout centers"),
        (lambda x: augment.adjust_brightness(x, np.zeros(3)), ValueError, "adjust_brightness delta"),
        (lambda x: augment.adjust_contrast(x[0], 1.0), ValueError, "adjust_contrast x"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call(images())


# ---------------------------------------------------------------------------
# Property: translating there and back restores the interior.

SETTINGS = settings(max_examples=20, deadline=None, derandomize=bool(os.environ.get("CI")))


@SETTINGS
@given(dy=st.integers(-8, 8), dx=st.integers(-10, 10))
def test_translation_there_and_back_restores_the_interior(dy, dx):
    x = images(20, (1, 7, 9, 2))
    shift = np.array([[dy, dx]], np.int32)
    back = np.asarray(translate(translate(x, shift), -shift))
    rows, cols = np.arange(7)[:, None], np.arange(9)[None, :]
    interior = (0 <= rows + dy) & (rows + dy < 7) & (0 <= cols + dx) & (cols + dx < 9)
    np.testing.assert_array_equal(back[0][interior], x[0][interior])
    assert np.all(back[0][~interior] == 0)
