"""Stage 2: train the de-blocking network through the frozen ranker (paper §3.2-§4.1).

  python -m cqrnet_jax.main --config=configs/deblock.py:cpu --workdir=../runs/deblock_cpu
  python -m cqrnet_jax.main --config=configs/deblock.py:paper,gpu --workdir=runs/paper  # a GPU

Presets compose left to right with commas (e.g. `:cpu,no_dc`):
  paper   RNAN scale (64 features, 10 groups), the paper's optimiser; for a GPU (the default)
  gpu     `paper,gpu`: the GPU recipe (bfloat16, scanned groups, batch 128, warm-up then a flat
          rate until stopped; num_steps with optim.decay_begin/decay_steps end it, as
          experiments/gpu_train.sh does at the end of its budget; docs/training.md "On a GPU")
  cpu     the shipped model, sized for 2 CPU cores
  unet    the multi-scale CPU de-blocker (models/unet.py), MAE only, 96x96 patches
  allqf   blind to quality: QFs drawn over 5-95, mostly low
  holdout validate on BSDS500 val, trained without it
  color   the U-Net on RGB (3 channels in and out), trained on colour JPEGs (PIL, 4:2:0 or
          4:4:4 chroma) of BSDS500 train and Urban100_color_half, monitored by RGB PSNR on
          BSDS500 val; after `unet` and `holdout`: `:unet,allqf,holdout,color`
  chroma  `color` with Y by the shipped grey U-Net, frozen, and Cb/Cr by a U-Net at chroma
          resolution led by it (models/unet.py ChromaUNet), MAE + L_C: `:unet,allqf,holdout,chroma`
  smoke   under a minute on 2 CPU cores, built-in photos (tests and CI)
  no_cqr, no_dc, no_lq, no_lf   the paper's Table 1 ablations
  arcnn, dncnn   Table 2's learned baselines (models/baselines.py), their papers' networks and
                 MSE loss, no ranker; through the same pipeline and loop (e.g. `:dncnn,smoke`)
"""

from cqrnet_jax.config_base import apply_presets, deblock_model_defaults, train_defaults


def paper(c):
    c.model.features = 64
    c.model.num_local_groups = 8
    c.model.nl_inner = 32


def cpu(c):
    c.model.features = 32
    c.model.num_local_groups = 2
    c.model.nl_inner = 16
    c.model.nl_subsample = 2  # 4x cheaper attention over the same 48x48 window (benchmarks/)
    c.num_steps = 20_000  # longer than one session on 2 cores: resumed across sessions
    c.optim.learning_rate = 2e-4
    c.optim.schedule = "cosine"
    c.optim.decay_steps = 20_000
    c.optim.warmup_steps = 300
    c.checkpoint_every = 250
    c.eval_every = 2000
    c.eval_set = "Classic5"  # monitoring only; the shipped model is the last step


def unet(c):
    # The multi-scale CPU de-blocker (models/unet.py): ~1/9 of the cpu network's training FLOPs a
    # pixel (experiments/results/backbone_screen.json);
    # MAE only (the ranker's losses did not pay at CPU budgets: experiments/tables.md, "Verdicts")
    c.model.arch = "unet"
    c.model.widths = (16, 32, 64, 128)
    c.model.blocks = (2, 2, 2, 2)
    c.model.nl_inner = 64
    c.model.nl_window = 16  # bottleneck pixels: 128 input pixels
    c.model.nl_subsample = 1  # all keys: the bottleneck is small
    c.loss.alpha = 0.0
    c.loss.beta = 0.0
    c.data.patch_size = 96
    # warm-up then a flat rate, for as many resumed pieces as it keeps improving; the final
    # decay is set when it ends: --config.optim.decay_begin=S --config.optim.decay_steps=D
    # --config.num_steps=S+D (experiments/cpu_deblocker.md, "Decays")
    c.num_steps = 10**9
    c.optim.learning_rate = 2e-4
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 300
    c.optim.decay_begin = 10**9
    c.optim.decay_steps = 1
    c.checkpoint_every = 250
    c.eval_every = 1000


def allqf(c):
    # Blind to quality over QF 5-95: 3 examples in 4 from QF 5-60, the rest from 5-95
    c.data.quality_ranges = ((5, 60), (5, 95))
    c.data.quality_weights = (0.75, 0.25)
    c.eval_qualities = (10, 30, 50, 70, 90)


def holdout(c):
    # Validate on 20 BSDS500 val images, held out of training (choose models by this, never by
    # the test sets)
    c.data.train_sets = ("BSDS500/train", "Urban100_gray")
    c.eval_set = "BSDS500val"
    c.eval_max_images = 20


def color(c):
    # A colour de-blocker: the U-Net with 3 channels in and out on RGB crops, each a colour JPEG
    # by PIL (4:2:0, or 4:4:4 for a quarter of them) decoded back to RGB; MAE over the three
    # channels (the ranker is grey: no L_Q, L_F). Colour training sets only, BSDS500 val held
    # out for the RGB-PSNR monitoring (holdout's train_sets name the grey Urban100: replaced).
    c.model.arch = "unet"  # the only colour model; `unet` before this sets its recipe
    c.model.channels = 3
    c.data.color = True
    c.data.color_444_fraction = 0.25
    c.data.train_sets = ("BSDS500/train", "Urban100_color_half")
    c.loss.alpha = 0.0
    c.loss.beta = 0.0
    c.eval_set = "BSDS500val"
    c.eval_max_images = c.eval_max_images or 20


def chroma(c):
    # A colour model that keeps the grey model's Y and learns only the chroma, at chroma
    # resolution (a quarter of the pixels): `:unet,allqf,holdout,chroma`
    color(c)
    c.model.arch = "chroma"
    c.loss.chroma = 1.0
    # the frozen Y model: the shipped de-blocker, which is told each image's JPEG quality; so
    # both U-Nets read it (a blind grey U-Net named instead gets a zero-weight quality plane,
    # `unet.add_quality_input`: the same Y)
    c.init_from = c.init_from or "default"
    c.model.quality_input = True


def gpu(c):
    # docs/training.md "On a GPU" says why these values
    c.model.dtype = "bfloat16"
    c.model.scan_groups = True  # one compiled group: compile time independent of the depth
    c.model.nl_attention = "xla"  # all windows at once (no sequential chunks); fits in HBM
    c.batch_size = 128
    c.optim.learning_rate = 4e-4  # the paper's 1e-4 at batch 16, x sqrt(8) for batch 128, rounded
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 500
    c.optim.decay_begin = 10**9  # warmup-stable-decay: flat; the script sets the decay at its end
    c.optim.decay_steps = 1
    c.num_steps = 10**9  # runs end by train_seconds
    c.log_every = 100
    c.log_first_steps = 3  # three real steps shown within the first minute
    c.checkpoint_every = 1000
    c.keep_checkpoints = 1
    c.data.num_threads = 16
    c.compile_cache_dir = "/tmp/cqrnet_jax_cache"


def smoke(c):
    c.model.features = 8
    c.model.depth = 4  # dncnn
    c.model.num_local_groups = 1
    c.model.nl_inner = 4
    c.data.source = "builtin"
    c.batch_size = 4
    c.num_steps = 10
    c.log_every = 5
    c.checkpoint_every = 5
    c.eval_every = 0
    c.eval_set = ""


def no_cqr(c):  # MAE only: the ranker is not used at all
    c.loss.alpha = 0.0
    c.loss.beta = 0.0


def no_dc(c):  # the same units with dilation 1 everywhere
    c.model.dilations = (1, 1, 1)


def no_lq(c):
    c.loss.alpha = 0.0


def no_lf(c):
    c.loss.beta = 0.0


def _baseline(c, arch):
    c.model.arch = arch
    c.loss.pixel = "mse"  # both papers train on the mean squared error
    c.loss.alpha = 0.0  # no ranker
    c.loss.beta = 0.0


def arcnn(c):  # Dong et al. 2015: 9x9x64, 7x7x32, 1x1x16, 5x5x1
    _baseline(c, "arcnn")


def dncnn(c):  # Zhang et al. 2017, DnCNN-3: 20 convs of 64, BatchNorm, residual
    _baseline(c, "dncnn")
    c.model.features = 64
    c.model.depth = 20


PRESETS = {
    "paper": paper,
    "gpu": gpu,
    "cpu": cpu,
    "smoke": smoke,
    "unet": unet,
    "allqf": allqf,
    "holdout": holdout,
    "color": color,
    "chroma": chroma,
    "no_cqr": no_cqr,
    "no_dc": no_dc,
    "no_lq": no_lq,
    "no_lf": no_lf,
    "arcnn": arcnn,
    "dncnn": dncnn,
}


def get_config(arg=None):
    c = train_defaults()
    c.task = "deblock"
    c.batch_size = 16
    c.num_steps = 300_000
    c.log_every = 50
    c.checkpoint_every = 1000
    c.optim.learning_rate = 1e-4  # Adam, halved every 1e5 iterations (the paper)
    c.optim.schedule = "step"
    c.optim.decay_steps = 100_000
    c.optim.decay_rate = 0.5
    c.data.patch_size = 48
    c.data.qualities = (10, 20, 30)
    c.model = deblock_model_defaults()
    c.loss = dict(
        pixel="mae",  # the pixel loss: mae (the paper's L_MAE) | mse (the baselines')
        alpha=0.01,  # weight of L_Q
        beta=0.9,  # weight of L_F
        boundary=0.0,  # weight of L_B, the steps across 8x8 block edges (not in the paper)
        blocking=0.0,  # weight of L_BEF, the blocking excess PSNR-B counts (not in the paper)
        chroma=0.0,  # colour runs: weight of L_C, the MAE of Cb and Cr (not in the paper)
        ranker="default",  # the shipped guide; or a ranker's training workdir or params prefix
        feature_layers=(1, 3, 5),  # ranker maps matched by L_F (stride-2 conv, BN, LeakyReLU)
    )
    c.eval_set = ""
    c.eval_tile = 0  # 0: whole images
    c.eval_qualities = ()  # QFs of the periodic evaluation (default: data.qualities)
    c.eval_max_images = 0  # the evaluation set's first N images (0: all)
    paper(c)
    return apply_presets(c, arg, PRESETS)
