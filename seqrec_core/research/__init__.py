"""Research tooling: the experiments the library exists for, one command each.

* :mod:`~seqrec_core.research.sweep` — ``seqrec sweep``: a grid of recipe
  overrides × seeds, run resumably, one results table with mean ± std;
* :mod:`~seqrec_core.research.buckets` — popularity buckets (head / mid / tail)
  and per-bucket metrics of a trained model;
* :mod:`~seqrec_core.research.cost` — accuracy-vs-cost numbers of a finished
  run (from its ``events.jsonl`` plus a post-run measurement);
* :mod:`~seqrec_core.research.geometry` — ``seqrec analyze geometry``: the item
  embedding table of checkpoints (spectrum, intrinsic dimension, anisotropy,
  hubness, CKA, …);
* :mod:`~seqrec_core.research.latency` — ``seqrec bench latency``: inference
  latency vs sequence length and its power-law exponent;
* :mod:`~seqrec_core.research.reports` — tables, figures and the README of a
  ``reports/<rq>/`` folder (command, commit, hardware).

Like the rest of ``seqrec_core`` this package names no model and no dataset:
components are looked up in the registry by the names recipes and checkpoints
carry. ``docs/research.md`` describes the commands.
"""
