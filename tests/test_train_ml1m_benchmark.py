"""benchmarks/train_ml1m.py: rows per recipe and variant, time to the best epoch,
and the verdict against the performance issue's plain-PyTorch reference."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_ml1m.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_ml1m", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_rows_as_shipped_and_per_variant(bench, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    argv = [str(ROOT / "recipes" / "quickstart.yaml"), "--device", "cpu", "--epochs", "3"]
    argv += ["-o", "dataset.n_users=150", "-o", "dataset.n_items=40", "-o", "model.dim=8"]
    argv += ["--variant", "wide=model.dim=16; train.eval_every=3"]
    argv += ["--json", str(tmp_path / "rows.json")]
    rows = bench.main(argv)
    saved = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["variant"], r["total_s"], r["NDCG@10 F"]) for r in saved] == [
        (r["variant"], r["total_s"], r["NDCG@10 F"]) for r in rows
    ]
    assert [(r["recipe"], r["variant"]) for r in rows] == [
        ("quickstart", "as shipped"),
        ("quickstart", "wide"),
    ]
    assert [r["config"].split(",")[0] for r in rows] == ["dim=8", "dim=16"]
    for r in rows:
        assert r["epochs"] == 3 and 1 <= r["best_epoch"] <= 3
        assert 0 < r["to_best_s"] <= r["total_s"]
        assert r["train_s"] > 0 and r["valid_s"] > 0 and r["other_s"] > 0
        assert r["train_s"] + r["valid_s"] + r["other_s"] == pytest.approx(r["total_s"])
        parts = r["setup_s"], r["between_s"], r["final_s"]
        assert all(p > 0 for p in parts)  # every epoch writes a checkpoint; the end evaluates
        assert sum(parts) == pytest.approx(r["other_s"])
        assert 0 <= r["NDCG@10 U"] <= r["HR@10 U"] <= 1
        assert r["vs_plain"] == ""  # not ML-1M: no comparison with its reference
    assert rows[1]["best_epoch"] == 3  # validated every 3 epochs: only the last counts
    printed = capsys.readouterr().out
    assert "as shipped" in printed and "wide" in printed


@pytest.mark.parametrize(
    "text",
    ["compile", "=train.compile=true", "x=", "x=train.compile", "x=a=1;b"],
)
def test_bad_variant_is_a_usage_error(bench, text, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse(["--variant", text])
    assert exc.value.code == 2
    assert "expected NAME=KEY=VALUE" in capsys.readouterr().err


def test_verdict_against_the_plain_reference(bench):
    row = {"model": "sasrec", "total_s": 14.0, "NDCG@10 U": 0.1345, "NDCG@10 F": 0.190}
    assert bench.verdict(row) == "5.4x faster than 76 s; goal ≤ 15 s: met"
    assert bench.verdict({**row, "total_s": 16.0}).endswith("not met")  # too slow
    assert bench.verdict({**row, "NDCG@10 U": 0.1335}).endswith("not met")  # 0.0035 below
    assert bench.verdict({**row, "model": "xlstm", "total_s": 29.0}).endswith("not met")
    xlstm = {**row, "model": "xlstm", "total_s": 29.0, "NDCG@10 U": 0.16, "NDCG@10 F": 0.197}
    assert bench.verdict(xlstm) == "5.6x faster than 161 s; goal ≤ 30 s: met"
    assert bench.verdict({**row, "model": "bert4rec"}) == ""


def test_builtin_config_on_a_sasrec_file(bench, monkeypatch, tmp_path):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    lines = [f"{u} {1 + (u * 7 + t) % 30}" for u in range(1, 61) for t in range(12)]
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    rows = bench.main(["--data", str(path), "--device", "cpu", "--epochs", "2", "--patience", "5"])
    (row,) = rows
    assert (row["recipe"], row["variant"], row["model"]) == ("built-in", "as shipped", "sasrec")
    assert set(row["config"].split(", ")) == {"max_len=200", "dim=64", "blocks=2", "heads=1"}
    assert row["epochs"] == 2 and row["to_best_s"] <= row["total_s"]


def test_a_variant_that_does_not_fit_a_recipe_is_reported_and_the_rest_run(
    bench, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    argv = [str(ROOT / "recipes" / "quickstart.yaml"), "--device", "cpu", "--epochs", "1"]
    argv += ["-o", "dataset.n_users=80", "-o", "dataset.n_items=30", "-o", "model.dim=8"]
    argv += ["--variant", "chunk=model.chunk_size=32", "--variant", "ok=train.eval_every=1"]
    rows = bench.main(argv)
    assert [r["variant"] for r in rows] == ["as shipped", "chunk", "ok"]
    assert "chunk_size" in rows[1]["error"] and "error" not in rows[2]
    captured = capsys.readouterr()
    assert "quickstart / chunk:" in captured.err and "error: see above" in captured.out
