"""Writes the Colab notebooks of this folder from the cell sources below (outputs stripped).

    python experiments/notebooks/build.py        # rewrites quickstart, training, evaluation.ipynb

Edit the notebooks here, not in Jupyter, so that they stay reviewable and regenerable.
tests/test_notebooks.py runs every notebook headless with CQRNET_NOTEBOOK_TINY=1.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

# The first code cell of every notebook: the README's install line plus the notebooks' extra,
# run by the notebook itself, so that it runs top to bottom wherever it is opened. CI runs it too
# (tests/test_notebooks.py), in an environment where it finds the package installed already.
SOURCE = """\
import os

REPO_URL = ""  # Colab: the GitHub URL you opened this notebook from. A clone: leave it empty.
REPO_URL = REPO_URL or os.environ.get("CQRNET_REPO_URL", "")"""

SETUP = """\
import importlib
import importlib.metadata
import importlib.util
import shlex
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path


def find_checkout(start: Path) -> Path | None:
    \"\"\"The first folder upwards of `start` that holds this project.\"\"\"
    marks = ("configs/deblock.py", "requirements/constraints.txt", "pyproject.toml")
    return next((p for p in (start, *start.parents) if all((p / m).is_file() for m in marks)), None)


def run(cmd: list[str]):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(cmd)}\\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def loaded_versions() -> dict[str, str]:
    \"\"\"Versions of the installed distributions whose modules this kernel has imported.\"\"\"
    dists = importlib.metadata.packages_distributions()
    names = {d for m in list(sys.modules) if "." not in m for d in dists.get(m, ())}
    return {d: importlib.metadata.version(d) for d in names}


REPO = find_checkout(Path.cwd().resolve())
if REPO is None and REPO_URL:
    REPO = Path.cwd().resolve() / "cqrnet-jax"  # not cqrnet_jax: that would shadow the package
    if find_checkout(REPO) != REPO:
        run(["git", "clone", "-q", "--depth", "1", REPO_URL, str(REPO)])
if REPO is None:
    raise SystemExit(
        "This notebook needs the cqrnet_jax repository: run it from a clone of the repository, "
        "or (Colab) set REPO_URL in the cell above to the repository's GitHub URL and rerun both."
    )
GPU = shutil.which("nvidia-smi") is not None  # a GPU runtime: jax's CUDA 12 build as well
PIP = [sys.executable, "-m", "pip", "install", "-q"]
PIP += ["-c", f"{REPO}/requirements/constraints.txt", "-e", f"{REPO}[notebooks]"]
PIP += ["jax[cuda12]"] if GPU else []
spec = importlib.util.find_spec("cqrnet_jax")
here = spec and spec.origin and REPO in Path(spec.origin).resolve().parents
if here and importlib.util.find_spec("matplotlib"):
    print("installed already:", shlex.join(PIP[2:]))
else:
    print("installing:", shlex.join(PIP[2:]))
    before = loaded_versions()
    run(PIP)
    site.addsitedir(sysconfig.get_path("purelib"))  # reads the editable install's .pth
    importlib.invalidate_caches()
    after = loaded_versions()
    changed = [f"{d} {v} -> {after.get(d)}" for d, v in before.items() if after.get(d) != v]
    if changed:  # the old versions' modules are loaded: a new interpreter must import the new
        raise SystemExit(
            f"Installed, replacing loaded packages ({', '.join(changed)}): restart the session "
            "(Colab: Runtime > Restart session) and run the notebook again from the top."
        )
jax = importlib.import_module("jax")  # imported only now, after the install
cqrnet_jax = importlib.import_module("cqrnet_jax")
print(f"cqrnet_jax from {Path(cqrnet_jax.__file__).parent}, jax {jax.__version__}")
print("devices:", jax.devices())"""


def _intro(title: str, body: str, name: str) -> str:
    """A notebook's first Markdown cell: its title, what it does, and how to run it."""
    return f"""\
# {title}

{body}

**Running it.** From a clone of the repository: open this file in Jupyter and run it top to
bottom; the first cells install the package from that clone (`pip install -c
requirements/constraints.txt -e ".[notebooks]"`: the README's line, with matplotlib). On Colab:
File > Open notebook > GitHub, paste the repository's URL, pick
`experiments/notebooks/{name}.ipynb`, and put the same URL in the first code cell's `REPO_URL`;
the cell after it clones the repository and installs it. A CPU runtime works. On a GPU runtime
(Runtime > Change runtime type) it also installs jax's CUDA 12 build, as
`pip install -c requirements/constraints.txt "jax[cuda12]"` does on a GPU machine of your own."""


TINY = """\
TINY = os.environ.get("CQRNET_NOTEBOOK_TINY") == "1"  # CI: tiny settings, seconds per cell"""


# --- quickstart --------------------------------------------------------------------------------

QUICKSTART = [
    new_markdown_cell(
        _intro(
            "cqrnet_jax quick start: restore a JPEG",
            """\
Compresses a photo at JPEG quality 10 (or takes yours), removes the artifacts with the shipped
de-blocking model, shows before / after, and asks the quality ranker how compressed each looks.
The same from a shell: `cqrnet-jax demo`, `cqrnet-jax deblock photo.jpg -o restored/`,
`cqrnet-jax estimate photo.jpg`.""",
            "quickstart",
        )
    ),
    new_code_cell(SOURCE),
    new_code_cell(SETUP),
    new_code_cell(f"""\
{TINY}
PHOTO = "astronaut"  # bundled with scikit-image: astronaut, coffee, chelsea, camera (grey), rocket
QUALITY = 10  # JPEG quality of the compressed copy
SIZE = 128 if TINY else 0  # restore only a SIZE x SIZE region around the detail (0: whole photo)
UPLOAD = False  # Colab: True to upload your own photo (a JPEG) instead"""),
    new_markdown_cell("""\
## A JPEG to restore

Your upload, or the bundled photo saved as a JPEG file at `QUALITY`. Either way the file goes
through the loader `cqrnet-jax deblock` uses."""),
    new_code_cell("""\
import tempfile
from pathlib import Path

from PIL import Image

from cqrnet_jax.apps.demo import DETAIL_CENTRES, cut, load_photo, square_around
from cqrnet_jax.data.io import load_image
from cqrnet_jax.data.jpeg import header_quality

original = None  # the uncompressed photo, when we have it
if UPLOAD and "google.colab" in sys.modules:
    from google.colab import files

    path = Path(next(iter(files.upload())))
    centre = None
else:
    original, centre = load_photo(PHOTO), DETAIL_CENTRES[PHOTO]
    if SIZE:
        top, left, _ = region = square_around(original.shape, centre, SIZE)
        original, centre = cut(original, region), (centre[0] - top, centre[1] - left)
    path = Path(tempfile.mkdtemp()) / f"{PHOTO}_q{QUALITY}.jpg"
    Image.fromarray(original).save(path, quality=QUALITY)
jpeg = load_image(path)
print(path.name, jpeg.pixels.shape, "header quality:", header_quality(jpeg.quantization))"""),
    new_code_cell("""\
from cqrnet_jax.inference import load_restorer
from cqrnet_jax.photo import restore_image

restorer, _ = load_restorer("default", tile=512)  # tiles bound the memory on large photos
restored = restore_image(restorer, jpeg)
if restored.ndim == 3:
    restored = restored[..., :3]  # drop alpha, if the file had one"""),
    new_markdown_cell("## Before / after"),
    new_code_cell("""\
import matplotlib.pyplot as plt

panels = [("JPEG", jpeg.pixels), ("restored", restored)]
if original is not None:
    panels.append(("original", original))
h, w = jpeg.pixels.shape[:2]
box = square_around((h, w), centre or (h // 2, w // 2), max(16, min(h, w) // 4))
fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 8))
for col, (title, pixels) in enumerate(panels):
    axes[0, col].imshow(pixels, cmap="gray", vmin=0, vmax=255)
    axes[0, col].set_title(title)
    axes[1, col].imshow(cut(pixels, box), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axes[1, col].set_title("detail")
for ax in axes.flat:
    ax.axis("off")
plt.tight_layout()
plt.show()"""),
    new_code_cell("""\
from cqrnet_jax.apps.demo import luma
from cqrnet_jax.metrics import image_metrics

if original is not None:  # scores on the Y channel against the original, as in evaluation
    for title, pixels in panels[:2]:
        m = image_metrics(luma(pixels), luma(original))
        scores = f"PSNR {m['psnr']:.2f} dB  SSIM {m['ssim']:.3f}  PSNR-B {m['psnr_b']:.2f}"
        print(f"{title:9} {scores}")"""),
    new_markdown_cell("""\
## How compressed does it look? Ask the ranker

The shipped blind quality estimator (stage 1's ranker, fine-tuned so that scores also compare
across photos) scores an image's Y channel (higher = better quality); a calibration stored with
its weights maps the score to a JPEG quality. It was trained on qualities 1–30, so beyond ~30 its
estimate is coarse, and it judges compression artifacts, not fidelity: a restored image can read
as high as the original (see `experiments/ranker.md#ordering-jpeg-qualities`)."""),
    new_code_cell("""\
from cqrnet_jax.quality import estimate_quality, load_ranker

ranker = load_ranker()  # the shipped blind estimator
for title, pixels in panels:
    score = float(ranker(luma(pixels)))
    quality = estimate_quality(score, ranker.calibration)
    print(f"{title:9} score {score:+.3f}  looks like JPEG quality {quality:.0f}")"""),
]


# --- training ----------------------------------------------------------------------------------

TRAINING = [
    new_markdown_cell(
        _intro(
            "cqrnet_jax training: the ranker, then the de-blocker",
            """\
A tiny run of both stages on the photos bundled with scikit-image: stage 1 trains the quality
ranker with the margin ranking loss, stage 2 trains the de-blocking network guided by *that*
ranker (`L_MAE + 0.01 L_Q + 0.9 L_F`). Real runs use the same code with bigger presets:

    python -m cqrnet_jax.main --config=configs/ranker.py:cpu --workdir=runs/ranker
    python -m cqrnet_jax.main --config=configs/deblock.py:cpu --workdir=runs/deblock

Rerunning a training cell on the same workdir resumes from its last checkpoint.""",
            "training",
        )
    ),
    new_code_cell(SOURCE),
    new_code_cell(SETUP),
    new_code_cell(f"""\
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # as cqrnet_jax/main.py: quiet TensorFlow logs
{TINY}
RANKER_STEPS = 10 if TINY else 300
DEBLOCK_STEPS = 4 if TINY else 200
LOG_EVERY = 2 if TINY else 10
WORKDIR = os.environ.get("CQRNET_NOTEBOOK_WORKDIR") or tempfile.mkdtemp(prefix="cqrnet_")"""),
    new_code_cell("""\
from cqrnet_jax.config_base import load_config_file


def load_config(name: str, presets: str):
    \"\"\"What `--config=configs/NAME.py:PRESETS` gives, from the checkout (REPO, set above).\"\"\"
    return load_config_file(REPO / "configs" / f"{name}.py", presets)"""),
    new_markdown_cell("## Stage 1: the quality ranker (`configs/ranker.py:smoke`)"),
    new_code_cell("""\
from cqrnet_jax.train.loop import train_and_evaluate
from cqrnet_jax.train.tasks import get_task

ranker_config = load_config("ranker", "smoke")
ranker_config.num_steps = RANKER_STEPS
ranker_config.log_every = LOG_EVERY
ranker_config.checkpoint_every = RANKER_STEPS
ranker_config.data.backend = "numpy"  # no TensorFlow import; the same batches as tf.data
ranker_dir = f"{WORKDIR}/ranker"
ranker_state = train_and_evaluate(ranker_config, ranker_dir, get_task(ranker_config))"""),
    new_markdown_cell("""\
## Stage 2: the de-blocker (`configs/deblock.py:smoke`), guided by the ranker just trained

`loss.ranker` points at stage 1's export (`WORKDIR/ranker/export/ranker`) instead of the
shipped ranker."""),
    new_code_cell("""\
deblock_config = load_config("deblock", "smoke")
deblock_config.num_steps = DEBLOCK_STEPS
deblock_config.log_every = LOG_EVERY
deblock_config.checkpoint_every = DEBLOCK_STEPS
deblock_config.data.backend = "numpy"
deblock_config.loss.ranker = f"{ranker_dir}/export/ranker"
deblock_dir = f"{WORKDIR}/deblock"
deblock_state = train_and_evaluate(deblock_config, deblock_dir, get_task(deblock_config))"""),
    new_markdown_cell("## Loss curves (from `WORKDIR/logs/metrics.jsonl`)"),
    new_code_cell("""\
import json

import matplotlib.pyplot as plt


def read_log(workdir: str) -> list[dict]:
    with open(f"{workdir}/logs/metrics.jsonl") as f:
        return [json.loads(line) for line in f]


fig, axes = plt.subplots(1, 2, figsize=(12, 4))
for ax, (title, workdir) in zip(axes, [("ranker", ranker_dir), ("de-blocker", deblock_dir)]):
    log = read_log(workdir)
    steps = [r["step"] for r in log]
    for key in [k for k in log[-1] if "loss" in k]:
        ax.plot(steps, [r[key] for r in log], marker="o", label=key)
    ax.set(title=title, xlabel="step", yscale="log")
    ax.legend()
plt.show()
print("last logged:", {k: round(v, 4) for k, v in read_log(deblock_dir)[-1].items()})"""),
    new_markdown_cell("""\
## The trained de-blocker on a photo

Expect little or no gain over the JPEG from so few steps of a tiny network; the shipped model
took 39 343 steps of the U-Net, about 11 hours on 2 CPU cores
(`cqrnet_jax/pretrained/deblock.md`)."""),
    new_code_cell("""\
from cqrnet_jax.data.datasets import builtin_photos
from cqrnet_jax.quality import center_crop
from cqrnet_jax.scoring import evaluate_sets, format_table, get_restorer

photos = [(n, center_crop(y, 96 if TINY else 256)) for n, y in builtin_photos()[:2]]
rows = []
for model in ("jpeg", deblock_dir):
    name, restorer = get_restorer(model)
    name = "jpeg" if model == "jpeg" else "trained here"
    rows += evaluate_sets(restorer, name, [("builtin", photos)], [10], progress=False)["results"]
print(format_table(rows))"""),
]


# --- evaluation --------------------------------------------------------------------------------

EVALUATION = [
    new_markdown_cell(
        _intro(
            "cqrnet_jax evaluation: the tables and the ranker's feature maps",
            """\
The evaluator of `cqrnet-jax evaluate` on the photos bundled with scikit-image (no data
needed; the paper's test sets need `--data-dir`), the numbers recorded in `experiments/results/`,
and the quality ranker's feature maps for one image at several JPEG qualities, as in the
paper's Figure 4.""",
            "evaluation",
        )
    ),
    new_code_cell(SOURCE),
    new_code_cell(SETUP),
    new_code_cell(f"""\
{TINY}
MODEL = "default"  # the shipped de-blocker; or a training workdir / exported params prefix
QUALITIES = (10,) if TINY else (10, 20, 30)
CROP = 96 if TINY else 0  # centre crop of each photo (0: whole photos)
FIG4_PHOTO, FIG4_SIZE = "camera", (96 if TINY else 192)
FIG4_QUALITIES = (10, 30) if TINY else (10, 20, 30)"""),
    new_markdown_cell("## JPEG vs the de-blocker on the built-in photos (Y channel)"),
    new_code_cell("""\
from IPython.display import Markdown, display

from cqrnet_jax.data.datasets import builtin_photos
from cqrnet_jax.quality import center_crop
from cqrnet_jax.scoring import evaluate_sets, format_per_image, format_table, get_restorer

photos = [(name, center_crop(y, CROP)) for name, y in builtin_photos()]
results, per_image = [], []
for model in ("jpeg", MODEL):
    name, restorer = get_restorer(model)
    scores = evaluate_sets(restorer, name, [("builtin", photos)], QUALITIES, progress=False)
    results += scores["results"]
    per_image += scores["per_image"]
display(Markdown(format_table(results)))
display(Markdown(format_per_image(per_image)))"""),
    new_markdown_cell("""\
## Recorded results (`experiments/results/`)

Each file holds the command that produced it. `jpeg_baseline.json` also holds the published
JPEG rows it reproduces."""),
    new_code_cell("""\
import json

for path in sorted((REPO / "experiments" / "results").glob("*.json")):  # REPO: set above
    report = json.loads(path.read_text())
    rows = [r for r in report.get("results", []) if isinstance(r, dict) and "psnr" in r]
    if not rows:
        continue  # e.g. the ranker's reports: other metrics
    text = f"**{path.name}**: `{report.get('command', '')}`\\n\\n" + format_table(rows)
    published = report.get("published", {}).get("results", [])
    if published:
        rows = [{**r, "n_images": "-"} for r in published]
        text += f"\\n\\npublished ({report['published']['source']}):\\n\\n" + format_table(rows)
    display(Markdown(text))"""),
    new_markdown_cell("""\
## The ranker's feature maps (the paper's Figure 4)

The shipped ranker's conv outputs 1, 3 and 5 (after each of the first three stride-2 convs:
1/2, 1/4 and 1/8 resolution; the layers the feature-matching loss `L_F` uses) for one image
uncompressed (GT) and at several JPEG qualities. First the mean |activation| over channels,
one colour scale per row; then single channels: those whose response differs most between the
lowest and the highest quality. The paper reports a low response to the clean image and high
responses to the JPEGs; each title gives the map's mean, to compare."""),
    new_code_cell("""\
import jax.numpy as jnp
import numpy as np

from cqrnet_jax import pretrained
from cqrnet_jax.apps.demo import DETAIL_CENTRES, cut, load_photo, square_around
from cqrnet_jax.data.jpeg import jpeg_degrade
from cqrnet_jax.models.build import load_ranker_model

LAYERS = (1, 3, 5)
module, variables, _ = load_ranker_model(pretrained.shipped("ranker"))
photo = load_photo(FIG4_PHOTO)
y = cut(photo, square_around(photo.shape, DETAIL_CENTRES[FIG4_PHOTO], FIG4_SIZE))
versions = {"GT": y, **{f"QF {q}": jpeg_degrade(y, q) for q in FIG4_QUALITIES}}
batch = jnp.asarray(np.stack(list(versions.values())), jnp.float32) / 255.0
scores, maps = module.apply(variables, batch, train=False)
maps = {layer: np.asarray(maps[layer]) for layer in LAYERS}  # (versions, h, w, channels)
for name, score in zip(versions, np.asarray(scores)):
    print(f"{name:6} ranker score {score:+.3f}")"""),
    new_code_cell("""\
import matplotlib.pyplot as plt

names = list(versions)
rows = 1 + len(LAYERS)
fig, axes = plt.subplots(rows, len(names), figsize=(3 * len(names), 3 * rows))
for col, name in enumerate(names):
    axes[0, col].imshow(versions[name], cmap="gray", vmin=0, vmax=255)
    axes[0, col].set_title(f"{name} (score {float(scores[col]):+.2f})")
for row, layer in enumerate(LAYERS, start=1):
    response = np.abs(maps[layer]).mean(axis=-1)  # (versions, h, w)
    for col in range(len(names)):
        axes[row, col].imshow(response[col], cmap="magma", vmin=0, vmax=response.max())
        axes[row, col].set_title(f"conv {layer}: mean {response[col].mean():.3f}", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
plt.tight_layout()
plt.show()"""),
    new_code_cell("""\
CHANNELS = 4
low, high = names[1], names[-1]  # the lowest and the highest JPEG quality
fig, axes = plt.subplots(2 * 2, CHANNELS, figsize=(2.5 * CHANNELS, 10))
for i, layer in enumerate(LAYERS[:2]):
    m = maps[layer]
    difference = np.abs(m[1] - m[-1]).mean(axis=(0, 1))
    for j, channel in enumerate(np.argsort(difference)[::-1][:CHANNELS]):
        vmax = np.abs(m[[1, -1], ..., channel]).max()
        for k, (name, v) in enumerate(((low, 1), (high, -1))):
            ax = axes[2 * i + k, j]
            ax.imshow(m[v, ..., channel], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_title(f"{name}, conv {layer} ch {channel}", fontsize=9)
            ax.axis("off")
plt.tight_layout()
plt.show()"""),
]


NOTEBOOKS = {"quickstart": QUICKSTART, "training": TRAINING, "evaluation": EVALUATION}


def render(name: str) -> str:
    """The .ipynb text of notebook `name`: validated, no outputs, stable cell ids."""
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "colab": {"provenance": []},
    }
    for i, cell in enumerate(nb.cells):  # stable ids: a rebuild changes only what was edited
        cell.id = f"cell-{i:02d}"
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main() -> None:
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        path.write_text(render(name))
        print(f"wrote {path.relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main()
