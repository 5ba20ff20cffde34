"""The metric at the paper's sizes: seconds, memory and agreement of exact, bp and Lanczos.

Random weights in the real configurations: StyleGAN2 256 px / 512-d in Z and W,
PGGAN celebAHQ-256 (512-d), BigGAN-deep-256 in its noise space (128-d); pixel MSE
and LPIPS-alex (the trained trunk when cached, else a random trunk of the same
layout and cost). For each model and distance, one code (seed 0):

- seconds per metric for ``exact``, ``bp`` and ``lanczos-backward`` (top ``--topk``);
- ``exact`` against one batched forward of the same number of codes as tangents
  (G and phi, no gradient), the floor forward mode is measured against;
- peak memory per method: ``torch.cuda.max_memory_allocated`` on GPU, the growth
  of the resident set (sampled every 20 ms) on CPU;
- agreement: relative Frobenius difference of exact and bp; relative error of the
  Lanczos eigenvalues against exact's top eigenvalues (decomposed in float64);
  with ``--check-fp64``, the largest relative error of exact's top eigenvalues in
  the run's precision (float32, TF32 if ``--tf32``) against exact in float64.

On CUDA, cuDNN picks its fastest kernels (``cudnn.benchmark``; bp's convolution
double backward is about 1.6x faster with it) and TF32 is off unless ``--tf32``.

``--tangents K`` (K < D) measures on the K coordinate axes of the latent space at
the code: the metric of ``u -> G(z0 + (u, 0))`` is the (K, K) block of ``H``, and
every method computes exactly that block, at the full model's cost per tangent.
exact and bp cost grows linearly with the tangents, so ``seconds * D / K`` is
reported as the full-size estimate. Lanczos needs the whole space, so there it is
timed per Hessian-vector product at full size (``hvp``, double backward) instead.
This is how the CPU table is made: at full size one metric takes hours on two cores.

Examples::

    python bench/real_size.py --device cuda --out bench/results/real_size_gpu.json
    python bench/real_size.py --tangents 8 --out bench/results/real_size.json     # CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import torch
from torch import nn

from common import make_distance, sync
from geometry_core.generators.base import Generator
from geometry_core.metric import hvp, metric_tensor
from geometry_core.spectrum import eigen

MODELS = ("stylegan2-256-z", "stylegan2-256-w", "pggan-256", "biggan-deep-256-noise")
DISTANCES = ("mse", "lpips-alex")
METHODS = ("exact", "bp", "lanczos-backward")


def build(name: str) -> Generator:
    """A real-configuration generator with random weights (float32, CPU)."""
    if name.startswith("stylegan2-256-"):
        from geometry_core.generators.stylegan2 import build_stylegan2

        return build_stylegan2(size=256, style_dim=512, n_mlp=8, channel_multiplier=2, space=name[-1])
    if name == "pggan-256":
        from geometry_core.generators.gan_zoo import build_pggan

        return build_pggan(resolution=256, latent_dim=512)
    if name == "biggan-deep-256-noise":
        from geometry_core.generators.biggan import build_biggan_deep

        return build_biggan_deep(resolution=256, space="noise")
    raise SystemExit(f"real_size: unknown model {name!r}; choose from {list(MODELS)}")


class _Axes(nn.Module):
    """``u -> G(z0 + (u, 0))``: the generator restricted to the first K latent axes at z0."""

    def __init__(self, G: Generator, z0: torch.Tensor, k: int) -> None:
        super().__init__()
        self.G = G
        self.k = k
        self.register_buffer("z0", z0.reshape(1, -1))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        rest = self.z0[:, self.k :].expand(u.shape[0], -1)
        return self.G(torch.cat([self.z0[:, : self.k] + u, rest], dim=1))


def restrict(G: Generator, z0: torch.Tensor, k: int) -> Generator:
    return Generator(_Axes(G, z0, k), k, name=f"{G.name}[:{k}]", layer_names=[])


class _Peak:
    """Peak memory of a block: CUDA's allocator counter, or RSS sampled on CPU."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        import psutil

        proc = psutil.Process()
        self.base = proc.memory_info().rss
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, proc.memory_info().rss)
                time.sleep(0.02)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
        self.mib = round(max(0, self.peak - self.base) / 2**20, 1)


def run_method(G, d, z, method: str, topk: int, device: str) -> tuple[dict, torch.Tensor]:
    kw = {"topk": topk} if method.startswith("lanczos") else {}
    with _Peak(device) as mem:
        sync(device)
        t0 = time.perf_counter()
        H = metric_tensor(G, d, z, method=method, **kw)
        sync(device)
        seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "peak_mib": mem.mib}, H


def forward_seconds(G, d, n: int, z: torch.Tensor, device: str, batch: int) -> float:
    """One batched forward of ``n`` codes through G and phi (no gradient), in batches of ``batch``."""
    codes = z.expand(n, -1)
    with torch.no_grad():
        d.represent(G, codes[:1]) if d.has_phi else G(codes[:1])  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            d.represent(G, codes[i : i + batch]) if d.has_phi else G(codes[i : i + batch])
        sync(device)
    return time.perf_counter() - t0


def measure(model: str, G: Generator, dist: str, args) -> dict:
    d, trunk = make_distance(dist, args.device)
    z0 = G.sample(1, seed=0).to(args.device)
    D = G.latent_dim
    k = D if not args.tangents or args.tangents >= D else args.tangents
    Gm, z = (G, z0) if k == D else (restrict(G, z0[0], k).to(args.device), torch.zeros(1, k, device=args.device))
    topk = min(args.topk, k - 1)
    row = {"model": model, "distance": dist, "lpips_trunk": trunk, "latent_dim": D, "tangents": k,
           "device": args.device}
    run_method(Gm, d, z, "exact", topk, args.device)  # warm-up: kernels, allocator, first-call costs
    results = {}
    for method in args.methods:
        if method.startswith("lanczos") and k < D:
            row[method] = stats = hvp_seconds(G, d, z0, args.device)
            print(f"real_size: {model} {dist} {method}: {stats}", file=sys.stderr, flush=True)
            continue
        stats, H = run_method(Gm, d, z, method, topk, args.device)
        results[method] = H
        if k < D and method in ("exact", "bp"):
            stats["seconds_full_estimate"] = round(stats["seconds"] * D / k, 1)
        row[method] = stats
        print(f"real_size: {model} {dist} {method}: {stats}", file=sys.stderr, flush=True)
    row["forward_seconds"] = round(forward_seconds(Gm, d, k, z, args.device, args.forward_batch), 3)
    if "exact" in results:
        row["exact_over_forward"] = round(row["exact"]["seconds"] / row["forward_seconds"], 2)
        H = results["exact"].double()
        if "bp" in results:
            row["exact_vs_bp_rel_frobenius"] = float((H - results["bp"].double()).norm() / H.norm())
            row["exact_faster_than_bp"] = row["exact"]["seconds"] < row["bp"]["seconds"]
        if "lanczos-backward" in results:
            top = eigen(H)[0][:topk]
            got = eigen(results["lanczos-backward"].double())[0][:topk]
            row["lanczos_top_eig_rel_error"] = float(((got - top).abs() / top.abs().clamp_min(1e-30)).max())
        if args.check_fp64:
            row["fp64_top_eig_rel_error"] = fp64_error(Gm, d, z, results["exact"], topk)
    return row


def hvp_seconds(G, d, z0, device: str, repeats: int = 3) -> dict:
    """Seconds per Hessian-vector product at full size (what one Lanczos iteration costs)."""
    v = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1)).to(device)
    hvp(G, d, z0, v)  # warm-up
    with _Peak(device) as mem:
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            hvp(G, d, z0, v)
        sync(device)
    return {"seconds_per_hvp": round((time.perf_counter() - t0) / repeats, 3), "peak_mib": mem.mib}


def fp64_error(G, d, z, H32: torch.Tensor, topk: int) -> float:
    """Largest relative error of the top eigenvalues of ``H32`` against exact in float64."""
    H64 = metric_tensor(G, d, z, method="exact", dtype=torch.float64)
    ref = eigen(H64)[0][:topk]
    got = eigen(H32.double())[0][:topk]
    return float(((got - ref).abs() / ref.abs().clamp_min(1e-300)).max())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--distances", nargs="+", default=list(DISTANCES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--tangents", type=int, default=0, help="K latent axes (0: all D)")
    p.add_argument("--topk", type=int, default=20)
    p.add_argument("--forward-batch", type=int, default=32)
    p.add_argument("--tf32", action="store_true", help="CUDA: allow TF32 in matmuls and convolutions")
    p.add_argument("--check-fp64", action="store_true", help="compare exact's top eigenvalues with float64")
    p.add_argument("--budget", type=float, default=math.inf, help="seconds; later cases are skipped past it")
    p.add_argument("--out", default=None, help="JSON file, rewritten after every case")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    start = time.perf_counter()
    report = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
              "dtype": "float32", "tf32": bool(args.tf32), "tangents": args.tangents or "all",
              "cases": [], "skipped": []}
    for model in args.models:
        G = None
        for dist in args.distances:
            if time.perf_counter() - start > args.budget:
                report["skipped"].append(f"{model} {dist}")
                continue
            G = G if G is not None else build(model).to(args.device)
            report["cases"].append(measure(model, G, dist, args))
            report["seconds_total"] = round(time.perf_counter() - start, 1)
            if args.out:
                Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        del G
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return report


if __name__ == "__main__":
    os.environ.setdefault("GANGEO_OFFLINE", "1")  # a benchmark never downloads
    main()
