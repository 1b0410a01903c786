#!/usr/bin/env bash
# The performance issue's open GPU measurements in one command (one H200, about 8 minutes):
#
#   bash benchmarks/perf_suite.sh <ml-1m.txt> [OUT_DIR]
#
# 1. time to a converged ML-1M model with the shipped SASRec and xLSTM recipes, as shipped and
#    with train.compile + validation every 2 epochs, and with length buckets
#    (benchmarks/train_ml1m.py: epochs, seconds to the best epoch, total split into training /
#    validation / the rest, NDCG@10 U and F, met / not met against the plain-PyTorch reference);
# 2. xLSTM training throughput by TFLA chunk size (L=200 is padded to a chunk multiple: 208 at
#    16, 224 at 32, 256 at 64), eager / CUDA graph / compiled (benchmarks/train_throughput.py).
#
# Each part's table goes to the terminal and to OUT_DIR/<part>.txt (default perf_out/); a part
# that fails or passes its time limit (PART_LIMIT seconds, default 300) does not stop the others.
# RecBole's comparison takes a command of its own (benchmarks/recbole_compare.py docstring).
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

part converge python benchmarks/train_ml1m.py recipes/ml1m_sasrec.yaml recipes/ml1m_xlstm.yaml \
  --data "$DATA" \
  --variant 'compile=train.compile=true;train.eval_every=2' \
  --variant 'buckets=train.length_buckets=4'

for chunk in 16 32 64; do
  part "xlstm_chunk$chunk" python benchmarks/train_throughput.py --models xlstm --compile \
    --repeat 10 --option "chunk_size=$chunk"
done
