"""The evaluator: JPEG-degrade test images, restore them, score PSNR / SSIM / PSNR-B (paper §4.2).

Model-agnostic: a *restorer* is any callable `(degraded Y uint8 (H, W)) -> restored Y uint8 (H, W)`;
one that also has `restore_batch(images, progress=None) -> list` (as `inference.Restorer`) gets
all the images of a set at a quality at once, so that it can batch them; one that is
quality-conditioned (`quality_input`) is told each set's quality through `for_quality`. Images
are scored whole (any size, no crop) and a table row is the mean over its images of the
per-image values, the convention of the published tables. `get_restorer` turns a `--model`
value into a restorer: "jpeg" (the identity: scores the decoded JPEG itself) or a de-blocking
model.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Collection, Sequence

import numpy as np
from tqdm import tqdm

from .data.color import round_to_uint8
from .data.consistency import project
from .data.jpeg import check_quality, ijg_luma_table, jpeg_degrade
from .metrics import image_metrics
from .photo import told_quality

RestoreFn = Callable[[np.ndarray], np.ndarray]  # degraded Y uint8 -> restored Y uint8
ImageSet = tuple[str, Sequence[tuple[str, np.ndarray]]]  # (set name, [(image name, Y uint8)])
METRICS = ("psnr", "ssim", "psnr_b")
_DECIMALS = {"psnr": 2, "ssim": 3, "psnr_b": 2}  # as the papers print them

# Published "JPEG" rows (FBCNN's table, grayscale Y; BSDS500 = the 200-image test split).
PUBLISHED = {
    "jpeg": {
        ("Classic5", 10): (27.82, 0.760, 25.21),
        ("Classic5", 20): (30.12, 0.834, 27.50),
        ("Classic5", 30): (31.48, 0.867, 28.94),
        ("LIVE1", 10): (27.77, 0.773, 25.33),
        ("LIVE1", 20): (30.07, 0.851, 27.57),
        ("LIVE1", 30): (31.41, 0.885, 28.92),
        ("BSDS500", 10): (27.80, 0.768, 25.10),
        ("BSDS500", 20): (30.05, 0.849, 27.22),
        ("BSDS500", 30): (31.37, 0.884, 28.53),
    }
}
PUBLISHED_SOURCE = "FBCNN (Jiang et al., ICCV 2021) Table, 'JPEG' rows"


def identity(y_uint8: np.ndarray) -> np.ndarray:
    """The "jpeg" model: returns the decoded JPEG unchanged, so the scores are JPEG's own."""
    return y_uint8


def get_restorer(model: str, **how) -> tuple[str, RestoreFn]:
    """(name, restorer) for a `--model` value: "jpeg" (the decoded JPEG itself), "default" (the
    shipped de-blocking model), or a training workdir / exported params prefix. `how` (tile,
    canvas, max_batch, exact_group, devices) chooses how a model runs (`inference.Restorer`);
    "jpeg" ignores it."""
    if model == "jpeg":
        return "jpeg", identity
    from cqrnet_jax.inference import load_restorer

    restorer, _ = load_restorer(model, **how)
    return model, restorer


def _check(out, degraded: np.ndarray, name: str) -> np.ndarray:
    out = np.asarray(out)
    if out.shape != degraded.shape or out.dtype != np.uint8:
        raise ValueError(
            f"{name}: the restorer returned {out.dtype} {out.shape}, "
            f"expected uint8 {degraded.shape}"
        )
    return out


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    # Frequent refreshes on a terminal; sparse lines (still some) when stderr goes to a log file.
    tty = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit="img",
        file=sys.stderr,
        disable=not enabled,
        mininterval=0.5 if tty else 30.0,
        dynamic_ncols=True,
    )


def _restore_all(restorer: RestoreFn, degraded: list[np.ndarray], bar: tqdm, table=None) -> list:
    """The restorer's outputs for all images, through `restore_batch` when it has one. With
    `table` (the JPEGs' luma quantization table), each output is projected onto the set of
    images that JPEG allows (`data.consistency.project`), from the float output where the
    restorer gives one, as `deblock` does."""
    float_batch = getattr(restorer, "restore_float_batch", None)
    if table is not None and float_batch is not None:
        floats = float_batch([np.asarray(d, np.float32) / 255.0 for d in degraded], progress=bar)
        return [round_to_uint8(project(f * 255.0, d, table)) for f, d in zip(floats, degraded)]
    restore_batch = getattr(restorer, "restore_batch", None)
    if restore_batch is not None:
        outputs = list(restore_batch(degraded, progress=bar))
        if len(outputs) != len(degraded):
            raise ValueError(f"restore_batch returned {len(outputs)} images for {len(degraded)}")
    else:
        outputs = []
        for y in degraded:
            outputs.append(restorer(y))
            bar.update(1)
    if table is not None:
        outputs = [
            round_to_uint8(project(np.asarray(o, np.float64), d, table))
            for o, d in zip(outputs, degraded)
        ]
    return outputs


def _score(
    restorer: RestoreFn, images, quality: int, bar: tqdm, consistency: bool = False
) -> tuple[list[dict], dict]:
    """Per-image rows {"image", "psnr", "ssim", "psnr_b"} of one set at one quality (with
    `consistency`, outputs projected onto what each JPEG allows), and the
    seconds each phase took: {"jpeg_s", "restore_s", "metrics_s"} (wall time; compiles of new
    shapes fall in the phase that meets them)."""
    start = time.perf_counter()
    clean = [np.asarray(y) for _, y in images]
    degraded = [jpeg_degrade(y, quality) for y in clean]
    jpeg_done = time.perf_counter()
    table = ijg_luma_table(quality).reshape(8, 8) if consistency else None
    # a quality-conditioned model is told the quality, as a JPEG's header tells `deblock`
    restored = _restore_all(told_quality(restorer, quality), degraded, bar, table)
    restore_done = time.perf_counter()
    rows = []
    for (image_name, _), y, d, out in zip(images, clean, degraded, restored):
        scores = image_metrics(_check(out, d, image_name), y)
        rows.append({"image": image_name, **{m: scores[m] for m in METRICS}})
    seconds = {
        "jpeg_s": jpeg_done - start,
        "restore_s": restore_done - jpeg_done,
        "metrics_s": time.perf_counter() - restore_done,
    }
    return rows, seconds


def evaluate_sets(
    restorer: RestoreFn,
    model_name: str,
    sets: Sequence[ImageSet],
    qualities: Sequence[int],
    progress: bool = True,
    left_alone: Collection[int] = (),
    consistency: bool = False,
) -> dict[str, list[dict]]:
    """Scores `restorer` on every image of every set at every JPEG quality; at the qualities in
    `left_alone` the decoded JPEG itself is scored (rows marked "left_alone": true). With
    `consistency`, each output is projected onto what its JPEG allows, as `deblock` does by
    default (rows marked "consistency": true).

    Returns {"results": one row per (set, quality) with the means and n_images,
    "per_image": one row per (set, quality, image), "timing": one row per (set, quality) with
    the seconds of its phases (`_score`)}. Metric values are Python floats; PSNR is inf for a
    perfect restoration (see `json_safe`).
    """
    qualities = [check_quality(q) for q in qualities]
    total = sum(len(images) for _, images in sets) * len(qualities)
    results, per_image, timing = [], [], []
    with _progress(total, model_name, progress) as bar:
        for set_name, images in sets:
            for q in qualities:
                bar.set_description_str(f"{model_name} {set_name} q{q}", refresh=False)
                alone = q in left_alone or restorer is identity
                rows, seconds = _score(
                    identity if alone else restorer, images, q, bar, consistency and not alone
                )
                key = {"model": model_name, "dataset": set_name, "quality": q}
                if q in left_alone:
                    key["left_alone"] = True
                elif consistency and not alone:
                    key["consistency"] = True
                timing.append({**key, "n_images": len(rows), **seconds})
                per_image.extend({**key, **r} for r in rows)
                means = {
                    m: float(np.mean([r[m] for r in rows])) if rows else math.nan for m in METRICS
                }
                results.append({**key, **means, "n_images": len(rows)})
    return {"results": results, "per_image": per_image, "timing": timing}


def format_timing(timing: Sequence[dict]) -> str:
    """One line: how many restorations took how long, and where the time went."""
    n = sum(t["n_images"] for t in timing)
    phases = {p: sum(t[p] for t in timing) for p in ("restore_s", "jpeg_s", "metrics_s")}
    total = sum(phases.values())
    each = f" ({phases['restore_s'] / n:.2f} s each)" if n else ""
    return (
        f"scored {n} restorations in {total:.0f} s: restoring {phases['restore_s']:.0f} s{each}, "
        f"metrics {phases['metrics_s']:.0f} s, JPEG {phases['jpeg_s']:.0f} s"
    )


def compare_published(results: Sequence[dict]) -> list[dict]:
    """Adds "published" and "matches_to_0.01" to rows that have a published counterpart.

    A row matches when each of its metrics, rounded as the papers print it (PSNR and PSNR-B to
    2 decimals, SSIM to 3), equals the published value. Rows without one are returned unchanged.
    """
    out = []
    for row in results:
        ref = PUBLISHED.get(row["model"], {}).get((row["dataset"], row["quality"]))
        row = dict(row)
        if ref is not None:
            pub = dict(zip(METRICS, ref))
            row["published"] = pub
            row["matches_to_0.01"] = all(
                abs(round(row[m], _DECIMALS[m]) - pub[m]) < 0.5 * 10 ** -_DECIMALS[m]
                for m in METRICS
            )
        out.append(row)
    return out


def published_rows(model_name: str) -> list[dict]:
    """The published rows for `model_name` (empty when there are none), for the JSON report."""
    return [
        {"model": model_name, "dataset": d, "quality": q, **dict(zip(METRICS, v))}
        for (d, q), v in PUBLISHED.get(model_name, {}).items()
    ]


def json_safe(obj):
    """`obj` with every non-finite float (PSNR of identical images is inf) replaced by None.

    JSON has no inf / NaN: the report writes them as null rather than emitting invalid JSON.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

    def line(cells):
        return (
            "| "
            + " | ".join(
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _scores(row: dict) -> list[str]:
    return [f"{row[m]:.{_DECIMALS[m]}f}" for m in METRICS]


def format_table(results: Sequence[dict]) -> str:
    """Markdown table, one line per (model, dataset, QF): PSNR | SSIM | PSNR-B and image count."""
    header = ["model", "dataset", "QF", "images", "PSNR", "SSIM", "PSNR-B"]
    rows = [
        [_model_cell(r), r["dataset"], str(r["quality"]), str(r["n_images"]), *_scores(r)]
        for r in results
    ]
    return _markdown(header, rows, right={2, 3, 4, 5, 6})


def _model_cell(row: dict) -> str:
    return f"{row['model']} (left alone: JPEG)" if row.get("left_alone") else row["model"]


def format_per_image(per_image: Sequence[dict]) -> str:
    """Markdown table, one line per (model, dataset, QF, image)."""
    header = ["model", "dataset", "QF", "image", "PSNR", "SSIM", "PSNR-B"]
    rows = [
        [_model_cell(r), r["dataset"], str(r["quality"]), r["image"], *_scores(r)]
        for r in per_image
    ]
    return _markdown(header, rows, right={2, 4, 5, 6})
