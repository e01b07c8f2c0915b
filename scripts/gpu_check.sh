#!/usr/bin/env bash
# Everything GPU-specific in one command (at most ~8 minutes on one GPU), written to one JSON:
#   1. the tests marked `gpu` (tests/gpu: bf16/16-mixed training, device-resident data, channels_last,
#      torch.compile, resume on the GPU);
#   2. python -m experiments.benchmark suite=gpu quick=true;
#   3. the README's LeNet-5 run on the GPU (test accuracy and wall time);
#   4. ResNet-20 at batch 512 in bf16 (and ResNet-50 at 224), ours beside the plain loop: the gpu suite's
#      overhead section, 2 rounds (images/s of both and their paired ratio).
# Without a GPU it says so, checks that the GPU tests are collected, and exits 0 (CI runs this path).
#   bash scripts/gpu_check.sh [out.json]      (default outputs/gpu_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${1:-outputs/gpu_check.json}

collected=$($PY -m pytest -q -p no:cacheprovider -n 0 --collect-only -m gpu tests/gpu | grep -c "::" || true)
if [ "$collected" -lt 1 ]; then
  echo "gpu_check: no test marked gpu was collected" >&2
  exit 1
fi
if ! $PY -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: no CUDA GPU is visible here; the $collected GPU tests are collected (and skipped in the suite). Nothing else to do."
  exit 0
fi

mkdir -p "$(dirname "$OUT")"
work=$(mktemp -d)
start=$(date +%s)
set +e
$PY -m pytest -q -p no:cacheprovider -n 0 -m gpu tests/gpu > "$work/tests.log" 2>&1
tests_rc=$?
$PY -m experiments.benchmark suite=gpu quick=true output_dir="$work/bench" > "$work/bench.log" 2>&1
bench_rc=$?
lenet_start=$(date +%s.%N)
$PY -m experiments.train experiment=lenet_fashion trainer=gpu quiet=true paths.output_root="$work/outputs" > "$work/lenet.log" 2>&1
lenet_rc=$?
lenet_end=$(date +%s.%N)
$PY -m experiments.benchmark suite=gpu "sections=[overhead]" gpu.rounds=2 output_dir="$work/resnet" \
  > "$work/resnet.log" 2>&1
resnet_rc=$?
set -e
$PY - "$OUT" "$work" "$tests_rc" "$bench_rc" "$lenet_rc" "$lenet_start" "$lenet_end" "$start" "$resnet_rc" <<'PY'
import glob, json, sys, time
import torch
out, work, tests_rc, bench_rc, lenet_rc, lenet_start, lenet_end, start, resnet_rc = sys.argv[1:]
resnets = sorted(glob.glob(f"{work}/resnet/*.json"))
resnet = json.load(open(resnets[-1])) if resnets else {}
summaries = glob.glob(f"{work}/outputs/train/*/*/summary.json")
lenet = json.load(open(summaries[0])) if summaries else {}
benches = sorted(glob.glob(f"{work}/bench/*.json"))
tail = lambda name: open(f"{work}/{name}").read()[-3000:]
record = {
    "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
    "tests": {"exit_code": int(tests_rc), "log_tail": tail("tests.log")},
    "benchmark": {"exit_code": int(bench_rc), "result": json.load(open(benches[-1])) if benches else None,
                  "log_tail": tail("bench.log")},
    "lenet_fashion": {"exit_code": int(lenet_rc), "test_acc": lenet.get("test_acc"),
                      "wall_s": round(float(lenet_end) - float(lenet_start), 1)},
    "overhead_resnet20_b512_bf16": {"exit_code": int(resnet_rc), "ratios": resnet.get("ratios"),
                                     "overhead": (resnet.get("results") or {}).get("overhead"),
                                     "log_tail": tail("resnet.log")},
    "total_s": round(time.time() - float(start), 1),
}
json.dump(record, open(out, "w"), indent=2, default=str)
print(json.dumps({k: v for k, v in record.items() if k != "benchmark"}, indent=2, default=str)[:3000])
print(f"gpu_check: written {out}")
PY
[ "$tests_rc" -eq 0 ] && [ "$lenet_rc" -eq 0 ]
