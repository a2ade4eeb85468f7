"""Downloads the image sets into the data directory's layout and checks them (docs/data.md).

`cqrnet-jax fetch-data --out DIR` fetches every file from the public GitHub repositories, at
pinned commits, that the sets were copied from (raw.githubusercontent.com), writes each under DIR
once its SHA-256 matches the list shipped here (`SHA256SUMS`), and derives `Urban100_color_half`
from the colour Urban100 as it was made. `--from-dir DIR` copies from a local copy instead (a
machine without network), `--verify DIR` checks a folder. Where the files come from is a
`Mirror`: anything with `read(rel) -> bytes` and `where(rel) -> str`, so tests inject their own.

Derived files are checked by their pixels: a PNG's bytes depend on the zlib that compressed it
(the same on Pillow 13 / zlib 1.2.13 as when they were made, not guaranteed elsewhere), so each
such file has a SHA-256 of its decoded pixels too (`PIXEL_SHA256SUMS`), which is what must match.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cqrnet_jax.errors import ConfigError, InputError

_HERE = Path(__file__).resolve().parent
CHECKSUMS = _HERE / "SHA256SUMS"  # sha256 of each file's bytes: `sha256sum -c` format
PIXEL_CHECKSUMS = _HERE / "PIXEL_SHA256SUMS"  # derived files: sha256 of `pixel_bytes`


@dataclass(frozen=True)
class Source:
    """A folder of the layout: where its files come from (`path` at `commit` of GitHub `repo`,
    the same file names), and whether they are derived (`half_size`) rather than copied."""

    repo: str
    commit: str
    path: str
    derived: bool = False


_SWINIR = ("JingyunLiang/SwinIR", "6545850fbf8df298df73d81f3e8cba638787c8bd")
_FBCNN = ("jiaxi-jiang/FBCNN", "54d1831927506b3247e2d4d245abb4f4dab1a1cd")
_BSDS = ("BIDS/BSDS500", "a04b7c6c3a9f0ace74bf205c72a43d32e1c72722")
_URBAN = ("majedelhelou/denoising_datasets", "58234876fef6f1b56306705c78dfd40cdb837b86")
SOURCES = {
    "Classic5": Source(*_SWINIR, "testsets/classic5"),
    "LIVE1_color": Source(*_FBCNN, "testsets/LIVE1_color"),
    "LIVE1_gray": Source(*_FBCNN, "testsets/LIVE1_gray"),
    "BSDS500/train": Source(*_BSDS, "BSDS500/data/images/train"),
    "BSDS500/val": Source(*_BSDS, "BSDS500/data/images/val"),
    "BSDS500/test": Source(*_BSDS, "BSDS500/data/images/test"),
    "Urban100_gray": Source(*_URBAN, "Urban100"),
    "Urban100_color_half": Source(*_URBAN, "CUrban100", derived=True),
}
# --sets names for several folders at once
GROUPS = {
    "all": tuple(SOURCES),
    "test": ("Classic5", "LIVE1_color", "BSDS500/test"),
    "train": ("BSDS500/train", "BSDS500/val", "Urban100_gray"),
    "BSDS500": ("BSDS500/train", "BSDS500/val", "BSDS500/test"),
    "LIVE1": ("LIVE1_color", "LIVE1_gray"),
}


class FetchError(InputError):
    """A file could not be fetched, checked or written (one line naming it)."""


def _read_sums(path: Path) -> dict[str, str]:
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, rel = line.split(maxsplit=1)
            sums[rel.lstrip("*")] = digest
    return sums


def checksums() -> dict[str, str]:
    """{relative path: sha256 of its bytes} of every file of the layout."""
    return _read_sums(CHECKSUMS)


def pixel_checksums() -> dict[str, str]:
    """{relative path: sha256 of its decoded pixels} of the derived files."""
    return _read_sums(PIXEL_CHECKSUMS)


def folder_of(rel: str) -> str:
    """The SOURCES folder a relative path is in ('BSDS500/test/1.jpg' -> 'BSDS500/test')."""
    return rel.rsplit("/", 1)[0]


def select(sets: str | None) -> list[str]:
    """Folders named by a comma-separated list of folders and GROUPS (any case); all if None."""
    if not sets:
        return list(SOURCES)
    known = {name.lower(): (name,) for name in SOURCES}
    known.update({name.lower(): folders for name, folders in GROUPS.items()})
    out: list[str] = []
    for name in (n.strip() for n in sets.split(",") if n.strip()):
        if name.lower().strip("/") not in known:
            choices = ", ".join([*GROUPS, *SOURCES])
            raise ConfigError(f"unknown set {name!r}; choose from {choices}")
        out += [f for f in known[name.lower().strip("/")] if f not in out]
    return out


def pixel_bytes(data: bytes) -> bytes:
    """What a pixel checksum hashes: "MODE WIDTHxHEIGHT\\n" and the decoded raw pixels."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return f"{image.mode} {image.width}x{image.height}\n".encode() + image.tobytes()


def half_size(data: bytes) -> bytes:
    """Urban100_color_half's recipe: RGB, 2x2 box mean (PIL reduce(2)), PNG with optimize."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.convert("RGB").reduce(2).save(out, format="PNG", optimize=True)
    return out.getvalue()


_SUMS = checksums()
_PIXEL_SUMS = pixel_checksums()


def problem(rel: str, data: bytes) -> str | None:
    """Why `data` is not the file `rel` of the layout, or None when it is: its SHA-256 is the
    listed one, or, for a derived file, the SHA-256 of its pixels."""
    expected = _SUMS.get(rel)
    if expected is None:
        return "not a file of the data layout"
    got = hashlib.sha256(data).hexdigest()
    if got == expected:
        return None
    pixels = _PIXEL_SUMS.get(rel)
    if pixels is None:
        return f"checksum mismatch (sha256 {got[:16]}..., expected {expected[:16]}...)"
    try:
        got = hashlib.sha256(pixel_bytes(data)).hexdigest()
    except Exception as err:  # noqa: BLE001 - PIL raises several types for a bad image
        return f"not a readable image ({type(err).__name__})"
    if got == pixels:
        return None
    return f"pixel checksum mismatch (sha256 {got[:16]}..., expected {pixels[:16]}...)"


def download(url: str, timeout: float = 60.0, attempts: int = 3) -> bytes:
    """The bytes at `url` (a few tries on network errors, none on an HTTP error status)."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as err:
            raise OSError(f"HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            if attempt == attempts - 1:
                reason = getattr(err, "reason", err)
                raise OSError(
                    f"{reason} (no network? fetch where there is one and copy the folder, or "
                    "use --from-dir)"
                ) from None
    raise AssertionError("unreachable")


class GitHub:
    """The sets' public sources: raw.githubusercontent.com at the pinned commits; derived files
    are made from their source file. `get`: url -> bytes (default: `download`, the network)."""

    def __init__(self, get: Callable[[str], bytes] | None = None):
        self.get = get or (lambda url: download(url))

    def where(self, rel: str) -> str:
        folder, name = folder_of(rel), rel.rsplit("/", 1)[1]
        source = SOURCES[folder]
        return (
            f"https://raw.githubusercontent.com/{source.repo}/{source.commit}/{source.path}/{name}"
        )

    def read(self, rel: str) -> bytes:
        data = self.get(self.where(rel))
        return half_size(data) if SOURCES[folder_of(rel)].derived else data


class LocalCopy:
    """A folder already in the layout (another machine's data directory, copied)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FetchError(f"--from-dir {self.root}: no such folder")

    def where(self, rel: str) -> str:
        return str(self.root / rel)

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()


def _fetch_one(mirror, rel: str, out: Path) -> bool:
    """Writes file `rel` under `out` once it checks; False if it was there already."""
    dest = out / rel
    if dest.exists():
        if problem(rel, dest.read_bytes()) is None:
            return False
        raise FetchError(
            f"{dest}: exists and does not match its checksum; remove it or fetch elsewhere"
        )
    try:
        data = mirror.read(rel)
    except OSError as err:
        raise FetchError(f"{mirror.where(rel)}: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - a source that is not an image (derived files)
        raise FetchError(f"{mirror.where(rel)}: {type(err).__name__}: {err}") from None
    bad = problem(rel, data)
    if bad:
        raise FetchError(f"{mirror.where(rel)}: {bad}; {dest} not written")
    part = dest.with_name(f".{dest.name}.part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(data)
        os.replace(part, dest)  # whole or not at all
    except OSError as err:
        raise FetchError(f"cannot write {dest}: {err.strerror or err}") from None
    finally:
        part.unlink(missing_ok=True)
    return True


def fetch(out, mirror, sets: str | None = None, jobs: int = 8, log=print) -> int:
    """Fetches the folders `sets` (all by default) from `mirror` into `out`, folder by folder,
    `jobs` files at a time; files already there and correct are kept. Returns the files written.
    The first file that fails stops it with a FetchError, leaving no partial file."""
    out = Path(out).expanduser()
    written = 0
    for folder in select(sets):
        files = sorted(rel for rel in _SUMS if folder_of(rel) == folder)
        if not files:
            continue
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = [pool.submit(_fetch_one, mirror, rel, out) for rel in files]
            try:
                new = sum(f.result() for f in futures)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        written += new
        size = sum((out / rel).stat().st_size for rel in files) / 1e6
        log(
            f"{folder}: {len(files)} files, {size:.1f} MB ({new} fetched, {len(files) - new} there)"
        )
    return written


def verify(root, sets: str | None = None) -> tuple[int, list[str]]:
    """(files checked, ["PATH: problem", ...]) of the folders `sets` under `root`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FetchError(f"{root}: no such folder")
    folders = select(sets)
    files = sorted(rel for rel in _SUMS if folder_of(rel) in folders)
    bad = []
    for rel in files:
        path = root / rel
        if not path.is_file():
            bad.append(f"{path}: missing")
        elif (why := problem(rel, path.read_bytes())) is not None:
            bad.append(f"{path}: {why}")
    return len(files), bad
