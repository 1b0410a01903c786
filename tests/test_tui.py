"""seqrec-tui: event folding, log following, and Pilot tests of every tab at 80×24.

Async Pilot tests run inside ``asyncio.run`` so no pytest async plugin is needed.
One tiny synthetic SASRec is trained in-process once per session (checkpoints
and a finished, early-stopped log); two tests start ``seqrec run`` subprocesses
from the TUI.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import sys
import time
from pathlib import Path

import pytest

try:
    import seqrec_tui  # noqa: F401
except ImportError:  # not installed yet: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tui"))

# The GPU machine's image has no textual: skip there instead of stopping collection
# (`pytest -m gpu tests/` then runs every gpu test). CI installs textual.
pytest.importorskip("textual")
from seqrec_core import gpu as gpu_api  # noqa: E402
from seqrec_tui.app import SeqrecApp, build_parser  # noqa: E402
from seqrec_tui.dashboard import MetricsTable  # noqa: E402
from seqrec_tui.discovery import find_checkpoints, find_recipes, find_runs  # noqa: E402
from seqrec_tui.process import parse_overrides  # noqa: E402
from seqrec_tui.state import LogFollower, RunState, summarise_log  # noqa: E402

SIZE = (80, 24)

TINY_RECIPE = """\
name: {name}
dataset:
  name: synthetic
  n_users: 100
  n_items: 30
  mean_length: 12
  seed: 0
model:
  name: sasrec
  max_len: 10
  dim: 8
  blocks: 1
  heads: 1
train:
  epochs: {epochs}
  batch_size: 32
  lr: {lr}
  seeds: [1]
  monitor: NDCG@10
  patience: {patience}
  device: cpu
eval:
  ks: [10]
callbacks: []
"""


def write_recipe(path: Path, name: str = "tiny", epochs: int = 20, lr: float = 0.1, patience=1):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TINY_RECIPE.format(name=name, epochs=epochs, lr=lr, patience=patience))
    return path


def run_app(app: SeqrecApp, scenario) -> None:
    """Run ``scenario(pilot)`` against ``app`` at 80×24, without an async plugin."""

    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await scenario(pilot)

    asyncio.run(main())


async def until(pilot, condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)


def screen_text(app) -> str:
    """What the terminal shows now, as text (80×24: is it readable there?)."""
    strips = app.screen._compositor.render_strips(app.size)  # test-only peek
    return "\n".join(strip.text for strip in strips)


def text_of(widget) -> str:
    """The plain text a Static/Label shows."""
    if hasattr(widget, "text") and isinstance(widget.text, str) and widget.text:
        return widget.text
    content = widget.content
    return content.plain if hasattr(content, "plain") else str(content)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One early-stopped tiny run, trained in-process: its log and checkpoints."""
    from rich.console import Console

    from seqrec_core.plugins import load_plugins
    from seqrec_core.recipe import load_recipe
    from seqrec_core.run import run_recipe

    root = tmp_path_factory.mktemp("trained")
    recipe_path = write_recipe(root / "recipes" / "tiny.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQREC_CACHE", str(root / "cache"))
        registry = load_plugins()
        recipe = load_recipe(
            recipe_path,
            registry,
            [f"output.runs_dir={root / 'runs'}", f"output.checkpoints_dir={root / 'ckpt'}"],
        )
        run_recipe(recipe, registry, Console(file=io.StringIO()), samples=0)
    return {
        "root": root,
        "recipe": recipe_path,
        "runs": root / "runs",
        "ckpt": root / "ckpt",
        "events": root / "runs" / "tiny" / "events.jsonl",
        "best": root / "ckpt" / "tiny" / "best.safetensors",
    }


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def scripted_events(t0: float = 1000.0) -> list[dict]:
    """Three epochs of 4 batches; epoch 3 does not improve and patience is 1."""
    events = [
        {
            "event": "fit_start",
            "time": t0,
            "run": "demo",
            "model": "sasrec",
            "dataset": "synthetic",
            "params": 1234,
            "epochs": 10,
            "batches": 4,
            "seed": 7,
            "device": "cpu",
            "monitor": "NDCG@10",
            "patience": 1,
            "start_epoch": 1,
        }
    ]
    values = [0.30, 0.40, 0.35]
    t = t0
    for epoch, value in enumerate(values, start=1):
        events.append({"event": "epoch_start", "time": t, "epoch": epoch, "batches": 4})
        for batch in (2, 4):
            t += 1.0
            events.append(
                {
                    "event": "batch_end",
                    "time": t,
                    "epoch": epoch,
                    "batch": batch,
                    "batches": 4,
                    "loss": 5.0 - epoch - batch / 10,
                    "lr": 0.01,
                    "tokens": 100,
                }
            )
        metrics = {"NDCG@10": value, "HR@10": value * 2}
        events.append({"event": "validation_end", "time": t, "epoch": epoch, "metrics": metrics})
        best_epoch = 2 if epoch >= 2 else 1
        events.append(
            {
                "event": "epoch_end",
                "time": t,
                "epoch": epoch,
                "train_loss": 5.0 - epoch,
                "metrics": metrics,
                "monitor": "NDCG@10",
                "value": value,
                "best_value": max(values[:epoch]),
                "best_epoch": best_epoch,
                "bad_epochs": 1 if epoch == 3 else 0,
                "patience": 1,
                "epoch_time": 2.0,
                "train_time": 1.5,
                "tokens_per_s": 400.0,
                "lr": 0.01,
            }
        )
    events.append(
        {
            "event": "early_stop",
            "time": t,
            "epoch": 3,
            "best_epoch": 2,
            "best_value": 0.40,
            "monitor": "NDCG@10",
        }
    )
    events.append(
        {
            "event": "fit_end",
            "time": t + 1,
            "status": "early_stopped",
            "best_epoch": 2,
            "best_value": 0.40,
            "valid": {"NDCG@10": 0.40},
            "test": {"NDCG@10": 0.38},
            "total_time": 7.0,
            "params": 1234,
        }
    )
    return events


def write_log(path: Path, events: list[dict], tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + tail)
    return path


# ---------------------------------------------------------------------- RunState


def test_run_state_folds_a_scripted_run():
    events = scripted_events()
    state = RunState()
    state.apply_all(events[:4])  # fit_start, epoch_start, two batches of epoch 1
    assert state.status == "running" and state.epoch == 1 and state.batch == 4
    assert state.live_tokens_per_s == pytest.approx(200.0)  # 100 tokens × 2 batches / 1 s
    state.apply_all(events[4:])
    assert [r.epoch for r in state.rows] == [1, 2, 3]
    assert state.series("loss") == [4.0, 3.0, 2.0]
    assert state.series("NDCG@10") == [0.30, 0.40, 0.35]
    assert state.metric_names() == ["NDCG@10", "HR@10"]
    assert (state.best_value, state.best_epoch, state.bad_epochs) == (0.40, 2, 1)
    assert state.best_row.epoch == 2
    assert state.stopped_early_at == 3 and state.status == "early_stopped" and state.finished
    assert state.test == {"NDCG@10": 0.38} and state.total_time == 7.0
    assert state.tokens_per_s == 400.0 and state.epoch_time == 2.0
    assert state.run_eta() is None  # finished
    lines = state.early_stop_lines()
    assert lines[0].startswith("monitor  NDCG@10")
    assert "0.4000 at epoch 2" in lines[1]
    assert "1/1" in lines[2]
    assert lines[-1] == "stopped early at epoch 3"


def test_run_state_etas_while_running():
    events = scripted_events(t0=0.0)
    state = RunState().apply_all(events[:6])  # fit_start + epoch 1 (ends at t=2)
    state.apply(events[6])  # epoch_start 2, t=2
    state.apply(events[7])  # batch 2 of 4 at t=3
    assert state.epochs_done == 1
    assert state.batch_eta(now=3.0) == pytest.approx(1.0)  # 0.5 s/batch × 2 batches left
    # 9 epochs left at 2 s each, minus 1 s already spent in epoch 2
    assert state.run_eta(now=3.0) == pytest.approx(17.0)


def test_run_state_resume_reset_and_bad_input():
    state = RunState().apply_all(scripted_events())
    state.apply({"event": "fit_start", "run": "demo", "epochs": 10, "start_epoch": 3})
    assert [r.epoch for r in state.rows] == [1, 2]  # a resumed fit keeps earlier epochs
    assert state.best_epoch == 2 and state.status == "running" and state.stopped_early_at is None
    state.apply({"event": "fit_start", "run": "again", "epochs": 5})
    assert state.rows == [] and state.run == "again"  # a fresh fit starts over
    for junk in (None, [], "x", {"event": "from_the_future"}, {"no": "event"}):
        state.apply(junk)
    state.apply({"event": "epoch_end", "epoch": 1, "value": None, "best_value": None})
    assert state.rows[0].value is None and state.best_value is None
    state.apply({"event": "fit_end", "status": "interrupted", "best_value": None})
    assert state.status == "interrupted" and state.early_stop_lines()[-1] == "run interrupted"


def test_untrained_model_shows_its_validation_row():
    state = RunState()
    state.apply({"event": "fit_start", "epochs": 0, "monitor": "HR@10", "patience": 3})
    state.apply({"event": "validation_end", "epoch": 0, "metrics": {"HR@10": 0.2}})
    state.apply({"event": "fit_end", "status": "completed", "best_epoch": 0, "best_value": 0.2})
    assert [(r.epoch, r.value) for r in state.rows] == [(0, 0.2)]
    assert state.best_row.epoch == 0


# ---------------------------------------------------------------------- following, discovery


def test_log_follower_partial_lines_bad_lines_and_truncation(tmp_path):
    path = tmp_path / "events.jsonl"
    follower = LogFollower(path)
    assert follower.poll() == []  # no file yet
    path.write_text('{"event": "fit_start"}\n{"event": "epo')
    assert [e["event"] for e in follower.poll()] == ["fit_start"]
    assert follower.pending
    with open(path, "a") as fh:
        fh.write('ch_start", "epoch": 1}\nnot json\n')
    assert follower.poll() == [{"event": "epoch_start", "epoch": 1}]
    assert follower.bad_lines == 1 and not follower.pending
    assert follower.poll() == []
    path.write_text('{"event": "fit_end"}\n')  # rewritten shorter: start over
    assert follower.poll() == [{"event": "fit_end"}] and follower.restarted


def test_discovery_lists_recipes_runs_and_checkpoints(tmp_path):
    write_recipe(tmp_path / "recipes" / "a.yaml")
    (tmp_path / "recipes" / "notes.txt").write_text("not a recipe")
    write_log(tmp_path / "runs" / "demo" / "events.jsonl", scripted_events())
    # a live run's log may end mid-line
    write_log(tmp_path / "runs" / "live" / "events.jsonl", scripted_events()[:5], '{"eve')
    (tmp_path / "ckpt" / "demo").mkdir(parents=True)
    (tmp_path / "ckpt" / "demo" / "best.safetensors").write_bytes(b"x")
    (tmp_path / "ckpt" / "demo" / "histories.safetensors").write_bytes(b"x")
    assert [p.name for p in find_recipes(tmp_path / "recipes")] == ["a.yaml"]
    runs = {r.name: r for r in find_runs(tmp_path / "runs")}
    assert runs["demo"].status == "early_stopped" and runs["demo"].best == "NDCG@10 0.4000"
    assert runs["demo"].epochs == "3/10"
    assert runs["live"].status == "running"
    assert [(c.run, c.kind) for c in find_checkpoints(tmp_path / "ckpt")] == [("demo", "best")]
    assert find_runs(tmp_path / "nowhere") == [] and find_recipes(tmp_path / "nowhere") == []
    state = summarise_log(tmp_path / "runs" / "demo" / "events.jsonl", tail_bytes=600)
    assert state.status == "early_stopped" and state.monitor == "NDCG@10"


def test_parse_overrides_and_cli_args():
    assert parse_overrides("train.lr=0.1 -o 'name=a b'") == ["train.lr=0.1", "name=a b"]
    with pytest.raises(Exception, match="KEY=VALUE"):
        parse_overrides("train.lr")
    args = build_parser().parse_args(["--runs-dir", "r", "--checkpoints-dir", "c"])
    assert (args.runs_dir, args.checkpoints_dir, args.recipes_dir) == ("r", "c", "recipes")


# ---------------------------------------------------------------------- Pilot: training


def test_start_a_run_from_the_tui_and_see_it_stop_early(env):
    write_recipe(env / "recipes" / "tiny.yaml", name="fromtui")
    app = SeqrecApp(runs_dir="runs", checkpoints_dir="ckpt", recipes_dir="recipes")

    async def scenario(pilot):
        await until(pilot, lambda: app.home.recipes, what="the recipe list")
        assert app.focused.id == "recipes"
        await pilot.press("enter")  # the highlighted recipe → start dialog
        await until(pilot, lambda: type(app.screen).__name__ == "StartDialog")
        await pilot.press("enter")  # no overrides: start
        await until(pilot, lambda: app.process is not None, timeout=30, what="the run to start")
        tabs = app.screen_stack[0].query_one("TabbedContent")
        await until(pilot, lambda: tabs.active == "train", what="the Train tab")
        state = lambda: app.dashboard.state  # noqa: E731
        await until(pilot, lambda: len(state().rows) >= 2, timeout=60, what="two epochs")
        await until(pilot, lambda: state().finished, timeout=60, what="the run to finish")
        s = state()
        assert s.status == "early_stopped", app.dashboard.query_one("#message").text
        assert s.stopped_early_at == len(s.rows)
        panel = app.dashboard.query_one("EarlyStopPanel")
        assert f"stopped early at epoch {s.stopped_early_at}" in panel.text
        table = app.dashboard.query_one(MetricsTable)
        assert table.row_count == len(s.rows)
        assert table.best_row_index() == s.best_epoch - 1
        await until(pilot, lambda: app.process.poll() is not None, what="the process to exit")
        assert app.process.poll() == 0
        await pilot.press("q")  # nothing running: quits without asking

    run_app(app, scenario)
    assert (env / "ckpt" / "fromtui" / "best.safetensors").is_file()
    assert (env / "runs" / "fromtui" / "tui.log").is_file()


def test_quitting_asks_and_stopping_keeps_the_last_checkpoint(env):
    # Slow enough to be mid-run when we quit: many epochs, patience never runs out.
    write_recipe(env / "recipes" / "long.yaml", name="long", epochs=5000, lr=1e-4, patience=5000)
    app = SeqrecApp(runs_dir="runs", checkpoints_dir="ckpt", recipes_dir="recipes")

    async def scenario(pilot):
        await until(pilot, lambda: app.home.recipes, what="the recipe list")
        app.start_recipe(env / "recipes" / "long.yaml")
        await until(pilot, lambda: type(app.screen).__name__ == "StartDialog")
        await pilot.press("enter")
        await until(pilot, lambda: app.process is not None, timeout=30, what="the run to start")
        await until(pilot, lambda: len(app.dashboard.state.rows) >= 1, timeout=60, what="epoch 1")
        await pilot.press("q")
        await until(pilot, lambda: type(app.screen).__name__ == "ChoiceDialog")
        assert "still training" in text_of(app.screen.query_one("#question"))
        await pilot.press("escape")  # cancel: still running, nothing stopped
        assert app.process.running and app.is_running
        await pilot.press("q")
        await until(pilot, lambda: type(app.screen).__name__ == "ChoiceDialog")
        await pilot.click("#stop")
        await until(pilot, lambda: not app.process.running, timeout=40, what="the run to stop")

    run_app(app, scenario)
    assert app.process.poll() == 130  # seqrec: interrupted
    assert (env / "ckpt" / "long" / "last.safetensors").is_file()
    state = RunState().apply_all(
        json.loads(line) for line in (env / "runs" / "long" / "events.jsonl").open()
    )
    assert state.status == "interrupted"


def test_recipe_with_errors_is_shown_in_the_dialog(env):
    bad = env / "recipes" / "bad.yaml"
    bad.parent.mkdir()
    bad.write_text(TINY_RECIPE.format(name="bad", epochs=2, lr=0.1, patience=1) + "trian: {}\n")
    app = SeqrecApp(runs_dir="runs", checkpoints_dir="ckpt", recipes_dir="recipes")

    async def scenario(pilot):
        app.start_recipe(bad)
        await until(pilot, lambda: type(app.screen).__name__ == "StartDialog")
        await pilot.press("enter")
        dialog = app.screen
        await until(pilot, lambda: "trian" in dialog.error_text, timeout=30, what="the error")
        assert "did you mean" in dialog.error_text or "train" in dialog.error_text
        assert app.process is None
        await pilot.press(*"x", "enter")  # a malformed override is reported too
        await until(pilot, lambda: "KEY=VALUE" in dialog.error_text)
        await pilot.press("escape")
        assert type(app.screen).__name__ != "StartDialog"

    run_app(app, scenario)


def test_attach_to_a_finished_run(trained):
    app = SeqrecApp(
        runs_dir=trained["runs"], checkpoints_dir=trained["ckpt"], recipes_dir=trained["root"]
    )
    expected = RunState().apply_all(json.loads(x) for x in trained["events"].open())
    assert expected.status == "early_stopped"  # the fixture's recipe must stop early

    async def scenario(pilot):
        await until(pilot, lambda: app.home.runs, what="the runs list")
        runs = app.home.query_one("#runs")
        runs.focus()
        await pilot.press("enter")  # attach to the (only) run
        await until(pilot, lambda: app.dashboard.state.finished, what="the log to be read")
        s = app.dashboard.state
        assert [r.epoch for r in s.rows] == [r.epoch for r in expected.rows]
        table = app.dashboard.query_one(MetricsTable)
        assert table.row_count == len(expected.rows)
        assert table.best_row_index() == expected.best_epoch - 1
        panel = app.dashboard.query_one("EarlyStopPanel").text
        assert f"stopped early at epoch {expected.stopped_early_at}" in panel
        assert f"{expected.best_value:.4f} at epoch {expected.best_epoch}" in panel
        assert "early stopped" in app.dashboard.query_one("RunHeader").text
        await pilot.pause()
        screen = screen_text(app)  # all of it fits at 80×24
        for part in (
            f"stopped early at epoch {expected.stopped_early_at}",
            f"★{expected.best_epoch}",
            "NDCG@10",
            "s Stop run",
        ):
            assert part in screen

    run_app(app, scenario)


def test_attach_to_a_log_cut_mid_line_then_completed(tmp_path):
    events = scripted_events()
    log = write_log(tmp_path / "runs" / "demo" / "events.jsonl", events[:10], '{"event": "ba')
    app = SeqrecApp(runs_dir=tmp_path / "runs", attach=log.parent)

    async def scenario(pilot):
        await until(pilot, lambda: app.dashboard.state.rows, what="epoch 1")
        s = app.dashboard.state
        assert s.status == "running" and len(s.rows) == 1
        assert app.dashboard.query_one(MetricsTable).row_count == 1
        # the writer finishes the line and the run
        with open(log, "a") as fh:
            fh.write('tch_end", "epoch": 2, "batch": 1, "batches": 4}\n')
            fh.writelines(json.dumps(e) + "\n" for e in events[10:])
        await until(pilot, lambda: app.dashboard.state.finished, what="the rest of the log")
        assert app.dashboard.state.stopped_early_at == 3
        assert app.dashboard.query_one(MetricsTable).row_count == 3
        assert "stopped early at epoch 3" in app.dashboard.query_one("EarlyStopPanel").text

    run_app(app, scenario)


def test_dashboard_follows_the_seeds_of_a_recipe_in_turn(tmp_path):
    first = write_log(tmp_path / "runs" / "r-seed1" / "events.jsonl", scripted_events())
    second = tmp_path / "runs" / "r-seed2" / "events.jsonl"
    app = SeqrecApp(runs_dir=tmp_path / "runs")

    async def scenario(pilot):
        app.dashboard.follow([first, second], label="r")
        await until(pilot, lambda: app.dashboard.state.finished, what="seed 1")
        assert app.dashboard.current == 0  # seed 2 has not logged anything yet
        events = scripted_events()
        events[0] = {**events[0], "run": "r-seed2", "seed": 2}
        write_log(second, events[:6])
        await until(pilot, lambda: app.dashboard.current == 1 and app.dashboard.state.rows)
        assert app.dashboard.state.run == "r-seed2" and not app.dashboard.state.finished
        assert app.dashboard.query_one("RunHeader").text.startswith("r-seed2 (2/2) · sasrec")

    run_app(app, scenario)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_run_that_fails_at_start_shows_its_error(env):
    write_recipe(env / "recipes" / "gpu.yaml", name="needsgpu")
    app = SeqrecApp(runs_dir="runs", checkpoints_dir="ckpt", recipes_dir="recipes")

    async def scenario(pilot):
        app.start_recipe(env / "recipes" / "gpu.yaml")
        await until(pilot, lambda: type(app.screen).__name__ == "StartDialog")
        await pilot.press(*"train.device=cuda", "enter")  # valid recipe, fails at run time
        await until(pilot, lambda: app.dashboard.state.finished, timeout=60, what="the failure")
        assert app.dashboard.state.status == "failed"
        message = app.dashboard.query_one("#message").text
        assert "exited with code 2" in message and "no CUDA GPU" in message

    run_app(app, scenario)


# ---------------------------------------------------------------------- Pilot: GPU


def test_gpu_panel_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_api, "read_gpus", lambda: [])
    monkeypatch.setattr(gpu_api, "gpu_status", lambda: (False, "no NVIDIA GPU (test machine)"))
    app = SeqrecApp(runs_dir=tmp_path, gpu_interval=0.2)

    async def scenario(pilot):
        await pilot.press("3")
        panel = app.gpu_panel
        await until(pilot, lambda: panel.status_text.startswith("no NVIDIA GPU"))
        assert panel.status_text == "no NVIDIA GPU (test machine)"
        assert not panel.query("GpuCard")
        assert "no NVIDIA GPU (test machine)" in screen_text(app)

    run_app(app, scenario)


def test_gpu_panel_on_this_machine_never_crashes(tmp_path):
    ok, reason = gpu_api.gpu_status()
    app = SeqrecApp(runs_dir=tmp_path, gpu_interval=0.2)

    async def scenario(pilot):
        await pilot.press("3")
        panel = app.gpu_panel
        await until(pilot, lambda: panel.status_text != "reading GPUs…", what="a reading")
        if ok:
            assert "NVIDIA GPU" in panel.status_text and panel.query("GpuCard")
        else:
            assert panel.status_text == reason and "no NVIDIA GPU" in reason

    run_app(app, scenario)


def test_gpu_panel_shows_readings(tmp_path, monkeypatch):
    reading = gpu_api.GpuReading(
        index=0,
        name="Fake H100",
        utilization=87.0,
        memory_used=12 * 1024**3,
        memory_total=80 * 1024**3,
        temperature=65.0,
        power=250.0,
        power_limit=700.0,
    )
    monkeypatch.setattr(gpu_api, "read_gpus", lambda: [reading])
    app = SeqrecApp(runs_dir=tmp_path, gpu_interval=0.2)

    async def scenario(pilot):
        await pilot.press("3")
        panel = app.gpu_panel
        await until(pilot, lambda: panel.query("GpuCard") and panel.query_one("GpuCard").text)
        card = panel.query_one("GpuCard").text
        for part in ("Fake H100", "87 %", "12.0 / 80.0 GiB", "65 °C", "250 / 700 W"):
            assert part in card
        assert panel.status_text.startswith("1 NVIDIA GPU")
        assert "GPU0 87% 12.0/80G" in app.dashboard.gpu_text
        screen = screen_text(app)
        assert "GPU 0: Fake H100" in screen and "12.0 / 80.0 GiB" in screen

    run_app(app, scenario)


# ---------------------------------------------------------------------- Pilot: recommendations


def top_titles(app) -> list[str]:
    return [r.title for r in app.recommender.recs]


def test_console_user_history_search_add_and_hide_seen(trained):
    from seqrec_core.plugins import load_plugins
    from seqrec_core.recommend import load_for_inference, top_k

    model, catalogue, histories, _ = load_for_inference(trained["best"], load_plugins())
    user = str(histories.user_ids[0])
    history = histories.of(user)
    app = SeqrecApp(runs_dir=trained["runs"], checkpoints_dir=trained["ckpt"])
    pane = app.recommender

    async def scenario(pilot):
        await until(pilot, lambda: app.home.checkpoints, what="the checkpoint list")
        ckpts = app.home.query_one("#checkpoints")
        row = next(i for i, c in enumerate(app.home.checkpoints) if c.kind == "best")
        ckpts.focus()
        ckpts.move_cursor(row=row)
        await pilot.press("enter")
        await until(pilot, lambda: pane.loaded is not None, timeout=30, what="the checkpoint")
        assert "sasrec on synthetic" in pane.info_text
        await pilot.press("ctrl+g", *user, "enter")
        await until(pilot, lambda: len(pane.recs) == 10, what="the top-10")
        table = pane.query_one("#top")
        assert table.row_count == 10
        await pilot.pause()
        screen = screen_text(app)
        assert all(f"{r.score:.2f}" in screen for r in pane.recs)  # numbers visible at 80 cols
        assert pane.recs[0].title[:20] in screen
        assert all(str(table.get_row_at(i)[1]).strip() for i in range(10))  # titles shown
        expected = top_k(model, history, 10, catalogue=catalogue)
        assert top_titles(app) == [r.title for r in expected]
        # history: most recent first
        listing = pane.query_one("#history")
        assert listing.option_count == len(history)
        assert str(listing.get_option_at_index(0).prompt).endswith(catalogue.titles[history[-1]])
        # search a title that is not the user's next favourite, add it: the top-10 changes
        before = top_titles(app)
        pick = next(i for i in range(1, catalogue.n_items + 1) if i not in history[-3:])
        word = catalogue.titles[pick].split(" (")[0].split()[-1].lower()
        await pilot.press("ctrl+f", *word)
        await until(pilot, lambda: pane.results, what="search results")
        assert pane.results[0][1] == catalogue.titles[pick] or any(
            i == pick for i, _ in pane.results
        )
        while pane.results[pane.query_one("#results").highlighted][0] != pick:
            await pilot.press("down")
        await pilot.press("enter")
        await until(pilot, lambda: pane.history[-1] == pick, what="the item to be added")
        await until(pilot, lambda: top_titles(app) != before, what="the top-10 to change")
        assert top_titles(app) == [
            r.title for r in top_k(model, pane.history, 10, catalogue=catalogue)
        ]
        # hide seen: no history item left in the top-10
        seen_in_top = [r for r in pane.recs if r.item in set(pane.history)]
        assert seen_in_top, "the tiny model should recommend something already seen"
        await pilot.press("ctrl+t")
        await until(
            pilot,
            lambda: pane.hide_seen and not any(r.item in set(pane.history) for r in pane.recs),
        )
        assert len(pane.recs) == 10
        # remove the added item (most recent = first in the list): back to the user's history
        listing.focus()
        listing.highlighted = 0
        await pilot.press("delete")
        await until(pilot, lambda: pane.history == history, what="the item to be removed")

    run_app(app, scenario)


def test_console_matches_seqrec_recommend(trained, capsys, monkeypatch, env):
    from seqrec_core.cli import main as seqrec_main
    from seqrec_core.plugins import load_plugins
    from seqrec_core.recommend import load_for_inference

    _, catalogue, _, _ = load_for_inference(trained["best"], load_plugins())
    titles = [catalogue.titles[i] for i in (3, 7, 3)]
    monkeypatch.setenv("COLUMNS", "200")
    assert seqrec_main(["recommend", str(trained["best"]), "--history", *titles]) == 0
    cli_rows = re.findall(r"│\s+(\d+) │ (.+?)\s+│", capsys.readouterr().out)
    cli_titles = [title for _, title in cli_rows]
    assert len(cli_titles) == 10
    app = SeqrecApp(checkpoint=trained["best"])
    pane = app.recommender

    async def scenario(pilot):
        await until(pilot, lambda: pane.loaded is not None, timeout=30, what="the checkpoint")
        search = pane.query_one("#search")
        for title in titles:
            await pilot.press("ctrl+f")
            # Enter must reach the search field, not a list on another tab.
            await until(pilot, lambda: app.focused is search, what="focus on the search field")
            search.value = title  # as if typed
            await until(pilot, lambda t=title: pane.results and pane.results[0][1] == t)
            await pilot.press("enter")
        await until(
            pilot,
            lambda: len(pane.history) == 3 and len(pane.recs) == 10,
            what=f"3 items ({pane.history}, {pane.info_text})",
        )
        await until(pilot, lambda: top_titles(app) == cli_titles, what="the CLI's top-10")

    run_app(app, scenario)


def test_console_bad_inputs_are_messages(trained, tmp_path):
    from seqrec_core.checkpoint import load_checkpoint, save_checkpoint

    not_safetensors = tmp_path / "model.safetensors"
    not_safetensors.write_bytes(b"PK\x03\x04 this is a zip, not safetensors")
    ckpt = load_checkpoint(trained["best"])
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("format", "versions")}
    meta["model"] = {**meta["model"], "name": "thirdparty_gru"}
    unknown = save_checkpoint(tmp_path / "other" / "best.safetensors", ckpt.tensors, meta)
    app = SeqrecApp(runs_dir=tmp_path)
    pane = app.recommender

    async def scenario(pilot):
        await pilot.press("4")
        await pilot.press("ctrl+f", *"anything", "enter")
        assert "load a checkpoint first" in pane.info_text
        for path, expected in (
            (not_safetensors, "not a readable safetensors file"),
            (tmp_path / "missing.safetensors", "checkpoint not found"),
            (unknown, "unknown model 'thirdparty_gru'"),
        ):
            pane.load(path)
            await until(pilot, lambda e=expected: e in pane.info_text, what=expected)
            assert pane.loaded is None
        pane.load(trained["best"])
        await until(pilot, lambda: pane.loaded is not None, timeout=30, what="the checkpoint")
        await pilot.press("ctrl+g", *"no-such-user", "enter")
        assert "unknown user 'no-such-user'" in pane.info_text
        await pilot.press("ctrl+f", *"zzzzqqqq")
        await until(pilot, lambda: "no title matches" in text_of(pane.query_one("#results-label")))
        await pilot.press("enter")
        assert "no title matches 'zzzzqqqq'" in pane.info_text and pane.history == []
        assert app.is_running

    run_app(app, scenario)


def test_dashboard_updates_after_its_widgets_are_gone_are_ignored(env):
    """On exit the app removes the dashboard's widgets while a worker or timer may
    still deliver one last state: that update must be dropped, not crash the app."""
    from seqrec_tui.dashboard import RunHeader
    from seqrec_tui.state import RunState

    app = SeqrecApp(runs_dir="runs", checkpoints_dir="ckpt", recipes_dir="recipes")

    async def scenario(pilot):
        dashboard = app.dashboard
        assert dashboard.query(RunHeader)
        await dashboard.remove_children()
        state = RunState()
        state.status = "running"
        dashboard.watch_state(state)  # raised NoMatches before
        dashboard._refresh_etas(state)

    run_app(app, scenario)
