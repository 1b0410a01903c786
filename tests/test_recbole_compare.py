"""benchmarks/recbole_compare.py: the RecBole atomic-file conversion, the rank rule
it scores RecBole's model with, the seqrec-only path (no RecBole needed) and, when
RecBole is installed, a one-epoch CPU run of both libraries."""

from __future__ import annotations

import argparse
import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "recbole_compare.py"
TINY = ["-o", "model.max_len=10", "-o", "model.dim=8", "-o", "model.blocks=1"]


def load_script():
    spec = importlib.util.spec_from_file_location("recbole_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_file(path: Path, users: int = 50, items: int = 30, seed: int = 0) -> Path:
    """SASRec format, each user 5-15 distinct items in 'time' order."""
    rng = random.Random(seed)
    lines = []
    for u in range(1, users + 1):
        for i in rng.sample(range(1, items + 1), rng.randint(5, 15)):
            lines.append(f"{u} {i}\n")
    path.write_text("".join(lines))
    return path


def test_to_atomic_exact(tmp_path):
    bench = load_script()
    src = tmp_path / "in.txt"
    src.write_text("1 10\n1 20\n\n2 10\n1 30\n2 5\n")
    out = bench.to_atomic(src, tmp_path / "atomic", "demo")
    assert out == tmp_path / "atomic" / "demo" / "demo.inter"
    assert out.read_text() == (
        "user_id:token\titem_id:token\ttimestamp:float\n"
        "1\t10\t0\n"
        "1\t20\t1\n"
        "2\t10\t2\n"
        "1\t30\t3\n"
        "2\t5\t4\n"
    )
    assert bench.test_histories(bench.read_sasrec(src)) == {"1": ["10", "20"], "2": ["10"]}


def test_to_atomic_rejects_bad_line(tmp_path):
    bench = load_script()
    src = tmp_path / "bad.txt"
    src.write_text("1 10\n1 20 5\n")
    with pytest.raises(SystemExit, match=r"bad.txt:2: expected 'user item'"):
        bench.to_atomic(src, tmp_path / "atomic")


def test_rank_rule_matches_protocol():
    """docs/protocol.md section 7: ties count against the model, column 0 is never a
    candidate, F drops history but keeps the target, NaN ranks last."""
    bench = load_script()
    scores = torch.tensor(
        [
            [9.0, 1.0, 5.0, 5.0, 2.0],  # target 2 ties with item 3 -> U rank 2
            [9.0, 3.0, 2.0, 1.0, 0.0],  # target 4 (worst) -> U 4; F without 1, 2 -> 2
            [9.0, 1.0, float("nan"), 0.0, 2.0],  # target NaN -> behind every real score
        ]
    )
    targets = torch.tensor([2, 4, 2])
    assert bench.ranks_from_scores(scores, targets).tolist() == [2, 4, 4]
    rows, cols = torch.tensor([1, 1, 1]), torch.tensor([1, 2, 4])  # the target 4 stays
    assert bench.ranks_from_scores(scores, targets, rows, cols).tolist() == [2, 2, 4]
    hr, ndcg = bench.hr_ndcg(np.array([1, 3, 11]))
    assert hr == pytest.approx(2 / 3)
    assert ndcg == pytest.approx((1 + 1 / np.log2(4)) / 3)


def test_recbole_config_follows_recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    bench = load_script()
    args = argparse.Namespace(
        data=str(tmp_path / "x.txt"),
        recipe=str(bench.DEFAULT_RECIPE),
        epochs=3,
        device="cpu",
        overrides=[],
    )
    recipe, _ = bench.seqrec_recipe(args, tmp_path)
    cfg = bench.recbole_config(recipe, tmp_path, "seqdata", "cpu", {"eval_batch_size": 7})
    m = recipe.model_options
    assert (m.blocks, m.heads) == (2, 1)
    want = {
        "hidden_size": m.dim,  # the recipe's (256 since it was tuned on validation)
        "n_layers": 2,
        "n_heads": 1,
        "inner_size": m.ffn_factor * m.dim,
        "hidden_dropout_prob": 0.2,
        "attn_dropout_prob": 0.2,
        "MAX_ITEM_LIST_LENGTH": 200,
        "train_batch_size": 128,
        "learning_rate": 1e-3,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "epochs": 3,
        "stopping_step": 4,
        "topk": [10],
        "valid_metric": "NDCG@10",
        "gpu_id": "",
        "eval_batch_size": 7,
    }
    assert {k: cfg[k] for k in want} == want
    assert cfg["eval_args"] == {
        "split": {"LS": "valid_and_test"},
        "order": "TO",
        "group_by": "user",
        "mode": "full",
    }


def test_seqrec_only_without_recbole(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    bench = load_script()
    data = tiny_file(tmp_path / "tiny.txt")
    out = bench.main(
        ["--data", str(data), "--device", "cpu", "--epochs", "1", "--skip-recbole", *TINY]
        + ["--json", str(tmp_path / "rows.json")]
    )
    (row,) = out["rows"]
    assert row["library"] == "seqrec" and row["epochs"] == 1 and row["users"] == 50
    assert row["settings"] == TINY[1::2]  # the recipe overrides, shown in the table
    assert row["s_per_epoch"] > 0 and row["targets_per_epoch"] > 0
    assert 0 <= row["NDCG@10 U"] <= row["NDCG@10 F"] <= 1  # F only removes candidates
    printed = capsys.readouterr().out
    assert "NDCG@10 F" in printed and "seqrec" in printed and TINY[1] in printed
    again = bench.main(
        ["--data", str(data), "--skip-seqrec", "--skip-recbole"]
        + ["--add-json", str(tmp_path / "rows.json")]
    )
    assert again["rows"] == [row]


def test_both_libraries_one_epoch(tmp_path, monkeypatch, capsys):
    pytest.importorskip("recbole")
    bench = load_script()
    if bench.recbole_missing():
        pytest.skip(f"RecBole installed but not importable ({bench.recbole_missing()})")
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # RecBole writes log/ and log_tensorboard/ into its cwd
    data = tiny_file(tmp_path / "tiny.txt")
    out = bench.main(["--data", str(data), "--device", "cpu", "--epochs", "1", *TINY])
    seqrec, recbole = out["rows"]
    assert (seqrec["library"], recbole["library"]) == ("seqrec", "RecBole")
    assert recbole["users"] == seqrec["users"] == 50
    assert recbole["items"] == seqrec["items"]
    assert recbole["epochs"] == 1 and recbole["s_per_epoch"] > 0
    # one sample per training target: each user's items but the first and the last two
    n_lines = len(data.read_text().splitlines())
    assert recbole["targets_per_epoch"] == n_lines - 3 * 50
    assert seqrec["targets_per_epoch"] <= recbole["targets_per_epoch"]  # max_len 10 cuts
    # RecBole's own evaluator filters no history for sequential models: it is U
    assert recbole["own"]["hit@10"] == pytest.approx(recbole["HR@10 U"], abs=0.021)
    assert recbole["NDCG@10 U"] <= recbole["NDCG@10 F"]
    printed = capsys.readouterr().out
    assert "RecBole" in printed and "speed-up" in printed
    assert list(cwd.iterdir()) == []  # the script ran RecBole in its own temporary folder


@pytest.fixture
def recbole_run(tmp_path, monkeypatch):
    """The script, with RecBole importable (else skip), and a tiny data file."""
    pytest.importorskip("recbole")
    bench = load_script()
    if bench.recbole_missing():
        pytest.skip(f"RecBole installed but not importable ({bench.recbole_missing()})")
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return bench, tiny_file(tmp_path / "tiny.txt")


def test_recbole_trains_its_own_number_of_epochs(recbole_run):
    bench, data = recbole_run
    argv = ["--data", str(data), "--device", "cpu", "--epochs", "1", *TINY]
    argv += ["--recbole-opt", "epochs=2", "--recbole-opt", "stopping_step=3"]
    seqrec, recbole = bench.main(argv)["rows"]
    assert (seqrec["epochs"], recbole["epochs"]) == (1, 2)
    assert len(recbole["epoch_times"]) == 2


def test_recbole_stops_at_its_time_limit_and_is_tested(recbole_run):
    bench, data = recbole_run
    # a path relative to the caller's folder (RecBole runs in another one)
    argv = ["--data", data.name, "--device", "cpu", "--epochs", "1", "--skip-seqrec", *TINY]
    argv += ["--recbole-opt", "epochs=50", "--recbole-time-limit", "1e-9"]
    (recbole,) = bench.main(argv)["rows"]
    assert recbole["stopped_by_time_limit"] and recbole["epochs"] == 1
    assert recbole["best_epoch"] == 1
    assert 0 <= recbole["NDCG@10 U"] <= recbole["NDCG@10 F"] <= 1
