"""A multi-scale de-blocker for the CPU: a U-Net whose coarsest scale carries the paper's
multi-scale dilated convolutions and a non-local block (experiments/cpu_deblocker.md, "Backbone
screening").

Most of the arithmetic runs at 1/4 to 1/64 of the pixels, where it is cheap and reaches far:
with three halvings and a 16-wide attention window, the bottleneck sees 128x128 pixels at once,
and an 8x8 JPEG block is one coarse pixel. Each level: residual blocks, then a 2x2 stride-2 conv
down; on the way up a 1x1 conv and a sub-pixel shuffle, the encoder's features added back,
residual blocks. The last conv starts at zero: training starts from the identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cqrnet_jax.data.color import RGB_TO_YCBCR, YCBCR_OFFSET
from cqrnet_jax.models.layers import (
    AttentionSettings,
    MultiScaleDilatedConv,
    ResBlock,
    WindowedNonLocal,
    as_nhwc,
    conv3x3,
    depth_to_space,
    pad_to_multiple,
    space_to_depth,
    torch_init,
)


class UNetDeblocker(nn.Module):
    """(N, H, W) or (N, H, W, 1) JPEG-decoded Y in [0, 1] -> restored Y, same shape, unclipped;
    with `channels` 3, (N, H, W, 3) decoded RGB -> restored RGB (the head takes and the tail gives
    three channels, the residual is around the RGB input).

    `features[i]` channels and `blocks[i]` residual blocks (each side) at scale 1/2^i; the last
    scale is the bottleneck: blocks, a non-local block over `attention.window`-wide windows of
    that scale (bottleneck pixels), the dilated unit, blocks. `valid` (int (N, 2), real extents)
    keeps padding out of the attention, as in `DeblockNet`.

    `quality_input`: the head also reads a constant plane, the JPEG quality / 100 (`quality`,
    (N,), or `fixed_quality` when the call names none): the quality-conditioning experiment
    (experiments/cpu_deblocker.md, "Quality conditioning").
    """

    features: Sequence[int]
    blocks: Sequence[int]
    dilations: Sequence[int]
    attention: AttentionSettings
    channels: int  # 1: Y | 3: RGB
    quality_input: bool
    dtype: Any = jnp.float32
    fixed_quality: float | None = None

    @property
    def scale(self) -> int:
        """Input pixels per bottleneck pixel along a side."""
        return 2 ** (len(self.features) - 1)

    @property
    def alignment(self) -> int:
        """Tile origins on multiples of this see the attention windows of the whole image."""
        return self.scale * self.attention.window

    @nn.compact
    def __call__(self, x, valid=None, quality=None):
        if self.channels == 1:
            x, squeeze = as_nhwc(x)
        else:
            x, squeeze = jnp.asarray(x, jnp.float32), False
        if x.ndim != 4 or x.shape[-1] != self.channels:
            raise ValueError(f"expected (N, H, W, {self.channels}) input, got shape {x.shape}")
        inputs = x
        if self.quality_input:
            quality = self.fixed_quality if quality is None else quality
            if quality is None:
                raise ValueError("a quality-conditioned U-Net needs the JPEG quality")
            q = jnp.broadcast_to(jnp.asarray(quality, jnp.float32), (x.shape[0],)) / 100.0
            plane = jnp.broadcast_to(q[:, None, None, None], x.shape[:3] + (1,))
            inputs = jnp.concatenate([x, plane], axis=-1)
        out = x + unet_body(inputs, self.channels, self, valid)
        return out[..., 0] if squeeze else out


def unet_body(x, out_channels: int, spec, valid=None):
    """The U-Net's layers on NHWC `x` (called inside a compact `__call__`, whose module owns
    them): head conv, encoder, bottleneck (blocks, windowed non-local, dilated unit, blocks),
    decoder, and a zero-initialised tail conv to `out_channels`, cropped to `x`'s extent. `spec`
    gives features, blocks, dilations, attention, dtype and scale."""
    dt, feats, levels = spec.dtype, tuple(spec.features), len(spec.features)
    padded, (h, w) = pad_to_multiple(x, spec.scale)

    y = conv3x3(feats[0], "head", dtype=dt)(padded)
    skips = []
    for i in range(levels - 1):
        for b in range(spec.blocks[i]):
            y = ResBlock(feats[i], dt, name=f"enc{i}_rb{b}")(y)
        skips.append(y)
        down = nn.Conv(
            feats[i + 1],
            (2, 2),
            strides=2,
            padding="VALID",
            kernel_init=torch_init,
            dtype=dt,
            name=f"down{i}",
        )
        y = down(y)

    last = levels - 1
    coarse_valid = None if valid is None else -(-jnp.asarray(valid) // spec.scale)
    for b in range(spec.blocks[last]):
        y = ResBlock(feats[last], dt, name=f"mid_rb{b}")(y)
    y = WindowedNonLocal(spec.attention, dt, name="non_local")(y, coarse_valid)
    y = y + MultiScaleDilatedConv(feats[last], tuple(spec.dilations), dt, name="dilated")(y)
    for b in range(spec.blocks[last]):
        y = ResBlock(feats[last], dt, name=f"mid_rb{spec.blocks[last] + b}")(y)

    for i in reversed(range(levels - 1)):
        up = nn.Conv(4 * feats[i], (1, 1), kernel_init=torch_init, dtype=dt, name=f"up{i}")
        y = depth_to_space(up(y)) + skips[i]
        for b in range(spec.blocks[i]):
            y = ResBlock(feats[i], dt, name=f"dec{i}_rb{b}")(y)

    tail = nn.Conv(
        out_channels,
        (3, 3),
        padding=1,
        kernel_init=nn.initializers.zeros,
        dtype=dt,
        name="tail",
    )
    return tail(y).astype(jnp.float32)[:, :h, :w]


# The protocol's Y (MATLAB rgb2ycbcr, studio swing) of RGB in [0, 1]: Y_OFFSET + Y_RGB . rgb.
Y_RGB = RGB_TO_YCBCR[0] / 255.0
Y_OFFSET = YCBCR_OFFSET[0] / 255.0


def colour_from_grey(params: dict) -> dict:
    """Params of a 3-channel U-Net that starts where a grey (Y) one is: the head reads the
    protocol's Y of the RGB input, and the tail adds the grey model's Y correction to R, G and B
    alike (which changes Y by exactly that much and leaves Cb, Cr as decoded). Colour training
    then learns the chroma from there (`--config.init_from` a grey export)."""
    params = dict(params)
    head, tail = dict(params["head"]), dict(params["tail"])
    k = np.asarray(head["kernel"])  # (3, 3, 1, F)
    if k.shape[2] != 1 or np.shape(tail["kernel"])[-1] != 1:
        raise ValueError("colour_from_grey: not a grey (1-channel) U-Net's params")
    head["kernel"] = k * Y_RGB.reshape(1, 1, 3, 1).astype(k.dtype)
    # the Y offset through the kernel, as a bias: the grey model saw zeros, not the offset, in
    # its padding, so the two differ at the border (and a little inwards, by the U-Net's reach)
    head["bias"] = np.asarray(head["bias"]) + Y_OFFSET * k.sum(axis=(0, 1, 2)).astype(k.dtype)
    gain = np.float32(1.0 / Y_RGB.sum())  # an equal step in R, G, B moves Y by Y_RGB.sum() of it
    tail["kernel"] = np.repeat(np.asarray(tail["kernel"]) * gain, 3, axis=-1)
    tail["bias"] = np.repeat(np.asarray(tail["bias"]) * gain, 3, axis=-1)
    params["head"], params["tail"] = head, tail
    return params


def add_quality_input(params: dict) -> dict:
    """Params of a quality-conditioned grey U-Net (`quality_input`) that computes exactly what
    the U-Net of `params` did: the head's kernel gets a zero slice for the quality plane, which
    training then learns to read (`--config.init_from` an unconditioned export)."""
    head = dict(params["head"])
    k = np.asarray(head["kernel"])  # (3, 3, 1, F)
    if k.shape[2] != 1:
        raise ValueError("add_quality_input: not a grey U-Net's params without a quality plane")
    head["kernel"] = np.concatenate([k, np.zeros_like(k)], axis=2)
    return {**params, "head": head}


def add_chroma_quality_input(params: dict) -> dict:
    """Params of a quality-conditioned chroma U-Net (`ChromaUNet` with `quality_input`) that
    computes exactly what the colour model of `params` did: its Y model gets the quality plane
    (`add_quality_input`) unless it has one, and the chroma branch's head a zero slice for its
    own, which training then learns to read."""
    luma, chroma = params["luma"], dict(params["chroma"])
    if np.shape(luma["head"]["kernel"])[2] == 1:
        luma = add_quality_input(luma)
    head = dict(chroma["head"])
    k = np.asarray(head["kernel"])  # (3, 3, 16, F)
    if k.shape[2] != 16:
        raise ValueError("add_chroma_quality_input: not a chroma U-Net without a quality plane")
    head["kernel"] = np.concatenate([k, np.zeros_like(k[:, :, :1])], axis=2)
    return {**params, "luma": luma, "chroma": {**chroma, "head": head}}


# The protocol's YCbCr of RGB, both in [0, 1]: ycc = rgb @ _RGB_TO_YCC + _YCC_OFFSET.
_RGB_TO_YCC = (RGB_TO_YCBCR.T / 255.0).astype(np.float32)
_YCC_OFFSET = (YCBCR_OFFSET / 255.0).astype(np.float32)
_YCC_TO_RGB = np.linalg.inv(RGB_TO_YCBCR.T / 255.0).astype(np.float32)


class ChromaBranch(nn.Module):
    """The U-Net body at chroma resolution (half the pixels a side): 16 channels in (Y restored,
    Y, Cb, Cr, each as 2x2 phases; a 17th, the quality plane, in a quality-conditioned model),
    8 out (the Cb/Cr correction's 2x2 phases)."""

    features: Sequence[int]
    blocks: Sequence[int]
    dilations: Sequence[int]
    attention: AttentionSettings
    dtype: Any = jnp.float32

    @property
    def scale(self) -> int:
        return 2 ** (len(self.features) - 1)

    @nn.compact
    def __call__(self, x, valid=None):
        return unet_body(x, 8, self, valid)


class ChromaUNet(nn.Module):
    """(N, H, W, 3) decoded RGB in [0, 1] -> restored RGB: Y by a grey U-Net (`luma`, frozen:
    no gradient reaches it, it comes from a grey export via `--config.init_from`), Cb/Cr by a
    second U-Net at chroma resolution (`chroma`), led by the restored Y. The correction is
    added to the decoded Cb/Cr at full resolution through a sub-pixel shuffle, so it can put
    back the chroma detail that 4:2:0 dropped; its last conv starts at zero, so training starts
    from the grey model's Y and the decoded chroma. `quality_input`: both are told `quality`
    ((N,) JPEG qualities): its Y model is a quality-conditioned U-Net, and the chroma U-Net
    reads the quality / 100 as one more input plane (`add_chroma_quality_input`)."""

    luma_features: Sequence[int]
    luma_blocks: Sequence[int]
    features: Sequence[int]
    blocks: Sequence[int]
    dilations: Sequence[int]
    attention: AttentionSettings
    dtype: Any = jnp.float32
    channels: int = 3
    quality_input: bool = False

    @property
    def alignment(self) -> int:
        luma = 2 ** (len(self.luma_features) - 1)
        chroma = 2 ** len(self.features)  # half resolution, then its own halvings
        return max(luma, chroma) * self.attention.window

    @nn.compact
    def __call__(self, x, valid=None, quality=None):
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) input, got shape {x.shape}")
        ycc = x @ _RGB_TO_YCC + _YCC_OFFSET
        y = ycc[..., :1]
        y8 = jnp.clip(jnp.round(y * 255.0), 0.0, 255.0) / 255.0  # the grey model saw uint8 Y
        luma = UNetDeblocker(
            features=self.luma_features,
            blocks=self.luma_blocks,
            dilations=self.dilations,
            attention=self.attention,
            channels=1,
            quality_input=self.quality_input,
            dtype=self.dtype,
            name="luma",
        )
        y_out = jax.lax.stop_gradient(luma(y8, valid, quality)) + (y - y8)

        h, w = x.shape[1:3]
        guide, _ = pad_to_multiple(jnp.concatenate([y_out, ycc], axis=-1), 2)
        guide = space_to_depth(guide)
        if self.quality_input:  # the chroma branch reads the quality too, as a constant plane
            q = jnp.broadcast_to(jnp.asarray(quality, jnp.float32), (x.shape[0],)) / 100.0
            plane = jnp.broadcast_to(q[:, None, None, None], guide.shape[:3] + (1,))
            guide = jnp.concatenate([guide, plane], axis=-1)
        half_valid = None if valid is None else -(-jnp.asarray(valid) // 2)
        branch = ChromaBranch(
            self.features, self.blocks, self.dilations, self.attention, self.dtype, name="chroma"
        )
        delta = depth_to_space(branch(guide, half_valid))[:, :h, :w]
        out = jnp.concatenate([y_out, ycc[..., 1:] + delta], axis=-1)
        return (out - _YCC_OFFSET) @ _YCC_TO_RGB
