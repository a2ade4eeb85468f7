"""Stage 1 as a training task: pairs of one crop at two JPEG qualities, margin ranking loss."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from cqrnet_jax import pretrained
from cqrnet_jax.losses import margin_ranking_loss, pair_order_accuracy
from cqrnet_jax.models.ranker import QualityRanker


def ranker_from_config(model_cfg) -> QualityRanker:
    return QualityRanker(
        features=tuple(model_cfg["features"]),
        strides=tuple(model_cfg["strides"]),
        hidden=model_cfg["hidden"],
        negative_slope=model_cfg["negative_slope"],
    )


def cross_image_ranking_loss(scores, labels, margin):
    """Margin ranking loss between *different* crops of the batch: (B, 2) scores and labels are
    paired with the batch rolled by one, crop k's first version against crop k-1's two versions.
    Not in the paper (its pairs are one crop at two QFs): it makes scores comparable across
    images, which a blind quality estimate needs. Equal-label pairs are left out."""
    other = jnp.roll(scores, 1, axis=0)
    other_labels = jnp.roll(labels, 1, axis=0)
    s_i = jnp.concatenate([scores[:, 0], scores[:, 0]])
    s_j = jnp.concatenate([other[:, 0], other[:, 1]])
    b_i = jnp.concatenate([labels[:, 0], labels[:, 0]])
    b_j = jnp.concatenate([other_labels[:, 0], other_labels[:, 1]])
    return margin_ranking_loss(s_i, s_j, b_i, b_j, margin)


def load_ranker_model(prefix):
    """(module, variables, meta) of a ranker written by `save_variables`; ValueError if the
    export has no model config."""
    variables, meta = pretrained.load_variables(prefix)
    if "model" not in meta:
        raise ValueError(f"{prefix}: the .json has no 'model' config: not a ranker export")
    return ranker_from_config(meta["model"]), variables, meta


class RankerTask:
    pipeline_mode = "ranker"

    def __init__(self, config):
        self.config = config
        self.model = ranker_from_config(config.model)

    def init_variables(self, rng):
        p = self.config.data.patch_size
        return self.model.init(rng, jnp.zeros((2, p, p), jnp.float32), train=False)

    def loss_fn(self, params, batch_stats, batch, rng):
        del rng
        x = batch["degraded"].astype(jnp.float32) / 255.0  # (B, 2, P, P)
        b = x.shape[0]
        (scores, _), updates = self.model.apply(
            {"params": params, "batch_stats": batch_stats},
            x.reshape((2 * b,) + x.shape[2:]),
            train=True,
            mutable=["batch_stats"],
        )
        s = scores.reshape(b, 2)
        labels = batch["label"]
        margin = self.config.loss.margin
        loss = margin_ranking_loss(s[:, 0], s[:, 1], labels[:, 0], labels[:, 1], margin)
        acc = pair_order_accuracy(s[:, 0], s[:, 1], labels[:, 0], labels[:, 1])
        weight = self.config.loss.get("cross_image_weight", 0.0)
        if weight:
            loss = loss + weight * cross_image_ranking_loss(s, labels, margin)
        return loss, (dict(pair_accuracy=acc), updates["batch_stats"])

    def evaluate(self, state) -> dict:
        return {}

    def finalize(self, state, workdir: str):
        """Exports params + BatchNorm statistics (no optimizer state) to WORKDIR/export/ranker."""
        if jax.process_index() != 0:
            return
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        meta = {
            "kind": "ranker",
            "model": self.config.model.to_dict(),
            "step": int(state.step),
            "config": self.config.to_dict(),
        }
        pretrained.save_variables(os.path.join(workdir, "export", "ranker"), variables, meta)
