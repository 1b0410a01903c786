"""The tensorboard, console and gpu_monitor callbacks, driven through the EventBus."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from pydantic import ValidationError
from rich.console import Console
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import seqrec_console
import seqrec_gpu
import seqrec_tensorboard
from seqrec_console import ConsoleCallback, epoch_line
from seqrec_core import hookimpl
from seqrec_core.events import EventBus, read_events
from seqrec_core.gpu import gpu_status
from seqrec_core.plugins import load_plugins
from seqrec_gpu import GpuMonitor
from seqrec_tensorboard import TensorBoardCallback, TensorBoardOptions, flatten_hparams

GIB = 2**30
EPOCHS, BATCHES, PATIENCE = 5, 4, 2
MONITORED = [0.2, 0.18, 0.17]  # epoch 1 is best; patience 2 runs out at epoch 3
RECIPE = {
    "name": "test-run",
    "dataset": {"name": "synthetic", "users": 100},
    "model": {"name": "sasrec", "hidden": 64, "dropout": 0.2, "norm": None},
    "train": {"lr": 0.001, "betas": [0.9, 0.98], "scheduler": {"name": "cosine"}},
    "loss": {"name": "ce"},
}


def fake_run(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(
        name="test-run",
        run_dir=tmp_path,
        checkpoint_dir=tmp_path / "checkpoints",
        recipe=SimpleNamespace(to_dict=lambda: RECIPE, to_yaml=lambda: "name: test-run\n"),
        model=SimpleNamespace(num_parameters=lambda: 12345),
        data=SimpleNamespace(stats=lambda: {"users": 100, "items": 50}),
        seed=42,
        device=torch.device("cpu"),
    )


def script(bus: EventBus, gpu_payload: bool = False) -> list[dict]:
    """A short fit that stops early; returns the events as the bus returned them."""
    out = [
        bus.emit(
            "fit_start",
            run="test-run",
            model="sasrec",
            dataset="synthetic",
            stats={"users": 100},
            params=12345,
            epochs=EPOCHS,
            batches=BATCHES,
            seed=42,
            device="cpu",
            monitor="Recall@10",
            patience=PATIENCE,
        )
    ]
    best = -float("inf")
    best_epoch = bad = 0
    for epoch, value in enumerate(MONITORED, start=1):
        out.append(bus.emit("epoch_start", epoch=epoch, batches=BATCHES))
        for batch in range(1, BATCHES + 1):
            out.append(
                bus.emit(
                    "batch_end",
                    epoch=epoch,
                    batch=batch,
                    batches=BATCHES,
                    loss=float(10 * epoch + batch),
                    lr=1e-3,
                    tokens=100,
                )
            )
        metrics = {"Recall@10": value, "NDCG@10": value / 2}
        out.append(bus.emit("validation_end", epoch=epoch, metrics=metrics))
        if value > best:
            best, best_epoch, bad = value, epoch, 0
            out.append(bus.emit("checkpoint_saved", kind="best", path="best.st", epoch=epoch))
        else:
            bad += 1
        out.append(bus.emit("checkpoint_saved", kind="last", path="last.st", epoch=epoch))
        extra = {}
        if gpu_payload:
            extra["gpu"] = [
                {
                    "index": 0,
                    "name": "NVIDIA H200",
                    "utilization": 50.0 + epoch,
                    "memory_used": 2 * GIB,
                    "memory_total": 141 * GIB,
                    "temperature": 40.0,
                    "power": 300.0,
                }
            ]
        out.append(
            bus.emit(
                "epoch_end",
                epoch=epoch,
                train_loss=float(epoch),
                metrics=metrics,
                monitor="Recall@10",
                value=value,
                best_value=best,
                best_epoch=best_epoch,
                bad_epochs=bad,
                patience=PATIENCE,
                epoch_time=1.5,
                tokens_per_s=1000.0 * epoch,
                lr=1e-3,
                **extra,
            )
        )
    out.append(
        bus.emit("early_stop", epoch=3, best_epoch=best_epoch, best_value=best, monitor="Recall@10")
    )
    out.append(
        bus.emit(
            "fit_end",
            status="early_stopped",
            best_epoch=best_epoch,
            best_value=best,
            valid={"Recall@10": 0.2, "NDCG@10": 0.1},
            test={"Recall@10": 0.19, "NDCG@10": 0.095},
            total_time=4.5,
            params=12345,
        )
    )
    return out


def text_console(terminal: bool = False) -> tuple[Console, StringIO]:
    buf = StringIO()
    return Console(file=buf, width=200, force_terminal=terminal, color_system=None), buf


class Recorder:
    """Copies what each callback later in the hook order would see."""

    name = "recorder"

    def __init__(self) -> None:
        self.epoch_ends: list[dict] = []

    @hookimpl
    def on_epoch_end(self, run, event):
        self.epoch_ends.append(dict(event))


# -- registration ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "name"),
    [(seqrec_tensorboard, "tensorboard"), (seqrec_console, "console"), (seqrec_gpu, "gpu_monitor")],
)
def test_plugins_register_their_callback(module, name):
    registry = load_plugins(extra=[module], use_entry_points=False)
    cls = registry.get("callbacks", name)
    assert cls.name == name
    callback = cls(cls.Options())  # defaults are valid
    EventBus(None, [callback]).close()  # only known hooks (check_pending)
    with pytest.raises(ValidationError):
        cls.Options(nope=1)
    assert all(f.description for f in cls.Options.model_fields.values())


# -- tensorboard -----------------------------------------------------------------


def test_tensorboard_tags(tmp_path):
    tb = TensorBoardCallback(TensorBoardOptions(log_every=2))
    bus = EventBus(tmp_path / "events.jsonl", [tb], run=fake_run(tmp_path))
    script(bus, gpu_payload=True)
    bus.close()
    assert tb.writer is None  # closed at fit_end

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    expected = {
        "train/loss",
        "train/lr",
        "train/epoch_loss",
        "valid/Recall@10",
        "valid/NDCG@10",
        "test/Recall@10",
        "test/NDCG@10",
        "time/epoch_seconds",
        "perf/tokens_per_s",
        "model/params",
        "gpu/0/utilization",
        "gpu/0/memory_used_mib",
        "gpu/0/temperature",
        "gpu/0/power_w",
        "hparam/Recall@10",
        "hparam/valid/NDCG@10",
    }
    assert expected <= scalars

    # train/loss: mean of each 2-batch window at the global batch step
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in loss] == [2, 4, 6, 8, 10, 12]
    assert loss[0][1] == pytest.approx(11.5) and loss[3][1] == pytest.approx(23.5)
    valid = [(e.step, e.value) for e in acc.Scalars("valid/Recall@10")]
    assert valid == [(1, pytest.approx(0.2)), (2, pytest.approx(0.18)), (3, pytest.approx(0.17))]
    assert [e.value for e in acc.Scalars("perf/tokens_per_s")] == [1000.0, 2000.0, 3000.0]
    assert acc.Scalars("model/params")[0].value == 12345
    assert acc.Scalars("gpu/0/memory_used_mib")[0].value == 2048
    test = acc.Scalars("test/NDCG@10")
    assert len(test) == 1 and test[0].step == 1 and test[0].value == pytest.approx(0.095)

    hparams = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams


def test_tensorboard_hparams_are_flat_scalars():
    flat = flatten_hparams(RECIPE)
    assert flat == {
        "model.name": "sasrec",
        "model.hidden": 64,
        "model.dropout": 0.2,
        "train.lr": 0.001,
        "train.scheduler.name": "cosine",
        "loss.name": "ce",
    }


def test_tensorboard_log_dir_option_and_fit_end_without_start(tmp_path):
    tb = TensorBoardCallback(TensorBoardOptions(log_dir=str(tmp_path / "tb")))
    bus = EventBus(None, [tb], run=fake_run(tmp_path))
    bus.emit("fit_end", status="failed", valid={}, test={})  # failed before fit_start: no-op
    bus.emit("fit_start", params=1)
    bus.emit("fit_end", status="failed")
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert not (tmp_path / "tensorboard").exists()


# -- console ---------------------------------------------------------------------


@pytest.mark.parametrize("terminal", [False, True])
def test_console_epoch_lines_and_early_stop(tmp_path, terminal):
    callback = ConsoleCallback()
    callback.console, buf = text_console(terminal)
    bus = EventBus(None, [callback], run=fake_run(tmp_path))
    script(bus)
    out = buf.getvalue()
    assert "run test-run  model sasrec  12,345 parameters" in out
    assert (
        "epoch 1/5  loss 1.0000  Recall@10 0.2000  best 0.2000 (epoch 1)  patience 2/2  1.5s"
    ) in out
    assert "saved best" in out.split("epoch 1/5", 1)[1].splitlines()[0]
    assert "epoch 3/5  loss 3.0000  Recall@10 0.1700  best 0.2000 (epoch 1)  patience 0/2" in out
    assert "stopped early at epoch 3 (best epoch 1, Recall@10 0.2000)" in out
    assert "fit early_stopped in 4.5s, best epoch 1, test Recall@10 0.1900" in out
    assert callback.progress is None  # stopped at fit_end


def test_console_epoch_line_skips_what_was_not_measured():
    line = epoch_line(
        {"epoch": 2, "train_loss": 0.5, "value": float("nan"), "best_value": float("-inf")}
    )
    assert line == "epoch 2  loss 0.5000"


def test_console_fit_end_without_start_and_default_console(tmp_path, capsys):
    callback = ConsoleCallback()
    bus = EventBus(None, [callback], run=fake_run(tmp_path))
    bus.emit("fit_end", status="failed")  # nothing started: nothing to print, no crash
    bus.emit("fit_start", run="x", epochs=1, batches=1)
    bus.emit("epoch_start", epoch=1, batches=1)
    bus.emit("batch_end", epoch=1, batch=1, batches=1, loss=1.0, lr=0.1, tokens=5)
    bus.emit("fit_end", status="failed", total_time=1.0)
    captured = capsys.readouterr()
    assert "fit failed in 1.0s" in captured.err and captured.out == ""


# -- gpu_monitor with the others -------------------------------------------------


def test_events_jsonl_holds_the_gpu_data_the_callbacks_saw(tmp_path):
    recorder = Recorder()
    console = ConsoleCallback()
    console.console, buf = text_console()
    # pluggy calls the last registered first: without tryfirst, gpu_monitor would run last.
    callbacks = [GpuMonitor(), recorder, TensorBoardCallback(), console]
    bus = EventBus(tmp_path / "events.jsonl", callbacks, run=fake_run(tmp_path), batch_every=1)
    emitted = script(bus)
    bus.close()

    lines = list(read_events(tmp_path / "events.jsonl"))
    assert lines == json.loads(json.dumps(emitted))
    assert [e["event"] for e in lines].count("batch_end") == 3 * BATCHES

    epoch_ends = [e for e in lines if e["event"] == "epoch_end"]
    assert len(epoch_ends) == len(recorder.epoch_ends) == 3
    available, reason = gpu_status()
    for written, seen in zip(epoch_ends, recorder.epoch_ends, strict=True):
        assert "gpu" in seen and "gpu" in written
        if available:
            assert written["gpu"] and written["gpu"][0]["memory_total"] > 0
        else:
            assert written["gpu"] == [] and seen["gpu"] == []
            assert written["gpu_status"] == reason and "no NVIDIA GPU" in reason
    assert callbacks[0].sampler is None  # stopped at fit_end
    assert "stopped early at epoch 3" in buf.getvalue()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
