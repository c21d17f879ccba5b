#!/usr/bin/env bash
# The Python packages a lent GPU machine's image lacks, as wheels in .whl/ (git-ignored, about 47 MB, under the
# device tool's 64 MiB carry), for scripts/device_checks.sh. Run here, where pip reaches the package registry:
#   bash scripts/device_wheels.sh
# The image has Python 3.12, torch 2.11 (CUDA 13), transformers 5.17, lightning, accelerate, scikit-learn, pandas,
# pyarrow, safetensors, tokenizers, absl-py and tqdm (the device tool's KINDS.md). The versions below are the ones
# this project is tested with on CPU and that ran on an H200 (docs/performance.md, GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl && mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
  --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  bitsandbytes==0.50.2 peft==0.21.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
  jsonargparse==4.53.0 docstring-parser typeshed-client gguf==0.19.0 nltk==3.10.4
# rouge-score publishes no wheel: build its pure-Python one here
python3 -m pip wheel -q --no-deps -w .whl rouge-score==0.1.2
ls -1 .whl
du -sh .whl
