"""Defaults shared by every training config, and comma-composable presets (`file.py:cpu,smoke`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import ml_collections

from cqrnet_jax.errors import ConfigError


def train_defaults() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = ""  # "ranker" or "deblock"
    c.seed = 0
    c.batch_size = 16  # global batch; must divide by the device count
    # On a CPU, train data-parallel over this many devices, each a share of the cores: 0 = as
    # many as cores (at most 4) that divide batch_size, faster than one device (docs/training.md
    # "On a CPU"); 1 = one device on all cores. Not applied in a multi-process run.
    c.host_devices = 0
    c.num_steps = 1000
    c.log_every = 50  # 0: log only when a checkpoint is saved (at least the last step)
    c.log_first_steps = 0  # also log each of the run's first N steps (fail fast on a lent GPU)
    c.eval_every = 0  # 0: no periodic evaluation
    c.checkpoint_every = 500  # 0: a checkpoint at the last step only
    c.keep_checkpoints = 2
    # Wall-clock budget of the training loop in seconds (0: none): the run then ends cleanly at the
    # step where it is spent (checkpoint, evaluation, export) whatever num_steps says.
    c.train_seconds = 0.0
    # A step with a non-finite loss or gradient is skipped (state unchanged, data moves on) and
    # logged; more than this many in a row stop the run (0: the first one does).
    c.max_nonfinite_steps = 20
    c.device_prefetch = 2  # batches transferred to the devices ahead of the step that uses them
    # XLA's persistent compilation cache ("" = off): a rerun or resume skips its compiles.
    c.compile_cache_dir = ""
    # Exports (params only) go to export_dir (default WORKDIR/export) at the end and every
    # export_every steps (0: at the end only), in parts of export_split_mb MiB (0: one file).
    c.export_every = 0
    c.export_dir = ""
    c.export_split_mb = 0.0
    # Exported params to start from when the workdir has no checkpoint (e.g. the shipped model,
    # to continue its training on a new machine); the step continues from the export's.
    c.init_from = ""  # start from params: a prefix, a workdir, or "default" (the shipped model)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-4
    c.optim.schedule = "step"  # constant | step | cosine
    c.optim.decay_steps = 100_000
    c.optim.decay_rate = 0.5
    c.optim.decay_begin = 0  # cosine: flat until this step, then decay_steps steps to 0
    c.optim.warmup_steps = 0
    c.optim.warmup_begin = 0  # the warm-up's first step (a continuation's, to warm up again)
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.weight_decay = 0.0
    c.optim.grad_clip = 0.0

    c.data = ml_collections.ConfigDict()
    c.data.source = "shared"  # shared | folder | div2k | builtin
    c.data.data_dir = ml_collections.config_dict.placeholder(str)  # else $CQRNET_DATA_DIR
    c.data.files = ""  # for source=folder: folders or globs, comma-separated
    c.data.patch_size = 48
    c.data.seed = 0
    # numpy (NumPy + PIL threads; the faster on a CPU: experiments/results/train_throughput.txt)
    # | tf (tf.data; the tf extra): the same batches either way. "auto" is accepted as numpy.
    c.data.backend = "numpy"
    c.data.num_threads = 2
    c.data.prefetch = 4
    c.data.quality_range = (1, 30)  # ranker: QFs drawn from this range ...
    c.data.num_levels = 3  # ... split into this many levels
    c.data.qualities = (10, 20, 30)  # de-blocker: QFs mixed in every batch ...
    # ... unless ranges are given: each example's QF drawn uniformly from one of these (lo, hi)
    # ranges, picked with these weights (e.g. ((5, 60), (5, 95)) and (0.75, 0.25))
    c.data.quality_ranges = ()
    c.data.quality_weights = ()
    # source=shared: the folders (under the data directory) trained on; a run validating on
    # BSDS500 val (eval_set="BSDS500val") leaves BSDS500/val out
    c.data.train_sets = ("BSDS500/train", "BSDS500/val", "Urban100_gray")
    # Colour training (a model.channels=3 de-blocker): RGB crops, each JPEG-compressed in colour
    # by PIL and decoded back to RGB, its chroma 4:4:4 with this probability, else 4:2:0 (PIL's
    # default); patch sizes multiples of 16 (4:2:0 MCUs), the NumPy backend, colour sets only.
    c.data.color = False
    c.data.color_444_fraction = 0.25
    return c


def deblock_model_defaults() -> dict:
    """The de-blocker's `model` settings with their defaults (configs/deblock.py starts from
    them; a saved config or an export written before a key existed gets its default here:
    `models.build.deblock_from_config`). The nl_* keys are the non-local attention's."""
    return dict(
        arch="cqr",  # cqr (DeblockNet) | unet (UNetDeblocker) | chroma (ChromaUNet) | arcnn | dncnn
        features=64,
        num_local_groups=8,  # RNAN's: 10 groups = 1 non-local + 8 local + 1 non-local
        dilations=(1, 2, 4),
        nl_inner=32,  # theta/phi/g width, RNAN: features // 2
        nl_window=48,  # = the training patch: training attends over the whole patch, as RNAN
        nl_subsample=1,  # 2: keys/values 2x2 max-pooled (the CPU preset's saving)
        nl_chunk=16,  # windows per attention chunk ("chunked" attention; bounds memory)
        nl_attention="chunked",  # chunked | xla | cudnn (jax.nn.dot_product_attention)
        dtype="float32",  # compute dtype: float32 | bfloat16 (params and losses stay float32)
        scan_groups=False,  # local groups as one nn.scan: compiles once, stacked params
        remat=False,  # recompute each group's activations in the backward pass
        widths=(16, 32, 64, 128),  # unet only: channels at scales 1, 1/2, 1/4, 1/8
        blocks=(2, 2, 2, 2),  # unet only: residual blocks a side at each scale
        quality_input=False,  # grey unet (chroma: its Y) also reads the JPEG quality / 100
        channels=1,  # 1: Y in and out | 3: RGB in and out (unet, chroma; a data.color run)
        chroma_widths=(16, 32, 64),  # chroma only: its chroma U-Net's channels at scales 1/2-1/8
        chroma_blocks=(2, 2, 2),  # chroma only: that U-Net's residual blocks a side per scale
        depth=20,  # dncnn only: its number of convolutions
        residual_init="zeros",  # dncnn only: its last conv's kernel, zeros (starts at x) | he
    )


def apply_presets(
    config: ml_collections.ConfigDict,
    arg: str | None,
    presets: dict[str, Callable[[ml_collections.ConfigDict], None]],
):
    """Applies the comma-separated presets in `arg`, left to right."""
    for name in [a.strip() for a in (arg or "").split(",") if a.strip()]:
        if name not in presets:
            raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(presets)}")
        presets[name](config)
    return config


def load_config_file(path, presets: str | None = None) -> ml_collections.ConfigDict:
    """`get_config(presets)` of a config file (e.g. configs/deblock.py), as `--config=PATH:PRESETS`
    gives it to the training entry point; for scripts that build a config without the flag."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(presets)
