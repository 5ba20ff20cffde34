#!/usr/bin/env bash
# Pack what a CUDA image with PyTorch (Python 3.12) lacks to run `make bench-gpu`, for GPU
# machines without package access: Ray, Zarr, LPIPS, BigGAN's package, the face DCGAN.
# Run where the package registry is reachable; ship the archive, then on the GPU machine:
#   mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site
#   PYTHONPATH=/tmp/site:$PWD make bench-gpu PY=python3
set -euo pipefail
cd "$(dirname "$0")/.."
out=.whl/site.tar.xz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pins=$(grep -iE '^(ray|zarr|numcodecs|donfig|google-crc32c|lpips|pytorch-pretrained-biggan|boto3|botocore|s3transfer|jmespath|jsonschema|referencing|rpds-py|jsonschema-specifications)==' requirements.lock)
python3 -m pip install -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --target "$work/site" $pins gan-face-generate==1.1.1
# Parts of Ray and botocore the benchmark never loads: the Java jars, RLlib, Serve, Tune, Data,
# Train and LLM; every AWS service description (only botocore.exceptions is imported).
rm -rf "$work"/site/ray/{jars,rllib,serve,tune,data,train,llm} "$work"/site/botocore/data/*/
mkdir -p .whl
tar -C "$work/site" -cf - . | xz -9 -T2 > "$out.part"
mv "$out.part" "$out"
ls -l "$out"
