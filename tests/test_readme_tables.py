"""The tables in README.md, the experiments pages, docs/usage.md and the colour model card are
rendered from experiments/results/ by experiments/readme_tables.py: a table that regenerating would
change is stale."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location(
        "readme_tables", REPO / "experiments" / "readme_tables.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name",
    [
        "README.md",
        "experiments/protocol.md",
        "experiments/tables.md",
        "experiments/colour.md",
        "docs/usage.md",
        "cqrnet_jax/pretrained/deblock_color.md",
    ],
)
def test_tables_are_current(tables, name):
    text = (REPO / name).read_text()
    assert "<!-- table:" in text
    assert tables.rewrite(text) == text, (
        f"{name}: a table is stale; run `python experiments/readme_tables.py`"
    )


def test_a_hand_edited_number_is_put_back(tables):
    text = (REPO / "README.md").read_text()
    start = text.index("<!-- table:results -->")
    first_row = text.index("| Classic5 | 10 |", start)
    edited = text[:first_row] + text[first_row:].replace("27.82", "27.83", 1)
    assert edited != text
    assert tables.rewrite(edited) == text


def test_every_marker_has_a_renderer(tables):
    for name in tables.FILES:
        for m in tables.BLOCK.finditer((REPO / name).read_text()):
            assert m.group(2) in tables.RENDERERS
