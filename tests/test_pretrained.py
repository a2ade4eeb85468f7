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
    """'default' is the shipped model of each kind (the blind estimator for `--ranker`, the guide
    for stage 2's losses); a workdir gives its export of the kind asked for (a colour run exports
    a de-blocker); a weights or meta file gives its prefix, dots in a prefix stay."""
    defaults = {
        kind: pretrained.resolve_model_prefix("default", kind)
        for kind in ("deblock", "color", "ranker", "guide")
    }
    assert defaults == {
        "deblock": pretrained.shipped("deblock"),
        "color": pretrained.shipped("deblock_color"),
        "ranker": pretrained.shipped(pretrained.ESTIMATOR),
        "guide": pretrained.shipped(pretrained.GUIDE),
    }
    assert pretrained.resolve_model_prefix("default") == defaults["deblock"]
    assert all(p.with_suffix(".json").is_file() for p in defaults.values())
    for kind in ("deblock", "ranker"):
        pretrained.save_variables(tmp_path / "export" / kind, variables, {"kind": kind})
        assert pretrained.resolve_model_prefix(tmp_path, kind) == tmp_path / "export" / kind
        for suffix in (".msgpack", ".json", ""):
            spec = f"{tmp_path}/export/{kind}{suffix}"
            assert pretrained.resolve_model_prefix(spec, kind) == tmp_path / "export" / kind
    assert pretrained.resolve_model_prefix(tmp_path, "color") == tmp_path / "export" / "deblock"
    assert pretrained.resolve_model_prefix(tmp_path, "guide") == tmp_path / "export" / "ranker"
    assert pretrained.resolve_model_prefix("runs/r/deblock.v2") == Path("runs/r/deblock.v2")


def test_a_model_that_shares_a_shipped_models_params_loads_them_back(
    tmp_path, variables, monkeypatch
):
    """`save_sharing` leaves out a subtree equal to a shipped model's params; `load_variables`
    puts it back, and refuses (one line) once that shipped model has changed."""
    from cqrnet_jax.errors import InputError

    monkeypatch.setattr(pretrained, "HERE", tmp_path / "shipped")
    pretrained.save_variables(tmp_path / "shipped/grey", variables, {"kind": "deblock"})
    extra = np.arange(5, dtype=np.float32)
    both = {"params": {"luma": variables["params"], "chroma": {"k": extra}}}
    pretrained.save_sharing(tmp_path / "colour", both, {"step": 7}, {"luma": "grey"})
    own, _ = pretrained._load_own(tmp_path / "colour")
    assert set(own["params"]) == {"chroma"}  # no second copy on disk
    loaded, meta = pretrained.load_variables(tmp_path / "colour")
    _assert_equal({"params": loaded["params"]["luma"]}, variables)
    np.testing.assert_array_equal(loaded["params"]["chroma"]["k"], extra)
    assert meta["step"] == 7 and meta["shared_params"]["luma"]["model"] == "grey"

    other = {"params": {**variables["params"], "b": np.zeros(3)}}
    with pytest.raises(ValueError, match="not the shipped 'grey' model's"):
        pretrained.save_sharing(
            tmp_path / "x", {"params": {"luma": other["params"]}}, {}, {"luma": "grey"}
        )
    pretrained.save_variables(tmp_path / "shipped/grey", other, {"kind": "deblock"})
    with pytest.raises(InputError, match="made with another shipped 'grey' model") as err:
        pretrained.load_variables(tmp_path / "colour")
    assert "\n" not in str(err.value)
