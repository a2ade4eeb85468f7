"""`cqrnet-jax export`: size, export time and agreement with JAX of every artifact.

  python benchmarks/export_artifacts.py --json experiments/results/export.json
  python benchmarks/export_artifacts.py --formats onnx --json experiments/results/export.json
  (the second in an environment with the onnx extra; `--json` merges into an existing file)

Each case runs the `cqrnet-jax export` command of this interpreter's environment in a subprocess
(export time = its wall time: Python start, imports, model load, tracing, lowering, writing),
then loads the artifact without the package (`jax.export.deserialize`, `tf.saved_model.load`,
onnxruntime) and compares its output with the JAX model's (`Restorer.restore_float` for the
de-blocker, `model.apply` for the ranker) on a JPEG (quality 10) of scikit-image's chelsea photo
resized to 640x480, Y channel. `artifact_bytes`: the file (SavedModel: the folder) without
export.json.

A symbolic-size de-blocker (height and width multiples of 48) is also run on the full 480x640
image padded at the right by reflection to 480x672 and cropped back; the result differs from the
JAX model on the unpadded image near the padded edge, and the JSON says how far in.
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
)
H, W = 480, 640


def photo() -> np.ndarray:
    """(480, 640) float32 Y in [0, 1] of a quality-10 JPEG."""
    import skimage.data
    from PIL import Image

    from cqrnet_jax.data.color import rgb_to_y
    from cqrnet_jax.data.jpeg import jpeg_degrade

    rgb = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((W, H), Image.BICUBIC))
    return jpeg_degrade(rgb_to_y(rgb), 10).astype(np.float32) / 255.0


def pad_to(y: np.ndarray, m: int = 48) -> np.ndarray:
    """(N, H, W) -> bottom/right reflection padding to multiples of m (as docs/export.md)."""
    ph, pw = -y.shape[-2] % m, -y.shape[-1] % m
    return np.pad(y, ((0, 0), (0, ph), (0, pw)), mode="reflect")


def runner(fmt: str, out: Path, manifest: dict):
    if fmt == "stablehlo":
        import jax

        exported = jax.export.deserialize(bytearray((out / manifest["file"]).read_bytes()))
        return lambda x: np.asarray(exported.call(x))
    if fmt == "savedmodel":
        from cqrnet_jax.data.tf_pipeline import import_tensorflow

        tf = import_tensorflow()
        serve = tf.saved_model.load(os.fspath(out)).signatures["serving_default"]
        name = manifest["output"]["name"]
        return lambda x: serve(y=tf.constant(x))[name].numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(
        os.fspath(out / manifest["file"]), providers=["CPUExecutionProvider"]
    )
    fixed = isinstance(manifest["input"]["shape"][0], int)
    if fixed:  # the ONNX de-blocker's batch is fixed (1): one image at a time
        return lambda x: np.concatenate([session.run(None, {"y": im[None]})[0] for im in x])
    return lambda x: session.run(None, {"y": x})[0]


def inputs(what: str, fixed: bool, y: np.ndarray) -> dict:
    if fixed:
        return {"1x480x640": y[None]}
    shapes = {"2x96x144": np.stack([y[:96, :144], y[200:296, 300:444]])}
    if what == "deblock":
        shapes["1x480x624"] = y[None, :, :624]
    else:
        shapes["1x480x640"] = y[None]
    return shapes


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "export.json")


def measure(what, fmt, flags, work: Path, y, reference) -> dict:
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
    for name, x in inputs(what, bool(flags), y).items():
        result["max_abs_diff_vs_jax"][name] = float(np.abs(run(x) - reference(x)).max())
    if what == "deblock" and not flags:
        # Pad 480x640 to 480x672, restore, crop back: vs the JAX model on the unpadded image.
        got = run(pad_to(y[None]))[:, :H, :W][0]
        diff = np.abs(got - reference(y[None])[0])
        cols = np.nonzero(diff.max(axis=0) > 1e-4)[0]
        to_8bit = lambda a: np.clip(np.round(a * 255), 0, 255).astype(np.uint8)  # noqa: E731
        result["padded_480x640_to_480x672_and_cropped"] = {
            "max_abs_diff_vs_jax_at_480x640": float(diff.max()),
            "columns_from_right_edge_with_diff_over_1e-4": int(W - cols.min()) if cols.size else 0,
            "uint8_pixels_that_differ": int((to_8bit(got) != to_8bit(reference(y[None])[0])).sum()),
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

    restorer = load_restorer("default")[0]
    ranker, ranker_vars, _ = load_ranker_model(pretrained.shipped("ranker"))
    score = jax.jit(lambda x: ranker.apply(ranker_vars, x, train=False)[0])
    references = {
        "deblock": lambda x: np.stack([restorer.restore_float(im) for im in x]),
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
    y = photo()
    with tempfile.TemporaryDirectory() as work:
        results = [
            measure(what, fmt, flags, Path(work), y, references[what])
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
