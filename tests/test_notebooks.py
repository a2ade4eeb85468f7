"""The Colab notebooks in experiments/notebooks: in sync with their generator (build.py), and each
one executed headless (nbclient, the python3 kernel of this interpreter) on tiny settings
(CQRNET_NOTEBOOK_TINY=1), with what its cells show checked: images, tables, scores. Their first
cells run the user's install line; here it finds this checkout installed already, and a pip
dry run of that line shows it would add nothing else to this (CI's) environment."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")  # the python3 kernel of this interpreter

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "experiments" / "notebooks"


def _build_module():
    spec = importlib.util.spec_from_file_location("notebooks_build", FOLDER / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_are_what_build_py_writes():
    """The committed .ipynb files equal build.py's output: no hand edits, no stored outputs."""
    build = _build_module()
    assert sorted(p.stem for p in FOLDER.glob("*.ipynb")) == sorted(build.NOTEBOOKS)
    for name in build.NOTEBOOKS:
        on_disk = (FOLDER / f"{name}.ipynb").read_text()
        assert on_disk == build.render(name), f"{name}.ipynb: rerun experiments/notebooks/build.py"
        nb = nbformat.reads(on_disk, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code)


def test_notebook_code_compiles_and_its_package_imports_exist():
    """What a reader running a notebook would hit first, checked without running it (the runs
    below are slow): each code cell is valid Python, and every name a cell imports from the
    package exists (a rename that misses the notebooks fails here)."""
    for path in sorted(FOLDER.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
            tree = ast.parse(cell.source, f"{path.name} cell {i}")  # raises on a syntax error
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cqrnet_"):
                    module = importlib.import_module(node.module)
                    missing = [a.name for a in node.names if not _has(module, a.name)]
                    assert not missing, f"{path.name} cell {i}: {node.module} has no {missing}"
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith("cqrnet_"):
                            importlib.import_module(alias.name)


def _has(module, name: str) -> bool:
    """`from module import name` works: an attribute or a submodule."""
    return (
        hasattr(module, name) or importlib.util.find_spec(f"{module.__name__}.{name}") is not None
    )


def _installed_here():
    """The notebooks' first cells install this checkout unless it is installed already: run them
    only where it is, so that a test never installs anything."""
    import cqrnet_jax

    if REPO not in Path(cqrnet_jax.__file__).resolve().parents:
        pytest.skip(f"cqrnet_jax is imported from {cqrnet_jax.__file__}, not from {REPO}")


def _run(nb, cwd: Path):
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails
    return nb.cells


def _execute(name: str, monkeypatch, tmp_path) -> list:
    """Runs notebook `name` headless in tiny mode from its folder; returns its executed cells,
    having checked that its setup cell found this checkout installed."""
    _installed_here()
    monkeypatch.setenv("CQRNET_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("CQRNET_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
    monkeypatch.delenv("CQRNET_REPO_URL", raising=False)
    cells = _run(nbformat.read(FOLDER / f"{name}.ipynb", as_version=4), FOLDER)
    setup = _text(cells[:3])
    assert f"installed already: pip install -q -c {REPO}/requirements/constraints.txt" in setup
    assert f"cqrnet_jax from {REPO / 'cqrnet_jax'}, jax" in setup
    return cells


def _setup_only(cwd: Path) -> list:
    """The two install cells every notebook starts with, run alone from `cwd`."""
    build = _build_module()
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(build.SOURCE), nbformat.v4.new_code_cell(build.SETUP)]
    )
    return _run(nb, cwd)


def test_setup_outside_a_checkout_without_a_url_stops_with_one_message(monkeypatch, tmp_path):
    """Opened on Colab (no checkout around it) with REPO_URL unset: one message, what to do."""
    monkeypatch.delenv("CQRNET_REPO_URL", raising=False)
    with pytest.raises(nbclient.exceptions.CellExecutionError) as error:
        _setup_only(tmp_path)
    assert error.value.ename == "SystemExit"
    assert "set REPO_URL in the cell above to the repository's GitHub URL" in error.value.evalue
    assert not (tmp_path / "cqrnet-jax").exists()  # nothing cloned, nothing installed


@pytest.mark.slow
def test_setup_install_line_resolves_against_the_constraints(monkeypatch):
    """The line the first cell runs (printed by it) resolves with requirements/constraints.txt,
    and in this environment, installed as CI installs it, would add nothing but the package."""
    _installed_here()
    monkeypatch.delenv("CQRNET_REPO_URL", raising=False)
    text = _text(_setup_only(FOLDER))
    line = re.search(r"installed already: pip (install .*)", text)[1]
    args = [a for a in shlex.split(line) if a != "-q"]  # -q hides "Would install"
    assert args[-1] == f"{REPO}[notebooks]"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--dry-run", "--no-input"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "does not provide the extra" not in proc.stdout + proc.stderr
    would = [
        p for line in re.findall(r"^Would install (.*)$", proc.stdout, re.M) for p in line.split()
    ]
    assert len(would) == 1 and would[0].startswith("cqrnet-jax-"), proc.stdout


def _text(cells) -> str:
    """All text a notebook showed: printed streams, plain-text and Markdown results."""
    parts = []
    for cell in cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            data = out.get("data", {})
            parts += [data.get("text/markdown", ""), data.get("text/plain", "")]
    return "\n".join(parts)


def _images(cells) -> int:
    return sum("image/png" in out.get("data", {}) for c in cells for out in c.get("outputs", []))


def _scores(text: str, pattern: str) -> dict[str, float]:
    return {m[0]: float(m[1]) for m in re.findall(pattern, text)}


@pytest.mark.slow
def test_quickstart(monkeypatch, tmp_path):
    """Restores the JPEG (higher PSNR than the JPEG), shows before / after, and the ranker scores
    the restored image as better quality than the JPEG."""
    cells = _execute("quickstart", monkeypatch, tmp_path)
    text = _text(cells)
    psnr = _scores(text, r"(JPEG|restored)\s+PSNR ([\d.]+) dB")
    ranker = _scores(text, r"(JPEG|restored|original)\s+score ([-+\d.]+)")
    assert psnr["restored"] > psnr["JPEG"], text
    # the estimator judges artifacts, not fidelity: restored and original may read alike
    assert min(ranker["original"], ranker["restored"]) > ranker["JPEG"], text
    assert "header quality: 10" in text
    assert _images(cells) == 1


@pytest.mark.slow
def test_training(monkeypatch, tmp_path):
    """Both stages train to their step counts, stage 2 guided by stage 1's export, and the loss
    curves are plotted."""
    cells = _execute("training", monkeypatch, tmp_path)
    workdir = tmp_path / "workdir"
    for stage, steps in (("ranker", 10), ("deblock", 4)):
        log = [json.loads(line) for line in (workdir / stage / "logs" / "metrics.jsonl").open()]
        assert [r["step"] for r in log] == list(range(2, steps + 1, 2))
        assert (workdir / stage / "export" / f"{stage}.msgpack").is_file()
    meta = json.loads((workdir / "deblock" / "export" / "deblock.json").read_text())
    assert meta["ranker"] == str(workdir / "ranker" / "export" / "ranker")
    assert _images(cells) == 1
    assert "trained here" in _text(cells)


@pytest.mark.slow
def test_evaluation(monkeypatch, tmp_path):
    """The jpeg vs default table, the recorded results, and Figure 4: the shipped ranker orders
    GT > QF 30 > QF 10."""
    cells = _execute("evaluation", monkeypatch, tmp_path)
    text = _text(cells)
    assert re.search(r"\| default \| builtin \|\s+10 \|\s+5 \|", text), text
    assert "jpeg_baseline.json" in text and "published (FBCNN" in text
    score = _scores(text, r"(GT|QF \d+)\s+ranker score ([-+\d.]+)")
    assert score["GT"] > score["QF 30"] > score["QF 10"], score
    assert _images(cells) == 2
