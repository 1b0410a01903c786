"""tensorboard: training curves, validation metrics and hparams for TensorBoard.

Writes to ``runs/<run>/tensorboard`` (or ``log_dir``); view with
``tensorboard --logdir runs``. Batch-level tags (``train/loss``, ``train/lr``)
use the global batch step ``(epoch - 1) * batches + batch``; epoch-level tags
(``train/epoch_loss``, ``valid/<metric>``, ``time/epoch_seconds``,
``perf/tokens_per_s``, ``gpu/<index>/…``) use the epoch number. At the end of
the fit the test metrics go to ``test/<metric>`` and, with the recipe's model,
train and loss options, to the HParams dashboard (``hparam/<metric>`` for test,
``hparam/valid/<metric>`` for the best validation metrics).

GPU tags appear when the ``gpu_monitor`` callback runs in the same recipe: it
adds ``event["gpu"]`` to ``on_epoch_end`` before this callback sees it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seqrec_core import hookimpl

MIB = 2**20
#: recipe sections whose scalar options become TensorBoard hparams
HPARAM_SECTIONS = ("model", "train", "loss")


class TensorBoardOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log_dir: str | None = Field(
        None, description="event-file directory; default runs/<run>/tensorboard"
    )
    log_every: int = Field(
        50, ge=1, description="write train/loss (mean over the window) every N batches"
    )


def _number(value: Any) -> float | None:
    """A finite-or-not float for add_scalar, or None for missing/non-numeric values."""
    if isinstance(value, bool) or value is None:
        return None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        value = value.item()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def flatten_hparams(recipe: dict[str, Any], sections: tuple[str, ...] = HPARAM_SECTIONS) -> dict:
    """``{"model.hidden": 64, "train.scheduler.name": "cosine", …}`` — scalars and strings only."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}", sub)
        elif isinstance(value, bool | int | str):
            out[prefix] = value
        elif isinstance(value, float) and math.isfinite(value):
            out[prefix] = value

    for section in sections:
        if isinstance(recipe.get(section), dict):
            walk(section, recipe[section])
    return out


class TensorBoardCallback:
    name = "tensorboard"
    Options = TensorBoardOptions

    def __init__(self, options: TensorBoardOptions | None = None) -> None:
        self.options = options or TensorBoardOptions()
        self.writer = None
        self.log_dir: Path | None = None
        self._window: list[float] = []
        self._last_epoch = 0
        self._valid_logged: set[int] = set()
        self._hparams: dict[str, Any] = {}

    # -- helpers -------------------------------------------------------------

    def _scalar(self, tag: str, value: Any, step: int) -> None:
        number = _number(value)
        if self.writer is not None and number is not None:
            self.writer.add_scalar(tag, number, step)

    def _metrics(self, prefix: str, metrics: Any, step: int) -> None:
        for name, value in (metrics or {}).items():
            self._scalar(f"{prefix}/{name}", value, step)

    def _resolve_log_dir(self, run: Any, event: dict) -> Path:
        if self.options.log_dir:
            return Path(self.options.log_dir)
        run_dir = getattr(run, "run_dir", None)
        if run_dir is None:
            run_dir = Path("runs") / str(event.get("run") or getattr(run, "name", "run"))
        return Path(run_dir) / "tensorboard"

    def _close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.flush()
            writer.close()

    # -- hooks ---------------------------------------------------------------

    @hookimpl
    def on_fit_start(self, run: Any, event: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy: import when used

        self._close()
        self.log_dir = self._resolve_log_dir(run, event)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self._window, self._last_epoch, self._valid_logged = [], 0, set()
        self._scalar("model/params", event.get("params"), 0)

        recipe = getattr(run, "recipe", None)
        recipe_dict = recipe.to_dict() if hasattr(recipe, "to_dict") else {}
        self._hparams = flatten_hparams(recipe_dict)
        if isinstance(recipe_dict.get("dataset"), dict) and "name" in recipe_dict["dataset"]:
            self._hparams["dataset.name"] = str(recipe_dict["dataset"]["name"])
        seed = event.get("seed", getattr(run, "seed", None))
        if isinstance(seed, int):
            self._hparams["seed"] = seed
        if hasattr(recipe, "to_yaml"):
            self.writer.add_text("recipe", f"```yaml\n{recipe.to_yaml()}```", 0)

    @hookimpl
    def on_batch_end(self, run: Any, event: dict) -> None:
        loss = _number(event.get("loss"))
        if loss is not None:
            self._window.append(loss)
        batch, batches = event.get("batch") or 0, event.get("batches") or 0
        if batch % self.options.log_every and batch != batches:
            return
        step = (max(int(event.get("epoch") or 1), 1) - 1) * batches + batch
        if self._window:
            self._scalar("train/loss", sum(self._window) / len(self._window), step)
            self._window = []
        self._scalar("train/lr", event.get("lr"), step)

    @hookimpl
    def on_validation_end(self, run: Any, event: dict) -> None:
        epoch = int(event.get("epoch") or 0)
        self._metrics("valid", event.get("metrics"), epoch)
        self._valid_logged.add(epoch)

    @hookimpl
    def on_epoch_end(self, run: Any, event: dict) -> None:
        epoch = int(event.get("epoch") or 0)
        self._last_epoch = epoch
        self._window = []  # a partial window never spills into the next epoch
        self._scalar("train/epoch_loss", event.get("train_loss"), epoch)
        if epoch not in self._valid_logged:  # metrics not already sent by on_validation_end
            self._metrics("valid", event.get("metrics"), epoch)
        self._scalar("time/epoch_seconds", event.get("epoch_time"), epoch)
        self._scalar("perf/tokens_per_s", event.get("tokens_per_s"), epoch)
        for gpu in event.get("gpu") or []:
            prefix = f"gpu/{gpu.get('index', 0)}"
            self._scalar(f"{prefix}/utilization", gpu.get("utilization"), epoch)
            used = _number(gpu.get("memory_used"))
            self._scalar(f"{prefix}/memory_used_mib", None if used is None else used / MIB, epoch)
            self._scalar(f"{prefix}/temperature", gpu.get("temperature"), epoch)
            self._scalar(f"{prefix}/power_w", gpu.get("power"), epoch)
        if self.writer is not None:
            self.writer.flush()  # a live TensorBoard shows the epoch now, not at the end

    @hookimpl
    def on_fit_end(self, run: Any, event: dict) -> None:
        if self.writer is None:
            return
        try:
            step = int(event.get("best_epoch") or self._last_epoch or 0)
            test = {k: v for k, v in (event.get("test") or {}).items() if _number(v) is not None}
            valid = {k: v for k, v in (event.get("valid") or {}).items() if _number(v) is not None}
            self._metrics("test", test, step)
            metrics = {f"hparam/{k}": _number(v) for k, v in test.items()}
            metrics |= {f"hparam/valid/{k}": _number(v) for k, v in valid.items()}
            if metrics and self._hparams:
                # run_name="." keeps the hparams in this run's directory, so the
                # HParams dashboard links to the curves above instead of a new run.
                self.writer.add_hparams(self._hparams, metrics, run_name=".", global_step=step)
        finally:
            self._close()


@hookimpl
def register_callbacks(register):
    register(TensorBoardCallback)
