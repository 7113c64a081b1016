#!/bin/bash
# Demonstrations for notes/ISSUE23.md: each item of issue 23, as a user would hit it (about 90 s on 2 CPU cores).
#   bash notes/issue23/demo.sh [TOKENS_FOLDER] [SFT_CHECKPOINT]     (defaults: the pipeline's own)
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
export OMP_NUM_THREADS=1 PYTHONPATH=$ROOT  # data/*.py would import an installed nanotrain otherwise
P="nice -n 15 python"
T=${1:-data/tinyworld/tokens}
SFT=${2:-out/sft/ckpt.pt}
D=/tmp/demo23/runs; rm -rf $D; mkdir -p $D
TINY="--data $T --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 4 --warmup 1 --eval-batches 2 --dtype float32"
say() { echo; echo "\$ $*"; }

say "python train_rm.py --help | tail -2; python train_rlhf.py --help > /dev/null; echo exit \$?"
$P train_rm.py --help | tail -2; $P train_rlhf.py --help > /dev/null; echo "exit $?"

say "python train_pretrain.py $TINY --lr 1e5 --steps 10 --save-every 1 --out $D/nan"
$P train_pretrain.py $TINY --lr 1e5 --steps 10 --save-every 1 --out $D/nan 2>&1 | grep -v "it/s\]\|^config" | tail -3
say "python sample.py --init $D/nan/ckpt.pt --prompt 'Lena lives in' --max-new-tokens 5 (the kept checkpoint is finite)"
$P sample.py --init $D/nan/ckpt.pt --prompt 'Lena lives in' --max-new-tokens 5 --device cpu 2>&1 | tail -1
$P - <<PY
import torch
ck = torch.load("$D/nan/ckpt.pt", weights_only=True)
print("ckpt.pt step", ck["step"], "all finite:", all(v.isfinite().all().item() for v in ck["model"].values()))
PY

say "two runs on one --out: the second while the first is running"
$P train_pretrain.py $TINY --steps 20000 --out $D/two > /dev/null 2>&1 & FIRST=$!
sleep 6
$P train_pretrain.py $TINY --steps 20000 --out $D/two 2>&1 | tail -1
kill -9 $FIRST; wait $FIRST 2>/dev/null

say "python train_pretrain.py $TINY --steps 6 --save-every 3 --out $D/res; then resume with --seed 1, then with --lr 5e-4"
$P train_pretrain.py $TINY --steps 6 --save-every 3 --out $D/res > /dev/null 2>&1
$P train_pretrain.py $TINY --steps 8 --save-every 3 --out $D/res --resume --seed 1 2>&1 | tail -1
$P train_pretrain.py $TINY --steps 8 --save-every 3 --out $D/res --resume --lr 5e-4 2>&1 | grep "resuming"

say "a torn last line of metrics.jsonl, then --resume"
printf '{"step": 9, "lo' >> $D/res/metrics.jsonl
$P train_pretrain.py $TINY --steps 10 --out $D/res --resume 2>&1 | grep -c "^error" ; tail -1 $D/res/metrics.jsonl | cut -c1-60

say "truncated resume.pt, then --resume"
head -c 20000 $D/res/resume.pt > $D/res/r && mv $D/res/r $D/res/resume.pt
$P train_pretrain.py $TINY --steps 12 --out $D/res --resume 2>&1 | tail -1

say "python train_pretrain.py --init hf:README.md ..."
$P train_pretrain.py $TINY --steps 2 --out $D/hf --init hf:README.md 2>&1 | tail -1
say "python train_pretrain.py --init hf:$D/nan/ckpt.pt ..."
$P train_pretrain.py $TINY --steps 2 --out $D/hf --init hf:$D/nan/ckpt.pt 2>&1 | tail -1

say "python sample.py --init $D/nan/ckpt.pt --prompt <200 words> (context 32)"
$P sample.py --init $D/nan/ckpt.pt --device cpu --max-new-tokens 4 --prompt "$(yes 'Lena lives in Ashford.' | head -50 | tr '\n' ' ')" 2>&1 >/dev/null | tail -1

say "a full disk while saving (ulimit -f 1000: writes past 1 MB fail), n_embd 128"
(ulimit -f 1000; $P train_pretrain.py $TINY --n-embd 128 --steps 2 --out $D/disk 2>&1 | tail -1); ls $D/disk

say "KTO on an empty file; DPO on an empty file"
: > $D/empty.jsonl
$P train_rlhf.py --algo kto --init $SFT --world none --data $D/empty.jsonl --out $D/kto --steps 2 2>&1 | tail -1
$P train_rlhf.py --algo dpo --init $SFT --world none --data $D/empty.jsonl --out $D/dpo --steps 2 2>&1 | tail -1

say "a bad byte on line 500 of a JSONL file"
$P - <<PY
import json
lines = [json.dumps({"text": f"document {i} " + "x" * 60}).encode() for i in range(1, 601)]
lines[499] = lines[499].replace(b"document", b"docum\xffent")
open("$D/bad.jsonl", "wb").write(b"\n".join(lines) + b"\n")
PY
$P data/prepare_pretrain.py --input $D/bad.jsonl --out $D/badtok 2>&1 | tail -1
