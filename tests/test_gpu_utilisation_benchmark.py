"""benchmarks/gpu_utilisation.py trains a recipe through the real loop and reports
per-epoch utilisation (on CPU: why there is none)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_utilisation.py"


def test_gpu_utilisation_smoke(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("gpu_utilisation", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = [str(ROOT / "recipes" / "quickstart.yaml"), "--epochs", "2"]
    argv += ["-o", "dataset.n_users=120", "-o", "dataset.n_items=40", "-o", "model.dim=8"]
    argv += ["-o", "train.device=cpu"]
    rows = bench.main(argv)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["recipe"] == "quickstart" and r["tokens_per_s"] > 0 for r in rows)
    assert all(r["util"] is None and r["status"] for r in rows)  # no GPU here: says why
    printed = capsys.readouterr().out
    assert printed.count("| quickstart |") == 2
