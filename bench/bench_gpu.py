"""`make bench-gpu`: real-size metrics on CUDA, a GPU sweep, one pass for all targets, homogeneity tiles.

One JSON file (``--out``) holds the parts, rewritten as each part finishes so a
run stopped by its time limit keeps what it measured. The real-size part stops
starting new cases after ``--budget`` seconds (the sweep keeps about two minutes);
the whole run is meant to stay under 8 minutes on one H100. The homogeneity part
times the reducer's tiles on CUDA at D=512 (float64; ``--homog-n`` codes, about a
minute) and checks them against the paper's loop (bench/homogeneity_reducer.py). The
multi-target part times StyleGAN2-256 in W with ``mse``, ``lpips-alex``, ``ssim`` and its
layers from one pass against each image target alone (bench/multi_target.py, ``--mt-tangents``
latent axes).

    python bench/bench_gpu.py --out bench/results/real_size_gpu.json
    python bench/bench_gpu.py --parts homogeneity multi_target --device cpu --homog-n 16 --mt-tangents 2 \\
        --out /tmp/h.json                                                  # dry run, no GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_sweep  # noqa: E402
import homogeneity_reducer  # noqa: E402
import multi_target  # noqa: E402
import real_size  # noqa: E402

PARTS = ("real_size", "sweep", "multi_target", "homogeneity")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench/results/real_size_gpu.json")
    p.add_argument("--budget", type=float, default=330.0, help="seconds for the real-size cases")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: the multi-target and homogeneity parts only, to check the script without a GPU")
    p.add_argument("--homog-n", type=int, default=256, help="codes of the homogeneity part (D=512)")
    p.add_argument("--mt-tangents", type=int, default=64, help="latent axes of the multi-target part")
    args = p.parse_args(argv)
    import torch

    if args.device == "cpu" and not set(args.parts) <= {"homogeneity", "multi_target"}:
        p.error("--device cpu runs only --parts homogeneity multi_target")
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench-gpu: no CUDA device visible; this benchmark needs one", file=sys.stderr)
        raise SystemExit(2)
    t0 = time.perf_counter()
    report: dict = {}

    def save() -> None:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    if "real_size" in args.parts:
        part = Path(args.out).with_suffix(".cases.json")
        report["real_size"] = real_size.main(["--device", "cuda", "--budget", str(args.budget), "--check-fp64",
                                              "--out", str(part)])
        save()
        part.unlink(missing_ok=True)
    if "sweep" in args.parts:
        report["sweep"] = gpu_sweep.main(["--device", "cuda", "--n", "256", "--targets", "mse", "ssim"])
        save()
    if "multi_target" in args.parts:
        report["multi_target"] = multi_target.run(
            ["--device", args.device, "--models", "stylegan2-256-w", "--tangents", str(args.mt_tangents),
             "--no-layers-alone", "stylegan2-256-w"])
        save()
    if "homogeneity" in args.parts:
        report["homogeneity_tiles"] = homogeneity_reducer.main(
            ["--device", args.device, "--dims", "512", "--n", str(args.homog_n), "--tiles", "64",
             "--threads", str(torch.get_num_threads()), "--no-baseline", "--repeats", "1", "--out", ""])
        save()
    report["seconds_total"] = round(time.perf_counter() - t0, 1)
    save()
    return report


if __name__ == "__main__":
    os.environ.setdefault("GANGEO_OFFLINE", "1")
    main()
