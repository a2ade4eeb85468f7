"""Parameter files: a model split into byte ranges loads as the whole one, and a rewrite never
leaves whole and split weights of one prefix side by side; `--model` values name prefixes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cqrnet_jax import pretrained


@pytest.fixture
def variables():
    rng = np.random.default_rng(0)
    return {"params": {"a": rng.standard_normal((64, 64)).astype(np.float32), "b": np.ones(3)}}


def _assert_equal(a, b):
    np.testing.assert_array_equal(a["params"]["a"], b["params"]["a"])
    np.testing.assert_array_equal(a["params"]["b"], b["params"]["b"])


def test_split_parts_load_as_the_whole(tmp_path, variables):
    prefix = tmp_path / "m"
    pretrained.save_variables(prefix, variables, {"step": 3}, split_bytes=5000)
    parts = sorted(p.name for p in tmp_path.glob("m.msgpack.*"))
    assert parts == ["m.msgpack.00", "m.msgpack.01", "m.msgpack.02", "m.msgpack.03"]
    assert all((tmp_path / p).stat().st_size <= 5000 for p in parts)
    assert not (tmp_path / "m.msgpack").exists()
    loaded, meta = pretrained.load_variables(prefix)
    _assert_equal(loaded, variables)
    assert meta == {"step": 3}


def test_rewrites_replace_whole_and_split_weights(tmp_path, variables):
    """Split after whole removes the whole file, fewer parts remove the extra ones, and whole
    after split removes the parts: the loader can never mix two versions."""
    prefix = tmp_path / "m"
    pretrained.save_variables(prefix, variables, {"v": 1})
    pretrained.save_variables(prefix, variables, {"v": 2}, split_bytes=5000)
    assert not (tmp_path / "m.msgpack").exists()
    pretrained.save_variables(prefix, variables, {"v": 3}, split_bytes=9000)
    assert sorted(p.name for p in tmp_path.glob("m.msgpack.*")) == ["m.msgpack.00", "m.msgpack.01"]
    smaller = {"params": {"a": variables["params"]["a"][:8], "b": variables["params"]["b"]}}
    pretrained.save_variables(prefix, smaller, {"v": 4})
    assert not list(tmp_path.glob("m.msgpack.*")) and not list(tmp_path.glob("*.tmp"))
    loaded, meta = pretrained.load_variables(prefix)
    _assert_equal(loaded, smaller)
    assert meta == {"v": 4}


def test_model_prefix_of_each_kind_of_model_value(tmp_path, variables):
    """'default' is the shipped de-blocker, or the blind estimator for a ranker; a workdir gives
    its export of the kind asked for; a weights or meta file gives its prefix, dots in a prefix
    stay."""
    assert pretrained.resolve_model_prefix("default") == pretrained.shipped("deblock")
    assert pretrained.resolve_model_prefix("default", "ranker") == pretrained.shipped(
        pretrained.ESTIMATOR
    )
    for kind in ("deblock", "ranker"):
        pretrained.save_variables(tmp_path / "export" / kind, variables, {"kind": kind})
        assert pretrained.resolve_model_prefix(tmp_path, kind) == tmp_path / "export" / kind
        for suffix in (".msgpack", ".json", ""):
            spec = f"{tmp_path}/export/{kind}{suffix}"
            assert pretrained.resolve_model_prefix(spec, kind) == tmp_path / "export" / kind
    assert pretrained.resolve_model_prefix("runs/r/deblock.v2") == Path("runs/r/deblock.v2")
