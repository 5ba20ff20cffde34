"""The catalogue of published weights, end to end against a loopback HTTP mirror.

Each test starts ``http.server`` on 127.0.0.1 (port 0) serving files the test
writes, points ``GANGEO_MIRROR`` at it (the documented mirror: ``<base>/<entry>/<file>``)
and ``GANGEO_HOME`` at a temporary cache (tests/support/mirror.py). Each real weight format is a small
writer function in ``WRITERS`` (architecture -> files of an entry); every
catalogue entry whose architecture has a writer is downloaded and loaded. ``gangeo models``:
tests/jobs/test_models_cmd.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import re
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from geometry_core.errors import GeometryError, MissingWeightsError
from geometry_core.generators import load_generator
from geometry_core.generators.catalog import CATALOG, CatalogEntry, CatalogFile, fetch_entry, local_path
from geometry_core.weights_cache import PIN_SUFFIX, WeightsIntegrityError, read_pin
from tests.support.biggan import biggan_deep_files as write_biggan_deep
from tests.support.mirror import Mirror, serve_entry

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ writers, one per real format


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


DATA = ROOT / "tests" / "support" / "data"


def write_gan_zoo(filename: str):
    """A file the GAN zoo's own ``BaseGAN.save`` wrote (tests/support/data/gan_zoo/README.txt says how)."""
    def write(entry: CatalogEntry) -> dict[str, bytes]:
        (f,) = entry.files
        return {f.filename: (DATA / "gan_zoo" / filename).read_bytes()}

    return write


def write_stylegan2(entry: CatalogEntry) -> dict[str, bytes]:
    """A rosinality checkpoint (``{"g_ema", "latent_avg"}``) served under the entry's file name:
    the loader tells the formats apart by content. NVIDIA's pickle layout has its own tests
    (tests/core/test_stylegan2_nvidia.py)."""
    (f,) = entry.files
    return {f.filename: (DATA / "stylegan2" / "rosinality_tiny.pt").read_bytes()}


WRITERS = {"biggan-deep": write_biggan_deep, "pggan": write_gan_zoo("pggan_tiny.pth"),
           "dcgan-fashion": write_gan_zoo("dcgan_tiny.pth"), "stylegan2": write_stylegan2}


class TinyGenerator(nn.Module):
    """4-d codes -> (3, 2, 2) images; built by the "module" loader for a test catalogue entry."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 12)

    def forward(self, z):
        return torch.tanh(self.lin(z)).reshape(-1, 3, 2, 2)


def _cache_listing(entry: CatalogEntry) -> list[str]:
    folder = local_path(entry, entry.files[0]).parent
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------ downloads that succeed


@pytest.mark.parametrize("name", [n for n, e in CATALOG.items() if e.arch in WRITERS])
def test_entry_downloads_verifies_and_loads(mirror, monkeypatch, tmp_path, capfd, name):
    entry = CATALOG[name]
    files = WRITERS[entry.arch](entry)
    entry = serve_entry(mirror, name, files, monkeypatch)
    space = next(iter(entry.spaces))

    G = load_generator(name, space=space)
    err = capfd.readouterr().err
    for f in entry.files:
        path = local_path(entry, f)
        assert f"downloading {mirror.url}/{name}/{f.filename} -> {path}" in err
        assert path.read_bytes() == files[f.filename]
        if f.sha256 is None:  # pinned on first use: the pin holds the served file's digest
            assert read_pin(path)["sha256"] == hashlib.sha256(files[f.filename]).hexdigest()
    assert not [p for p in _cache_listing(entry) if p.endswith(".part")]

    # The same files loaded directly give the same generator; a second load downloads nothing.
    direct = tmp_path / "direct"
    direct.mkdir()
    for filename, body in files.items():
        (direct / filename).write_bytes(body)
    paths = {f.option: str(direct / f.filename) for f in entry.files}
    G_direct = load_generator(entry.arch, space=space, **entry.options, **paths)
    z = G.sample(2, seed=0)
    x = G(z)
    assert x.ndim == 4 and x.shape[:2] == (2, 3) and torch.isfinite(x).all()
    torch.testing.assert_close(x, G_direct(z), rtol=0, atol=0)
    n_requests = len(mirror.requests)
    G_again = load_generator(entry.arch, space=space, weights=name)
    torch.testing.assert_close(G_again(z), G(z), rtol=0, atol=0)
    assert len(mirror.requests) == n_requests


@pytest.mark.parametrize("digest", ["full", "prefix"])
def test_published_hash_accepts_the_right_file(mirror, monkeypatch, digest):
    torch.manual_seed(1)
    body = _torch_bytes(TinyGenerator().state_dict())
    sha = hashlib.sha256(body).hexdigest()
    entry = CatalogEntry(
        "tiny-test", "module", (CatalogFile("weights", "tiny-0.pt", "https://example.invalid/tiny-0.pt",
                                            sha if digest == "full" else sha[:8]),),
        {"z": 4}, 2, "a 4-d test generator", "tests",
        options={"arch": "tests.core.test_catalog:TinyGenerator", "latent_dim": 4, "allow_import": True},
    )
    monkeypatch.setitem(CATALOG, entry.name, entry)
    mirror.files["/tiny-test/tiny-0.pt"] = body
    G = load_generator("module", weights="tiny-test")
    assert G(G.sample(3, seed=0)).shape == (3, 3, 2, 2)
    assert local_path(entry, entry.files[0]).read_bytes() == body
    assert _cache_listing(entry) == ["tiny-0.pt"]  # published digest: no pin file


def test_hand_placed_file_is_pinned_on_first_use(mirror, monkeypatch):
    entry = CATALOG["biggan-deep-256"]
    files = write_biggan_deep(entry)
    for f in entry.files:
        path = local_path(entry, f)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(files[f.filename])
    load_generator("biggan-deep-256", space="noise")
    assert mirror.requests == []
    pinned = read_pin(local_path(entry, entry.files[1]))["sha256"]
    assert pinned == hashlib.sha256(files["pytorch_model.bin"]).hexdigest()


def test_file_url_mirror_is_a_shipped_cache(mirror, monkeypatch, tmp_path):
    entry = serve_entry(mirror, "biggan-deep-256", write_biggan_deep(CATALOG["biggan-deep-256"]), monkeypatch)
    fetch_entry(entry.name)  # fill one cache from the HTTP mirror, then use that cache as a file:// mirror
    monkeypatch.setenv("GANGEO_MIRROR", (tmp_path / "home").as_uri())
    monkeypatch.setenv("GANGEO_HOME", str(tmp_path / "worker-cache"))
    n_requests = len(mirror.requests)
    paths = fetch_entry(entry.name)
    assert all(str(p).startswith(str(tmp_path / "worker-cache")) for p in paths.values())
    assert paths["weights"].read_bytes() == mirror.files["/biggan-deep-256/pytorch_model.bin"]
    assert len(mirror.requests) == n_requests


# ------------------------------------------------------------------ downloads that are refused


def test_wrong_published_hash_is_refused_and_nothing_cached(mirror):
    entry = CATALOG["pggan-celebahq-256"]  # published prefix 6196db68
    mirror.files[f"/{entry.name}/{entry.files[0].filename}"] = b"not the published file" * 100
    with pytest.raises(WeightsIntegrityError, match=r"expected 6196db68.*published.*was not cached") as info:
        fetch_entry(entry.name)  # the architecture-independent step of load_generator("pggan-celebahq-256")
    assert "\n" not in str(info.value)
    assert _cache_listing(entry) == []
    assert mirror.requests == [f"/{entry.name}/{entry.files[0].filename}"]


def test_cut_off_transfer_leaves_nothing_that_looks_valid(mirror, monkeypatch):
    entry = serve_entry(mirror, "biggan-deep-128", write_biggan_deep(CATALOG["biggan-deep-128"]), monkeypatch)
    path = f"/{entry.name}/pytorch_model.bin"
    mirror.cut[path] = len(mirror.files[path]) + 5000  # the server promises more than it sends
    with pytest.raises(MissingWeightsError, match=r"cut off \(\d+ of \d+ bytes\)") as info:
        load_generator("biggan-deep-128")
    assert "\n" not in str(info.value)
    # config.json arrived whole and is kept; the weights left neither a file, a temp file nor a pin.
    assert _cache_listing(entry) == ["config.json", "config.json" + PIN_SUFFIX]


def test_pinned_file_that_changes_is_refused(mirror, monkeypatch):
    entry = serve_entry(mirror, "biggan-deep-256", write_biggan_deep(CATALOG["biggan-deep-256"]), monkeypatch)
    load_generator("biggan-deep-256")
    weights = local_path(entry, entry.files[1])
    good = weights.read_bytes()

    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # the cached file changed on disk
    with pytest.raises(WeightsIntegrityError, match=r"pinned on first use.*delete it to download it again"):
        load_generator("biggan-deep-256")

    weights.unlink()  # deleted, and the mirror now serves a different file: the pin still decides
    mirror.files[f"/{entry.name}/pytorch_model.bin"] = good + b"\0"
    with pytest.raises(WeightsIntegrityError, match=r"pinned on first use.*was not cached"):
        load_generator("biggan-deep-256")
    assert not weights.exists()
    assert not [p for p in _cache_listing(entry) if p.endswith(".part")]


def test_offline_names_file_url_and_destination(mirror, monkeypatch):
    monkeypatch.setenv("GANGEO_OFFLINE", "1")
    entry = CATALOG["stylegan2-ffhq-1024"]
    f = entry.files[0]
    with pytest.raises(MissingWeightsError) as info:
        load_generator("stylegan2", weights=entry.name)
    msg = str(info.value)
    assert "\n" not in msg
    assert f"{f.filename} is not in the cache" in msg
    assert f"download {mirror.url}/{entry.name}/{f.filename}" in msg
    assert f"put it at {local_path(entry, f)}" in msg
    assert mirror.requests == []


def test_unreachable_mirror_is_one_line(mirror, monkeypatch):
    mirror.close()
    with pytest.raises(MissingWeightsError, match=r"download failed \(URLError") as info:
        load_generator("biggan-deep-512")
    assert "\n" not in str(info.value)


def test_entry_of_another_architecture_is_refused_before_download(mirror):
    with pytest.raises(GeometryError, match=r"catalogue entry for architecture 'pggan', not 'biggan-deep'"):
        load_generator("biggan-deep", weights="pggan-celebahq-256")
    with pytest.raises(GeometryError, match=r"brings its own weights"):
        load_generator("biggan-deep-256", weights="other.bin")
    assert mirror.requests == []


# ------------------------------------------------------------------ a hostile or broken mirror


def _capped(monkeypatch, name: str, max_bytes: int) -> CatalogEntry:
    """Entry ``name`` with every file's download cap set to ``max_bytes``."""
    entry = CATALOG[name]
    entry = dataclasses.replace(entry, files=tuple(dataclasses.replace(f, max_bytes=max_bytes) for f in entry.files))
    monkeypatch.setitem(CATALOG, name, entry)
    return entry


@pytest.mark.parametrize("sized", [True, False])
def test_download_over_its_cap_is_refused_and_nothing_cached(mirror, monkeypatch, sized):
    entry = _capped(monkeypatch, "stylegan2-ffhq-256", 4096)
    path = f"/{entry.name}/{entry.files[0].filename}"
    mirror.files[path] = b"\x80" + b"x" * 3 * 2**20  # 3 MiB: declared (refused before the body) or endless-like
    if not sized:
        mirror.unsized.add(path)
    want = r"offers 3145729 bytes, more than its cap of 4096" if sized else r"passed its cap of 4096 bytes"
    with pytest.raises(MissingWeightsError, match=want) as info:
        fetch_entry(entry.name)
    assert "\n" not in str(info.value)
    assert _cache_listing(entry) == []


def test_download_slower_than_the_deadline_is_stopped(mirror, monkeypatch):
    entry = CATALOG["stylegan2-ffhq-256"]
    path = f"/{entry.name}/{entry.files[0].filename}"
    mirror.files[path] = b"\x80" * 200
    mirror.trickle[path] = 0.05  # 10 s in all, each read well within the per-read timeout
    monkeypatch.setenv("GANGEO_DOWNLOAD_TIMEOUT", "1")
    with pytest.raises(MissingWeightsError,
                       match=r"took longer than 1 s \((\d+) bytes; GANGEO_DOWNLOAD_TIMEOUT") as info:
        fetch_entry(entry.name)
    # stopped at the deadline, not at the end of the body
    assert int(re.search(r"\((\d+) bytes;", str(info.value)).group(1)) < 200
    assert _cache_listing(entry) == []
    monkeypatch.setenv("GANGEO_DOWNLOAD_TIMEOUT", "nan")
    with pytest.raises(GeometryError, match=r"GANGEO_DOWNLOAD_TIMEOUT must be seconds"):
        fetch_entry(entry.name)


def test_redirect_to_another_host_is_refused_unless_allowed(mirror, monkeypatch):
    entry = CATALOG["stylegan2-ffhq-256"]
    path = f"/{entry.name}/{entry.files[0].filename}"
    other = Mirror()  # another port on 127.0.0.1: another origin
    try:
        other.files[path] = _torch_bytes({"w": torch.zeros(3)})
        mirror.moved[path] = other.url + path
        with pytest.raises(MissingWeightsError, match=r"redirected to another host \(http://127\.0\.0\.1:\d+/.*"
                                                      r"GANGEO_ALLOW_REDIRECTS=1") as info:
            fetch_entry(entry.name)
        assert "\n" not in str(info.value) and other.requests == []
        assert _cache_listing(entry) == []
        monkeypatch.setenv("GANGEO_ALLOW_REDIRECTS", "1")
        got = fetch_entry(entry.name)["weights"]
        assert got.read_bytes() == other.files[path] and other.requests == [path]
    finally:
        other.close()


def test_credentials_and_query_strings_are_never_shown_or_pinned(mirror, monkeypatch, capfd):
    entry = CATALOG["stylegan2-ffhq-256"]
    path = f"/{entry.name}/{entry.files[0].filename}"
    mirror.files[path] = _torch_bytes({"w": torch.zeros(3)})
    monkeypatch.setenv("GANGEO_MIRROR", mirror.url + "/?token=SECRET1")
    got = fetch_entry(entry.name)["weights"]
    pin = read_pin(got)
    assert pin["url"] == f"{mirror.url}{path}?…"
    assert "SECRET1" not in capfd.readouterr().err + got.with_name(got.name + PIN_SUFFIX).read_text()
    got.unlink()
    host = mirror.url.removeprefix("http://")
    monkeypatch.setenv("GANGEO_MIRROR", f"http://user:SECRET2@{host}")
    with pytest.raises(MissingWeightsError) as info:
        fetch_entry(entry.name)
    assert "SECRET2" not in str(info.value) + capfd.readouterr().err
    monkeypatch.setenv("GANGEO_MIRROR", "notaurl")
    with pytest.raises(GeometryError, match=r"GANGEO_MIRROR must be an http://, https:// or file:// URL"):
        fetch_entry(entry.name)


def test_a_file_of_the_wrong_format_is_never_pinned(mirror):
    entry = CATALOG["stylegan2-ffhq-256"]  # no published digest: pinned on first use
    mirror.files[f"/{entry.name}/{entry.files[0].filename}"] = b"404\n"  # a server's error page with status 200
    with pytest.raises(WeightsIntegrityError, match=r"\(4 bytes, beginning b'404\\n'\) is not a file of the "
                                                    r"expected format; nothing was cached or pinned"):
        fetch_entry(entry.name)
    assert _cache_listing(entry) == []


def test_concurrent_fetches_download_once_and_agree(mirror):
    entry = CATALOG["stylegan2-ffhq-256"]
    path = f"/{entry.name}/{entry.files[0].filename}"
    mirror.files[path] = b"\x80" + b"w" * 15
    mirror.trickle[path] = 0.05  # long enough for the second fetch to arrive while the first downloads
    results, errors = [], []

    def fetch():
        try:
            results.append(fetch_entry(entry.name)["weights"])
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(results) == 3
    assert mirror.requests == [path]  # one download; the others waited and verified its file
    assert read_pin(results[0])["sha256"] == hashlib.sha256(mirror.files[path]).hexdigest()


def test_readme_table_lists_every_entry():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Published weights"):]
    section = section[: section.index("\n## ", 1)]
    for e in CATALOG.values():
        row = next((ln for ln in section.splitlines() if ln.startswith(f"| `{e.name}` |")), None)
        assert row is not None, f"README's Published weights table lacks {e.name}"
        assert f"| `{e.arch}` |" in row and f"| {e.resolution} |" in row
        check = f"prefix `{e.files[0].sha256}`" if e.files[0].sha256 else "pinned on first use"
        assert check in row
