"""Stage 2: the de-blocking network M (paper §3.2), RNAN-style with multi-scale dilated convs.

Layout: head conv -> non-local group -> local groups -> non-local group -> conv -> tail conv,
plus the long skip (M predicts a residual added to its input). Images in [0, 1], any size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from cqrnet_jax.models.layers import AttentionGroup, AttentionSettings, as_nhwc, conv3x3


class _LocalGroupStep(nn.Module):
    """One local group as a scan step, (carry, _) -> (carry, None), for `nn.scan`."""

    group: dict

    @nn.compact
    def __call__(self, x, _):
        return AttentionGroup(non_local=False, name="group", **self.group)(x), None


class DeblockNet(nn.Module):
    """(N, H, W) or (N, H, W, 1) JPEG-decoded Y in [0, 1] -> restored Y, same shape, unclipped.

    `dtype` is the compute dtype (bfloat16 for mixed precision): parameters stay float32, the
    attention softmax runs in float32, and the input, the long skip and the output are float32.
    `scan_groups` runs the local groups as one `nn.scan` (stacked parameters under
    `group_local`; one compiled group instead of N, for the paper preset on an accelerator) and
    `remat` recomputes each group's activations in the backward pass instead of storing them.
    `valid` (optional int (N, 2)) is each image's real (height, width) from the top-left, for a
    batch padded bottom/right to one size: the non-local blocks attend to real pixels only. It is
    traced, so one program serves every extent; None means the whole input is real.
    The settings' values and their meaning are in `config_base.deblock_model_defaults`; build
    the network from a config with `models.build.deblock_from_config`.
    """

    features: int
    num_local_groups: int  # RNAN's: 10 groups = 1 non-local + 8 local + 1 non-local
    dilations: Sequence[int]
    attention: AttentionSettings  # of the non-local groups' attention
    dtype: Any = jnp.float32
    scan_groups: bool = False
    remat: bool = False

    @property
    def alignment(self) -> int:
        """Tile origins on multiples of this see the attention windows of the whole image (and
        the stride-2 mask branch its pixel pairs)."""
        return math.lcm(self.attention.window, 2)

    @nn.compact
    def __call__(self, x, valid=None):
        x, squeeze = as_nhwc(x)
        dt = self.dtype
        group_kwargs = dict(
            features=self.features,
            dilations=tuple(self.dilations),
            attention=self.attention,
            dtype=dt,
        )
        group = nn.remat(AttentionGroup) if self.remat else AttentionGroup

        f = conv3x3(self.features, "head", dtype=dt)(x)
        y = group(non_local=True, name="group_nl_low", **group_kwargs)(f, valid)
        if self.scan_groups and self.num_local_groups:
            step = nn.remat(_LocalGroupStep) if self.remat else _LocalGroupStep
            scan = nn.scan(
                step,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=self.num_local_groups,
            )
            y, _ = scan(group_kwargs, name="group_local")(y, None)
        else:
            for i in range(self.num_local_groups):
                y = group(non_local=False, name=f"group_local{i}", **group_kwargs)(y)
        y = group(non_local=True, name="group_nl_high", **group_kwargs)(y, valid)
        y = conv3x3(self.features, "body_conv", dtype=dt)(y)
        out = x + conv3x3(1, "tail", dtype=dt)(y).astype(jnp.float32)
        return out[..., 0] if squeeze else out


def scan_layout(params: dict, num_local_groups: int) -> dict:
    """Unrolled DeblockNet params (group_local0 .. N-1) in the `scan_groups=True` layout
    (group_local/group, stacked on a leading axis): to continue an unrolled model scanned."""
    import jax
    import numpy as np

    params = dict(params)
    groups = [params.pop(f"group_local{i}") for i in range(num_local_groups)]
    if groups:
        stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *groups)
        params["group_local"] = {"group": stacked}
    return params
