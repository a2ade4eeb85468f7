"""A model as an artifact that runs without this package (docs/export.md shows how); the command
is `cqrnet-jax export --format stablehlo|savedmodel|onnx -o DIR` (`apps/export.py`).

- stablehlo: `jax.export` serialized (`DIR/<what>.jax_export`); load it with
  `jax.export.deserialize` and call it. Symbolic batch; height and width symbolic unless
  --height/--width fix them (the de-blocker's: multiples of its size alignment, 128 for the
  shipped U-Net, `models.build.size_alignment`).
- savedmodel: a TF SavedModel in DIR through `jax2tf` (the same StableHLO inside an XlaCallModule
  op, weights as TF variables); signature `serving_default`, input `y`.
- onnx: `DIR/<what>.onnx` through `jax2onnx` (optional extra: `pip install cqrnet-jax[onnx]`).

Every artifact maps (batch, height, width) float32 Y in [0, 1] to the model's output (the
de-blocker: restored Y, unclipped; the ranker: one quality score per image); the colour
de-blocker (`--what color`) maps (batch, height, width, 3) decoded RGB in [0, 1] to restored RGB.
A quality-conditioned de-blocker (model.quality_input: the shipped ones; grey, or colour, whose
two U-Nets both read it) takes a second input, `quality`: (batch,) float32, each image's JPEG
quality (1-100, IJG's scale). DIR/export.json records the format, input shapes, model and how
to call it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from cqrnet_jax.errors import ConfigError, InputError, MissingFileError

FORMATS = ("stablehlo", "savedmodel", "onnx")
MODELS = ("deblock", "color", "ranker")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
MANIFEST = "export.json"
INPUT_NAME = {"deblock": "y", "color": "rgb", "ranker": "y"}
OUTPUT_NAME = {"deblock": "restored", "color": "restored", "ranker": "score"}
QUALITY_NAME = "quality"  # the second input of a quality-conditioned de-blocker
ONNX_OPSET = 23


class ExportError(ConfigError):
    """A user error of `export` (printed by the CLI as one line "error: ...", exit status 2)."""


# --- model and shapes -------------------------------------------------------------------------


def load_model(what: str, spec: str):
    """(flax module, variables, meta) of the shipped model, a workdir's export or a prefix; a
    de-blocker's channels must be what `what` says (1 for deblock, 3 for color)."""
    from cqrnet_jax import pretrained
    from cqrnet_jax.models.build import NotAModelError, load_deblock_model, load_ranker_model

    prefix = pretrained.resolve_model_prefix(spec, what)
    load = load_ranker_model if what == "ranker" else load_deblock_model
    try:
        model, variables, meta = load(prefix)
    except FileNotFoundError:
        where = f"the package's shipped {what} model" if spec == "default" else os.fspath(prefix)
        raise MissingFileError(f"--model: no {what} model found at {where}") from None
    except NotAModelError as err:
        raise InputError(f"--model: {err}") from None
    if what != "ranker" and channels(model) != (3 if what == "color" else 1):
        kind = "a colour (RGB) model: export it with --what color"
        if what == "color":
            kind = "a Y (grey) model, not a colour one: export it with --what deblock"
        raise InputError(f"--model: {os.fspath(prefix)} is {kind}")
    return model, variables, meta


def conditioned(what: str, model) -> bool:
    """Whether the artifact takes each image's JPEG quality as a second input."""
    return what != "ranker" and bool(getattr(model, "quality_input", False))


def channels(model) -> int:
    """A de-blocker's channels: 1 (Y) or 3 (RGB); 1 for the ranker."""
    return getattr(model, "channels", 1)


def size_multiple(what: str, model) -> int:
    """What a symbolic height/width must be a multiple of: the de-blocker's windows are anchored
    at the top-left corner and its mask branch halves the size (see models/layers.py)."""
    from cqrnet_jax.models.build import size_alignment

    return 1 if what == "ranker" else size_alignment(model)


def input_shape(what, model, fmt, batch, height, width) -> tuple:
    """The input shape: ints for fixed dimensions, symbolic names ('b', '128*h') for the rest;
    a colour model's ends with 3."""
    if what != "ranker" and fmt == "onnx":
        # jax2onnx cannot express the de-blocker's padded window partition with symbolic sizes,
        # nor lower a vmap of its Flax convs: the ONNX de-blocker has a fixed shape.
        if height is None or width is None:
            raise ExportError(f"--format onnx --what {what} needs a fixed --height and --width")
        batch = 1 if batch is None else batch
    m = size_multiple(what, model)
    scaled = (lambda v: v) if m == 1 else (lambda v: f"{m}*{v}")
    shape = (
        "b" if batch is None else batch,
        scaled("h") if height is None else height,
        scaled("w") if width is None else width,
    )
    return shape + (3,) if what == "color" else shape


def shape_text(shape) -> str:
    return "(" + ", ".join(map(str, shape)) + ("," if len(shape) == 1 else "") + ")"


def apply_fn(what: str, model, *, per_image: bool):
    """f(variables, y) -> the model's output on (N, H, W) Y in [0, 1] ((N, H, W, 3) RGB for a
    colour model); f(variables, y, quality) for a quality-conditioned one (`conditioned`).

    `per_image` runs the de-blocker as a vmap over images of batch 1: its attention picks a code
    path by the number of windows (one product up to 16 windows, a chunked loop beyond), so with
    a fixed height and width that number stays a number, not a multiple of a symbolic batch, and
    the artifact takes the JAX model's path. A symbolic size always takes the chunked loop.
    """
    if what == "ranker":
        return lambda variables, y: model.apply(variables, y, train=False)[0]
    import jax

    if conditioned(what, model):
        if not per_image:
            return lambda variables, y, q: model.apply(variables, y, quality=q)
        return lambda variables, y, q: jax.vmap(
            lambda im, qi: model.apply(variables, im[None], quality=qi[None])[0]
        )(y, q)
    if not per_image:
        return model.apply
    return lambda variables, y: jax.vmap(lambda im: model.apply(variables, im[None])[0])(y)


def _call_args(what, model) -> str:
    """How the artifact is called, in the manifest's `run` line."""
    return f"y, {QUALITY_NAME}" if conditioned(what, model) else "y"


def _symbolic_error(shape, err) -> ExportError:
    return ExportError(
        f"this model cannot be exported with input shape {shape_text(shape)}: "
        f"{str(err).splitlines()[0]} Give a fixed --height and --width (docs/export.md)."
    )


# --- the three formats ------------------------------------------------------------------------


def export_stablehlo(what, model, variables, shape, platforms):
    """The `jax.export.Exported` of the model with its weights as constants."""
    import jax
    import jax.numpy as jnp
    from jax import export

    fn = apply_fn(what, model, per_image=True)
    spec = export.symbolic_shape(", ".join(map(str, shape)))
    args = [jax.ShapeDtypeStruct(spec, jnp.float32)]
    if conditioned(what, model):  # one quality per image: the same (symbolic) batch
        args.append(jax.ShapeDtypeStruct(spec[:1], jnp.float32))
    try:
        return export.export(jax.jit(lambda *a: fn(variables, *a)), platforms=platforms)(*args)
    except jax.errors.InconclusiveDimensionOperation as err:
        raise _symbolic_error(shape, err) from None


def write_stablehlo(what, model, variables, shape, platforms, out: Path) -> dict:
    exported = export_stablehlo(what, model, variables, shape, platforms)
    name = f"{what}.jax_export"
    (out / name).write_bytes(exported.serialize())
    return {
        "file": name,
        "platforms": list(exported.platforms),
        "run": f"jax.export.deserialize(bytearray(open('{name}', 'rb').read()))"
        f".call({_call_args(what, model)})",
    }


def write_savedmodel(what, model, variables, shape, platforms, out: Path) -> dict:
    """A SavedModel whose `serving_default` signature maps `y` to {OUTPUT_NAME[what]: ...}."""
    try:
        from cqrnet_jax.data.tf_pipeline import import_tensorflow

        tf = import_tensorflow()
        from jax.experimental import jax2tf
    except ImportError as err:
        raise ExportError(
            f"--format savedmodel needs TensorFlow: pip install 'cqrnet-jax[tf]' ({err})"
        ) from None
    import jax

    fn = apply_fn(what, model, per_image=True)
    with_quality = conditioned(what, model)
    polymorphic = [None, shape_text(shape)] + [f"({shape[0]},)"] * with_quality
    converted = jax2tf.convert(
        fn,
        polymorphic_shapes=polymorphic,
        with_gradient=False,
        native_serialization_platforms=platforms,
    )
    module = tf.Module()
    module.params = jax.tree.map(lambda a: tf.Variable(a, trainable=False), variables)
    tf_shape = [d if isinstance(d, int) else None for d in shape]

    signature = [tf.TensorSpec(tf_shape, tf.float32, name=INPUT_NAME[what])]
    if with_quality:
        signature.append(tf.TensorSpec(tf_shape[:1], tf.float32, name=QUALITY_NAME))

    @tf.function(autograph=False, input_signature=signature)
    def serve(*x):
        return {OUTPUT_NAME[what]: converted(module.params, *x)}

    module.serve = serve
    try:
        tf.saved_model.save(module, os.fspath(out), signatures={"serving_default": serve})
    except jax.errors.InconclusiveDimensionOperation as err:
        raise _symbolic_error(shape, err) from None
    return {
        "file": ".",
        "platforms": list(platforms),
        "versions": {"tensorflow": tf.__version__},
        "run": f"tf.saved_model.load(DIR).signatures['serving_default']({INPUT_NAME[what]}=x"
        + (f", {QUALITY_NAME}=q" if with_quality else "")
        + f")['{OUTPUT_NAME[what]}']",
    }


def write_onnx(what, model, variables, shape, out: Path) -> dict:
    """One self-contained `.onnx` file (weights inline), opset ONNX_OPSET."""
    try:
        import jax2onnx
    except ImportError:
        raise ExportError(
            "--format onnx needs the onnx extra: pip install 'cqrnet-jax[onnx]'"
        ) from None
    from importlib.metadata import version

    import jax

    fn = apply_fn(what, model, per_image=False)
    onnx_shape = tuple(d if isinstance(d, int) else n for d, n in zip(shape, "BHWC"))
    with_quality = conditioned(what, model)
    shapes = [onnx_shape] + [onnx_shape[:1]] * with_quality
    names = [INPUT_NAME[what]] + [QUALITY_NAME] * with_quality
    name = f"{what}.onnx"
    try:
        jax2onnx.to_onnx(
            lambda *a: fn(variables, *a),
            shapes,
            model_name=f"cqrnet_{what}",
            opset=ONNX_OPSET,
            return_mode="file",
            output_path=os.fspath(out / name),
            input_names=names,
            output_names=[OUTPUT_NAME[what]],
            export_mode="web",  # a single file: the weights inline, no .onnx.data beside it
        )
    except jax.errors.InconclusiveDimensionOperation as err:
        raise _symbolic_error(shape, err) from None
    return {
        "file": name,
        "onnx_opset": ONNX_OPSET,
        "versions": {p: version(p) for p in ("jax2onnx", "onnx")},
        "run": f"onnxruntime.InferenceSession('{name}').run(None, {{'{INPUT_NAME[what]}': x"
        + (f", '{QUALITY_NAME}': q" if with_quality else "")
        + "})[0]",
    }


def _accepted_sizes(what, model, shape) -> str:
    m = size_multiple(what, model)
    pad = "pad bottom/right by mirroring, numpy.pad's 'symmetric', crop back"
    free = "any" if m == 1 else f"any multiple of {m} ({pad})"
    b, h, w = (d if isinstance(d, int) else f for d, f in zip(shape[:3], ("any", free, free)))
    return f"batch: {b}; height: {h}; width: {w}"


_MEANING = {
    "deblock": (
        "(batch, height, width) JPEG-decoded BT.601 (studio-swing) Y / 255",
        "restored Y, same shape, unclipped: clip to [0, 1] (x255 and round for 8 bits)",
    ),
    "color": (
        "(batch, height, width, 3) JPEG-decoded RGB / 255 (chroma upsampled by the decoder)",
        "restored RGB, same shape, unclipped: clip to [0, 1] (x255 and round for 8 bits)",
    ),
    "ranker": (
        "(batch, height, width) JPEG-decoded BT.601 (studio-swing) Y / 255",
        "(batch,) quality scores, higher = better (higher JPEG quality)",
    ),
}


def io_description(what, model, shape) -> dict:
    meaning, out = _MEANING[what]
    quality = {}
    if conditioned(what, model):
        quality["quality_input"] = {
            "name": QUALITY_NAME,
            "shape": list(shape[:1]),
            "dtype": "float32",
            "range": [1.0, 100.0],
            "meaning": "(batch,) each image's JPEG quality on IJG's scale: the quality whose "
            "IJG luma table is the file's (else the nearest), as cqrnet-jax deblock reads it",
        }
    return {
        "input": {
            "name": INPUT_NAME[what],
            "shape": list(shape),
            "dtype": "float32",
            "range": [0.0, 1.0],
            "meaning": meaning,
            "accepts": _accepted_sizes(what, model, shape),
        },
        **quality,
        "output": {"name": OUTPUT_NAME[what], "dtype": "float32", "meaning": out},
    }


# --- output folder ----------------------------------------------------------------------------


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuses a file, a non-empty folder without --overwrite, and any non-empty folder that
    does not hold an earlier export (--overwrite deletes the folder)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"-o: {out} is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f"-o: {out} is not empty (use --overwrite to replace an export)")
        if not (out / MANIFEST).is_file():
            raise ExportError(f"-o: {out} holds no {MANIFEST}: refusing to replace it")


@contextlib.contextmanager
def staging(out: Path):
    """Yields a temporary folder beside `out` that replaces `out` on success only; InputError
    if that folder cannot be made."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:
        raise InputError(f"-o: cannot write {out}: {err.strerror or err}") from None
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the export from other users
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.is_dir():
        shutil.rmtree(out)
    os.replace(tmp, out)
