"""Table 2's learned baselines, as their papers give them, trained through our pipeline
(`configs/deblock.py:arcnn`, `:dncnn`) so they can be compared at one budget.

- `ARCNN` (Dong et al., ICCV 2015, "Compression Artifacts Reduction by a Deep Convolutional
  Network"): four convolutions, 9x9x64 feature extraction, 7x7x32 feature enhancement, 1x1x16
  mapping, 5x5x1 reconstruction, ReLU after the first three; it outputs the image itself.
- `DnCNN` (Zhang et al., TIP 2017, "Beyond a Gaussian Denoiser"; DnCNN-3 is the 20-layer blind
  model for noise, super-resolution and JPEG): conv 3x3x64 + ReLU, 18 x (conv 3x3x64 without bias +
  BatchNorm + ReLU), conv 3x3x1; it predicts the residual, which is subtracted from the input.
  One deviation, by default: its last conv starts at zero (`residual_init="zeros"`), so training
  starts from the identity. The paper's He start (`"he"`) predicts a large random residual at
  step 0, and at our 1 200-step table budget the net spent its steps unlearning it and ended
  below the decoded JPEG (experiments/tables.md, "DnCNN-3's start").

Both take (N, H, W) or (N, H, W, 1) Y in [0, 1] and return the restored Y in the same shape,
unclipped, like `DeblockNet`. Convolutions keep the size ("same" zero padding: ARCNN's paper
trains without padding on 32x32 crops, we keep every pixel). `valid` (the per-image extents that
`DeblockNet`'s attention uses) is accepted and ignored: these networks have no attention.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from cqrnet_jax.models.layers import as_nhwc


class ARCNN(nn.Module):
    """ARCNN: 9x9x64 -> 7x7x32 -> 1x1x16 -> 5x5x1 (ReLU after the first three)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, valid=None, *, train: bool = False):
        del valid, train
        x, squeeze = as_nhwc(x)
        y = x
        for i, (features, size) in enumerate(((64, 9), (32, 7), (16, 1))):
            y = nn.relu(nn.Conv(features, (size, size), dtype=self.dtype, name=f"conv{i}")(y))
        out = nn.Conv(1, (5, 5), dtype=self.dtype, name="reconstruct")(y).astype(jnp.float32)
        return out[..., 0] if squeeze else out


class DnCNN(nn.Module):
    """DnCNN: `depth` 3x3 convs of `features` channels, BatchNorm in the middle ones, residual
    output (x minus the predicted artifacts). `train` uses batch statistics and updates the
    running ones (apply with `mutable=["batch_stats"]`). `residual_init`: the last conv's kernel
    at init, "zeros" (an identity start, the default) or "he" (the paper's, like the others)."""

    depth: int
    features: int
    residual_init: str  # the last conv's kernel: "zeros" (start at x) | "he"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, valid=None, *, train: bool = False):
        del valid
        x, squeeze = as_nhwc(x)
        conv = dict(kernel_size=(3, 3), dtype=self.dtype, kernel_init=nn.initializers.he_normal())
        y = nn.relu(nn.Conv(self.features, name="conv0", **conv)(x))
        for i in range(1, self.depth - 1):
            y = nn.Conv(self.features, use_bias=False, name=f"conv{i}", **conv)(y)
            y = nn.BatchNorm(
                use_running_average=not train,
                momentum=0.9,
                epsilon=1e-4,
                dtype=self.dtype,
                name=f"bn{i}",
            )(y)
            y = nn.relu(y)
        zero = self.residual_init == "zeros"
        last = dict(conv, kernel_init=nn.initializers.zeros) if zero else conv
        residual = nn.Conv(1, name=f"conv{self.depth - 1}", **last)(y).astype(jnp.float32)
        out = x - residual
        return out[..., 0] if squeeze else out
