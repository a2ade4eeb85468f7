"""Stage 2: the de-blocking network M (SPEC §2), RNAN-style with multi-scale dilated convs.

Layout: head conv -> non-local group -> local groups -> non-local group -> conv -> tail conv,
plus the long skip (M predicts a residual added to its input). Images in [0, 1], any size.
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import linen as nn

from cqrnet_jax.models.layers import AttentionGroup, conv3x3


class DeblockNet(nn.Module):
    """(N, H, W) or (N, H, W, 1) JPEG-decoded Y in [0, 1] -> restored Y, same shape, unclipped."""

    features: int = 64
    num_local_groups: int = 8  # RNAN's CAR model: 10 groups = 1 non-local + 8 local + 1 non-local
    dilations: Sequence[int] = (1, 2, 4)
    nl_inner: int = 32  # theta/phi/g width, RNAN: features // 2
    nl_window: int = 48  # = the training patch: training attends over the whole patch, as RNAN
    nl_subsample: int = 1  # 2: keys/values 2x2 max-pooled (the CPU preset's saving)

    @nn.compact
    def __call__(self, x):
        squeeze = x.ndim == 3
        if squeeze:
            x = x[..., None]

        def group(non_local, name):
            return AttentionGroup(
                self.features,
                non_local,
                tuple(self.dilations),
                self.nl_inner,
                self.nl_window,
                self.nl_subsample,
                name=name,
            )

        f = conv3x3(self.features, "head")(x)
        y = group(True, "group_nl_low")(f)
        for i in range(self.num_local_groups):
            y = group(False, f"group_local{i}")(y)
        y = group(True, "group_nl_high")(y)
        y = conv3x3(self.features, "body_conv")(y)
        out = x + conv3x3(1, "tail")(y)
        return out[..., 0] if squeeze else out
