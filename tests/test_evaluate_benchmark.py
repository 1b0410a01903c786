"""benchmarks/eval_throughput.py runs end to end on CPU with tiny sizes, and its
fast evaluation reports the plain loop's ranks and metrics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_throughput.py"


def load_script():
    spec = importlib.util.spec_from_file_location("eval_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_throughput_smoke(capsys):
    bench = load_script()
    argv = "--device cpu --users 150 --items 60 --mean-length 12 --max-len 10 --dim 8"
    argv += " --blocks 1 --models sasrec lstm --repeat 1 --filter-seen"
    out = bench.main(argv.split())
    rows = out["eval"]
    assert [(r["model"], r["config"].split()[0]) for r in rows] == [
        ("sasrec", "plain"),
        ("sasrec", "fast"),
        ("lstm", "plain"),
        ("lstm", "fast"),
    ]
    for r in rows:
        assert r["users"] == 150 and r["items"] == 60
        assert r["metric_equal"] and r["ranks_differ"] == 0 and r["topk_differ"] == 0
        assert r["seconds"] > 0 and r["peak_gib"] is None  # no GPU memory on CPU
    assert [r["scores"] for r in out["matmul"]] == ["fp32", "bf16"]
    assert out["matmul"][0]["ranks_differ"] == 0
    printed = capsys.readouterr().out
    assert "NDCG@10" in printed and "NO" not in printed
