#!/usr/bin/env bash
# The performance issue's GPU measurements of the README in one command (one H200, ~8 min):
#
#   bash benchmarks/perf_suite.sh <ml-1m.txt> [OUT_DIR]
#
# 1. time to a converged ML-1M model with the shipped SASRec and xLSTM recipes
#    (benchmarks/train_ml1m.py: epochs, seconds to the best epoch, total split into
#    training / validation / the rest, NDCG@10 U and F, met / not met against the
#    plain-PyTorch reference): as shipped, the short schedule (SASRec 75 epochs, xLSTM 50,
#    validation every 5), and the short schedule with train.compile twice — the first
#    run fills the compile cache (cold), the second uses it (warm); SASRec also with
#    length buckets (position-weighted steps);
# 2. xLSTM training throughput by TFLA chunk size (L=200 is padded to a chunk multiple:
#    208 at 16, 224 at 32, 256 at 64), eager / CUDA graph / compiled
#    (benchmarks/train_throughput.py).
#
# Each part's table goes to the terminal and to OUT_DIR/<part>.txt (rows also to
# OUT_DIR/<part>.json; default perf_out/); a part that fails or passes its time limit
# (PART_LIMIT seconds, default 300) does not stop the others. RecBole's comparison takes a
# command of its own (~8 min for one RecBole epoch; benchmarks/recbole_compare.py docstring).
set -uo pipefail
cd "$(dirname "$0")/.."

DATA=${1:?usage: bash benchmarks/perf_suite.sh <ml-1m.txt> [OUT_DIR]}
OUT=${2:-perf_out}
LIMIT=${PART_LIMIT:-300}
mkdir -p "$OUT"
[ -f "$DATA" ] || { echo "perf_suite: $DATA: no such file (the SASRec-format ml-1m.txt)" >&2; exit 2; }

part() {
  local name=$1
  shift
  echo "== $name: $*"
  local start=$SECONDS
  timeout "$LIMIT" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  grep -v -i "warning" "$OUT/$name.txt" | tail -n 25
  echo "== $name: exit $rc after $((SECONDS - start)) s"
}

SHORT_SASREC='train.epochs=75;train.eval_every=5;train.patience=100'
part converge_sasrec python benchmarks/train_ml1m.py recipes/ml1m_sasrec.yaml --data "$DATA" \
  --variant "short=$SHORT_SASREC" \
  --variant "short+compile (cold)=$SHORT_SASREC;train.compile=true" \
  --variant "short+compile (warm)=$SHORT_SASREC;train.compile=true" \
  --variant "short+buckets=$SHORT_SASREC;train.length_buckets=4" \
  --json "$OUT/converge_sasrec.json"

SHORT_XLSTM='train.epochs=50;train.eval_every=5;train.patience=100'
part converge_xlstm python benchmarks/train_ml1m.py recipes/ml1m_xlstm.yaml --data "$DATA" \
  --variant "short=$SHORT_XLSTM" \
  --variant "short+compile (cold)=$SHORT_XLSTM;train.compile=true" \
  --variant "short+compile (warm)=$SHORT_XLSTM;train.compile=true" \
  --json "$OUT/converge_xlstm.json"

for chunk in 16 32 64; do
  part "xlstm_chunk$chunk" python benchmarks/train_throughput.py --models xlstm --compile \
    --repeat 10 --option "chunk_size=$chunk"
done
