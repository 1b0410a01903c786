"""Snapshot tests (``pytest-textual-snapshot``) of seqrec-tui's main screens at 80×24.

Each test renders one screen to SVG and compares it with the file under
``tests/__snapshots__/test_tui_snapshots/``. After an intended UI change,
regenerate them and look at the diff (or the HTML report pytest writes on failure)::

    python -m pytest tests/test_tui_snapshots.py --snapshot-update

Everything on screen is fixed: the app runs in a temporary directory with
relative paths, run logs are written by hand with fixed times and values, and
the GPU readings are monkeypatched, so the pictures do not depend on the time,
the machine's CPU or GPUs, or where the temporary directory is.
"""

from __future__ import annotations

import json
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
from textual.widgets import Input, TabbedContent  # noqa: E402

from seqrec_core import gpu as gpu_api  # noqa: E402
from seqrec_tui.app import SeqrecApp  # noqa: E402

SIZE = (80, 24)
GIB = 1024**3
NO_GPU_REASON = "no NVIDIA GPU (NVML: shared library not found)"

RECIPE = """\
name: tiny
dataset:
  name: synthetic
  n_users: 100
  n_items: 30
  seed: 0
model:
  name: sasrec
  max_len: 10
  dim: 8
train:
  epochs: 3
  monitor: NDCG@10
  patience: 1
  device: cpu
"""

H200 = gpu_api.GpuReading(
    index=0,
    name="NVIDIA H200",
    utilization=87.0,
    memory_used=62 * GIB,
    memory_total=143771 * 1024**2,  # 140.4 GiB, as NVML reports an H200
    temperature=54.0,
    power=412.0,
    power_limit=700.0,
)


def no_gpu(monkeypatch) -> None:
    monkeypatch.setattr(gpu_api, "read_gpus", lambda: [])
    monkeypatch.setattr(gpu_api, "gpu_status", lambda: (False, NO_GPU_REASON))


def one_h200(monkeypatch) -> None:
    monkeypatch.setattr(gpu_api, "read_gpus", lambda: [H200])
    monkeypatch.setattr(gpu_api, "gpu_status", lambda: (True, "1 NVIDIA GPU (0: NVIDIA H200)"))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A cwd with ``recipes/tiny.yaml``, empty ``runs/`` and ``checkpoints/``; no GPU."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NO_COLOR", raising=False)  # read by App(): would grey everything
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.yaml").write_text(RECIPE)
    (tmp_path / "runs").mkdir()
    (tmp_path / "checkpoints").mkdir()
    no_gpu(monkeypatch)  # the GPU tab also feeds the dashboard's stats line
    return tmp_path


def make_app(**kwargs) -> SeqrecApp:
    return SeqrecApp(
        runs_dir="runs", checkpoints_dir="checkpoints", recipes_dir="recipes", **kwargs
    )


def on_tab(tab: str, focused: str | None = None):
    """A condition: ``tab`` is showing (and the widget with id ``focused`` has focus)."""

    def condition(app) -> bool:
        main = app.screen_stack[0]
        if main.query_one(TabbedContent).active != tab or app.screen is not main:
            return False
        return focused is None or (app.focused is not None and app.focused.id == focused)

    condition.__doc__ = f"the {tab} tab" + (f" with #{focused} focused" if focused else "")
    return condition


def settle(*conditions, press: tuple[str, ...] = (), timeout: float = 20.0):
    """A ``run_before``: press keys, wait until the app's workers show what the test
    expects, then make the picture independent of timing (theme, blinking cursors)."""

    async def run_before(pilot) -> None:
        app = pilot.app
        app.theme = "textual-dark"  # whatever TEXTUAL_THEME says
        await pilot.pause()
        await pilot.press(*press)
        deadline = time.monotonic() + timeout
        for condition in conditions:
            while not condition(app):
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {condition.__doc__}")
                await pilot.pause(0.05)
        for field in app.query(Input):
            field.cursor_blink = False  # steadily on: a blinking one is there or not by the clock
        await pilot.pause()

    return run_before


# ---------------------------------------------------------------------- fixed run log


def fixed_run_events() -> list[dict]:
    """``fit_start``, 3 epochs of 4 batches (best at epoch 2, patience 1), ``early_stop``,
    ``fit_end`` — with fixed times, so nothing on the dashboard depends on the clock."""
    t = 1_700_000_000.0
    events: list[dict] = [
        {
            "event": "fit_start",
            "time": t,
            "run": "demo",
            "model": "sasrec",
            "dataset": "synthetic",
            "params": 12345,
            "epochs": 10,
            "batches": 4,
            "seed": 7,
            "device": "cpu",
            "monitor": "NDCG@10",
            "patience": 1,
            "start_epoch": 1,
        }
    ]
    values = [0.3125, 0.4250, 0.4010]
    for epoch, value in enumerate(values, start=1):
        events.append({"event": "epoch_start", "time": t, "epoch": epoch, "batches": 4})
        for batch in range(1, 5):
            t += 0.5
            events.append(
                {
                    "event": "batch_end",
                    "time": t,
                    "epoch": epoch,
                    "batch": batch,
                    "batches": 4,
                    "loss": round(4.0 - 0.5 * epoch - 0.05 * batch, 4),
                    "lr": 0.001,
                    "tokens": 2048,
                }
            )
        t += 0.25
        metrics = {"NDCG@10": value, "HR@10": round(value * 1.8, 4), "MRR@10": value - 0.05}
        events.append({"event": "validation_end", "time": t, "epoch": epoch, "metrics": metrics})
        best_epoch = 1 if epoch == 1 else 2
        events.append(
            {
                "event": "epoch_end",
                "time": t,
                "epoch": epoch,
                "train_loss": round(3.9 - 0.5 * epoch, 4),
                "metrics": metrics,
                "monitor": "NDCG@10",
                "value": value,
                "best_value": max(values[:epoch]),
                "best_epoch": best_epoch,
                "bad_epochs": 1 if epoch == 3 else 0,
                "patience": 1,
                "epoch_time": 2.25,
                "train_time": 2.0,
                "tokens_per_s": 4096.0,
                "lr": 0.001,
            }
        )
    events.append(
        {
            "event": "early_stop",
            "time": t,
            "epoch": 3,
            "best_epoch": 2,
            "best_value": 0.4250,
            "monitor": "NDCG@10",
        }
    )
    events.append(
        {
            "event": "fit_end",
            "time": t + 0.5,
            "status": "early_stopped",
            "best_epoch": 2,
            "best_value": 0.4250,
            "valid": {"NDCG@10": 0.4250},
            "test": {"NDCG@10": 0.3987},
            "total_time": 7.25,
            "params": 12345,
        }
    )
    return events


# ---------------------------------------------------------------------- snapshots


def test_home_screen(workdir, snap_compare):
    """Home: one recipe, no runs, no checkpoints."""
    app = make_app()

    def recipes_listed(app):
        """the recipe list"""
        return bool(app.home.recipes)

    assert snap_compare(
        app, terminal_size=SIZE, run_before=settle(recipes_listed, on_tab("home", "recipes"))
    )


def test_training_dashboard_attached_to_an_early_stopped_run(workdir, snap_compare):
    """Train: a finished run's log, attached; epoch 2 is best and it stopped at 3."""
    log = workdir / "runs" / "demo" / "events.jsonl"
    log.parent.mkdir()
    log.write_text("".join(json.dumps(e) + "\n" for e in fixed_run_events()))
    app = make_app(attach="runs/demo")

    def run_read(app):
        """the whole log on the dashboard"""
        s = app.dashboard.state
        return s.finished and len(s.rows) == 3 and app.dashboard.query_one("#epochs").row_count

    def no_gpu_seen(app):
        """the first GPU reading"""
        return app.gpu_panel.status_text == NO_GPU_REASON

    assert snap_compare(
        app, terminal_size=SIZE, run_before=settle(run_read, no_gpu_seen, on_tab("train", "epochs"))
    )


def test_gpu_tab_with_one_h200(workdir, snap_compare, monkeypatch):
    """GPU: one card with fixed readings of a (fake) H200."""
    one_h200(monkeypatch)
    app = make_app()

    def card_shown(app):
        """the GPU card"""
        cards = app.gpu_panel.query("GpuCard")
        return bool(cards) and "NVIDIA H200" in cards.first().text

    assert snap_compare(
        app, terminal_size=SIZE, run_before=settle(card_shown, on_tab("gpu"), press=("3",))
    )


def test_gpu_tab_without_a_gpu(workdir, snap_compare):
    """GPU: the "no NVIDIA GPU" state, with its reason."""
    app = make_app()

    def reason_shown(app):
        """the no-GPU reason"""
        return app.gpu_panel.status_text == NO_GPU_REASON

    assert snap_compare(
        app, terminal_size=SIZE, run_before=settle(reason_shown, on_tab("gpu"), press=("3",))
    )


def test_recommendation_console_empty(workdir, snap_compare):
    """Recommend: no checkpoint loaded yet."""
    app = make_app()

    def home_scanned(app):
        """the first scan of Home"""
        return bool(app.home.recipes)

    assert snap_compare(
        app,
        terminal_size=SIZE,
        run_before=settle(home_scanned, on_tab("recommend", "ckpt-path"), press=("4",)),
    )
