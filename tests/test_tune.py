"""``seqrec tune``: space files and their errors, trial recipes, a random search
that writes its tables and ``best.yaml``, resume, failed trials, and that tuning
never reads the test split. Tiny SASRec on synthetic data, CPU."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import model_registry

import seqrec_core.cli
import seqrec_core.train
import seqrec_sasrec
from seqrec_core.data.core import SequenceData
from seqrec_core.errors import RecipeError, SeqrecError
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.research.tune import STUDY_FILE, load_space, prepare_tune, run_tune
from seqrec_core.train import Trainer

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
RECIPE = {
    "name": "t",
    "dataset": {"name": "synthetic", "n_users": 150, "n_items": 40, "mean_length": 15},
    "model": {"name": "sasrec", "max_len": 20, "dim": 8, "blocks": 1, "heads": 1},
    "train": {
        "epochs": 1,
        "batch_size": 32,
        "lr": 0.01,
        "device": "cpu",
        "seeds": [7],
        "monitor": "NDCG@10",
    },
    "eval": {"ks": [10], "metrics": ["hr", "ndcg"]},
    "callbacks": [],
}

SPACE = """\
train.lr: {float: [1.0e-3, 3.0e-2], log: true}
model.dropout: {float: [0.0, 0.5]}
model.dim: [8, 16]
"""


@pytest.fixture
def registry(monkeypatch, tmp_path):
    return model_registry(monkeypatch, tmp_path, seqrec_sasrec)


def write(tmp_path, space: str = SPACE, **recipe) -> tuple[str, str]:
    data = {
        **RECIPE,
        "output": {"runs_dir": str(tmp_path / "runs"), "checkpoints_dir": str(tmp_path / "ckpt")},
        **recipe,
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "space.yaml").write_text(space)
    return str(tmp_path / "r.yaml"), str(tmp_path / "space.yaml")


def setup_for(tmp_path, registry, space: str = SPACE, **kw):
    recipe, space_path = write(tmp_path, space)
    return prepare_tune(recipe, space_path, registry, out=tmp_path / "tune", **kw)


def read_csv(path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ the space file


def test_space_forms(tmp_path):
    _, path = write(
        tmp_path,
        "train.lr: {float: [1e-4, 1e-2], log: true}\n"
        "model.blocks: {int: [1, 4]}\n"
        "model.max_len: {int: [10, 30], step: 10}\n"
        "model.dim: {choice: [64, 128]}\n"
        "train.optimizer: [adam, adamw]\n",
    )
    space = load_space(path)
    kinds = {p.key: p.dist.kind for p in space.params}
    assert kinds == {
        "train.lr": "float",
        "model.blocks": "int",
        "model.max_len": "int",
        "model.dim": "choice",
        "train.optimizer": "choice",
    }
    assert [p.line for p in space.params] == [1, 2, 3, 4, 5]
    assert space.params[0].path == ("train", "lr") and space.params[0].dist.log
    assert space.params[0].dist.values_to_check() == [1e-4, 1e-2]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "model.dropout: {flaot: [0.0, 0.5]}",
            r"model\.dropout\.flaot: unknown key 'flaot'.*did you mean 'float'",
        ),
        (
            "model.dropout: {float: [0.5, 0.1]}",
            r"model\.dropout: expected float: \[low, high\] with low <= high",
        ),
        ("train.lr: {float: [0.0, 0.1], log: true}", r"train\.lr: expected low > 0 with log: true"),
        (
            "model.dim: {int: [8, 16], choice: [8]}",
            r"model\.dim: expected exactly one of float, int or choice",
        ),
        ("model.dim: {int: [8]}", r"model\.dim: expected int: \[low, high\]"),
        ("model.blocks: {int: [1, x]}", r"model\.blocks\.int\[1\]: expected a valid integer"),
        ("model.dim: 64", r"model\.dim: expected a distribution \(\{float: "),
        ("model.dim: {choice: [[8, 16]]}", r"model\.dim: expected choice values that are numbers"),
        ("model.dim: {choice: [8, 16], log: true}", r"model\.dim: expected log and step only"),
        ("train.seeds: [[1], [2]]", r"train\.seeds: not tunable: .*--seed-of-run"),
        ("output.runs_dir: [a, b]", r"output\.runs_dir: not tunable"),
    ],
)
def test_space_errors_name_file_line_and_key(tmp_path, entry, message):
    _, path = write(tmp_path, f"# a comment\n{entry}\n")
    with pytest.raises(SeqrecError, match=r"space\.yaml:2: " + message):
        load_space(path)


def test_space_file_missing_or_empty(tmp_path):
    with pytest.raises(SeqrecError, match="space file not found"):
        load_space(tmp_path / "nope.yaml")
    _, path = write(tmp_path, "# nothing\n")
    with pytest.raises(SeqrecError, match="empty"):
        load_space(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        # An unknown key of a section: the recipe's own schema says so, at the space's line.
        (
            "model.dropuot: {float: [0.0, 0.5]}",
            r"space\.yaml:2: model\.dropuot: unknown key 'dropuot' for model 'sasrec'.*did you mean 'dropout'",
        ),
        ("modle.dim: [8, 16]", r"space\.yaml:2: modle: unknown key 'modle'.*did you mean 'model'"),
        (
            "train.lrr: {float: [0.001, 0.01]}",
            r"space\.yaml:2: train\.lrr: unknown key 'lrr'.*did you mean 'lr'",
        ),
        # Each bound / choice is checked: the high end is out of the schema's range.
        (
            "model.dropout: {float: [0.0, 1.5]}",
            r"space\.yaml:2: model\.dropout: .*less than 1.*checking the space: model\.dropout=1\.5",
        ),
    ],
)
def test_space_checked_against_the_recipe_up_front(tmp_path, registry, entry, message):
    with pytest.raises(RecipeError, match=message):
        setup_for(tmp_path, registry, f"train.lr: {{float: [0.001, 0.01]}}\n{entry}\n")
    assert not (tmp_path / "tune").exists()  # nothing ran


def test_trial_recipe_applies_values_like_overrides(tmp_path, registry):
    setup = setup_for(
        tmp_path, registry, monitor="HR@10", seed_of_run=3, overrides=["train.epochs=1"]
    )
    recipe = setup.trial_recipe({"train.lr": 0.02, "model.dropout": 0.3, "model.dim": 16}, "x")
    assert recipe.name == "x" and recipe.train.seeds == [3]
    assert recipe.train.lr == 0.02 and recipe.train.epochs == 1 and recipe.train.monitor == "HR@10"
    assert recipe.model_options.dropout == 0.3 and recipe.model_options.dim == 16
    assert recipe.output.runs_dir == str(tmp_path / "tune" / "runs")
    assert setup.seed == 3 and setup.monitor == "HR@10"
    assert setup_for(tmp_path, registry).seed == 7  # default: the recipe's first seed


# ------------------------------------------------------------------ running


def test_cli_random_tune_writes_tables_and_best_recipe(tmp_path, registry, monkeypatch, capsys):
    monkeypatch.setattr(seqrec_core.cli, "load_plugins", lambda **_: registry)
    recipe, space = write(tmp_path)
    out = tmp_path / "tune"
    argv = ["tune", recipe, "--space", space, "--trials", "3", "--sampler", "random"]
    assert seqrec_core.cli.main([*argv, "--out", str(out), "--monitor", "NDCG@10", "--quiet"]) == 0
    assert "best.yaml" in capsys.readouterr().out
    rows = read_csv(out / "trials.csv")
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert all(r["state"] == "complete" for r in rows)
    values = [float(r["valid NDCG@10"]) for r in rows]
    assert all(0.0 < v <= 1.0 for v in values)
    assert len({r["train.lr"] for r in rows}) == 3  # three different draws
    assert "| trial | state | valid NDCG@10 |" in (out / "trials.md").read_text()
    assert (out / STUDY_FILE).is_file() and (out / "README.md").is_file()
    assert not (out / "checkpoints").exists()  # trials' checkpoints are removed
    assert (out / "runs" / "trial-0000" / "events.jsonl").is_file()

    best = rows[int(np.argmax(values))]
    text = (out / "best.yaml").read_text()
    assert text.startswith("# seqrec tune: the best of 3 trials")
    tuned = load_recipe(out / "best.yaml", registry)  # `seqrec run best.yaml` takes it
    assert tuned.name == "t-tuned"
    assert tuned.train.lr == pytest.approx(float(best["train.lr"]))
    assert tuned.model_options.dropout == pytest.approx(float(best["model.dropout"]))
    assert tuned.model_options.dim == int(best["model.dim"])
    assert tuned.train.seeds == [7] and tuned.train.monitor == "NDCG@10"
    assert tuned.output.runs_dir == str(tmp_path / "runs")  # the recipe's, not the trials'


def test_resume_runs_only_the_missing_trials(tmp_path, registry):
    setup = setup_for(tmp_path, registry)
    first = run_tune(setup, 2, sampler="random", quiet=True)
    assert first.ran == 2
    before = read_csv(setup.out / "trials.csv")

    # A trial cut off by a kill stays "running" in the journal: it becomes
    # "interrupted" and does not count towards --trials.
    import optuna

    from seqrec_core.research.tune import _open_study

    _open_study(setup, "random", 0).ask()
    again = run_tune(setup, 3, sampler="random", quiet=True)
    assert again.ran == 1
    rows = read_csv(setup.out / "trials.csv")
    assert [r["state"] for r in rows] == ["complete", "complete", "interrupted", "complete"]
    assert rows[:2] == before  # finished trials are kept as they were
    assert rows[3]["train.lr"] not in {r["train.lr"] for r in before}  # no repeated draw
    assert run_tune(setup, 3, sampler="random", quiet=True).ran == 0
    assert optuna.logging.get_verbosity() == optuna.logging.INFO  # left as found

    # Another space over the same study is refused.
    other = setup_for(tmp_path, registry, "train.lr: {float: [1.0e-3, 1.0e-2]}\n")
    with pytest.raises(SeqrecError, match="another space"):
        run_tune(other, 4, quiet=True)


def test_failed_trial_is_recorded_and_the_tune_goes_on(tmp_path, registry, monkeypatch):
    fit = Trainer.fit
    calls = []

    def flaky(self, *args, **kwargs):
        calls.append(self.ctx.name)
        if len(calls) == 1:
            raise SeqrecError("CUDA out of memory at epoch 1 (simulated)")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", flaky)
    setup = setup_for(tmp_path, registry)
    outcome = run_tune(setup, 2, sampler="random", quiet=True)
    rows = read_csv(setup.out / "trials.csv")
    assert [r["state"] for r in rows] == ["failed", "complete"]
    assert "out of memory" in rows[0]["error"]
    assert outcome.best is not None and outcome.best["trial"] == 1
    assert (setup.out / "best.yaml").is_file()


def test_tuning_never_reads_the_test_split(tmp_path, registry, monkeypatch):
    """The trainer's evaluation, and every access to a split's targets or
    histories (through SequenceData._positions), fail for the test split; a
    tune must succeed anyway."""
    positions, evaluate = SequenceData._positions, seqrec_core.train.evaluate

    def no_test(split):
        if split == "test":
            raise AssertionError("the test split was read during tuning")

    def guarded_positions(self, split):
        no_test(split)
        return positions(self, split)

    def guarded_evaluate(model, data, split, *args, **kwargs):
        no_test(split)
        return evaluate(model, data, split, *args, **kwargs)

    monkeypatch.setattr(SequenceData, "_positions", guarded_positions)
    monkeypatch.setattr(seqrec_core.train, "evaluate", guarded_evaluate)
    setup = setup_for(tmp_path, registry)

    # The guard works: an ordinary fit evaluates the test split at its end.
    from seqrec_core.data import load_dataset

    recipe = setup.trial_recipe({"train.lr": 0.01, "model.dropout": 0.0, "model.dim": 8}, "plain")
    trainer = Trainer(
        recipe, registry, load_dataset(recipe, registry), 0, "plain", torch.device("cpu")
    )
    with pytest.raises(AssertionError, match="test split"):
        trainer.fit()

    outcome = run_tune(setup, 1, sampler="tpe", quiet=True)
    assert [r["state"] for r in outcome.rows] == ["complete"]
    assert not any("test" in k for k in outcome.rows[0])


@pytest.mark.parametrize(
    ("recipe", "space"),
    [
        ("ml1m_sasrec", "sasrec"),
        ("ml100k_sasrec", "sasrec"),
        ("ml1m_bert4rec", "sasrec"),
        ("ml1m_bert4rec", "bert4rec"),
        ("ml1m_xlstm", "xlstm"),
        ("ml1m_xlstm", "xlstm_d256"),
        ("ml100k_xlstm", "xlstm"),
    ],
)
def test_example_spaces_fit_the_recipes(monkeypatch, tmp_path, recipe, space):
    import seqrec_bert4rec
    import seqrec_console
    import seqrec_files
    import seqrec_gpu
    import seqrec_metrics
    import seqrec_movielens
    import seqrec_tensorboard
    import seqrec_xlstm

    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    plugins = [seqrec_movielens, seqrec_files, seqrec_sasrec, seqrec_bert4rec, seqrec_xlstm]
    plugins += [seqrec_metrics, seqrec_console, seqrec_tensorboard, seqrec_gpu]
    registry = load_plugins(extra=plugins, use_entry_points=False)
    setup = prepare_tune(RECIPES / f"{recipe}.yaml", RECIPES / "spaces" / f"{space}.yaml", registry)
    assert setup.out == Path("reports/tune") / recipe
    assert len(setup.space.params) >= 5


# ------------------------------------------------------------------ --jobs


@pytest.fixture
def entry_point_plugins(tmp_path, monkeypatch):
    """The --jobs processes load the plugins through their entry points."""
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_cli_jobs_runs_each_trial_in_its_own_process(tmp_path, entry_point_plugins):
    recipe, space = write(tmp_path)
    out = tmp_path / "tune"
    argv = ["tune", recipe, "--space", space, "--sampler", "random", "--out", str(out), "--quiet"]
    # One trial beforehand, in this process: the pool runs only the missing three.
    assert seqrec_core.cli.main([*argv, "--trials", "1"]) == 0
    assert seqrec_core.cli.main([*argv, "--trials", "4", "--jobs", "2", "--gpus", ""]) == 0
    rows = read_csv(out / "trials.csv")
    assert [r["state"] for r in rows] == ["complete"] * 4
    assert len({r["train.lr"] for r in rows}) == 4  # no two processes drew alike
    assert [r["concurrent_runs"] for r in rows] == ["1", "2", "2", "2"]  # shared: not speeds
    logs = sorted(p.name for p in (out / "logs").glob("*.log"))
    assert logs == ["process-0001.log", "process-0002.log", "process-0003.log"]
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(out / STUDY_FILE)))
    study = optuna.load_study(study_name="t", storage=storage)
    assert "log" not in study.trials[0].user_attrs  # the one run in this process
    assert sorted(t.user_attrs["log"] for t in study.trials[1:]) == [x[:-4] for x in logs]
    best = load_recipe(out / "best.yaml", load_plugins())
    assert best.name == "t-tuned"
    # Everything done: no process starts.
    assert seqrec_core.cli.main([*argv, "--trials", "4", "--jobs", "2", "--gpus", ""]) == 0
    assert len(list((out / "logs").glob("*.log"))) == 3
    assert len(read_csv(out / "trials.csv")) == 4


def test_jobs_trial_whose_process_dies_is_recorded_failed(
    tmp_path, entry_point_plugins, monkeypatch
):
    """A process killed mid-trial (an abort in a GPU kernel, say) loses that trial
    only: it is marked failed, naming its log, and the other trials complete."""
    import sys

    from seqrec_core.research import pool

    crashing = tmp_path / "crash.py"
    crashing.write_text(
        "import os, signal, sys\n"
        "import seqrec_core.train, seqrec_core.cli\n"
        "def fit(self):\n"
        "    os.kill(os.getpid(), signal.SIGABRT)\n"
        "if sys.argv[-1].endswith('0001'):\n"
        "    seqrec_core.train.Trainer.fit = fit\n"
        "sys.exit(seqrec_core.cli.main(sys.argv[1:]))\n"
    )
    monkeypatch.setattr(
        pool, "seqrec_command", lambda g, *args: [sys.executable, str(crashing), *g, *args]
    )
    recipe, space = write(tmp_path)
    out = tmp_path / "tune"
    argv = ["tune", recipe, "--space", space, "--trials", "3", "--sampler", "random"]
    assert seqrec_core.cli.main([*argv, "--out", str(out), "--jobs", "3", "--gpus", ""]) == 0
    rows = read_csv(out / "trials.csv")
    assert sorted(r["state"] for r in rows) == ["complete", "complete", "failed"]
    failed = next(r for r in rows if r["state"] == "failed")
    assert failed["error"] == "its process was killed by SIGABRT: see logs/process-0001.log"
    assert not (out / "checkpoints").exists()  # the lost trial's too
    # Failed counts towards --trials: a rerun starts nothing.
    assert seqrec_core.cli.main([*argv, "--out", str(out), "--jobs", "3", "--gpus", ""]) == 0
    assert len(read_csv(out / "trials.csv")) == 3
