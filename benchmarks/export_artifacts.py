"""`cqrnet-jax export`: size, export time and agreement with JAX of every artifact.

  python benchmarks/export_artifacts.py --json experiments/results/export.json
  python benchmarks/export_artifacts.py --formats onnx --json experiments/results/export.json
  (the second in an environment with the onnx extra; `--json` merges into an existing file)

Each case runs the `cqrnet-jax export` command of this interpreter's environment in a subprocess
(export time = its wall time: Python start, imports, model load, tracing, lowering, writing),
then loads the artifact without the package (`jax.export.deserialize`, `tf.saved_model.load`,
onnxruntime) and compares its output with the JAX model's (`Restorer.restore_float` for the
de-blockers, `model.apply` for the ranker) on a JPEG (quality 10) of scikit-image's chelsea photo
resized to 640x480: its Y channel, or for the colour de-blocker the decoded RGB (4:2:0).
`artifact_bytes`: the file (SavedModel: the folder) without export.json.

A symbolic-size de-blocker (height and width multiples of its alignment M) is also run on the
full 480x640 image padded at the bottom and right by mirroring (numpy.pad's "symmetric", as
docs/export.md advises) to multiples of M and cropped back; the result differs from the JAX model
on the unpadded image near the padded edges, and the JSON says how far in.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

CASES = (  # (what, format, extra flags)
    ("deblock", "stablehlo", ()),
    ("deblock", "stablehlo", ("--height", "480", "--width", "640")),
    ("deblock", "savedmodel", ()),
    ("deblock", "savedmodel", ("--height", "480", "--width", "640")),
    ("deblock", "onnx", ("--height", "480", "--width", "640")),
    ("ranker", "stablehlo", ()),
    ("ranker", "savedmodel", ()),
    ("ranker", "onnx", ()),
    ("color", "stablehlo", ()),
    ("color", "savedmodel", ("--height", "480", "--width", "640")),
    ("color", "onnx", ("--height", "480", "--width", "640")),
)
H, W = 480, 640
QUALITY = 10  # the photos' JPEG quality, told to a quality-conditioned model


def photos() -> dict:
    """{'y': (480, 640) float32 Y in [0, 1] of a quality-10 JPEG, 'rgb': (480, 640, 3) float32
    RGB in [0, 1] of a quality-10 colour (4:2:0) JPEG}."""
    import skimage.data
    from PIL import Image

    from cqrnet_jax.data.color import rgb_to_y
    from cqrnet_jax.data.jpeg import jpeg_degrade, jpeg_degrade_rgb

    rgb = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((W, H), Image.BICUBIC))
    return {
        "y": jpeg_degrade(rgb_to_y(rgb), QUALITY).astype(np.float32) / 255.0,
        "rgb": jpeg_degrade_rgb(rgb, QUALITY).astype(np.float32) / 255.0,
    }


def pad_to(x: np.ndarray, m: int) -> np.ndarray:
    """(N, H, W[, 3]) -> bottom/right mirrored padding to multiples of m."""
    ph, pw = -x.shape[1] % m, -x.shape[2] % m
    return np.pad(x, ((0, 0), (0, ph), (0, pw)) + ((0, 0),) * (x.ndim - 3), mode="symmetric")


def multiple(manifest: dict) -> int:
    """M of a symbolic input shape ['b', 'M*h', 'M*w', ...] (1 for 'h')."""
    side = str(manifest["input"]["shape"][1])
    return int(side.split("*")[0]) if "*" in side else 1


def runner(fmt: str, out: Path, manifest: dict):
    """f(x) of the artifact; a quality-conditioned one (the shipped de-blockers) is told QUALITY,
    the photos' JPEG quality, for each image."""
    told = manifest.get("quality_input")  # its input's name, shape and meaning, if it has one

    def q(x):
        return {told["name"]: np.full((len(x),), QUALITY, np.float32)} if told else {}

    if fmt == "stablehlo":
        import jax

        exported = jax.export.deserialize(bytearray((out / manifest["file"]).read_bytes()))
        return lambda x: np.asarray(exported.call(x, *q(x).values()))
    name = manifest["input"]["name"]
    if fmt == "savedmodel":
        from cqrnet_jax.data.tf_pipeline import import_tensorflow

        tf = import_tensorflow()
        serve = tf.saved_model.load(os.fspath(out)).signatures["serving_default"]
        out_name = manifest["output"]["name"]
        feed = lambda x: {k: tf.constant(v) for k, v in {name: x, **q(x)}.items()}  # noqa: E731
        return lambda x: serve(**feed(x))[out_name].numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(
        os.fspath(out / manifest["file"]), providers=["CPUExecutionProvider"]
    )
    fixed = isinstance(manifest["input"]["shape"][0], int)
    if fixed:  # the ONNX de-blocker's batch is fixed (1): one image at a time
        return lambda x: np.concatenate(
            [session.run(None, {name: im[None], **q(im[None])})[0] for im in x]
        )
    return lambda x: session.run(None, {name: x, **q(x)})[0]


def inputs(fixed: bool, x: np.ndarray, m: int) -> dict:
    """Named batches of crops of x: the whole photo at a fixed size; else two images and one
    large one whose sides are multiples of m."""
    if fixed:
        return {"1x480x640": x[None]}
    a, b = (96, 144) if m == 1 else (m, 2 * m)
    h, w = H - H % m, W - W % m
    return {
        f"2x{a}x{b}": np.stack([x[:a, :b], x[H - a :, W - b :]]),
        f"1x{h}x{w}": x[None, :h, :w],
    }


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "export.json")


def measure(what, fmt, flags, work: Path, photo, reference) -> dict:
    out = work / f"{what}-{fmt}-{'fixed' if flags else 'symbolic'}"
    cli = Path(sys.executable).with_name("cqrnet-jax")
    argv = [
        "export",
        "--format",
        fmt,
        "-o",
        os.fspath(out),
        *(["--what", what] * (what != "deblock")),
        *flags,
    ]
    start = time.perf_counter()
    proc = subprocess.run([os.fspath(cli), *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"cqrnet-jax {shlex.join(argv)} failed:\n{proc.stderr[-2000:]}")
    manifest = json.loads((out / "export.json").read_text())
    run = runner(fmt, out, manifest)
    result = {
        "what": what,
        "format": fmt,
        "command": "cqrnet-jax " + shlex.join(argv).replace(os.fspath(work) + "/", "OUT/"),
        "input_shape": manifest["input"]["shape"],
        "accepts": manifest["input"]["accepts"],
        "export_seconds": round(seconds, 1),
        "artifact_bytes": folder_bytes(out),
        "max_abs_diff_vs_jax": {},
    }
    m = multiple(manifest)
    for name, x in inputs(bool(flags), photo, m).items():
        result["max_abs_diff_vs_jax"][name] = float(np.abs(run(x) - reference(x)).max())
    if what != "ranker" and not flags:
        # Pad 480x640 to multiples of m, restore, crop back: vs the JAX model on the unpadded
        # image; how far from the bottom/right edges the output moves by more than 1e-4.
        padded = pad_to(photo[None], m)
        got = run(padded)[0, :H, :W]
        expected = reference(photo[None])[0]
        diff = np.abs(got - expected)
        diff = diff.max(axis=-1) if diff.ndim == 3 else diff
        # how far from the bottom and right edges (the padded ones) differences reach
        far = np.full((H, W), H + W)
        if padded.shape[1] > H:
            far = np.minimum(far, (H - np.arange(H))[:, None])
        if padded.shape[2] > W:
            far = np.minimum(far, (W - np.arange(W))[None, :])
        far = np.where(diff > 1e-4, far, 0)
        to_8bit = lambda a: np.clip(np.round(a * 255), 0, 255).astype(np.uint8)  # noqa: E731
        result[f"padded_480x640_to_{padded.shape[1]}x{padded.shape[2]}_and_cropped"] = {
            "max_abs_diff_vs_jax_at_480x640": float(diff.max()),
            "pixels_from_padded_edges_with_diff_over_1e-4": int(far.max()),
            "uint8_values_that_differ": int((to_8bit(got) != to_8bit(expected)).sum()),
        }
    print(json.dumps(result), flush=True)
    return result


def _versions() -> dict:
    found = {}
    for package in (
        "jax",
        "jaxlib",
        "flax",
        "tensorflow",
        "tensorflow-cpu",
        "jax2onnx",
        "onnx",
        "onnxruntime",
    ):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", default="stablehlo,savedmodel", help="comma-separated")
    ap.add_argument("--json", help="write (merge into) this JSON file")
    args = ap.parse_args()
    formats = args.formats.split(",")
    if "onnx" in formats and importlib.util.find_spec("jax2onnx") is None:
        raise SystemExit("--formats onnx needs the onnx extra (pip install -e '.[onnx]')")

    import jax

    from cqrnet_jax import pretrained
    from cqrnet_jax.inference import load_restorer
    from cqrnet_jax.models.build import load_ranker_model

    restorer = load_restorer("default")[0].for_quality(QUALITY)  # blind models ignore it
    colour = load_restorer("default", channels=3)[0].for_quality(QUALITY)
    # `export --what ranker`'s default: the shipped blind estimator
    ranker, ranker_vars, _ = load_ranker_model(pretrained.shipped(pretrained.ESTIMATOR))
    score = jax.jit(lambda x: ranker.apply(ranker_vars, x, train=False)[0])
    references = {
        "deblock": lambda x: np.stack([restorer.restore_float(im) for im in x]),
        "color": lambda x: np.stack([colour.restore_float(im) for im in x]),
        "ranker": lambda x: np.asarray(score(x)),
    }
    command = "python benchmarks/export_artifacts.py " + shlex.join(sys.argv[1:])
    run_info = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores "
        f"(load average {os.getloadavg()[0]:.1f} at the start: shared with training runs)",
        "versions": _versions(),
        "formats": formats,
    }
    images = photos()
    with tempfile.TemporaryDirectory() as work:
        results = [
            measure(
                what,
                fmt,
                flags,
                Path(work),
                images["rgb" if what == "color" else "y"],
                references[what],
            )
            for what, fmt, flags in CASES
            if fmt in formats
        ]
    doc = {}
    if args.json and Path(args.json).is_file():
        doc = json.loads(Path(args.json).read_text())
    doc["about"] = " ".join(" ".join(__doc__.split("\n\n")[2:]).split())
    doc["runs"] = [r for r in doc.get("runs", []) if r["formats"] != formats] + [run_info]
    keep = [r for r in doc.get("results", []) if r["format"] not in formats]
    doc["results"] = keep + results
    doc["results"].sort(
        key=lambda r: [(c[0], c[1], bool(c[2])) for c in CASES].index(
            (r["what"], r["format"], isinstance(r["input_shape"][1], int))
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
