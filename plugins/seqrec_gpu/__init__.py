"""gpu_monitor: per-epoch GPU utilisation, memory, temperature and power.

A :class:`~seqrec_core.gpu.GpuSampler` samples every GPU in a background thread
from ``on_fit_start`` to ``on_fit_end``. At each ``on_epoch_end`` the epoch's
per-GPU summary is added to the event as ``event["gpu"]`` — so it lands in
``events.jsonl`` (the bus writes the event after the hooks ran) and reaches
TensorBoard and the console. The hook runs ``tryfirst`` so that every other
callback of the run sees the key, whatever the registration order. Without a
GPU the key is ``[]`` and ``event["gpu_status"]`` says why.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seqrec_core import hookimpl
from seqrec_core.gpu import GpuSampler, GpuSummary


class GpuMonitorOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval: float = Field(
        1.0, gt=0.0, description="seconds between GPU samples (NVML reads are cheap)"
    )


def epoch_record(summary: GpuSummary) -> dict[str, Any]:
    """What one GPU did over an epoch, as written to ``events.jsonl``."""
    return {
        "index": summary.index,
        "name": summary.name,
        "utilization": summary.utilization_mean,  # % (mean)
        "utilization_max": summary.utilization_max,
        "memory_used": summary.memory_used_max,  # bytes (peak)
        "memory_total": summary.memory_total,  # bytes
        "temperature": summary.temperature_mean,  # °C (mean)
        "power": summary.power_mean,  # W (mean)
        "power_limit": summary.power_limit,  # W
        "samples": summary.samples,
    }


class GpuMonitor:
    name = "gpu_monitor"
    Options = GpuMonitorOptions

    def __init__(self, options: GpuMonitorOptions | None = None) -> None:
        self.options = options or GpuMonitorOptions()
        self.sampler: GpuSampler | None = None
        self.status = ""

    def _stop(self) -> None:
        sampler, self.sampler = self.sampler, None
        if sampler is not None:
            sampler.stop()

    @hookimpl
    def on_fit_start(self, run: Any, event: dict) -> None:
        self._stop()  # an instance reused for a second fit starts clean
        self.sampler = GpuSampler(self.options.interval).start()
        self.status = self.sampler.reason

    @hookimpl
    def on_epoch_start(self, run: Any, event: dict) -> None:
        if self.sampler is not None:
            self.sampler.reset()  # drop what was sampled between epochs

    @hookimpl(tryfirst=True)
    def on_epoch_end(self, run: Any, event: dict) -> None:
        if self.sampler is None or not self.sampler.available:
            event["gpu"] = []
            event["gpu_status"] = self.status or "GPU monitor not started"
            return
        event["gpu"] = [epoch_record(s) for s in self.sampler.summary(reset=True)]

    @hookimpl
    def on_fit_end(self, run: Any, event: dict) -> None:
        self._stop()

    def __del__(self) -> None:  # a run that dies without on_fit_end
        try:
            self._stop()
        except Exception:
            pass


@hookimpl
def register_callbacks(register):
    register(GpuMonitor)
