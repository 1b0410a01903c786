"""``seqrec sweep``: grid expansion, deterministic names, resume (finished cells
skipped, interrupted cells resumed), results tables and plots, on CPU."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from helpers import model_registry
from rich.console import Console

import seqrec_core.cli
import seqrec_sasrec
from seqrec_core.errors import SeqrecError
from seqrec_core.research.reports import PNG_MAGIC
from seqrec_core.research.sweep import (
    PlotSpec,
    aggregate,
    cell_recipe,
    expand,
    load_sweep,
    plot_results,
    run_sweep,
    select,
    value_labels,
)
from seqrec_core.train import Trainer

BASE = {
    "dataset": {"name": "synthetic", "n_users": 150, "n_items": 40, "mean_length": 15},
    "model": {"name": "sasrec", "max_len": 20, "dim": 8, "blocks": 1, "heads": 1},
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "device": "cpu", "monitor": "NDCG@10"},
    "eval": {"ks": [10], "metrics": ["hr", "ndcg", "coverage"]},
    "callbacks": [],
}


def write_sweep(tmp_path, **spec) -> str:
    data = {
        "name": "t",
        "base": BASE,
        "runs_dir": str(tmp_path / "runs"),
        "checkpoints_dir": str(tmp_path / "ckpt"),
        "report_dir": str(tmp_path / "report"),
        **spec,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture
def registry(monkeypatch, tmp_path):
    return model_registry(monkeypatch, tmp_path, seqrec_sasrec)


def test_expansion_names_and_override_order(tmp_path, registry):
    path = write_sweep(
        tmp_path,
        overrides={"train.lr": 0.02},
        grid={
            "model.dim": [8, 16],
            "model": [{"name": "sasrec", "heads": 1}, {"name": "pop"}],
            "model.max_len": [10, 20, 30],
        },
        seeds=[42, 123],
    )
    sweep = load_sweep(path)
    cells = expand(sweep)
    assert len(cells) == 2 * 2 * 3 * 2
    assert cells[0].name == "t-dim8-sasrec-max_len10-seed42"
    assert cells[1].name == "t-dim8-sasrec-max_len10-seed123"  # seeds innermost
    assert len({c.name for c in cells}) == len(cells)
    assert [c.name for c in expand(load_sweep(path))] == [c.name for c in cells]
    # The section is replaced first, then its keys are set, whatever the file order.
    keys = [o.split("=", 1)[0] for o in cells[0].overrides]
    assert keys.index("model") < keys.index("model.dim")
    assert keys.index("model") < keys.index("train.lr")
    recipe = cell_recipe(sweep, cells[0], registry)
    assert recipe.name == cells[0].name
    assert recipe.model.name == "sasrec"
    assert recipe.model_options.dim == 8 and recipe.model_options.max_len == 10
    assert recipe.train.seeds == [42] and recipe.train.lr == 0.02
    assert recipe.output.runs_dir == str(tmp_path / "runs")
    assert cells[0].labels == {"dim": "8", "model": "sasrec", "max_len": "10"}
    # Shards partition the (filtered) cells.
    shards = [select(cells, shard=(i, 5)) for i in range(5)]
    assert sorted(c.name for s in shards for c in s) == sorted(c.name for c in cells)
    assert [c.name for c in select(cells, ["pop-max_len30"])] == [
        "t-dim8-pop-max_len30-seed42",
        "t-dim8-pop-max_len30-seed123",
        "t-dim16-pop-max_len30-seed42",
        "t-dim16-pop-max_len30-seed123",
    ]
    with pytest.raises(SeqrecError, match="shard"):
        select(cells, shard=(5, 5))


def test_a_mapping_on_a_core_section_sets_keys_and_keeps_the_rest(tmp_path, registry):
    path = write_sweep(
        tmp_path,
        overrides={"train.patience": 7},
        grid={
            "train": [
                {"_label": "adam", "optimizer": "adam", "scheduler": {"name": "none"}},
                {"_label": "adamw", "optimizer": "adamw", "weight_decay": 0.1},
            ]
        },
    )
    sweep = load_sweep(path)
    cells = expand(sweep)
    assert [c.labels["train"] for c in cells] == ["adam", "adamw"]
    adam, adamw = (cell_recipe(sweep, c, registry).train for c in cells)
    assert adam.optimizer == "adam" and adam.scheduler.name == "none"
    assert adamw.optimizer == "adamw" and adamw.weight_decay == 0.1
    for train in (adam, adamw):  # what the grid does not name comes from the base recipe
        assert (train.lr, train.epochs, train.batch_size) == (0.01, 2, 32)
        assert train.monitor == "NDCG@10" and train.patience == 7


def test_value_labels():
    assert value_labels([32, 64]) == ["32", "64"]
    assert value_labels([{"name": "a", "x": 1}, {"name": "a", "x": 2}, {"name": "b", "x": 1}]) == [
        "a-1",
        "a-2",
        "b",
    ]
    assert value_labels([{"_label": "small", "name": "a"}]) == ["small"]


def test_sweep_file_errors(tmp_path):
    with pytest.raises(SeqrecError, match=r"sweep.yaml:\d+: grdi: .*allowed keys"):
        load_sweep(write_sweep(tmp_path, grdi={}))
    with pytest.raises(SeqrecError, match="same label"):
        load_sweep(write_sweep(tmp_path, grid={"model": [{"name": "a"}, {"name": "a"}]}))
    with pytest.raises(SeqrecError, match="seeds"):
        load_sweep(write_sweep(tmp_path, grid={"train.seeds": [[1], [2]]}))
    with pytest.raises(SeqrecError, match="not found"):
        load_sweep(write_sweep(tmp_path, base="missing.yaml"))


def test_run_resume_and_report(tmp_path, registry, monkeypatch):
    calls: list[tuple[str, bool]] = []
    fit = Trainer.fit

    def counting_fit(self, resume=False):
        calls.append((self.ctx.name, resume))
        return fit(self, resume=resume)

    monkeypatch.setattr(Trainer, "fit", counting_fit)
    path = write_sweep(
        tmp_path,
        grid={"model.dim": [8, 16]},
        seeds=[1, 2],
        cost=True,
        seen=True,
        buckets={"cuts": [0.2, 0.5], "k": 10},
        plots=[
            {"kind": "line", "x": "dim", "y": "NDCG@10"},
            {"kind": "heatmap", "x": "dim", "y": "model", "value": "NDCG@10[tail]"},
            {"kind": "pareto", "x": "time_to_best_s", "y": "NDCG@10", "hue": "dim"},
        ],
    )
    quiet = Console(quiet=True)
    first = run_sweep(load_sweep(path), registry, quiet)
    assert len(calls) == 4 and not any(r for _, r in calls)
    assert len(first.ran) == 4 and not first.skipped

    second = run_sweep(load_sweep(path), registry, quiet)
    assert len(calls) == 4  # nothing trained again
    assert len(second.skipped) == 4

    # An interrupted cell (checkpoints written, no finished metrics.json) resumes.
    victim = "t-dim16-seed2"
    (tmp_path / "runs" / victim / "metrics.json").unlink()
    third = run_sweep(load_sweep(path), registry, quiet)
    assert calls[4:] == [(victim, True)]
    assert third.ran == [victim] and len(third.skipped) == 3
    assert json.loads((tmp_path / "runs" / victim / "metrics.json").read_text())["status"] in (
        "completed",
        "early_stopped",
    )

    report = tmp_path / "report"
    rows = (report / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # one row per dim, mean over 2 seeds
    header = rows[0].split(",")
    for col in ("dim", "seeds", "NDCG@10", "NDCG@10_std", "NDCG@10[tail]", "tail share@10"):
        assert col in header, col
    for col in ("params", "epoch_train_s", "time_to_best_s", "tokens_per_s", "latency_b1_ms"):
        assert col in header, col
    cells = list(csv.DictReader((report / "cells.csv").open()))
    assert len(cells) == 4
    for cell in cells:  # seen-item shares per cell, from runs/<cell>/seen.json
        seen = json.loads((tmp_path / "runs" / cell["cell"] / "seen.json").read_text())
        assert float(cell["seen share@10"]) == pytest.approx(seen["seen share@10"])
        assert 0.0 <= seen["top-1 seen"] <= 1.0
    for cell in cells:  # the validation value choices are made on, next to the test metrics
        run = json.loads((tmp_path / "runs" / cell["cell"] / "metrics.json").read_text())
        monitor = next(k for k in cell if k.startswith("valid "))[len("valid ") :]
        assert float(cell[f"valid {monitor}"]) == pytest.approx(run["metrics"]["valid"][monitor])
    md = (report / "results.md").read_text()
    assert "±" in md and "| dim |" in md
    pngs = sorted(report.glob("*.png"))
    assert len(pngs) == 3
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)
    assert "How this was produced" in (report / "README.md").read_text()
    cost = json.loads((tmp_path / "runs" / "t-dim8-seed1" / "cost.json").read_text())
    assert cost["latency_b1_ms"] > 0 and cost["latency_b256_ms"] > 0


@pytest.mark.parametrize("kind", ["line", "pareto"])
def test_line_and_pareto_plots_draw_one_panel_per_facet(tmp_path, monkeypatch, kind):
    from seqrec_core.research import reports

    figures = []
    save = reports.save_figure
    monkeypatch.setattr(
        reports, "save_figure", lambda fig, path: figures.append(fig) or save(fig, path)
    )
    table = [
        {"base": b, "windows": w, "max_len": n, "NDCG@10": 0.1 * n / 200 + (w == "sliding") * 0.01}
        for b in ("ml1m_sasrec", "ml1m_xlstm")
        for w in ("last", "sliding")
        for n in (32, 200)
    ]
    spec = PlotSpec(kind=kind, x="max_len", y="NDCG@10", hue="windows", facet="base")
    png = plot_results(table, spec, tmp_path, ["base", "windows", "max_len"])
    assert png.read_bytes()[:8] == PNG_MAGIC and png.name.endswith("_by_base.png")
    (fig,) = figures
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["base ml1m_sasrec", "base ml1m_xlstm"]
    for ax in panels:  # one series per hue in every panel, each with its 2 points
        labels = ax.get_legend_handles_labels()[1]
        assert {"last", "sliding"} <= set(labels)
    unfaceted = PlotSpec(kind=kind, x="max_len", y="NDCG@10", hue="windows")
    plot_results(table, unfaceted, tmp_path, ["windows", "max_len"])
    assert len(figures[1].axes) == 1


def test_cli_dry_run_and_only(tmp_path, registry, monkeypatch, capsys):
    monkeypatch.setattr(seqrec_core.cli, "load_plugins", lambda **_: registry)
    path = write_sweep(tmp_path, grid={"model.dim": [8, 16]}, seeds=[1])
    assert seqrec_core.cli.main(["sweep", path, "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "t-dim8-seed1" in err and "t-dim16-seed1" in err and "new" in err
    assert not (tmp_path / "runs").exists()
    assert seqrec_core.cli.main(["sweep", path, "--only", "dim16", "--quiet"]) == 0
    assert (tmp_path / "runs" / "t-dim16-seed1" / "metrics.json").is_file()
    assert not (tmp_path / "runs" / "t-dim8-seed1").exists()


def test_cli_jobs_runs_one_process_per_cell_then_one_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    path = write_sweep(tmp_path, grid={"model.dim": [8, 16]}, seeds=[1, 2])
    # One cell finished beforehand: the pool starts only the other three.
    assert seqrec_core.cli.main(["sweep", path, "--cell", "t-dim8-seed1", "--quiet"]) == 0
    assert not (tmp_path / "report").exists()  # a --cell run writes no report
    code = seqrec_core.cli.main(["sweep", path, "--jobs", "2", "--gpus", "", "--only", "dim"])
    assert code == 0, capsys.readouterr().err
    logs = sorted(p.name for p in (tmp_path / "report" / "logs").glob("*.log"))
    assert logs == ["t-dim16-seed1.log", "t-dim16-seed2.log", "t-dim8-seed2.log"]
    for name in logs:
        text = (tmp_path / "report" / "logs" / name).read_text()
        assert "1 ran, 0 already finished, 0 failed (part: no report)" in text
    ran = ("t-dim8-seed1", "t-dim8-seed2", "t-dim16-seed1", "t-dim16-seed2")
    for cell in ran:
        metrics = json.loads((tmp_path / "runs" / cell / "metrics.json").read_text())
        assert metrics["status"] in ("completed", "early_stopped")
        assert metrics["params"] > 0 and metrics["device"] == "cpu"
        # the pool's cells shared the machine two at a time; the --cell run did not
        assert metrics["concurrent_runs"] == (1 if cell == "t-dim8-seed1" else 2)
    assert len(list(csv.DictReader((tmp_path / "report" / "cells.csv").open()))) == 4
    assert "0 ran, 4 already finished" in capsys.readouterr().err


def test_cell_pool_survives_a_crashing_cell(tmp_path, monkeypatch):
    """A cell whose process dies (here: killed by SIGABRT, as a compiler assertion
    does) loses that cell only; with keep_going the others still run."""
    import signal
    import sys

    from seqrec_core.research import sweep as sweep_mod
    from seqrec_core.research.pool import exit_text

    script = tmp_path / "fake.py"
    script.write_text(
        "import os, signal, sys\n"
        "name = sys.argv[sys.argv.index('--cell') + 1]\n"
        "open(os.path.join(sys.argv[1], name + '.ran'), 'w').close()\n"
        "if name == 'bad':\n"
        "    os.kill(os.getpid(), signal.SIGABRT)\n"
        "sys.exit(3 if name == 'fails' else 0)\n"
    )
    import subprocess  # launch_cells imports it when called: patch the module's Popen

    popen = subprocess.Popen

    def fake_popen(cmd, **kw):
        # [python, -m, seqrec_core, sweep, FILE, --cell, NAME, ...] -> the fake script
        return popen([sys.executable, str(script), str(tmp_path), *cmd[5:]], **kw)

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    seen = []
    codes = sweep_mod.launch_cells(
        "unused.yaml",
        ["a", "bad", "b", "fails", "c"],
        2,
        tmp_path / "logs",
        keep_going=True,
        poll_s=0.01,
        on_exit=lambda name, code: seen.append(name),
    )
    assert codes == {"a": 0, "bad": -signal.SIGABRT, "b": 0, "fails": 3, "c": 0}
    assert sorted(seen) == sorted(codes)
    assert sorted(p.stem for p in tmp_path.glob("*.ran")) == ["a", "b", "bad", "c", "fails"]
    assert exit_text(-signal.SIGABRT) == "was killed by SIGABRT"
    assert exit_text(3) == "exited with 3"

    # Without keep_going no new cell starts after the first failure.
    for p in tmp_path.glob("*.ran"):
        p.unlink()
    codes = sweep_mod.launch_cells(
        "unused.yaml", ["bad", "a", "b", "c"], 1, tmp_path / "logs", poll_s=0.01
    )
    assert codes == {"bad": -signal.SIGABRT}
    assert [p.stem for p in tmp_path.glob("*.ran")] == ["bad"]


def test_cell_names_must_exist(tmp_path, registry):
    path = write_sweep(tmp_path, grid={"model.dim": [8]}, seeds=[1])
    with pytest.raises(SeqrecError, match="--cell t-dim9-seed1: no such cell"):
        run_sweep(load_sweep(path), registry, Console(quiet=True), names=["t-dim9-seed1"])


def test_aggregate_mean_and_population_std():
    rows = [
        {"dim": "8", "seed": 1, "NDCG@10": 0.2, "model": "m"},
        {"dim": "8", "seed": 2, "NDCG@10": 0.4, "model": "m"},
        {"dim": "16", "seed": 1, "NDCG@10": 0.5, "model": "m"},
    ]
    table = aggregate(rows, ["dim"])
    assert table[0]["NDCG@10"] == pytest.approx(0.3)
    assert table[0]["NDCG@10_std"] == pytest.approx(0.1)
    assert table[0]["seeds"] == 2 and table[1]["seeds"] == 1
    assert "seed" not in table[0]


def test_run_cost_without_events_uses_mean_epoch_time(tmp_path):
    from seqrec_core.research.cost import run_cost

    (tmp_path / "metrics.json").write_text(
        json.dumps(
            {"status": "early_stopped", "best_epoch": 6, "epochs_run": 8, "total_time": 40.0}
        )
    )
    cost = run_cost(tmp_path)
    assert cost["epochs"] == 8 and cost["best_epoch"] == 6
    assert math.isnan(cost["params"]) and math.isnan(cost["concurrent_runs"])  # not recorded
    assert cost["epoch_s"] == pytest.approx(5.0)
    assert cost["time_to_best_s"] == pytest.approx(30.0)
    assert cost["total_s"] == pytest.approx(40.0)
    assert math.isnan(cost["tokens_per_s"])


def test_hand_written_findings_survive_a_regenerated_readme(tmp_path):
    from seqrec_core.research.reports import write_readme

    (tmp_path / "FINDINGS.md").write_text("## Findings\n\nH1 held: 0.148 > 0.140.\n")
    (tmp_path / "results.md").write_text("| a |\n|---|\n| 1 |\n")
    for _ in range(2):  # the second write must not duplicate or drop it
        readme = write_readme(tmp_path, "Sweep x", "## Results\n\ntable", [tmp_path / "results.md"])
    text = readme.read_text()
    assert text.count("H1 held: 0.148 > 0.140.") == 1
    assert text.index("## Findings") < text.index("## Results") < text.index("## Files")
    assert "[FINDINGS.md](FINDINGS.md)" in text
    assert (tmp_path / "FINDINGS.md").read_text().startswith("## Findings")


def test_a_run_with_only_reports_every_finished_cell(tmp_path, registry):
    path = write_sweep(tmp_path, grid={"model.dim": [8, 16]}, seeds=[1])
    quiet = Console(quiet=True)
    run_sweep(load_sweep(path), registry, quiet, only=["dim8"])
    second = run_sweep(load_sweep(path), registry, quiet, only=["dim16"])
    assert second.ran == ["t-dim16-seed1"]
    rows = list(csv.DictReader((tmp_path / "report" / "cells.csv").open()))
    assert sorted(r["cell"] for r in rows) == ["t-dim16-seed1", "t-dim8-seed1"]
    assert "2 of 2 cells finished" in (tmp_path / "report" / "README.md").read_text()


def test_pool_shares_the_cores_and_the_gpus_between_its_processes(tmp_path, monkeypatch):
    """Each process learns its GPU, how many runs share it, and gets cores / jobs
    CPU threads unless OMP_NUM_THREADS is already set."""
    import os
    import sys

    from seqrec_core.research.pool import launch_pool

    dump = "import json, os, sys; json.dump({k: os.environ.get(k) for k in sys.argv[2:]}, open(sys.argv[1], 'w'))"
    keys = ["CUDA_VISIBLE_DEVICES", "SEQREC_CONCURRENT_RUNS", "OMP_NUM_THREADS"]
    commands = [
        (f"p{i}", [sys.executable, "-c", dump, str(tmp_path / f"p{i}.json"), *keys])
        for i in range(3)
    ]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    codes = launch_pool(commands, 3, tmp_path / "logs", gpus=["0", "1"], poll_s=0.01)
    assert codes == {"p0": 0, "p1": 0, "p2": 0}
    seen = [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(3)]
    assert [s["CUDA_VISIBLE_DEVICES"] for s in seen] == ["0", "1", "0"]
    assert [s["SEQREC_CONCURRENT_RUNS"] for s in seen] == ["2", "1", "2"]
    assert {s["OMP_NUM_THREADS"] for s in seen} == {"2"}  # 8 cores / 3 jobs
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    launch_pool(commands[:1], 3, tmp_path / "logs", poll_s=0.01)
    assert json.loads((tmp_path / "p0.json").read_text())["OMP_NUM_THREADS"] == "5"


def test_a_base_axis_gives_each_value_its_own_recipe(tmp_path, registry):
    fast = {**BASE, "train": {**BASE["train"], "epochs": 1, "lr": 0.02}}
    slow = {**BASE, "train": {**BASE["train"], "epochs": 3}, "model": {**BASE["model"], "dim": 16}}
    (tmp_path / "recipes").mkdir()
    for name, recipe in (("fast", fast), ("slow", slow)):
        (tmp_path / "recipes" / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    path = write_sweep(
        tmp_path,
        base=None,
        overrides={"train.batch_size": 16},
        grid={"base": ["recipes/fast.yaml", "recipes/slow.yaml"], "model.blocks": [1, 2]},
        seeds=[1],
    )
    sweep = load_sweep(path)
    cells = expand(sweep)
    assert [c.name for c in cells] == [
        "t-fast-blocks1-seed1",
        "t-fast-blocks2-seed1",
        "t-slow-blocks1-seed1",
        "t-slow-blocks2-seed1",
    ]
    assert cells[0].labels == {"base": "fast", "blocks": "1"}
    recipes = [cell_recipe(sweep, c, registry) for c in cells]
    # each cell keeps its recipe's own settings; the sweep's overrides and axes apply to all
    assert [r.train.epochs for r in recipes] == [1, 1, 3, 3]
    assert [r.train.lr for r in recipes] == [0.02, 0.02, 0.01, 0.01]
    assert [r.model_options.dim for r in recipes] == [8, 8, 16, 16]
    assert [r.model_options.blocks for r in recipes] == [1, 2, 1, 2]
    assert {r.train.batch_size for r in recipes} == {16}
    result = run_sweep(load_sweep(path), registry, Console(quiet=True))
    assert len(result.ran) == 4
    rows = list(csv.DictReader((tmp_path / "report" / "cells.csv").open()))
    assert sorted(r["base"] for r in rows) == ["fast", "fast", "slow", "slow"]
    epochs = {
        r["cell"]: json.loads((tmp_path / "runs" / r["cell"] / "metrics.json").read_text())
        for r in rows
    }
    assert {c: m["epochs_run"] for c, m in epochs.items()}["t-slow-blocks2-seed1"] == 3


def test_base_axis_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(BASE))
    with pytest.raises(SeqrecError, match=r"grid.base: recipe missing.yaml not found"):
        load_sweep(write_sweep(tmp_path, base=None, grid={"base": ["a.yaml", "missing.yaml"]}))
    with pytest.raises(SeqrecError, match=r"grid.base: \{'name': 'x'\} is not a recipe path"):
        load_sweep(write_sweep(tmp_path, base=None, grid={"base": [{"name": "x"}]}))
    with pytest.raises(SeqrecError, match="both 'base:' and 'grid.base'"):
        load_sweep(write_sweep(tmp_path, grid={"base": ["a.yaml"]}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.yaml").write_text(yaml.safe_dump(BASE))
    with pytest.raises(SeqrecError, match="two recipes have the same file name"):
        load_sweep(write_sweep(tmp_path, base=None, grid={"base": ["a.yaml", "other/a.yaml"]}))
    with pytest.raises(SeqrecError, match="base: missing"):
        load_sweep(write_sweep(tmp_path, base=None, grid={"model.dim": [8]}))
