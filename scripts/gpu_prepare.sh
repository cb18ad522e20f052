#!/usr/bin/env bash
# Put into .gpu/ (git-ignored) what scripts/gpu_check.sh needs on a lent GPU machine that has no internet and no
# Hydra: wheels of hydra-core, omegaconf and antlr4 for its Python 3.12, of the packages the newer families and data
# sets need (zuko for the IAF posterior, h5py for 3D Shapes, litdata and its dependencies for data.stream=true; the
# versions of requirements/constraints.txt), and the MNIST files (gzipped).
#   scripts/gpu_prepare.sh [MNIST_RAW_DIR]      (default ../shared/data/MNIST/raw)
# Then run it with the device tool: carry [".gpu"], command "bash scripts/gpu_check.sh $OUT".
set -euo pipefail
cd "$(dirname "$0")/.."
raw="${1:-../shared/data/MNIST/raw}"
mkdir -p .gpu/wheels .gpu/MNIST/raw
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform any -d .gpu/wheels hydra-core==1.3.2 omegaconf==2.3.0
extra=$(grep -iE '^(zuko|h5py|litdata|boto3|botocore|s3transfer|jmespath|tifffile|obstore)==' requirements/constraints.txt)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any -d .gpu/wheels $extra
# antlr4's runtime has no wheel on PyPI: build one (pure Python) from its source
python3 -m pip wheel -q --no-deps -w .gpu/wheels antlr4-python3-runtime==4.9.3
cp "$raw"/*.gz .gpu/MNIST/raw/
du -sh .gpu
