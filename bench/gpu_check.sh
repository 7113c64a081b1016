#!/usr/bin/env bash
# The GPU path checked on one CUDA GPU (an H100 or H200) in at most 8 minutes, every figure into one log.
#
#   bash bench/gpu_check.sh OUT [--shared DIR] [--dry-run]
#   bash bench/gpu_check.sh --pack DIR     # on a machine with the data: copy what the check reads into DIR
#
# It installs nothing and needs no network: a python3 with torch >= 2.11, triton, tiktoken, tqdm, transformers and
# pytest, this checkout (run with PYTHONPATH=.), and DIR (default ../shared, else ./shared) holding tiktoken's cache
# of GPT-2's BPE (DIR/tiktoken) and four small data samples (DIR/data/...; --pack copies exactly these, ~6 MB).
# Everything it prints goes to OUT/gpu_check.log as it happens, so a run cut short keeps what it measured. The steps,
# most important first, each under its own time limit and all within one 8-minute budget:
#   1. the CUDA tests, pytest -m cuda: tests/test_cuda.py (the kernel's forward and backward in bf16 against SDPA
#      up to T = 4096, D = 64 and 128, padded rows, a bf16 training step, KV cache, torch.compile, FSDP over NCCL)
#      and tests/test_flash_attention.py's fp16/bf16 cases, compiled for the GPU instead of interpreted;
#   2. bench/bench_attention.py at GPT-2's shape (B*H = 96, D = 64) and D = 128, T = 1024..8192: the Triton kernel
#      beside SDPA's FlashAttention backend, forward and forward+backward;
#   3. bench/bench_pretrain.py at GPT-2 124M (block 1024, batch 16): tokens/s and MFU against the bf16 matmul peak
#      measured in the same run, eager and torch.compile, beside transformers' GPT2LMHeadModel;
#   4. KV-cache decoding at batch 1 and 64 beside transformers' generate;
#   5. pipeline.py --preset real --tiny --device cuda end to end (started in the background beside step 1: it tests
#      that every stage runs, and measures nothing), then the real preset's pretraining stage at GPT-2 124M for two
#      minutes on the built-in world's text, with its MFU, and the real preset's time estimate (pipeline.py
#      --estimate assumes 40% MFU) recomputed with the measured MFU and peak.
set -u
REPO="$(cd "$(dirname "$0")/.." && pwd)"

OUT="" SHARED="" DRY="" PACK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --shared) SHARED="$2"; shift ;;
    --pack) PACK="$2"; shift ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUT="$1" ;;
  esac
  shift
done
absolute() { case "$1" in /*|"") echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # paths given are the caller's
PACK_AS_GIVEN="$PACK"
OUT="$(absolute "$OUT")" SHARED="$(absolute "$SHARED")" PACK="$(absolute "$PACK")"
cd "$REPO"

# The shared files the check reads, relative to DIR.
FILES="data/tinystories/tinystories_valid_head.txt data/lima/lima.json data/dolly_sample/dolly_151.jsonl
data/hh_rlhf/helpful-base_test.jsonl.gz"
if [ -z "$SHARED" ]; then
  for d in ../shared shared; do [ -d "$d/tiktoken" ] && { SHARED="$d"; break; }; done
  SHARED="${SHARED:-../shared}"
fi
if [ -n "$PACK" ]; then
  mkdir -p "$PACK/tiktoken" && cp -r "$SHARED/tiktoken/." "$PACK/tiktoken/" || exit 1
  for f in $FILES; do mkdir -p "$PACK/$(dirname "$f")" && cp "$SHARED/$f" "$PACK/$f" || exit 1; done
  echo "gpu_check: copied $(du -sh "$PACK" | cut -f1) from $SHARED into $PACK; on the GPU machine run" \
       "bash bench/gpu_check.sh OUT --shared $PACK_AS_GIVEN (relative paths: from where it is run)"
  exit 0
fi
[ -n "$OUT" ] || { echo "usage: bash bench/gpu_check.sh OUT [--shared DIR] [--dry-run] | --pack DIR" >&2; exit 2; }
SHARED="$(cd "$SHARED" 2>/dev/null && pwd || echo "$SHARED")"

mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
WORK="$(mktemp -d /tmp/gpu_check.XXXXXX)"  # checkpoints and tokens: large, and not worth bringing back
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TIKTOKEN_CACHE_DIR="$SHARED/tiktoken" \
       HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_MININTERVAL=15
PY=python3
BUDGET="${GPU_CHECK_BUDGET:-480}"  # seconds for everything: the 8 minutes asked for
T0=$(date +%s)
STATUS=""

say() { echo "$*" | tee -a "$LOG"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# run_step NAME SECONDS COMMAND...: the command under `timeout`, clipped to what is left of the budget.
run_step() {
  local name="$1" secs="$2" start rc
  shift 2
  [ "$secs" -gt "$(left)" ] && secs="$(left)"
  say ""
  say "== $name ($(date -u +%H:%M:%S) UTC, limit ${secs}s): $*"
  [ -n "$DRY" ] && return 0
  if [ "$secs" -lt 15 ]; then
    say "-- $name: skipped, the ${BUDGET}s budget is spent"
    STATUS="$STATUS
$name: skipped (budget spent)"
    return 0
  fi
  start=$(date +%s)
  timeout -k 10 "$secs" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  local took=$(( $(date +%s) - start )) why=""
  [ "$rc" = 124 ] && why=" (time limit reached)"
  say "-- $name: exit $rc after ${took}s$why"
  STATUS="$STATUS
$name: exit $rc, ${took}s$why"
}

# ---------------------------------------------------------------------------------------------------------------
say "gpu_check $(date -u '+%Y-%m-%d %H:%M:%S') UTC; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$(git status --porcelain 2>/dev/null | grep -q . && echo '(with uncommitted changes)'); shared files: $SHARED"
for f in tiktoken $FILES; do
  [ -e "$SHARED/$f" ] || say "warning: $SHARED/$f is missing (bash bench/gpu_check.sh --pack DIR)"
done
if [ -z "$DRY" ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
  $PY - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib, sys, torch
vers = []
for name in ("triton", "transformers", "tiktoken", "tqdm", "pytest"):
    try:
        vers.append(f"{name} {importlib.import_module(name).__version__}")
    except Exception as e:
        vers.append(f"{name} MISSING ({type(e).__name__})")
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), " + ", ".join(vers))
if not torch.cuda.is_available():
    sys.exit("no CUDA GPU visible to torch: nothing to check (bash bench/gpu_check.sh OUT --dry-run lists the steps)")
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}")
EOF
  [ "${PIPESTATUS[0]}" = 0 ] || exit 1
fi

# Step 5's first half runs beside step 1 (it checks that every stage runs on CUDA; nothing in it is timed), and so
# does the tokenisation of the built-in world for step 5's two-minute pretraining.
PIPE_CMD=($PY pipeline.py --preset real --tiny --device cuda --out "$WORK/real"
          --pretrain-data "$SHARED/data/tinystories/tinystories_valid_head.txt" --no-clean
          --sft-data "$SHARED/data/lima/lima.json" --sft-val-data "$SHARED/data/dolly_sample/dolly_151.jsonl"
          --pref-data "$SHARED/data/hh_rlhf/helpful-base_test.jsonl.gz")
PREP_CMD="$PY data/tinyworld.py --out $WORK/tinyworld --seed 0 &&
 $PY data/prepare_pretrain.py --input $WORK/tinyworld/pretrain.jsonl --tokenizer gpt2 --out $WORK/tinyworld_gpt2"
if [ -n "$DRY" ]; then
  say ""
  say "== in the background from the start (output shown in step 5): ${PIPE_CMD[*]}"
  say "== and: $PREP_CMD"
else
  (timeout -k 10 150 "${PIPE_CMD[@]}" > "$WORK/pipeline_tiny.log" 2>&1
   echo "-- exit $?" >> "$WORK/pipeline_tiny.log") &
  PIPE_PID=$!
  (timeout -k 10 120 bash -c "$PREP_CMD" > "$WORK/prep.log" 2>&1; echo "-- exit $?" >> "$WORK/prep.log") &
  PREP_PID=$!
fi

# pytest-xdist, where installed, spreads the tests (and so Triton's compilation of each launch configuration) over
# four processes; the GPU's memory holds all four.
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 4")
run_step "1. CUDA tests" 120 $PY -m pytest -q -rs -p no:cacheprovider $XDIST -m cuda tests/test_cuda.py \
  tests/test_flash_attention.py

if [ -z "$DRY" ]; then  # the benches below are timed: nothing else may use the GPU meanwhile
  wait "$PIPE_PID" "$PREP_PID"
fi

run_step "2. attention kernel vs SDPA" 70 $PY bench/bench_attention.py --batch 8 --heads 12 \
  --seq-lens 1024 2048 4096 8192 --head-dims 64 128 --paths triton sdpa

run_step "3. GPT-2 124M training throughput" 120 $PY bench/bench_pretrain.py --device cuda --preset gpt2 \
  --batch-size 16 --steps 10 --no-fp32 --compile --no-decode

run_step "4. KV-cache decoding" 50 $PY bench/bench_pretrain.py --device cuda --preset gpt2 --no-train \
  --decode-batches 1,64 --decode-tokens 256

say ""
say "== 5a. pipeline.py --preset real --tiny --device cuda (ran beside step 1): ${PIPE_CMD[*]}"
[ -z "$DRY" ] && { tr '\r' '\n' < "$WORK/pipeline_tiny.log" | grep -v '^\s*$' | tail -n 60 | tee -a "$LOG"; \
                   tail -n 3 "$WORK/prep.log" | tee -a "$LOG"; \
                   STATUS="$STATUS
5a. pipeline tiny: $(tail -n 1 "$WORK/pipeline_tiny.log")"; }

# The real preset's pretraining flags (pipeline.py REAL_GPU: batch 16 x 32 accumulated, lr 6e-4, 2000 steps) on the
# built-in world's text, stopped by --time-limit after two minutes (less if earlier steps ran long), then evaluated
# and saved as at the end of a run.
LIMIT=$(( $(left) - 50 )); [ "$LIMIT" -gt 120 ] && LIMIT=120
PRE_OUT="$WORK/pretrain_gpt2"
run_step "5b. real preset pretraining, GPT-2 124M, ${LIMIT}s" $(( LIMIT + 50 )) $PY train_pretrain.py \
  --data "$WORK/tinyworld_gpt2" --out "$PRE_OUT" --preset gpt2 --device cuda --batch-size 16 --grad-accum 32 \
  --lr 6e-4 --warmup 100 --steps 2000 --time-limit "$LIMIT" --log-every 5 --eval-every 100000 \
  --save-every 100000 --eval-batches 8

say ""
say "== 5c. measured MFU of 5b, and the real preset's estimate with it (pipeline.py --estimate assumes 40%)"
if [ -z "$DRY" ]; then
  $PY - "$PRE_OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import json, statistics, sys
from pathlib import Path
import torch
from pipeline import estimate_real_gpu

out = Path(sys.argv[1])
log = out / "metrics.jsonl"
recs = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
steady = [r for r in recs if "mfu" in r][1:]  # the first interval holds the first step's kernel autotuning
if not steady:
    sys.exit("5b logged no throughput: nothing to report")
mfu, tps = statistics.median(r["mfu"] for r in steady), statistics.median(r["tok_per_s"] for r in steady)
print(f"5b: {recs[-1]['step'] if recs else 0} steps; steady-state median over {len(steady)} logged intervals: "
      f"{tps:,.0f} tokens/s, MFU {mfu:.1%}")
peak = None
if (out / "ckpt.pt").exists():
    m = torch.load(out / "ckpt.pt", weights_only=True, map_location="cpu")["metrics"]
    peak = m.get("matmul_peak_flops")
    print(f"5b whole run: {m.get('tokens', 0):,} tokens in {m.get('time_s', 0):.0f} s, "
          f"{m.get('tokens_per_s_avg', 0):,.0f} tokens/s, MFU {m.get('mfu', float('nan')):.1%} (warm-up included) "
          f"against a measured bf16 matmul peak of "
          f"{(peak or float('nan')) / 1e12:.3g} TFLOP/s; val loss {m.get('val_loss', float('nan')):.3f}")
if peak:
    print(f"real preset at the measured {mfu:.1%} MFU of a {peak / 1e12:.3g} TFLOP/s peak (pipeline.py --estimate "
          f"assumes 40% of 989):")
    rows = estimate_real_gpu(peak_flops=peak, mfu=mfu)
    for name, flops, hours in rows:
        print(f"  {name:<10} {flops:.2e} FLOPs  {hours * 60:6.0f} min")
    print(f"  {'total':<10} {sum(r[1] for r in rows):.2e} FLOPs  {sum(r[2] for r in rows) * 60:6.0f} min")
EOF
fi

say ""
say "== summary ($(( $(date +%s) - T0 ))s of the ${BUDGET}s budget)${STATUS}"
[ -n "$DRY" ] && say "(dry run: nothing was run; the log is $LOG)"
rm -rf "$WORK"
exit 0
