"""`cqrnet-jax fetch-data`: the shipped checksum lists, the sources' URLs, checking before writing
(a bad file is one error line and nothing written), derived files checked by their pixels,
`--from-dir` and `--verify`. The network is never used: `fetch.download` and the checksum lists
are replaced where a test needs it; the `_shared` tests copy from CQRNET_DATA_DIR (skipped when it
is unset)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from helpers import shared_data_dir
from PIL import Image

from cqrnet_jax.apps.cli import main
from cqrnet_jax.data import fetch
from cqrnet_jax.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _png(array: np.ndarray, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", **save)
    return out.getvalue()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.fixture
def tiny_layout(monkeypatch):
    """The checksum lists replaced by two small files of Classic5 (bytes returned)."""
    files = {"Classic5/a.bmp": b"first image", "Classic5/b.bmp": b"second image"}
    monkeypatch.setattr(fetch, "_SUMS", {rel: _sha(data) for rel, data in files.items()})
    monkeypatch.setattr(fetch, "_PIXEL_SUMS", {})
    return files


# --- what ships -----------------------------------------------------------------------------------


def test_the_checksum_lists_cover_the_layout_and_ship_with_the_package():
    sums = fetch.checksums()
    assert len(sums) == 763
    assert {fetch.folder_of(rel) for rel in sums} == set(fetch.SOURCES)
    derived = {rel for rel in sums if fetch.SOURCES[fetch.folder_of(rel)].derived}
    assert set(fetch.pixel_checksums()) == derived and len(derived) == 100
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = package_data["package-data"]["cqrnet_jax"]
    assert {"data/SHA256SUMS", "data/PIXEL_SHA256SUMS"} <= set(shipped)


def test_sources_are_the_manifests_repositories_at_pinned_commits():
    github = fetch.GitHub()
    assert github.where("Classic5/lena.bmp") == (
        "https://raw.githubusercontent.com/JingyunLiang/SwinIR/"
        "6545850fbf8df298df73d81f3e8cba638787c8bd/testsets/classic5/lena.bmp"
    )
    assert github.where("BSDS500/val/3096.jpg") == (
        "https://raw.githubusercontent.com/BIDS/BSDS500/"
        "a04b7c6c3a9f0ace74bf205c72a43d32e1c72722/BSDS500/data/images/val/3096.jpg"
    )
    assert github.where("Urban100_color_half/img_001.png").endswith("/CUrban100/img_001.png")
    assert github.where("LIVE1_gray/bikes.png").endswith("/testsets/LIVE1_gray/bikes.png")


def test_sets_and_groups():
    assert fetch.select(None) == list(fetch.SOURCES)
    assert fetch.select("test") == ["Classic5", "LIVE1_color", "BSDS500/test"]
    assert fetch.select("classic5, bsds500") == [
        "Classic5",
        "BSDS500/train",
        "BSDS500/val",
        "BSDS500/test",
    ]
    with pytest.raises(ConfigError, match="unknown set 'Set14'; choose from all, test"):
        fetch.select("Set14")


# --- fetching with a fake network -----------------------------------------------------------------


def test_a_bad_checksum_is_one_error_line_and_nothing_is_written(
    tiny_layout, tmp_path, monkeypatch, capsys
):
    """The file the network gave is not the listed one: exit status 3, one line naming its URL
    and the problem, and neither the file nor a partial one is left in --out."""
    fetched = []

    def corrupted(url):
        fetched.append(url)
        return b"not the image"

    monkeypatch.setattr(fetch, "download", corrupted)
    out = tmp_path / "data"
    assert main(["fetch-data", "--out", str(out), "--jobs", "1"]) == 3
    err = capsys.readouterr().err
    url = fetch.GitHub().where("Classic5/a.bmp")
    assert err.startswith(f"error: {url}: checksum mismatch (sha256 "), err
    assert err.endswith(f"; {out / 'Classic5' / 'a.bmp'} not written\n") and err.count("\n") == 1
    assert fetched[0] == url
    assert not out.exists() or _files(out) == []


def test_a_network_error_is_one_line_naming_the_url(tiny_layout, tmp_path, monkeypatch):
    def offline(url):
        raise OSError("timed out (no network? ...)")

    with pytest.raises(fetch.FetchError) as info:
        fetch.fetch(tmp_path, fetch.GitHub(offline), jobs=1, log=lambda line: None)
    assert (
        str(info.value) == f"{fetch.GitHub().where('Classic5/a.bmp')}: timed out (no network? ...)"
    )
    assert _files(tmp_path) == []


def test_fetch_writes_checked_files_and_keeps_correct_ones(tiny_layout, tmp_path):
    by_url = {fetch.GitHub().where(rel): data for rel, data in tiny_layout.items()}
    lines = []
    assert fetch.fetch(tmp_path, fetch.GitHub(by_url.__getitem__), log=lines.append) == 2
    assert {rel: (tmp_path / rel).read_bytes() for rel in _files(tmp_path)} == tiny_layout
    assert lines == ["Classic5: 2 files, 0.0 MB (2 fetched, 0 there)"]

    def no_network(url):
        raise AssertionError("a correct file is fetched again")

    assert fetch.fetch(tmp_path, fetch.GitHub(no_network), log=lines.append) == 0


def test_a_wrong_file_already_there_is_an_error_and_stays(tiny_layout, tmp_path):
    (tmp_path / "Classic5").mkdir()
    (tmp_path / "Classic5" / "a.bmp").write_bytes(b"the user's own file")
    by_url = {fetch.GitHub().where(rel): data for rel, data in tiny_layout.items()}
    with pytest.raises(fetch.FetchError, match="a.bmp: exists and does not match its checksum"):
        fetch.fetch(tmp_path, fetch.GitHub(by_url.__getitem__), jobs=1, log=print)
    assert (tmp_path / "Classic5" / "a.bmp").read_bytes() == b"the user's own file"


def test_derived_files_are_made_from_their_source_and_checked_by_pixels(tmp_path, monkeypatch):
    """Urban100_color_half: the source RGBA PNG halved by a 2x2 box mean; a file whose bytes
    differ (another zlib) but whose pixels match passes, another image does not."""
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, (8, 12, 4), dtype=np.uint8)
    expected = (
        source[..., :3].reshape(4, 2, 6, 2, 3).astype(np.float64).mean(axis=(1, 3)) + 0.5
    ).astype(np.uint8)
    rel = "Urban100_color_half/img_001.png"
    made = fetch.GitHub(lambda url: _png(source)).read(rel)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(made))), expected)
    pixels = _sha(fetch.pixel_bytes(_png(expected)))
    monkeypatch.setattr(fetch, "_SUMS", {rel: _sha(b"bytes from another zlib")})
    monkeypatch.setattr(fetch, "_PIXEL_SUMS", {rel: pixels})
    assert fetch.problem(rel, made) is None
    assert fetch.problem(rel, _png(expected, compress_level=1)) is None
    other = expected.copy()
    other[0, 0, 0] ^= 1
    assert fetch.problem(rel, _png(other)).startswith("pixel checksum mismatch")
    assert fetch.problem(rel, b"not a png") == "not a readable image (UnidentifiedImageError)"


# --- --verify and --from-dir ----------------------------------------------------------------------


def test_verify_names_each_missing_or_wrong_file(tiny_layout, tmp_path, capsys):
    (tmp_path / "Classic5").mkdir()
    (tmp_path / "Classic5" / "a.bmp").write_bytes(b"first image, edited")
    assert main(["fetch-data", "--verify", str(tmp_path)]) == 3
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0].startswith(f"error: {tmp_path / 'Classic5' / 'a.bmp'}: checksum mismatch")
    assert lines[1:] == [
        f"error: {tmp_path / 'Classic5' / 'b.bmp'}: missing",
        "2 of 2 files missing or wrong",
    ]
    (tmp_path / "Classic5" / "a.bmp").write_bytes(b"first image")
    (tmp_path / "Classic5" / "b.bmp").write_bytes(b"second image")
    assert main(["fetch-data", "--verify", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "2 files ok\n"


def test_from_dir_copies_a_local_copy_shared(tmp_path, capsys):
    """Classic5 copied from the shared data folder: byte for byte, checked, and `--verify` then
    passes; a second run fetches nothing."""
    root = shared_data_dir("Classic5")
    out = tmp_path / "data"
    argv = ["fetch-data", "--out", str(out), "--from-dir", str(root), "--sets", "classic5"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("Classic5: 5 files, 1.3 MB (5 fetched, 0 there)\n")
    for rel in _files(out):
        assert (out / rel).read_bytes() == (root / rel).read_bytes()
    assert _files(out) == sorted(rel for rel in fetch.checksums() if rel.startswith("Classic5/"))
    assert main(["fetch-data", "--verify", str(out), "--sets", "Classic5"]) == 0
    assert main(argv) == 0
    assert "(0 fetched, 5 there)" in capsys.readouterr().out


def test_the_shared_folder_verifies_shared(capsys):
    root = shared_data_dir("Classic5")
    assert main(["fetch-data", "--verify", str(root)]) == 0
    assert capsys.readouterr().out == "763 files ok\n"
