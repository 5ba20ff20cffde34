"""All targets of a (generator, space) from one generator pass, against each target alone.

For each model, one code (seed 0) and the targets ``mse``, ``lpips-alex``, ``ssim``
and every layer of the generator (``layers: all``):

- ``alone``: seconds of ``metric_tensor(method="exact")`` per target, one at a time
  (what a sweep's chunk cost per target before targets shared a pass);
- ``together``: seconds of ``metric_tensors`` for all of them (one forward-mode pass);
- ``together_over_max_alone``: the goal is at most 1.3; ``sum_alone_over_together``:
  the saving against computing the targets one by one;
- ``max_rel_diff``: per target, ``max|H_together - H_alone| / max|H_alone|``.

dcgan-faces runs at full size (100 tangents). StyleGAN2-256 in W (random weights,
``build_stylegan2(size=256)``) is measured on an (8, 8) block along the first 8 latent
axes at the code, as ``bench/real_size.py --tangents 8`` does (same cost per tangent as
full size). LPIPS uses the trained trunk when cached, else a random one of the same cost.

Example::

    python bench/multi_target.py --out bench/results/multi_target.json
    python bench/multi_target.py --no-layers-alone stylegan2-256-w   # what the committed JSON ran
    python bench/multi_target.py --device cuda --models stylegan2-256-w --tangents 64   # in make bench-gpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import make_distance
from geometry_core.distances import load_distance
from geometry_core.metric import metric_tensor, metric_tensors
from real_size import build, restrict

IMAGE_TARGETS = ("mse", "lpips-alex", "ssim")


def model_case(name: str, tangents: int, device: str = "cpu"):
    """(generator to differentiate, its code (1, K), layer name prefix, full latent size), on ``device``."""
    if name == "dcgan-faces":
        import geometry_core as gc

        G = gc.load_generator("dcgan-faces").to(device)
        return G, G.sample(1, seed=0).to(device), G, ""
    G = build("stylegan2-256-w")
    z0 = G.sample(1, seed=0)
    # The first K latent axes at z0: the generator module sits at "G.module" inside the restriction.
    return restrict(G, z0[0], tangents).to(device), torch.zeros(1, tangents, device=device), G, "G.module."


def timed(fn):
    _sync()
    t0 = time.perf_counter()
    out = fn()
    _sync()
    return time.perf_counter() - t0, out


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # CUDA kernels run asynchronously: time what they did, not their launch


def measure(name: str, tangents: int, layers_alone: bool = True, device: str = "cpu") -> dict:
    Gm, z, G, prefix = model_case(name, tangents, device)
    distances, trunk = {}, None
    for t in IMAGE_TARGETS:
        distances[t], used = make_distance(t, device)
        trunk = used or trunk
    for layer in G.layer_names:
        distances[f"layer:{layer}"] = load_distance(f"layer:{prefix}{layer}", generator=Gm)
    metric_tensor(Gm, distances["mse"], z)  # warm-up: kernels, allocator, first-call costs
    alone, H_alone = {}, {}
    for t, d in distances.items():
        if t.startswith("layer:") and not layers_alone:
            continue
        alone[t], H_alone[t] = timed(lambda d=d: metric_tensor(Gm, d, z, method="exact"))
        print(f"multi_target: {name} {t}: {alone[t]:.2f} s", file=sys.stderr, flush=True)
    together, H = timed(lambda: metric_tensors(Gm, distances, z))
    print(f"multi_target: {name} all together: {together:.2f} s", file=sys.stderr, flush=True)
    slowest = max(alone, key=alone.get)
    layers = [t for t in alone if t.startswith("layer:")]
    return {
        "model": name, "latent_dim": G.latent_dim, "tangents": Gm.latent_dim, "codes": 1,
        "targets": list(distances), "lpips_trunk": trunk,
        "alone_seconds": {t: round(s, 3) for t, s in alone.items()},
        "alone_layers_all_seconds": round(sum(alone[t] for t in layers), 3) if layers_alone else None,
        "alone_sum_seconds": round(sum(alone.values()), 3),
        "slowest_alone": slowest,
        "together_seconds": round(together, 3),
        "together_over_max_alone": round(together / alone[slowest], 3),
        "sum_alone_over_together": round(sum(alone.values()) / together, 3) if layers_alone else None,
        "max_rel_diff": {t: float((H[t] - H_alone[t]).abs().max() / H_alone[t].abs().max()) for t in alone},
    }


def run(argv=None) -> dict:
    """The benchmark; returns the JSON object it prints."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["dcgan-faces", "stylegan2-256-w"],
                   choices=["dcgan-faces", "stylegan2-256-w"])
    p.add_argument("--tangents", type=int, default=8, help="latent axes for StyleGAN2 (the (K, K) block)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-layers-alone", nargs="*", default=[], metavar="MODEL",
                   help="models whose layer targets are not timed alone (each is at most one pass of G, "
                        "cheaper than mse alone); they are still computed together")
    p.add_argument("--device", default="cpu", help="cpu, or cuda (make bench-gpu)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(), "goal": 1.3,
              "cases": []}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)
    for m in args.models:  # written after each model, so a long run keeps what it measured
        result["cases"].append(measure(m, args.tangents, m not in args.no_layers_alone, args.device))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


def main(argv=None) -> int:
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
