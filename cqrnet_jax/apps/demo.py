"""`cqrnet-jax demo [-o OUT.png]`: the model at work on a bundled photo, no data and no network.

Compresses a photo bundled with scikit-image at a low JPEG quality, restores it with a de-blocking
model and writes one figure: JPEG | restored | original, each with a zoomed detail and its scores.
Colour photos are compressed as ordinary colour JPEGs (PIL / libjpeg, 4:2:0 chroma), the way a
user's photo would be, and restored as `cqrnet-jax deblock` restores them (`restore_image`); grey
photos get the evaluation protocol's grey JPEG. Scores are on the Y channel, as in evaluation.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

from cqrnet_jax.apps.common import (
    UsageError,
    add_color_model_argument,
    add_model_argument,
    int_in_range,
    writing,
)

DEFAULT_OUTPUT = "cqrnet_demo.png"
# Bundled photos and the (row, column) centre of their zoomed detail, picked by eye.
DETAIL_CENTRES = {
    "astronaut": (125, 225),  # the face
    "coffee": (265, 365),  # spoon and saucer rim
    "chelsea": (115, 175),  # the left eye
    "camera": (150, 260),  # face and camera
    "rocket": (170, 320),  # the rocket's nose
}
MIN_SIZE = 16  # PSNR-B needs 16 pixels a side (docs/method.md, "Metrics")
METRIC_NOTE = "Y channel (BT.601 studio swing, as in evaluation), whole image, against the original"


def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo",
        help="JPEG-compress a bundled photo, restore it, write a before/after figure",
        description="Compresses a photo bundled with scikit-image at a low JPEG quality, restores "
        "it with the model and writes a side-by-side figure (JPEG | restored | original, zoomed "
        "details, PSNR on each); prints the scores and the gain. No data, no network.",
    )
    p.add_argument(
        "-o", "--output", default=DEFAULT_OUTPUT, help=f"figure file (default: {DEFAULT_OUTPUT})"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument(
        "--quality", type=int_in_range(1, 100), default=10, help="JPEG quality (default: 10)"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="restore even above the highest quality the model is known to improve (90 for "
        "the shipped one); without it such a JPEG is shown unrestored",
    )
    p.add_argument(
        "--no-consistency",
        action="store_true",
        help="show the network's output as it is, without keeping its DCT coefficients inside "
        "the JPEG's quantization intervals",
    )
    add_model_argument(p)
    add_color_model_argument(p)
    p.add_argument(
        "--photo",
        default="astronaut",
        choices=tuple(DETAIL_CENTRES),
        help="bundled photo (default: astronaut; camera is grey)",
    )
    p.add_argument("--crop", type=int, default=128, help="zoomed detail size (default: 128)")
    p.add_argument(
        "--size", type=int, default=0, help="use only a SIZE x SIZE region (default 0: whole)"
    )
    return p


# --- images and scores ------------------------------------------------------------------------


def load_photo(name: str) -> np.ndarray:
    """The bundled photo `name` as uint8 (H, W) grey or (H, W, 3) RGB."""
    from cqrnet_jax.data.datasets import builtin_photo_files
    from cqrnet_jax.data.io import load_image

    return load_image(builtin_photo_files()[name]).pixels


def square_around(shape, centre, size: int) -> tuple[int, int, int]:
    """(top, left, side) of a square of `size` (at most the image's shorter side) centred as near
    `centre` as the image allows."""
    side = min(size, *shape[:2])
    top = int(np.clip(centre[0] - side // 2, 0, shape[0] - side))
    left = int(np.clip(centre[1] - side // 2, 0, shape[1] - side))
    return top, left, side


def cut(pixels: np.ndarray, box) -> np.ndarray:
    top, left, side = box
    return pixels[top : top + side, left : left + side]


def compress(pixels: np.ndarray, quality: int):
    """The JPEG at `quality`, decoded (`data.io.LoadedImage`): grey via the protocol's
    `jpeg_encode`, colour as PIL's default colour JPEG (IJG tables, 4:2:0 chroma)."""
    from PIL import Image

    from cqrnet_jax.data.io import load_image_bytes
    from cqrnet_jax.data.jpeg import check_quality, jpeg_encode

    if pixels.ndim == 2:
        data = jpeg_encode(pixels, quality)
    else:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=check_quality(quality))
        data = buf.getvalue()
    return load_image_bytes(data, "demo.jpg")


def luma(pixels: np.ndarray) -> np.ndarray:
    """The protocol's Y: grey as it is, RGB through `rgb_to_y`."""
    from cqrnet_jax.data.color import rgb_to_y

    return pixels if pixels.ndim == 2 else rgb_to_y(pixels)


def scores(image: np.ndarray, original: np.ndarray, detail) -> dict[str, float]:
    """PSNR / SSIM / PSNR-B of the whole image on Y, and the PSNR of the zoomed detail."""
    from cqrnet_jax.metrics import image_metrics, psnr

    y, ref = luma(image), luma(original)
    out = image_metrics(y, ref)
    out["detail_psnr"] = float(psnr(cut(y, detail), cut(ref, detail)))
    return out


# --- the figure -------------------------------------------------------------------------------


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except (TypeError, ValueError, OSError, ImportError):
        return ImageFont.load_default()


def _fitting_font(texts, width: int, size: int):
    """The default font at `size`, or smaller (down to 8) until every text fits in `width`."""
    font = _font(size)
    while size > 8 and max(font.getlength(t) for t in texts) > width:
        size -= 1
        font = _font(size)
    return font


def _height(font) -> int:
    return int(getattr(font, "size", 11))  # the bitmap fallback font has no size: ~11 px


def _rgb(pixels: np.ndarray):
    from PIL import Image

    return Image.fromarray(pixels).convert("RGB")


def _captions(s: dict | None, gain: float | None) -> list[str]:
    """The two score lines above a panel."""
    if s is None:
        return ["reference", ""]
    extra = "" if gain is None else f" ({gain:+.2f})"
    return [f"PSNR {s['psnr']:.2f} dB{extra}", f"SSIM {s['ssim']:.3f} · PSNR-B {s['psnr_b']:.2f}"]


def _detail_note(s: dict | None, zoom: int) -> str:
    return f"detail x{zoom}" + ("" if s is None else f": PSNR {s['detail_psnr']:.2f} dB")


def compose_figure(panels, detail, footer: str):
    """One RGB image: a column per (title, pixels, scores or None, gain or None) panel, each with
    its scores, the image with the detail outlined, and the detail zoomed (nearest neighbour)."""
    from PIL import Image, ImageDraw

    h, w = panels[0][1].shape[:2]
    top, left, side = detail
    zoom = max(1, w // side)
    pad, red, ink = max(8, w // 64), (220, 30, 30), (20, 20, 20)
    captions = [(_captions(s, g), _detail_note(s, zoom)) for _, _, s, g in panels]
    big = _fitting_font([t for t, *_ in panels], w, max(14, w // 22))
    small = _fitting_font([t for c, n in captions for t in (*c, n)], w, max(11, w // 36))
    foot = _fitting_font(footer.split("\n"), 3 * w + 2 * pad, _height(small))
    line_big, line_small = _height(big) + pad // 2, _height(small) + pad // 2
    head = line_big + 2 * line_small + pad // 2
    col_h = head + h + pad + side * zoom + line_small
    canvas = Image.new("RGB", (3 * w + 4 * pad, pad + col_h + pad + 2 * line_small), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ((title, pixels, _, _), (lines, note)) in enumerate(zip(panels, captions)):
        x, y = pad + i * (w + pad), pad
        draw.text((x, y), title, font=big, fill=ink)
        for j, text in enumerate(lines):
            draw.text((x, y + line_big + j * line_small), text, font=small, fill=ink)
        y += head
        canvas.paste(_rgb(pixels), (x, y))
        draw.rectangle((x + left, y + top, x + left + side - 1, y + top + side - 1), outline=red)
        y += h + pad
        crop = _rgb(cut(pixels, detail)).resize((side * zoom,) * 2, Image.Resampling.NEAREST)
        zx = x + (w - side * zoom) // 2
        canvas.paste(crop, (zx, y))
        draw.rectangle((zx, y, zx + side * zoom - 1, y + side * zoom - 1), outline=red)
        draw.text((zx, y + side * zoom + pad // 4), note, font=small, fill=ink)
    for j, text in enumerate(footer.split("\n")[:2]):
        draw.text((pad, pad + col_h + pad + j * line_small), text, font=foot, fill=(90, 90, 90))
    return canvas


# --- the command ------------------------------------------------------------------------------


def _check_args(args) -> Path:
    if args.crop < 8:
        raise UsageError(f"--crop must be at least 8 pixels, got {args.crop}")
    if args.size and args.size < MIN_SIZE:
        raise UsageError(f"--size must be 0 (whole photo) or at least {MIN_SIZE}, got {args.size}")
    out = Path(args.output).expanduser()
    if out.is_dir():
        raise UsageError(f"{out} is a directory; give a file name such as {DEFAULT_OUTPUT}")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} exists (use --overwrite to replace it)")
    from PIL import Image

    if out.suffix.lower() not in Image.registered_extensions():
        raise UsageError(f"{out}: unknown image suffix {out.suffix!r} (use .png)")
    return out


def _model_label(spec: str, meta: dict) -> str:
    step = meta.get("step")
    name = "shipped model" if spec == "default" else Path(spec).name
    return f"{name}, step {step}" if step is not None else name


def _colour_label(spec: str, meta: dict) -> str:
    """What restored a colour photo: for a chroma U-Net, the grey U-Net it keeps for Y (its
    step where the model's provenance records it) and the chroma U-Net for Cb/Cr."""
    if meta.get("model", {}).get("arch") != "chroma":
        return f"{_model_label(spec, meta)} (colour: RGB in and out)"
    name = "shipped colour model" if spec == "default" else Path(spec).name
    y_step = meta.get("provenance", {}).get("y_model", {}).get("step")
    y = f"step {y_step}" if y_step is not None else "its own"
    return f"{name}: Y by a grey U-Net ({y}), Cb/Cr by a chroma U-Net (step {meta.get('step')})"


def _summary(name, original, quality, label, seconds, s_jpeg, s_out) -> str:
    kind = "grey" if original.ndim == 2 else "colour, 4:2:0"
    h, w = original.shape[:2]
    rows = [
        f"{name} ({w}x{h}, {kind}) at JPEG quality {quality}, restored by the {label} "
        f"in {seconds:.1f} s",
        f"{METRIC_NOTE}:",
        f"{'':10}{'PSNR':>8}{'SSIM':>8}{'PSNR-B':>8}",
    ]
    for tag, s in (("JPEG", s_jpeg), ("restored", s_out)):
        rows.append(f"{tag:10}{s['psnr']:8.2f}{s['ssim']:8.3f}{s['psnr_b']:8.2f}")
    gain = {m: s_out[m] - s_jpeg[m] for m in ("psnr", "ssim", "psnr_b")}
    rows.append(f"{'gain':10}{gain['psnr']:+8.2f}{gain['ssim']:+8.3f}{gain['psnr_b']:+8.2f}")
    return "\n".join(rows)


def run_demo(args) -> int:
    from cqrnet_jax.apps.input_quality import restore_limit
    from cqrnet_jax.data.io import save_image
    from cqrnet_jax.inference import load_color_restorer, load_restorer
    from cqrnet_jax.photo import restore_image

    out = _check_args(args)
    original = load_photo(args.photo)
    centre = DETAIL_CENTRES[args.photo]
    if args.size:
        top, left, _ = region = square_around(original.shape, centre, args.size)
        original, centre = cut(original, region), (centre[0] - top, centre[1] - left)
    detail = square_around(original.shape, centre, args.crop)
    restorer, meta = load_restorer(args.model)
    label = _model_label(args.model, meta)
    colour = load_color_restorer(args.color_model, args.model) if original.ndim == 3 else None
    if colour is not None:
        label = _colour_label(args.color_model, colour.meta)
    loaded = compress(original, args.quality)
    jpeg = loaded.pixels
    limit = restore_limit(meta, not args.no_consistency)
    t0 = time.perf_counter()
    if args.quality > limit and not args.force:
        print(
            f"JPEG quality {args.quality} is above {limit}, the highest this model is known to "
            "improve: shown unrestored (--force restores it)",
            file=sys.stderr,
        )
        restored, label = jpeg, f"{label} (left alone)"
    else:
        print(f"restoring {args.photo} with the {label} ...", file=sys.stderr, flush=True)
        restored = restore_image(restorer, loaded, not args.no_consistency, colour)
    seconds = time.perf_counter() - t0
    s_jpeg, s_out = scores(jpeg, original, detail), scores(restored, original, detail)
    panels = [
        (f"JPEG, quality {args.quality}", jpeg, s_jpeg, None),
        ("restored", restored, s_out, s_out["psnr"] - s_jpeg["psnr"]),
        ("original", original, None, None),
    ]
    footer = (
        f"{METRIC_NOTE}.\nModel: {label}. Photo: scikit-image '{args.photo}'. "
        "Made by `cqrnet-jax demo`."
    )
    figure = compose_figure(panels, detail, footer)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(out, np.asarray(figure))
    print(_summary(args.photo, original, args.quality, label, seconds, s_jpeg, s_out))
    print(f"wrote {out} ({figure.width}x{figure.height})")
    return 0
