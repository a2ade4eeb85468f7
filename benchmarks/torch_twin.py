"""A PyTorch twin of the de-blocking network (models/deblock.py), for benchmarking XLA against
PyTorch on the same arithmetic: the same layers in the same order, built from and loaded with a
JAX model's parameters, checked to give the same output.

  pip install -e ".[bench]"     # torch, CPU build: --index-url https://download.pytorch.org/whl/cpu
  python benchmarks/torch_twin.py             # load the shipped model, check equal outputs

What maps to what: flax conv kernels (kh, kw, in, out) are torch's (out, in, kh, kw); Dense
kernels (in, out) are Linear's weight transposed; our depth-to-space orders the channels
(row, column, feature), torch's pixel_shuffle (feature, row, column), so the "up" conv's output
channels are permuted. The windowed non-local block pads to whole windows (reflect, as
`layers.pad_to_multiple`), max-pools keys and values over real pixels only and masks padded keys,
as `layers.WindowedNonLocal` with `valid=None`. Attention runs through
`torch.nn.functional.scaled_dot_product_attention` (scale 1: the embedded Gaussian), PyTorch's
own fused CPU kernel. Tensors are NCHW in channels_last memory (oneDNN's fast layout on a CPU).
`benchmarks/bench.py` times both frameworks with it.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cqrnet_jax.config_base import deblock_model_defaults


def _conv(features_in: int, features_out: int, dilation: int = 1, stride: int = 1, k: int = 3):
    pad = dilation if k == 3 else 0
    return nn.Conv2d(features_in, features_out, k, stride, pad, dilation=dilation)


def _pad_bottom_right(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """`layers.pad_to_multiple` for NCHW: reflect (edge when the image is too small)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if h > ph and w > pw else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class ResBlock(nn.Module):
    def __init__(self, f: int):
        super().__init__()
        self.conv0, self.conv1 = _conv(f, f), _conv(f, f)

    def forward(self, x):
        return x + self.conv1(F.relu(self.conv0(x)))


class NonLocal(nn.Module):
    def __init__(self, f: int, inner: int, window: int, subsample: int):
        super().__init__()
        self.window, self.subsample = window, subsample
        self.theta, self.phi, self.g = (nn.Linear(f, inner) for _ in range(3))
        self.out = nn.Linear(inner, f)

    def _windows(self, x):  # (N, C, Hp, Wp) -> (N * windows, C, k, k)
        n, c, hp, wp = x.shape
        k = self.window
        x = x.reshape(n, c, hp // k, k, wp // k, k).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(-1, c, k, k)

    def forward(self, x):
        n, c, h, w = x.shape
        k, s = self.window, self.subsample
        xp = _pad_bottom_right(x, k)
        hp, wp = xp.shape[-2:]
        win = self._windows(xp)  # (B, C, k, k)
        tokens = win.flatten(2).transpose(1, 2)  # (B, k*k, C)
        theta, phi, g = self.theta(tokens), self.phi(tokens), self.g(tokens)
        real = None
        if (hp, wp) != (h, w):
            rows = torch.arange(hp, device=x.device)[:, None] < h
            cols = torch.arange(wp, device=x.device)[None, :] < w
            real = self._windows((rows & cols)[None, None].expand(n, 1, hp, wp).float())[:, 0] > 0
        if s > 1:
            b, r = phi.shape[0], k // s

            def pool(t):  # max over real pixels of each s x s cell; 0 where none is real
                t = t.transpose(1, 2).reshape(b, -1, k, k)
                if real is not None:
                    t = t.masked_fill(~real[:, None], torch.finfo(t.dtype).min)
                t = F.max_pool2d(t, s)
                if real is not None:
                    t = t.masked_fill(~cell[:, None], 0.0)
                return t.flatten(2).transpose(1, 2)

            if real is not None:
                cell = F.max_pool2d(real[:, None].float(), s)[:, 0] > 0
            phi, g = pool(phi), pool(g)
            if real is not None:
                real = cell
            assert phi.shape[1] == r * r
        mask = None if real is None else real.flatten(1)[:, None, :]  # (B, 1 query, keys)
        y = F.scaled_dot_product_attention(theta, phi, g, attn_mask=mask, scale=1.0)
        y = self.out(y)  # (B, k*k, C)
        y = y.transpose(1, 2).reshape(n, hp // k, wp // k, c, k, k).permute(0, 3, 1, 4, 2, 5)
        y = y.reshape(n, c, hp, wp)[:, :, :h, :w]
        return x + y


class MaskBranch(nn.Module):
    def __init__(self, f, non_local, inner, window, subsample):
        super().__init__()
        self.non_local = NonLocal(f, inner, window, subsample) if non_local else None
        self.rb_in = ResBlock(f)
        self.down = _conv(f, f, stride=2)
        self.rb_low0, self.rb_low1 = ResBlock(f), ResBlock(f)
        self.up = _conv(f, 4 * f)
        self.rb_out = ResBlock(f)
        self.logits = _conv(f, f, k=1)

    def forward(self, x):
        if self.non_local is not None:
            x = self.non_local(x)
        skip = self.rb_in(x)
        h, w = skip.shape[-2:]
        y = self.down(_pad_bottom_right(skip, 2))
        y = self.rb_low1(self.rb_low0(y))
        y = F.pixel_shuffle(self.up(y), 2)
        y = self.rb_out(y[:, :, :h, :w] + skip)
        return torch.sigmoid(self.logits(y))


class DilatedConv(nn.Module):
    def __init__(self, f, dilations):
        super().__init__()
        self.branches = nn.ModuleList(_conv(f, f, dilation=d) for d in dilations)
        self.fuse = _conv(len(dilations) * f, f, k=1)

    def forward(self, x):
        return self.fuse(torch.cat([F.relu(b(x)) for b in self.branches], dim=1))


class AttentionGroup(nn.Module):
    def __init__(self, f, non_local, dilations, inner, window, subsample):
        super().__init__()
        self.rb_in, self.trunk0, self.trunk1 = ResBlock(f), ResBlock(f), ResBlock(f)
        self.mask = MaskBranch(f, non_local, inner, window, subsample)
        self.rb_out0, self.rb_out1 = ResBlock(f), ResBlock(f)
        self.dilated = DilatedConv(f, dilations)

    def forward(self, x):
        h = self.rb_in(x)
        trunk = self.trunk1(self.trunk0(h))
        y = trunk * self.mask(h) + trunk
        return x + self.dilated(self.rb_out1(self.rb_out0(y)))


class TorchDeblock(nn.Module):
    """(N, 1, H, W) JPEG-decoded Y in [0, 1] -> restored Y: models/deblock.DeblockNet."""

    def __init__(self, features, num_local_groups, dilations, nl_inner, nl_window, nl_subsample=1):
        super().__init__()
        kw = dict(dilations=tuple(dilations), inner=nl_inner, window=nl_window)
        kw["subsample"] = nl_subsample
        f = features
        self.head = _conv(1, f)
        self.group_nl_low = AttentionGroup(f, True, **kw)
        self.locals = nn.ModuleList(AttentionGroup(f, False, **kw) for _ in range(num_local_groups))
        self.group_nl_high = AttentionGroup(f, True, **kw)
        self.body_conv = _conv(f, f)
        self.tail = _conv(f, 1)

    def forward(self, x):
        y = self.group_nl_low(self.head(x))
        for group in self.locals:
            y = group(y)
        y = self.body_conv(self.group_nl_high(y))
        return x + self.tail(y)


def from_flax(params: dict, model_cfg: dict) -> TorchDeblock:
    """A TorchDeblock with the flax DeblockNet `params` (unrolled groups) loaded."""
    model_cfg = {**deblock_model_defaults(), **model_cfg}
    cfg = {k: model_cfg[k] for k in ("features", "num_local_groups", "dilations")}
    cfg.update(nl_inner=model_cfg["nl_inner"], nl_window=model_cfg["nl_window"])
    net = TorchDeblock(**cfg, nl_subsample=model_cfg["nl_subsample"])
    f = model_cfg["features"]
    state = {}

    def put(prefix: str, leaf: dict, kind: str, permute_up: bool = False):
        kernel, bias = np.asarray(leaf["kernel"]), np.asarray(leaf["bias"])
        if kind == "conv":
            kernel = kernel.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
        else:
            kernel = kernel.T
        if permute_up:  # our channel (i*2 + j)*f + c is pixel_shuffle's c*4 + i*2 + j
            order = [(i * 2 + j) * f + c for c in range(f) for i in range(2) for j in range(2)]
            kernel, bias = kernel[order], bias[order]
        state[f"{prefix}.weight"] = torch.from_numpy(np.array(kernel))
        state[f"{prefix}.bias"] = torch.from_numpy(np.array(bias))

    def walk(tree: dict, prefix: str):
        for name, sub in tree.items():
            path = f"{prefix}.{name}" if prefix else name
            if "kernel" in sub:
                kind = "conv" if np.ndim(sub["kernel"]) == 4 else "dense"
                put(path, sub, kind, permute_up=name == "up")
            else:
                walk(sub, path)

    for name, sub in params.items():
        walk({name: sub}, "")
    renamed = {}
    for key, value in state.items():  # flax names -> the twin's module paths
        parts = []
        for part in key.split("."):
            if part.startswith("group_local"):
                part = f"locals.{part.removeprefix('group_local')}"
            elif part.startswith("dilated") and part[7:].isdigit():
                part = f"branches.{part[7:]}"
            parts.append(part)
        renamed[".".join(parts)] = value
    net.load_state_dict(renamed, strict=True)
    return net


def check_equal(jax_model, variables, net: TorchDeblock, shapes, atol: float = 2e-5) -> float:
    """The largest |JAX - torch| output difference over random inputs of `shapes` ((N, H, W));
    raises when above `atol`."""
    import jax

    worst = 0.0
    rng = np.random.default_rng(0)
    for shape in shapes:
        x = rng.random(shape, np.float32)
        ours = np.asarray(jax.jit(jax_model.apply)(variables, x))
        with torch.no_grad():
            theirs = net(torch.from_numpy(x)[:, None].contiguous(memory_format=torch.channels_last))
        diff = float(np.abs(ours - theirs[:, 0].numpy()).max())
        worst = max(worst, diff)
        if diff > atol:
            raise AssertionError(f"JAX and torch differ by {diff:.2e} on {shape} (> {atol})")
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="'default' or a params prefix / workdir")
    args = p.parse_args(argv)
    from cqrnet_jax.models.build import load_deblock_model
    from cqrnet_jax.pretrained import resolve_model_prefix

    model, variables, meta = load_deblock_model(resolve_model_prefix(args.model), "float32")
    net = from_flax(variables["params"], meta["model"]).eval()
    net = net.to(memory_format=torch.channels_last)
    worst = check_equal(model, variables, net, [(2, 48, 48), (1, 77, 101), (1, 130, 96)])
    print(f"JAX and torch outputs agree: largest difference {worst:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
