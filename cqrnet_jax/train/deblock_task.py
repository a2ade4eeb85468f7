"""Stage 2 as a training task: L = L_MAE + alpha * L_Q + beta * L_F through the frozen ranker,
+ boundary * L_B (the block-boundary steps, `losses.block_boundary_loss`) and blocking * L_BEF
(the blocking excess PSNR-B counts, `losses.blocking_excess_loss`) when asked.

A colour run (data.color, model.channels=3: the U-Net on RGB) trains on the pixel loss alone over
all three channels (the ranker is grey) and monitors RGB PSNR (`evaluate`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cqrnet_jax import pretrained
from cqrnet_jax.losses import (
    block_boundary_loss,
    blocking_excess_loss,
    chroma_loss,
    feature_matching_loss,
    mae_loss,
    mse_loss,
    quality_loss,
)
from cqrnet_jax.models.build import deblock_from_config, load_ranker_model
from cqrnet_jax.train.loop import export_target


def load_frozen_ranker(loss_cfg, dtype: str = "float32"):
    """(module, variables, prefix) of the guiding ranker: 'default' (the shipped guide), a
    ranker's training workdir or a params prefix, computing in `dtype`. The training step takes
    its variables as an argument (`DeblockTask.frozen`), not as constants of the program."""
    prefix = pretrained.resolve_model_prefix(loss_cfg.ranker, "guide")
    module, variables, _ = load_ranker_model(prefix)
    return module.clone(dtype=jnp.dtype(dtype)), jax.tree.map(jnp.asarray, variables), str(prefix)


class DeblockTask:
    pipeline_mode = "deblock"

    def __init__(self, config):
        self.config = config
        self.model = deblock_from_config(config.model)
        self.channels = int(config.model.channels)  # 3: RGB batches (data.color)
        self.quality_input = bool(getattr(self.model, "quality_input", False))
        loss = config.loss
        self.pixel_loss = loss.pixel  # mae | mse (config_check)
        self.uses_ranker = bool(loss.alpha or loss.beta)
        self.ranker = self.ranker_variables = None
        self.ranker_prefix = None
        self._eval_cache = None
        if self.uses_ranker:
            self.ranker, self.ranker_variables, self.ranker_prefix = load_frozen_ranker(
                loss, config.model.dtype
            )

    @property
    def frozen(self):
        """Variables the step takes as an argument and never updates: the guiding ranker's."""
        return self.ranker_variables

    def init_variables(self, rng):
        p = self.config.data.patch_size
        shape = (1, p, p) if self.channels == 1 else (1, p, p, self.channels)
        quality = {"quality": jnp.full((1,), 50.0)} if self.quality_input else {}
        return self.model.init(rng, jnp.zeros(shape, jnp.float32), **quality)

    def restore(self, params, batch_stats, x, train: bool = False, quality=None):
        """(restored, batch_stats) of x (N, H, W) in [0, 1] ((N, H, W, 3) RGB for a colour
        model); `quality` (N,): the JPEG qualities, for a quality-conditioned U-Net. A network
        with BatchNorm (DnCNN)
        normalises by the batch and updates its running statistics when `train`, and uses the
        running ones otherwise; the others have no statistics and pass them through."""
        if self.quality_input:
            return self.model.apply({"params": params}, x, quality=quality), batch_stats
        if not batch_stats:
            return self.model.apply({"params": params}, x), batch_stats
        variables = {"params": params, "batch_stats": batch_stats}
        if not train:
            return self.model.apply(variables, x), batch_stats
        restored, updates = self.model.apply(variables, x, train=True, mutable=["batch_stats"])
        return restored, updates["batch_stats"]

    def terms(self, restored, y, frozen=None) -> dict:
        """Unweighted terms {l_mae or l_mse[, l_b, l_bef, l_c, l_q, l_f]} of `restored` against y,
        in [0, 1]; `frozen`: the ranker's variables (default: the task's own, as constants)."""
        pixel = self.pixel_loss
        terms = {f"l_{pixel}": (mae_loss if pixel == "mae" else mse_loss)(restored, y)}
        if self.config.loss.boundary:
            terms["l_b"] = block_boundary_loss(restored, y)
        if self.config.loss.blocking:
            terms["l_bef"] = blocking_excess_loss(restored, y)
        if self.config.loss.chroma:
            terms["l_c"] = chroma_loss(restored, y)
        if self.uses_ranker:
            frozen = self.ranker_variables if frozen is None else frozen
            frozen = jax.lax.stop_gradient(frozen)  # BN stats and weights fixed
            layers = tuple(self.config.loss.feature_layers)
            # one ranker pass over restored and clean together (BatchNorm in inference mode, so
            # each image's outputs do not depend on the other half of the batch)
            n = restored.shape[0]
            scores, maps = self.ranker.apply(
                frozen, jnp.concatenate([restored, y.astype(restored.dtype)]), train=False
            )
            terms["l_q"] = quality_loss(scores[:n])
            terms["l_f"] = feature_matching_loss(
                [maps[i][:n] for i in layers], [jax.lax.stop_gradient(maps[i][n:]) for i in layers]
            )
        return terms

    def loss_terms(self, params, x, y, frozen=None, batch_stats=None) -> dict:
        """`terms` of restoring x (N, H, W) towards y (BatchNorm, if any, with running stats)."""
        return self.terms(self.restore(params, batch_stats, x)[0], y, frozen)

    def weigh(self, terms: dict) -> dict:
        """The terms as they enter the loss: l_mae, boundary * l_b, blocking * l_bef,
        chroma * l_c, alpha * l_q, beta * l_f."""
        loss = self.config.loss
        weights = dict(l_b=loss.boundary, l_bef=loss.blocking, l_c=loss.chroma)
        weights.update(l_q=loss.alpha, l_f=loss.beta)
        return {k: weights.get(k, 1.0) * v for k, v in terms.items()}

    def weighted_terms(self, params, x, y, frozen=None) -> dict:
        return self.weigh(self.loss_terms(params, x, y, frozen))

    def loss_fn(self, params, batch_stats, batch, rng, frozen=None):
        del rng
        x = batch["degraded"][:, 0].astype(jnp.float32) / 255.0
        y = batch["clean"].astype(jnp.float32) / 255.0
        quality = batch["quality"][:, 0] if self.quality_input else None
        restored, batch_stats = self.restore(params, batch_stats, x, train=True, quality=quality)
        metrics = self.terms(restored, y, frozen)  # logged unweighted
        total = sum(self.weigh(metrics).values())
        return total, (metrics, batch_stats)

    def load_evaluation(self) -> None:
        """Reads the monitoring set (config.eval_set) once per run, so that `evaluate` needs no
        file; nothing without one. DataDirError (one line) if it cannot be read: NoDataDirError
        when no data directory is named at all. The training loop calls it before compiling.
        A colour model's set is read as RGB (ConfigError for a grey image)."""
        if not self.config.eval_set or self._eval_cache is not None:
            return
        from cqrnet_jax.data.datasets import CONFIG_FLAG, list_eval_images, resolve_data_dir
        from cqrnet_jax.data.io import load_y
        from cqrnet_jax.data.sources import load_rgb
        from cqrnet_jax.inference import Restorer

        root = resolve_data_dir(self.config.data.data_dir, flag=CONFIG_FLAG)
        files = list_eval_images(self.config.eval_set, root)
        if self.config.eval_max_images:
            files = files[: self.config.eval_max_images]
        load = load_y if self.channels == 1 else load_rgb
        images = [(p.stem, load(p)) for p in files]
        # one program for every QF: a quality-conditioned model is told each QF as an input
        # of it (`Restorer.for_quality`), as a JPEG's header tells `deblock`
        self._eval_cache = Restorer(self.model, None, tile=self.config.eval_tile), images

    def evaluate(self, state) -> dict:
        """PSNR gain over JPEG on the configured monitoring set (not used to select anything).
        A colour model: RGB PSNR (all three channels, 8-bit, whole image) and its gain over the
        decoded colour JPEG (PIL's default 4:2:0), logged as eval/SET_qQ_rgb_psnr[_gain]."""
        if not self.config.eval_set:
            return {}
        from cqrnet_jax.data.jpeg import jpeg_degrade, jpeg_degrade_rgb
        from cqrnet_jax.metrics import psnr, rgb_psnr

        if self.channels != 1:
            degrade, score, kind = jpeg_degrade_rgb, rgb_psnr, "_rgb"
        else:
            degrade, kind = jpeg_degrade, ""

            def score(a, b):
                return float(psnr(a, b))

        self.load_evaluation()  # compile and read the images once per run, not per eval
        base, images = self._eval_cache
        # host copies: the state's arrays span every process's devices, and only process 0
        # evaluates, on its own device
        base.variables = jax.device_get(self.variables(state))
        out = {}
        for q in self.config.eval_qualities or self.config.data.qualities:
            restorer = base.for_quality(q)
            scores, gains = [], []
            for _, y in images:
                jpeg = degrade(y, q)
                scores.append(score(restorer(jpeg), y))
                gains.append(scores[-1] - score(jpeg, y))
            name = f"eval/{self.config.eval_set}_q{q}{kind}_psnr"
            out[name] = float(np.mean(scores))
            out[f"{name}_gain"] = float(np.mean(gains))
        return out

    def finalize(self, state, workdir: str):
        """Exports params (no optimizer state) to WORKDIR/export/deblock."""
        if jax.process_index() != 0:
            return
        meta = {
            "kind": "deblock",
            "model": self.config.model.to_dict(),
            "step": int(state.step),
            "ranker": self.ranker_prefix,
            "config": self.config.to_dict(),
        }
        prefix, split = export_target(self.config, workdir, "deblock")
        pretrained.save_variables(prefix, self.variables(state), meta, split_bytes=split)

    @staticmethod
    def variables(state) -> dict:
        """What inference needs of a state: params, and BatchNorm statistics if the net has any."""
        out = {"params": state.params}
        if state.batch_stats:
            out["batch_stats"] = state.batch_stats
        return out
