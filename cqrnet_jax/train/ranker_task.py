"""Stage 1 as a training task: pairs of one crop at two JPEG qualities, margin ranking loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cqrnet_jax import pretrained
from cqrnet_jax.losses import cross_image_ranking_loss, margin_ranking_loss, pair_order_accuracy
from cqrnet_jax.models.build import ranker_from_config
from cqrnet_jax.train.loop import export_target


class RankerTask:
    pipeline_mode = "ranker"

    def __init__(self, config):
        self.config = config
        self.model = ranker_from_config(config.model)

    def init_variables(self, rng):
        p = self.config.data.patch_size
        return self.model.init(rng, jnp.zeros((2, p, p), jnp.float32), train=False)

    frozen = None  # no frozen variables besides the trained ones

    def loss_fn(self, params, batch_stats, batch, rng, frozen=None):
        del rng, frozen
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
        weight = self.config.loss.cross_image_weight
        if weight:  # cross-image pairs ordered by "level" or exact "quality" (config_check)
            by = self.config.loss.cross_image_labels
            cross_labels = batch["quality"] if by == "quality" else labels
            loss = loss + weight * cross_image_ranking_loss(s, cross_labels, margin)
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
        prefix, split = export_target(self.config, workdir, "ranker")
        pretrained.save_variables(prefix, variables, meta, split_bytes=split)
