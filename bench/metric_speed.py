"""Speed of the metric tensor on dcgan-faces: exact (forward mode) against bp (double backward).

Prints one JSON object. For MSE and the LPIPS-alex layout it reports seconds per
point for ``exact`` and ``bp`` (median of ``--repeats`` runs in this process),
their ratio, the relative Frobenius difference of the two matrices, the time of
one batched forward pass of D codes through G and phi (the floor ``exact`` is
measured against), and peak memory: ``torch.cuda.max_memory_allocated`` on GPU,
else the growth of the peak resident set in a fresh child process per method.

LPIPS uses the trained AlexNet trunk when it is cached; otherwise the random trunk
(``pretrained_backbone=False``: same layout and cost, shipped linear heads).

    python bench/metric_speed.py [--device cuda] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from common import make_distance, sync
from geometry_core.generators.dcgan_faces import load_dcgan_faces
from geometry_core.metric import metric_tensor


def timed(fn, device: str, repeats: int) -> tuple[float, object]:
    fn()  # warm-up: kernels, allocator, first-call overheads
    times, out = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory(dist_name: str, method: str, device: str) -> float:
    """Peak bytes of one metric_tensor call above the resident set before it.

    GPU: the allocator's peak. CPU: in a fresh child process, the peak resident set
    (VmHWM, reset through /proc/self/clear_refs) minus the resident set before the
    call; ru_maxrss cannot be reset, so loading the weights would otherwise mask it.
    """
    if device.startswith("cuda"):
        G, (d, _) = load_dcgan_faces(device=device), make_distance(dist_name, device)
        z = G.sample(1, seed=0)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        metric_tensor(G, d, z, method=method)
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - base)
    cmd = [sys.executable, __file__, "--child-memory", dist_name, method]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())


def child_memory(dist_name: str, method: str) -> None:
    G, (d, _) = load_dcgan_faces(), make_distance(dist_name, "cpu")
    z = G.sample(1, seed=0)
    with torch.no_grad():
        d.represent(G, z)  # page in weights and libraries before the baseline
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        before, field = _status_kib("VmRSS"), "VmHWM"
    except OSError:
        before, field = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, None
    metric_tensor(G, d, z, method=method)
    after = _status_kib(field) if field else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) * 1024)


def bench_distance(dist_name: str, device: str, repeats: int) -> dict:
    G = load_dcgan_faces(device=device)
    d, note = make_distance(dist_name, device)
    z = G.sample(1, seed=0)
    D = G.latent_dim
    zD = G.sample(D, seed=1).to(device)

    def forward():
        with torch.no_grad():
            return d.represent(G, zD)

    t_fwd, _ = timed(forward, device, repeats)
    t_exact, H_exact = timed(lambda: metric_tensor(G, d, z, method="exact"), device, repeats)
    t_bp, H_bp = timed(lambda: metric_tensor(G, d, z, method="bp"), device, repeats)
    rel = float((H_exact.double() - H_bp.double()).norm() / H_bp.double().norm())
    out = {
        "seconds_per_point_exact": t_exact,
        "seconds_per_point_bp": t_bp,
        "ratio_bp_over_exact": t_bp / t_exact,
        "relative_frobenius_exact_vs_bp": rel,
        "seconds_forward_D_codes": t_fwd,
        "ratio_exact_over_forward": t_exact / t_fwd,
        "peak_bytes_exact": peak_memory(dist_name, "exact", device),
        "peak_bytes_bp": peak_memory(dist_name, "bp", device),
        "representation_size": int(forward().shape[-1]),
    }
    if note:
        out["lpips_trunk"] = note
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:k]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--distances", nargs="+", default=["mse", "lpips-alex"])
    parser.add_argument("--child-memory", nargs=2, metavar=("DISTANCE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_memory:
        child_memory(*args.child_memory)
        return
    if args.repeats < 3:
        parser.error("--repeats must be at least 3 (the median of 3 or more runs is reported)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    result = {
        "generator": "dcgan-faces",
        "latent_dim": 100,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "distances": {name: bench_distance(name, args.device, args.repeats) for name in args.distances},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
