"""A catalogue of published generator weights, by name, fetched into a verified cache.

Example::

    from geometry_core.generators import load_generator
    G = load_generator("pggan-celebahq-256")                       # by catalogue name
    G = load_generator("biggan-deep", space="noise", weights="biggan-deep-256")  # arch + name
    paths = fetch_entry("stylegan2-ffhq-1024")                      # {"weights": Path}

Each entry is an architecture of the generator registry ("pggan",
"dcgan-fashion", "biggan-deep", "stylegan2"), the options it is built with, and
its files: where each is published, the sha256 (or prefix) published with it,
and the loader keyword its local path goes to. The paper's models (Wang &
Ponce 2021, appendix A.3) where a public URL exists: the GAN zoo's DCGAN
(fashionGen) and PGGAN (celebA-HQ), BigGAN-deep through
pytorch-pretrained-biggan, and NVIDIA's StyleGAN2(-ADA) pickles of FFHQ at the
paper's three sizes (the paper used rosinality's conversions, which have no
stable direct URL).

Files live at ``<cache>/<entry>/<file>`` (see :mod:`geometry_core.weights_cache`).
A mirror (``GANGEO_MIRROR=<base URL>``, e.g. an HTTP server inside a cluster)
replaces the published URLs by ``<base>/<entry>/<file>``: the cache's own
layout, so a fetched cache served over HTTP (or a ``file://`` URL of a shared
copy) is a mirror. Hashes are checked whichever URL served the file.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GeometryError
from ..weights_cache import WeightsIntegrityError, cache_home, fetch_file, public_url, read_pin

__all__ = [
    "CATALOG",
    "CatalogEntry",
    "CatalogFile",
    "MIRROR_ENV",
    "cached_paths",
    "entry_status",
    "fetch_entry",
    "file_url",
    "get_entry",
    "is_catalog_name",
    "load_catalog_generator",
    "local_path",
    "with_catalog_weights",
]

MIRROR_ENV = "GANGEO_MIRROR"

_ZOO = "https://dl.fbaipublicfiles.com/gan_zoo"
_ZOO_SRC = "facebookresearch/pytorch_GAN_zoo hubconf.py"
_HF = "https://s3.amazonaws.com/models.huggingface.co/biggan"
_HF_SRC = "pytorch_pretrained_biggan/model.py (PRETRAINED_*_ARCHIVE_MAP)"
_ADA = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained"
_ADA_SRC = "NVlabs/stylegan2-ada-pytorch README / train.py resume_specs"


# torch.save's zip archive, or a pickle (legacy torch.save, NVIDIA's .pkl): a 404 page or an HTML error is neither.
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")


@dataclass(frozen=True)
class CatalogFile:
    """One published file: the loader keyword its path goes to, its cache name, URL and digest."""

    option: str
    filename: str
    url: str
    sha256: str | None = None  # full hex digest or published prefix; None: pinned on first use
    max_bytes: int = 2 * 2**30  # the download's cap: the largest published file is under 400 MB
    magic: tuple[bytes, ...] = _TORCH_MAGIC  # how a file pinned on first use must begin


@dataclass(frozen=True)
class CatalogEntry:
    """A named set of published weights for one registered architecture."""

    name: str
    arch: str
    files: tuple[CatalogFile, ...]
    spaces: dict[str, int]  # latent space -> dimension; the first is the default
    resolution: int
    description: str
    source: str
    options: dict = field(default_factory=dict)


def _zoo(name: str, arch: str, path: str, sha: str, dim: int, res: int, desc: str) -> CatalogEntry:
    f = CatalogFile("weights", path.rsplit("/", 1)[-1], f"{_ZOO}/{path}", sha)
    return CatalogEntry(name, arch, (f,), {"z": dim}, res, desc, _ZOO_SRC)


def _biggan(res: int) -> CatalogEntry:
    tag = f"biggan-deep-{res}"
    files = (
        CatalogFile("config", "config.json", f"{_HF}/{tag}-config.json", max_bytes=2**20, magic=(b"{",)),
        CatalogFile("weights", "pytorch_model.bin", f"{_HF}/{tag}-pytorch_model.bin"),
    )
    desc = f"BigGAN-deep {res}px, ImageNet, class-conditional (paper: the 256px model)"
    return CatalogEntry(tag, "biggan-deep", files, {"joint": 256, "noise": 128, "class": 128}, res, desc, _HF_SRC)


def _stylegan2(name: str, path: str, res: int, desc: str) -> CatalogEntry:
    n_latent = 2 * (res.bit_length() - 1) - 2  # one w per synthesis input: 18 at 1024px
    f = CatalogFile("weights", path.rsplit("/", 1)[-1], f"{_ADA}/{path}")
    return CatalogEntry(name, "stylegan2", (f,), {"z": 512, "w": 512, "w+": n_latent * 512}, res, desc, _ADA_SRC)


CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        _zoo("pggan-celebahq-256", "pggan", "PGAN/celebaHQ_s6_i80000-6196db68.pth", "6196db68", 512, 256,
             "PGGAN (GAN zoo), celebA-HQ 256px: the paper's PGGAN"),
        _zoo("pggan-celebahq-512", "pggan", "PGAN/celebaHQ16_december_s7_i96000-9c72988c.pth", "9c72988c", 512,
             512, "PGGAN (GAN zoo), celebA-HQ 512px"),
        _zoo("dcgan-fashiongen", "dcgan-fashion", "DCGAN_fashionGen-1d67302.pth", "1d67302", 120, 64,
             "DCGAN (GAN zoo), fashionGen 64px: the paper's DCGAN"),
        _biggan(128),
        _biggan(256),
        _biggan(512),
        _stylegan2("stylegan2-ffhq-256", "transfer-learning-source-nets/ffhq-res256-mirror-paper256-noaug.pkl", 256,
                   "StyleGAN2 (NVIDIA, ADA release), FFHQ 256px, narrow layers: the paper's Face256"),
        _stylegan2("stylegan2-ffhq-512", "transfer-learning-source-nets/ffhq-res512-mirror-stylegan2-noaug.pkl", 512,
                   "StyleGAN2 (NVIDIA, ADA release), FFHQ 512px: the paper's Face512"),
        _stylegan2("stylegan2-ffhq-1024", "ffhq.pkl", 1024, "StyleGAN2 (NVIDIA, ADA release), FFHQ 1024px"),
        _stylegan2("stylegan2-afhqcat-512", "afhqcat.pkl", 512,
                   "StyleGAN2-ADA, AFHQ cat 512px (the paper's cat model was LSUN cat, not published as .pkl)"),
    )
}


def is_catalog_name(name: object) -> bool:
    """True for a catalogue entry's name (a string, never a path)."""
    return isinstance(name, str) and name in CATALOG


def get_entry(name: str) -> CatalogEntry:
    """The entry ``name``; GeometryError naming the known entries otherwise."""
    if not is_catalog_name(name):
        raise GeometryError(f"unknown catalogue entry {name!r}; known: {sorted(CATALOG)}")
    return CATALOG[name]


def local_path(entry: CatalogEntry, file: CatalogFile) -> Path:
    """Where ``file`` of ``entry`` lives in the cache: ``<cache>/<entry>/<filename>``."""
    return cache_home() / entry.name / file.filename


def cached_paths(name: str) -> dict[str, Path]:
    """Where each file of entry ``name`` lives in the cache, by loader keyword (nothing is fetched)."""
    entry = get_entry(name)
    return {f.option: local_path(entry, f) for f in entry.files}


def file_url(entry: CatalogEntry, file: CatalogFile) -> str:
    """The URL ``file`` is fetched from: ``$GANGEO_MIRROR/<entry>/<filename>`` if set, else the published one."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return file.url
    try:
        parts = urllib.parse.urlsplit(mirror)
        ok = parts.scheme in ("http", "https", "file") and (parts.scheme == "file" or bool(parts.hostname))
    except ValueError:
        ok = False
    if not ok:
        raise GeometryError(f"{MIRROR_ENV} must be an http://, https:// or file:// URL, got {public_url(mirror)!r}")
    # the cache's layout under the mirror's path; a query string (a token) stays at the end
    path = f"{parts.path.rstrip('/')}/{entry.name}/{file.filename}"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def fetch_entry(name: str) -> dict[str, Path]:
    """Every file of entry ``name``, verified, downloading what is missing: loader keyword -> path."""
    entry = get_entry(name)
    return {
        f.option: fetch_file(file_url(entry, f), local_path(entry, f), sha256=f.sha256, what=f"{name} {f.option}",
                             max_bytes=f.max_bytes, magic=f.magic)
        for f in entry.files
    }


def entry_status(name: str) -> dict:
    """What ``gangeo models`` shows: the entry, whether its files are cached, and how each is checked.

    Reads only file existence and pins, never whole files (``fetch_entry`` verifies).
    """
    entry = get_entry(name)
    files = []
    for f in entry.files:
        path = local_path(entry, f)
        pin, check = None, None
        if f.sha256 is None and path.is_file():
            try:
                pin = read_pin(path)
            except WeightsIntegrityError as err:  # listed, not fatal: the next load refuses the file
                check = f"pin unreadable ({err})"
        check = check or (f"published sha256 {f.sha256}" if f.sha256 is not None
                          else f"pinned on first use: {pin['sha256'][:16]}..." if pin
                          else "pinned on first use (at the next load)" if path.is_file()
                          else "pinned on first use (not yet fetched)")
        files.append({"option": f.option, "path": str(path), "cached": path.is_file(),
                      "url": public_url(file_url(entry, f)), "sha256": f.sha256 or (pin or {}).get("sha256"),
                      "pinned_on_first_use": f.sha256 is None,
                      "check": check})
    return {"name": entry.name, "arch": entry.arch, "spaces": dict(entry.spaces), "resolution": entry.resolution,
            "cached": all(f["cached"] for f in files), "description": entry.description, "source": entry.source,
            "options": dict(entry.options), "files": files}


def with_catalog_weights(arch: str, options: dict) -> dict:
    """``options`` with ``weights=<catalogue name>`` replaced by the cached files' paths.

    The entry's own options come first, so the caller's override them. An entry
    of another architecture is refused.
    """
    entry = get_entry(options["weights"])
    if entry.arch != arch:
        raise GeometryError(
            f"{arch}: weights={entry.name!r} is a catalogue entry for architecture {entry.arch!r}, not {arch!r}"
        )
    rest = {k: v for k, v in options.items() if k != "weights"}
    clash = sorted(set(rest) & {f.option for f in entry.files})
    if clash:
        raise GeometryError(f"{arch}: weights={entry.name!r} brings its own {clash}; do not pass them too")
    paths = {k: str(p) for k, p in fetch_entry(entry.name).items()}
    return {**entry.options, **rest, **paths}


def load_catalog_generator(name: str, *, space: str, **options):
    """Registry factory of a catalogue name: fetch its files, build its architecture in ``space``."""
    from . import list_generators, load_generator  # the registry imports this module

    entry = get_entry(name)
    if entry.arch not in list_generators():
        raise GeometryError(f"{name}: its architecture {entry.arch!r} is not registered in this installation")
    if "weights" in options:
        raise GeometryError(
            f"{name}: a catalogue entry brings its own weights; for other files use "
            f"load_generator({entry.arch!r}, weights=...)"
        )
    # The registry checks the architecture, space and options before anything is downloaded.
    return load_generator(entry.arch, space=space, weights=name, **options)
