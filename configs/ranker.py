"""Stage 1: train the Compression Quality Ranker (paper §3.1).

  python -m cqrnet_jax.main --config=configs/ranker.py:cpu --workdir=../runs/ranker_cpu

Presets compose left to right with commas: `paper` (the default: RankSRGAN-sized ranker), `cpu`
(the shipped ranker, trained on 2 CPU cores), `smoke` (under a minute, built-in photos; tests/CI),
`blind` (adds cross-image pairs so scores compare across images: a blind QF estimator),
`estimator` (`:cpu,estimator`: the recipe of the shipped blind estimator, pretrained/ranker_blind).
"""

from cqrnet_jax import pretrained
from cqrnet_jax.config_base import apply_presets, train_defaults


def paper(c):
    c.model.features = (64, 64, 128, 128, 256, 256, 512, 512, 512, 512)
    c.data.patch_size = 96


def cpu(c):
    # A quarter of the paper's compute per pixel at its widest layers; still 10 convs.
    c.model.features = (32, 32, 64, 64, 128, 128, 256, 256, 256, 256)
    c.data.patch_size = 48  # the patch size stage 2 feeds it
    c.batch_size = 32
    c.num_steps = 4000
    c.optim.learning_rate = 3e-4
    c.optim.schedule = "cosine"
    c.optim.decay_steps = 4000
    c.optim.warmup_steps = 200
    c.checkpoint_every = 250


def smoke(c):
    c.model.features = (8, 8, 16, 16, 16, 16, 16, 16, 16, 16)
    c.model.hidden = 16
    c.data.source = "builtin"
    c.data.patch_size = 32
    c.batch_size = 4
    c.num_steps = 20
    c.log_every = 5
    c.checkpoint_every = 10


def blind(c):
    # Beyond the paper: scores comparable across images, for blind QF estimation. Every pair of
    # versions of different crops in a batch is ranked by level (ranking them by exact QF ordered
    # BSDS500 test photos worse: experiments/ranker.md, "Findings").
    c.loss.cross_image_weight = 1.0
    c.loss.cross_image_labels = "level"


def estimator(c):
    # The shipped blind estimator: the shipped (`:cpu`) ranker fine-tuned 4 000 more steps with
    # the cross-image term, at a small constant learning rate. Compose after `cpu`.
    blind(c)
    c.init_from = str(pretrained.shipped(pretrained.GUIDE))  # its step (4 000) carries over
    c.num_steps = 8000
    c.optim.learning_rate = 5e-5
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 0
    c.data.seed = 1
    c.log_every = 100


PRESETS = {"paper": paper, "cpu": cpu, "smoke": smoke, "blind": blind, "estimator": estimator}


def get_config(arg=None):
    c = train_defaults()
    c.task = "ranker"
    c.batch_size = 32  # pairs per step (each pair = 2 images)
    c.num_steps = 50_000
    c.optim.learning_rate = 1e-4
    c.model = dict(
        features=(64, 64, 128, 128, 256, 256, 512, 512, 512, 512),
        strides=(1, 2, 1, 2, 1, 2, 1, 2, 1, 2),
        hidden=100,
        negative_slope=0.2,
    )
    c.loss = dict(
        margin=0.5,  # epsilon of the margin ranking loss
        cross_image_weight=0.0,  # > 0: also rank different crops of a batch (see `blind`)
        cross_image_labels="level",  # what orders cross-image pairs: "level" or "quality"
    )
    paper(c)
    return apply_presets(c, arg, PRESETS)
