#!/usr/bin/env bash
# The research issue's ML-1M benchmark in one go: RQ2 (max_len x dim per model and popularity
# bucket, with RQ3's cost numbers) and RQ4 (embedding geometry), 3 seeds, resumable.
#
#   bash benchmarks/rq_ml1m.sh ../shared/data/ml-1m-sasrec/ml-1m.txt        # everything
#   JOBS=16 ONLY=sasrec OUT=/tmp/out bash benchmarks/rq_ml1m.sh data/ml-1m.txt
#   FROM_REPORT=1 ONLY=xlstm bash benchmarks/rq_ml1m.sh data/ml-1m.txt -o 'model.triton_args={num_warps_intra: 2}'
#
# Arguments after the data path go to `seqrec sweep` (e.g. more -o overrides).
# JOBS: cells trained side by side, one process each (spread over the visible GPUs; d=64
# runs share a GPU well), ONLY: run the cells whose name contains it (e.g. one model per
# call on a time-limited machine), OUT: where the portable results go:
#   rq2_runs.tgz   every cell's metrics/buckets/cost JSON and events.jsonl (epoch times);
#                  untar at the repo root, then `seqrec sweep recipes/sweeps/rq2_ml1m.yaml
#                  --report-only` rebuilds the report
#   reports.tgz    reports/rq2_length_dim and reports/rq4_geometry as written here
#   rq4_ckpts.tgz  the max_len 200 / dim 64 checkpoints and their histories (RQ4's input)
# RQ4 analyses the max_len 200 / dim 64 checkpoints of the models and seeds that exist
# (GEOMETRY=0 skips it here). LIMIT=<seconds> stops the sweep after that long and still
# packs what finished (a rerun resumes).
set -euo pipefail
DATA=${1:?usage: bash benchmarks/rq_ml1m.sh path/to/ml-1m.txt [sweep arguments]}
shift
JOBS=${JOBS:-16}
OUT=${OUT:-out}
SEQREC=${SEQREC:-python3 -m seqrec_core}
mkdir -p "$OUT"

# FROM_REPORT=1: start from the cells already in reports/rq2_length_dim/runs.tgz (they are
# skipped as finished), so only the missing ones train.
if [[ "${FROM_REPORT:-0}" == 1 && -f reports/rq2_length_dim/runs.tgz ]]; then
  tar xzf reports/rq2_length_dim/runs.tgz
fi
only=()
[[ -n "${ONLY:-}" ]] && only=(--only "$ONLY")
limit=()
[[ -n "${LIMIT:-}" ]] && limit=(timeout -s INT "$LIMIT")
"${limit[@]}" $SEQREC sweep recipes/sweeps/rq2_ml1m.yaml --jobs "$JOBS" --keep-going \
  -o "dataset.path=$DATA" "${only[@]}" "$@" || echo "some cells failed: see reports/rq2_length_dim/logs/<cell>.log"
# The report of every finished cell, also those the extra sweep arguments above do not fit
# (e.g. an xLSTM-only -o, which the sweep's own report leaves out).
$SEQREC sweep recipes/sweeps/rq2_ml1m.yaml --report-only --quiet -o "dataset.path=$DATA" >/dev/null

shopt -s nullglob
ckpts=(checkpoints/sweeps/rq2_ml1m/*-max_len200-dim64-seed*/best.safetensors)
hists=(checkpoints/sweeps/rq2_ml1m/*-max_len200-dim64-seed*/histories.safetensors)
((${#ckpts[@]})) && tar czf "$OUT/rq4_ckpts.tgz" "${ckpts[@]}" "${hists[@]}"
if ((${#ckpts[@]})) && [[ "${GEOMETRY:-1}" != 0 ]]; then
  $SEQREC analyze geometry "${ckpts[@]}" --out reports/rq4_geometry --tsne-max 3000
fi
jsons=(runs/sweeps/rq2_ml1m/*/metrics.json runs/sweeps/rq2_ml1m/*/buckets.json
       runs/sweeps/rq2_ml1m/*/cost.json runs/sweeps/rq2_ml1m/*/events.jsonl)
((${#jsons[@]})) && tar czf "$OUT/rq2_runs.tgz" "${jsons[@]}"
reports=(reports/rq2_length_dim reports/rq4_geometry)
tar czf "$OUT/reports.tgz" --ignore-failed-read "${reports[@]}" 2>/dev/null || true
ls -l "$OUT"
