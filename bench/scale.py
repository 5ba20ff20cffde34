"""Scale on this machine: a sweep of thousands of codes, and homogeneity over 10,000 codes.

Usage::

    .venv/bin/python bench/scale.py --out bench/results/scale.json        # everything below
    .venv/bin/python bench/scale.py sweep --n 2000 --store local           # one sweep, this process
    .venv/bin/python bench/scale.py reduce --n 10000 --dim 64              # reducer only, this process

``sweep``: the shipped face DCGAN (``dcgan-faces``, D = 100) with ``mse`` and
``lpips-alex`` (one generator pass per chunk for both), 2 workers on embedded Ray,
eigenvectors kept, then every reducer; into a local directory or into S3 (moto's
server on 127.0.0.1, started and stopped here). Reports codes/s of the sweep,
reducer seconds against sweep seconds, the driver's peak RSS and the store's
size. Each size runs in a fresh process, so peak RSS is that size's.

``reduce``: ``n`` codes of dimension ``dim`` written through the store's own
layout (``RunStore.create``/``write_chunk``/``mark_done``) with synthetic
eigen-decompositions of realistic shape (a spectrum falling 5 decades, eigenframes
near a shared one, as homogeneous as a trained generator's), then the reducers on
embedded Ray: ``n²`` ordered homogeneity pairs. Reports seconds, pairs/s, the
driver's peak RSS and the peak RSS of one tile task (a fresh process computing
one tile), and the size of the stored matrices, which the driver never holds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class _Moto:
    """moto's S3 server on 127.0.0.1 in a process of its own (its objects live in its memory, not the
    driver's, so the driver's peak RSS is the driver's), with dummy credentials, for a ``with`` block."""

    def __enter__(self):
        import socket
        import urllib.request

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("bench/scale.py: moto's server did not start") from None
                time.sleep(0.2)
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.endpoint,
                           "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                           "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"})
        import boto3

        self.s3 = boto3.client("s3", endpoint_url=self.endpoint)
        self.s3.create_bucket(Bucket="scale")
        return self

    def size(self) -> int:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket="scale")
        return sum(o["Size"] for page in pages for o in page.get("Contents", []))

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def sweep(n: int, store_kind: str, chunk: int, workers: int) -> dict:
    from cluster.driver import run_sweep
    from cluster.reduce import reduce_run
    from cluster.spec import parse_spec

    raw = {"name": f"scale{n}", "generators": ["dcgan-faces"], "targets": ["mse", "lpips-alex"],
           "codes": {"n": n, "seed": 0}, "chunk_size": chunk, "keep": {"eigvecs": True, "hessian": False},
           "reducers": {"global": False, "homogeneity": False, "anisotropy": False},
           "resources": {"workers": workers, "cpus_per_worker": 1}}
    with tempfile.TemporaryDirectory() as tmp:
        moto = _Moto().__enter__() if store_kind == "s3" else None
        try:
            url = "s3://scale/runs" if moto else str(Path(tmp) / "store")
            t0 = time.perf_counter()
            summary = run_sweep(parse_spec(raw), store=url, progress=False)
            t_sweep = time.perf_counter() - t0
            t0 = time.perf_counter()
            red = reduce_run(url, raw["name"], reducers=("global", "homogeneity", "anisotropy"), use_ray=True)
            t_reduce = time.perf_counter() - t0
            size = moto.size() if moto else _du(Path(url))
        finally:
            if moto:
                moto.__exit__()
    hom = {k: v.get("homogeneity", {}) for k, v in red.items()}
    return {"n": n, "store": store_kind, "targets": raw["targets"], "chunk_size": chunk, "workers": workers,
            "status": summary["status"], "chunks": summary["chunks"], "computed": summary["computed"],
            "sweep_seconds": round(t_sweep, 1), "codes_per_second": round(n / t_sweep, 3),
            "points_per_second": round(n * len(raw["targets"]) / t_sweep, 3),
            "reduce_seconds": round(t_reduce, 1), "reduce_over_sweep": round(t_reduce / t_sweep, 3),
            "driver_peak_rss_mib": _rss_mib(), "store_mib": round(size / 2**20, 1),
            "homogeneity": {k: {m: h.get(m) for m in ("log_mean", "lin_mean") if m in h} for k, h in hom.items()}}


def _synthetic_run(url: str, n: int, dim: int, chunk: int, seed: int = 0) -> str:
    """A run of ``n`` codes whose metrics are given as eigen-decompositions, written as a worker would."""
    import numpy as np

    from cluster.layout import GroupLayout
    from cluster.spec import parse_spec
    from cluster.store import RunStore

    name = f"reduce{n}"
    spec = parse_spec({"name": name, "targets": ["mse"], "codes": {"n": n, "seed": seed}, "chunk_size": chunk,
                       "generators": [{"name": "module", "spaces": ["z"], "options": {
                           "arch": "torch.nn:Tanh", "latent_dim": dim, "input_shape": [dim], "allow_import": True,
                           "output_range_check": False}}],
                       "keep": {"eigvecs": True, "hessian": False}})
    lay = GroupLayout("module", "z", "mse", n=n, dim=dim, chunk_size=chunk)
    rs = RunStore(url)
    rs.create(name, spec, [lay])
    rng = np.random.default_rng(seed)
    base = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    decay = 10.0 ** (-5.0 * np.arange(dim) / (dim - 1))  # 5 decades, as a generator's spectrum
    for c in range(lay.n_chunks):
        rows = lay.rows(c)
        m = rows.stop - rows.start
        vals = np.sort(decay * np.exp(0.3 * rng.standard_normal((m, dim))), axis=1)[:, ::-1]
        vals *= np.exp(0.5 * rng.standard_normal((m, 1)))
        vecs = np.linalg.qr(base + 0.05 * rng.standard_normal((m, dim, dim)))[0]
        z = rng.standard_normal((m, dim))
        rs.write_chunk(name, lay.key, c, {"z": z, "eigvals": vals, "eigvecs": vecs})
        rs.mark_done(name, lay.key, c)
    rs.update_attrs(name, status="complete")
    return name


def reduce_only(n: int, dim: int, chunk: int, tile: int | None) -> dict:
    from cluster.reduce import auto_tile, reduce_run

    tile = tile or auto_tile(n)
    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "store")
        t0 = time.perf_counter()
        run = _synthetic_run(url, n, dim, chunk)
        t_write = time.perf_counter() - t0
        rss_before = _rss_mib()
        t0 = time.perf_counter()
        out = reduce_run(url, run, reducers=("global", "homogeneity", "anisotropy"), tile=tile, use_ray=True)
        t_reduce = time.perf_counter() - t0
        (summary,) = out.values()
        tile_rss = _tile_task_rss(url, run, tile)
        stored = _du(Path(url) / run)
    pairs = n * n - n
    return {"n": n, "dim": dim, "tile": tile, "ordered_pairs": pairs, "write_seconds": round(t_write, 1),
            "reduce_seconds": round(t_reduce, 1), "pairs_per_second": round(pairs / t_reduce),
            "driver_peak_rss_mib": _rss_mib(), "driver_rss_before_reduce_mib": rss_before,
            "tile_task_peak_rss_mib": tile_rss, "store_mib": round(stored / 2**20, 1),
            "homogeneity_matrix_mib_each": round(n * n * 8 / 2**20, 1),  # float64
            "homogeneity": {k: v for k, v in summary.get("homogeneity", {}).items()
                            if k in ("log_mean", "log_std", "lin_mean", "lin_std", "masked")}}


def _tile_task_rss(url: str, run: str, tile: int) -> float:
    """Peak RSS of a fresh process that computes one homogeneity tile, as a Ray tile task does."""
    # The tile function the reducer's Ray tasks run (a bench may time an internal step).
    code = ("import resource, sys, torch; sys.path.insert(0, %r)\n"
            "from cluster.reduce import _tile\n"
            "from cluster.view import open_run\n"
            "(view,) = open_run(%r, %r, mode='a').targets()\n"
            "_tile(view, (0, %d), (%d, %d), torch.float64)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
            ) % (str(ROOT), url, run, tile, tile, 2 * tile)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def _child(*argv: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"bench/scale.py {' '.join(argv)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", nargs="?", choices=("sweep", "reduce", "all"), default="all")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--store", choices=("local", "s3"), default="local")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tile", type=int, default=None)
    ap.add_argument("--sizes", default="200,2000", help="sweep sizes for `all`")
    ap.add_argument("--reduce-n", type=int, default=10_000, help="codes of the reducer-only run for `all`")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()
    if args.part == "sweep":
        print(json.dumps(sweep(args.n or 200, args.store, args.chunk, args.workers)))
        return
    if args.part == "reduce":
        print(json.dumps(reduce_only(args.n or 10_000, args.dim, 64 if args.chunk == 16 else args.chunk, args.tile)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    sweeps = [_child("sweep", "--n", str(n), "--store", kind, "--chunk", str(args.chunk))
              for kind in ("local", "s3") for n in sizes]
    red = _child("reduce", "--n", str(args.reduce_n), "--dim", str(args.dim))
    local = {s["n"]: s for s in sweeps if s["store"] == "local"}
    result = {"benchmark": "scale", "cpu_count": os.cpu_count(), "sweeps": sweeps, "reduce_only": red,
              "driver_rss_ratio_largest_over_smallest_local": round(
                  local[max(local)]["driver_peak_rss_mib"] / local[min(local)]["driver_peak_rss_mib"], 3)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
