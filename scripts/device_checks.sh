#!/usr/bin/env bash
# The GPU measurements the fast-evaluate issue asks for (its item 7), as one call of the device tool, for a session
# that is lent a GPU. Prepare here first (the image lacks some packages; nothing can be fetched there):
#   bash scripts/device_wheels.sh                        # -> .whl/, about 47 MB
# then one device call (about 6 min of the 15 a session is lent, which leaves time to run it again):
#   run(command="bash scripts/device_checks.sh", carry=[".whl"], timeout_s=480)
#   run(command="bash scripts/device_checks.sh padded", carry=[".whl"], timeout_s=360)   # the other pair
# Steps, each under its own time limit so that one that hangs does not eat the lease (default: packing, fit, dropout):
#   packing  scripts/bench_vs_trl.py --gpu --only packing: ours packing against TRL packing, 7B-shaped random
#            Mistral (built once in /tmp/mistral-7b), seq 1024, 20 steps, tokens/s and peak CUDA memory
#   padded   the same for ours padded against TRL's defaults
#   fit      `politician-lm fit --config configs/biden.yaml` on that random 7B for 2 minutes of training
#            (max_time): the production recipe on the hardware it is written for; throughput and MFU are logged
#   dropout  scripts/check_lora_dropout.py: the lean LoRA dropout is PEFT's bit for bit on CUDA too (ATen's fused
#            dropout there), in fp32 and bf16 autocast, with both peaks (well under a minute)
# Everything it prints is also in $OUT (bench-*.log, fit.log, versions.txt), which the device tool brings back; the
# fit's Lightning log (tokens/s, MFU, peak memory: QLoRAThroughput's perf/*) is copied there as fit-metrics.csv and
# summed up in one line (scripts/fit_summary.py). The fit starts afresh in /tmp/fit-biden at every call, so the script
# can run again on a warm machine.
set -uo pipefail
cd "$(dirname "$0")/.."
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(packing fit dropout)
for step in "${steps[@]}"; do  # every name before anything is installed or run
  case $step in
    packing | padded | fit | dropout) ;;
    *)
      echo "unknown step '$step': use packing, padded, fit or dropout" >&2
      exit 2
      ;;
  esac
done
OUT=${OUT:-/tmp/device-checks}
mkdir -p "$OUT"
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "no wheels in .whl/: run 'bash scripts/device_wheels.sh' here and carry .whl" >&2
  exit 2
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers, peft, bitsandbytes, trl, lightning, politician_lm
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
for m in (transformers, peft, bitsandbytes, trl, lightning):
    print(m.__name__, m.__version__)"
} 2>&1 | tee "$OUT/versions.txt"
[ "${PIPESTATUS[0]}" = 0 ] || exit 1
MODEL=/tmp/mistral-7b
status=0
for step in "${steps[@]}"; do
  case $step in
    packing | padded)
      timeout 240 python3 scripts/bench_vs_trl.py --gpu --only "$step" --repeats 1 --steps 20 --random-dir $MODEL \
        2>&1 | tee "$OUT/bench-$step.log"
      ;;
    fit)
      if [ ! -f $MODEL/config.json ]; then
        echo "fit: no random 7B in $MODEL; run a bench step first (it builds it)" | tee "$OUT/fit.log"
        status=1
        continue
      fi
      rm -rf /tmp/fit-biden  # this script's own folder: a run left by an earlier call would be refused
      timeout 200 python3 -m politician_lm.cli fit --config configs/biden.yaml \
        --model.model_name_or_path $MODEL --trainer.max_time 00:00:02:00 --trainer.default_root_dir /tmp/fit-biden \
        --trainer.log_every_n_steps 2 2>&1 | tee "$OUT/fit.log"
      ;;
    dropout)
      timeout 120 python3 scripts/check_lora_dropout.py --device cuda 2>&1 | tee "$OUT/dropout.log"
      ;;
  esac
  rc=${PIPESTATUS[0]}
  echo "step $step: exit $rc" | tee -a "$OUT/steps.txt"
  [ "$rc" = 0 ] || status=1
  if [ "$step" = fit ]; then  # QLoRAThroughput's perf/* go to the run's loggers only: copy and sum them up
    python3 scripts/fit_summary.py /tmp/fit-biden --copy-to "$OUT" 2>&1 | tee -a "$OUT/fit.log"
  fi
done
exit $status
