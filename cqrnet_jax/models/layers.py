"""Building blocks of the de-blocking network (RNAN's, plus the paper's multi-scale dilated convs).

All blocks take and return NHWC float arrays and work at any spatial size: the stride-2 mask branch
pads odd sizes, the windowed non-local block pads to whole windows (anchored at the top-left corner,
so a tile whose origin is a multiple of the window sees the same windows as the full image) and
masks the padding out of its keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

# PyTorch's default conv init (uniform, variance 1/(3 fan_in)), which RNAN/EDSR train with: Flax's
# lecun_normal is 3x the variance and blows up the un-normalised residual stack at initialisation.
torch_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
ATTENTION = ("chunked", "xla", "cudnn")  # AttentionSettings.implementation


def conv3x3(
    features: int, name: str, dilation: int = 1, strides: int = 1, dtype: Any = None
) -> nn.Conv:
    """3x3 conv (PyTorch init); `dtype` is the compute dtype, parameters stay float32."""
    return nn.Conv(
        features,
        (3, 3),
        strides=strides,
        padding=dilation,
        kernel_dilation=dilation,
        kernel_init=torch_init,
        dtype=dtype,
        name=name,
    )


def as_nhwc(x):
    """(N, H, W) or (N, H, W, 1) -> (float32 (N, H, W, 1), whether to squeeze the output back)."""
    squeeze = x.ndim == 3
    return (x[..., None] if squeeze else x).astype(jnp.float32), squeeze


def pad_to_multiple(x, multiple: int):
    """Reflect-pads H and W (bottom/right) to multiples of `multiple`; returns (padded, (H, W))."""
    h, w = x.shape[1:3]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if h > ph and w > pw else "edge"
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode=mode)
    return x, (h, w)


class ResBlock(nn.Module):
    """conv-ReLU-conv plus the identity (RNAN/EDSR residual block, no BatchNorm)."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        y = nn.relu(conv3x3(self.features, "conv0", dtype=self.dtype)(x))
        return x + conv3x3(self.features, "conv1", dtype=self.dtype)(y)


class MultiScaleDilatedConv(nn.Module):
    """Parallel 3x3 convs with the given dilations, each followed by ReLU, concatenated and fused
    by a 1x1 conv: the paper's "DC" unit, in the place of the 3x3 conv that ends an RNAN group.

    The w/o-DC ablation keeps the same unit with dilations (1, 1, 1), so the two differ only in
    dilation, not in parameters (the paper: "dilated convolutions bring no extra parameters").
    The fusion is zero-initialised: each group starts as the identity, so the deep un-normalised
    stack starts as its long skip (input = output) instead of blowing up.
    """

    features: int
    dilations: Sequence[int]
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        branches = [
            nn.relu(conv3x3(self.features, f"dilated{i}", dilation=d, dtype=self.dtype)(x))
            for i, d in enumerate(self.dilations)
        ]
        fuse = nn.Conv(
            self.features,
            (1, 1),
            kernel_init=nn.initializers.zeros,
            dtype=self.dtype,
            name="fuse",
        )
        return fuse(jnp.concatenate(branches, axis=-1))


@dataclasses.dataclass(frozen=True)
class AttentionSettings:
    """The windowed non-local attention's settings: built once from a config's `model`
    (`models.build.attention_settings`, defaults in `config_base.deblock_model_defaults`) and
    handed down whole, DeblockNet -> AttentionGroup -> MaskBranch -> WindowedNonLocal."""

    inner: int  # theta / phi / g width (model.nl_inner; RNAN: features // 2)
    window: int  # side of the square windows attended within (model.nl_window)
    subsample: int  # keys and values max-pooled by this factor, 1: RNAN's (model.nl_subsample)
    chunk: int  # windows attended at once by "chunked": memory ~ chunk * window^4 (model.nl_chunk)
    # "chunked": our einsum softmax, `chunk` windows at a time; "xla" / "cudnn":
    # jax.nn.dot_product_attention with that implementation (model.nl_attention)
    implementation: str


class WindowedNonLocal(nn.Module):
    """Embedded-Gaussian non-local block (z = W·y + x, W zero-initialised) within square windows.

    RNAN attends over the whole (training) patch; full-image attention costs O((HW)^2), so here
    attention runs inside `window`-sized windows. With `window` = the training patch size, training
    is exactly RNAN's; at test time memory is bounded and results do not depend on tiling.
    Padding is never attended to: the reflect-padding to whole windows, and with `valid` (int
    (N, 2), each image's real (height, width) from the top-left, e.g. on an evaluation canvas)
    everything outside it. Max-pooled keys pool real pixels only; a cell with none is masked.
    """

    attention: AttentionSettings
    dtype: Any = None

    @nn.compact
    def __call__(self, x, valid=None):
        n, h, w, c = x.shape
        how = self.attention
        xp, _ = pad_to_multiple(x, how.window)
        hp, wp, k = xp.shape[1], xp.shape[2], how.window
        tokens = _to_windows(xp, k)  # (N * windows, k * k, C)
        key_valid = _real_pixels(valid, n, h, w, hp, wp)  # None: every key is real
        if key_valid is not None:
            key_valid = _to_windows(key_valid[..., None], k)[..., 0]
        dense = dict(kernel_init=torch_init, dtype=self.dtype)
        theta = nn.Dense(how.inner, name="theta", **dense)(tokens)
        phi = nn.Dense(how.inner, name="phi", **dense)(tokens)
        g = nn.Dense(how.inner, name="g", **dense)(tokens)
        if how.subsample > 1:  # Wang et al.'s trick: keys/values max-pooled, 4x cheaper at 2
            phi, g = (_pool_tokens(t, k, how.subsample, key_valid) for t in (phi, g))
            if key_valid is not None:
                key_valid = _pool_tokens(key_valid[..., None], k, how.subsample)[..., 0]
        if how.implementation == "chunked":
            y = _chunked_attention(theta, phi, g, how.chunk, key_valid)
        elif how.implementation in ("xla", "cudnn"):
            mask = None
            if key_valid is not None:  # (B, heads, queries, keys); cuDNN wants every query
                mask = key_valid[:, None, None, :]
                if how.implementation == "cudnn":
                    mask = jnp.broadcast_to(mask, (mask.shape[0], 1, theta.shape[1], mask.shape[3]))
            # one head; embedded Gaussian = softmax(theta phi^T) with no 1/sqrt(d) scale
            y = jax.nn.dot_product_attention(
                theta[:, :, None],
                phi[:, :, None],
                g[:, :, None],
                mask=mask,
                scale=1.0,
                implementation=how.implementation,
            )[:, :, 0]
        else:
            raise ValueError(f"attention: {', '.join(ATTENTION)}, not {how.implementation!r}")
        y = nn.Dense(c, kernel_init=nn.initializers.zeros, dtype=self.dtype, name="out")(y)
        y = y.reshape(n, hp // k, wp // k, k, k, c).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(n, hp, wp, c)[:, :h, :w]
        return x + y


def _to_windows(x, k: int):
    """(N, H, W, C) with H, W multiples of k -> (N * windows, k * k, C), windows row-major."""
    n, hp, wp, c = x.shape
    x = x.reshape(n, hp // k, k, wp // k, k, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, k * k, c)


def _real_pixels(valid, n, h, w, hp: int, wp: int):
    """Boolean (N, hp, wp): the pixels of the padded input that are real, or None when all are.

    `valid` None: the input's own (h, w), a constant (nothing to mask when no window padding was
    needed: training's exact windows take the unmasked path). Else a traced int (N, 2) clipped to
    (h, w), so that one program serves every extent."""
    if valid is None:
        if hp == h and wp == w:
            return None
        rows, cols = np.arange(hp)[None] < h, np.arange(wp)[None] < w
        return jnp.broadcast_to(rows[:, :, None] & cols[:, None, :], (n, hp, wp))
    valid = jnp.minimum(jnp.asarray(valid, jnp.int32), jnp.array([h, w], jnp.int32))
    rows = jnp.arange(hp)[None] < valid[:, :1]
    cols = jnp.arange(wp)[None] < valid[:, 1:]
    return rows[:, :, None] & cols[:, None, :]


def _pool_tokens(tokens, window: int, factor: int, real=None):
    """(B, k*k, C) window tokens -> (B, (k/f)^2, C) by f x f max-pooling; with `real` (B, k*k)
    booleans, over the real pixels only (0 for a cell with none; the caller masks it)."""
    b, _, c = tokens.shape
    r = window // factor
    if real is not None:
        lowest = jnp.finfo(tokens.dtype).min
        tokens = jnp.where(real[..., None], tokens, lowest)
    t = tokens.reshape(b, r, factor, r, factor, c).max(axis=(2, 4)).reshape(b, r * r, c)
    if real is not None:
        cell = _pool_tokens(real[..., None], window, factor)[..., 0]
        t = jnp.where(cell[..., None], t, jnp.zeros((), t.dtype))
    return t


def _attention(theta, phi, g, key_valid=None):
    """Softmax attention; the logits, softmax and normalisation in float32 whatever the compute
    dtype. Keys where `key_valid` (B, keys) is False get a logit of -1e30: weight 0, unless every
    key of a query is masked (a window of pure padding), which then averages them all instead of
    NaN.

    Formulated for XLA:CPU, where it beats `softmax` then a product (benchmarks/attention.py,
    experiments/results/attention.json):
    the key mask rides the logits product as one more channel (theta 1, phi 0 or -1e30) instead
    of a select over the (queries x keys) logits, and the softmax's normalisation is deferred
    to the (queries x C) output, its denominator coming out of the value product as a column of
    ones appended to g: the only pass over the logits outside the two products is exp(l - max).
    """
    if key_valid is not None:
        ones = jnp.ones(theta.shape[:-1] + (1,), theta.dtype)
        bias = jnp.where(key_valid, 0.0, -1e30).astype(phi.dtype)[..., None]
        theta = jnp.concatenate([theta, ones], axis=-1)
        phi = jnp.concatenate([phi, bias], axis=-1)
    logits = jnp.einsum("bqc,bkc->bqk", theta, phi, preferred_element_type=jnp.float32)
    top = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))  # cancels analytically
    weights = jnp.exp(logits - top).astype(g.dtype)
    g1 = jnp.concatenate([g, jnp.ones(g.shape[:-1] + (1,), g.dtype)], axis=-1)
    out = jnp.einsum("bqk,bkc->bqc", weights, g1, preferred_element_type=jnp.float32)
    return (out[..., :-1] / out[..., -1:]).astype(g.dtype)


def _chunked_attention(theta, phi, g, chunk: int, key_valid=None):
    """Softmax attention per window, `chunk` windows at a time (a sequential map beyond that)."""
    b = theta.shape[0]
    # A symbolic window count (jax.export with a symbolic size) always takes the chunked path:
    # `b <= chunk` cannot be decided for it, and an explicit chunk count keeps reshapes exact.
    if not jax.export.is_symbolic_dim(b) and b <= chunk:
        return _attention(theta, phi, g, key_valid)
    n = -(-b // chunk)

    def split(t):
        t = jnp.pad(t, ((0, n * chunk - b),) + ((0, 0),) * (t.ndim - 1))
        return t.reshape((n, chunk) + t.shape[1:])

    args = (theta, phi, g) if key_valid is None else (theta, phi, g, key_valid)
    out = jax.lax.map(lambda a: _attention(*a), tuple(split(t) for t in args))
    return out.reshape((n * chunk,) + out.shape[2:])[:b]


def depth_to_space(x, block: int = 2):
    """(N, H, W, C * b * b) -> (N, H * b, W * b, C), the sub-pixel shuffle."""
    n, h, w, c = x.shape
    x = x.reshape(n, h, w, block, block, c // (block * block)).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h * block, w * block, c // (block * block))


def space_to_depth(x, block: int = 2):
    """(N, H * b, W * b, C) -> (N, H, W, C * b * b), the inverse of `depth_to_space`."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // block, block, w // block, block, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, h // block, w // block, block * block * c)


class MaskBranch(nn.Module):
    """RNAN's mask: [non-local] -> RB -> stride-2 conv -> 2 RB -> x2 upsampling (+ first RB's
    output) -> RB -> 1x1 conv -> sigmoid.

    RNAN upsamples with a 6x6 stride-2 transposed conv; a 3x3 conv to 4x the channels followed by
    a sub-pixel shuffle is the same function class (each output phase applies a 3x3 sub-kernel of
    the 6x6 one) and trains far faster on XLA:CPU (benchmarks/upsampling.py, docs/method.md).
    """

    features: int
    non_local: bool
    attention: AttentionSettings
    dtype: Any = None

    @nn.compact
    def __call__(self, x, valid=None):
        f, dt = self.features, self.dtype
        if self.non_local:
            x = WindowedNonLocal(self.attention, dt, name="non_local")(x, valid)
        skip = ResBlock(f, dt, name="rb_in")(x)
        padded, (h, w) = pad_to_multiple(skip, 2)
        y = conv3x3(f, "down", strides=2, dtype=dt)(padded)
        y = ResBlock(f, dt, name="rb_low0")(y)
        y = ResBlock(f, dt, name="rb_low1")(y)
        y = depth_to_space(conv3x3(4 * f, "up", dtype=dt)(y))
        y = ResBlock(f, dt, name="rb_out")(y[:, :h, :w] + skip)
        logits = nn.Conv(f, (1, 1), kernel_init=torch_init, dtype=dt, name="logits")(y)
        return nn.sigmoid(logits)


class AttentionGroup(nn.Module):
    """One dilated (non-)local block: RB -> trunk (2 RB) modulated by the mask as
    trunk·mask + trunk -> 2 RB -> multi-scale dilated convs, with a skip around the group.
    `valid` (int (N, 2) real extents, or None) reaches the non-local block's key mask."""

    features: int
    non_local: bool
    dilations: Sequence[int]
    attention: AttentionSettings
    dtype: Any = None

    @nn.compact
    def __call__(self, x, valid=None):
        f, dt = self.features, self.dtype
        h = ResBlock(f, dt, name="rb_in")(x)
        trunk = ResBlock(f, dt, name="trunk1")(ResBlock(f, dt, name="trunk0")(h))
        mask = MaskBranch(f, self.non_local, self.attention, dt, name="mask")(h, valid)
        y = trunk * mask + trunk
        y = ResBlock(f, dt, name="rb_out1")(ResBlock(f, dt, name="rb_out0")(y))
        y = MultiScaleDilatedConv(f, tuple(self.dilations), dt, name="dilated")(y)
        return x + y
