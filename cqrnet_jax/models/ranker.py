"""Stage 1: the Compression Quality Ranker (paper §3.1), one branch of the Siamese pair.

The Siamese pair is this one module applied to both images (shared weights); `train` batches
stack the two images of each pair so BatchNorm sees both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

# RankSRGAN's ranker (cited by the paper): 10 convs, stride 2 on every second one.
PAPER_FEATURES = (64, 64, 128, 128, 256, 256, 512, 512, 512, 512)
PAPER_STRIDES = (1, 2, 1, 2, 1, 2, 1, 2, 1, 2)


class QualityRanker(nn.Module):
    """VGG-style scorer: (N, H, W) or (N, H, W, 1) images in [0, 1] -> (scores (N,), feature maps).

    A higher score means a better (higher-QF) image. Feature maps are the LeakyReLU outputs of every
    conv, in order; stage 2's feature-matching loss picks some of them. `dtype` is the compute
    dtype (bfloat16 inside stage 2's mixed-precision loss); parameters and BatchNorm statistics
    stay float32 and the score is float32.
    """

    features: Sequence[int] = PAPER_FEATURES
    strides: Sequence[int] = PAPER_STRIDES
    hidden: int = 100
    negative_slope: float = 0.2
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if len(self.features) != len(self.strides):
            raise ValueError("features and strides must have the same length")
        if x.ndim == 3:
            x = x[..., None]
        x = x.astype(jnp.float32) - 0.5  # centre [0, 1] inputs; BN is absent on the first conv
        maps = []
        for i, (feat, stride) in enumerate(zip(self.features, self.strides)):
            x = nn.Conv(feat, (3, 3), strides=stride, padding=1, dtype=self.dtype, name=f"conv{i}")(
                x
            )
            if i > 0:
                x = nn.BatchNorm(
                    use_running_average=not train,
                    momentum=self.bn_momentum,
                    dtype=self.dtype,
                    name=f"bn{i}",
                )(x)
            x = nn.leaky_relu(x, self.negative_slope)
            maps.append(x)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        x = nn.leaky_relu(nn.Dense(self.hidden, name="fc0")(x), self.negative_slope)
        score = nn.Dense(1, name="fc1")(x)[:, 0]
        return score, maps
