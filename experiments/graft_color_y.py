"""A colour model (arch=chroma) with another grey U-Net as its Y: its chroma U-Net unchanged.

  python experiments/graft_color_y.py --color default --y RUN3 -o OUT/deblock_color

The chroma U-Net was trained led by its Y model's output, so a better Y (a continued or a
quality-conditioned grey model) can replace it without retraining; measure the result before
shipping it (experiments/colour.md). A quality-conditioned Y makes the colour model
quality-conditioned too (`model.quality_input`): the tools tell it each file's quality, and its
chroma U-Net gets a quality plane whose weights start at zero (the same chroma until trained). The
result is written as a params prefix with its own copy of the Y; to ship it beside that very Y
as the default grey model, save it with `pretrained.save_sharing(..., {'luma': 'deblock'})`.
"""

from __future__ import annotations

import argparse

import jax

from cqrnet_jax import pretrained
from cqrnet_jax.config_base import deblock_model_defaults
from cqrnet_jax.models.unet import add_chroma_quality_input


def graft(color_spec: str, y_spec: str):
    """(variables, meta) of the colour model at `color_spec` with the grey U-Net at `y_spec`
    as its Y (each 'default', a workdir or a params prefix)."""
    colour, meta = pretrained.load_variables(pretrained.resolve_model_prefix(color_spec, "color"))
    grey, grey_meta = pretrained.load_variables(pretrained.resolve_model_prefix(y_spec, "deblock"))
    model = {**deblock_model_defaults(), **meta["model"]}
    y_model = {**deblock_model_defaults(), **grey_meta["model"]}
    if model["arch"] != "chroma":
        raise SystemExit(f"--color {color_spec}: not a chroma U-Net (arch {model['arch']!r})")
    if y_model["arch"] != "unet" or y_model["channels"] != 1:
        raise SystemExit(f"--y {y_spec}: not a grey U-Net")
    if list(y_model["widths"]) != list(model["widths"]) or list(y_model["blocks"]) != list(
        model["blocks"]
    ):
        raise SystemExit(f"--y {y_spec}: its widths/blocks differ from the colour model's Y")
    quality = bool(y_model["quality_input"])
    params = jax.device_get(colour["params"])
    if quality and not model["quality_input"]:  # the chroma branch gets its (zero) plane too
        params = add_chroma_quality_input(params)
    elif model["quality_input"] and not quality:
        raise SystemExit(f"--y {y_spec}: a blind Y for a quality-conditioned colour model")
    params = {**params, "luma": jax.device_get(grey["params"])}
    meta = {k: v for k, v in meta.items() if k != "shared_params"}
    meta["model"] = {**meta["model"], "quality_input": quality}
    meta["provenance"] = {
        **meta.get("provenance", {}),
        "y_model": {"source": y_spec, "step": grey_meta.get("step"), "quality_input": quality},
    }
    return {**colour, "params": params}, meta


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--color", default="default", help="the colour model (default: the shipped)")
    p.add_argument("--y", required=True, help="the grey U-Net to use as its Y")
    p.add_argument("-o", "--output", required=True, help="params prefix to write")
    args = p.parse_args(argv)
    variables, meta = graft(args.color, args.y)
    pretrained.save_variables(args.output, variables, meta)
    print(f"wrote {args.output} (Y: {args.y}, quality_input={meta['model']['quality_input']})")


if __name__ == "__main__":
    main()
