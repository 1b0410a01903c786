"""GPU gauges: utilisation, memory, temperature and power per NVIDIA GPU.

Readings come from :func:`seqrec_core.gpu.read_gpus` about once a second, in a
thread worker (NVML calls can stall on a busy driver). Without a GPU the panel
says so, with the reason from :func:`seqrec_core.gpu.gpu_status`.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import Static

from seqrec_core import gpu as gpu_api

REFRESH_S = 1.0
GIB = 1024**3


def bar(fraction: float | None, width: int = 20) -> Text:
    """``███████░░░░`` coloured green → yellow → red with the fraction."""
    if fraction is None:
        return Text("n/a".ljust(width), style="dim")
    fraction = min(1.0, max(0.0, fraction))
    filled = round(fraction * width)
    style = "green" if fraction < 0.7 else "yellow" if fraction < 0.9 else "red"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"))


def describe(r: gpu_api.GpuReading) -> list[tuple[str, float | None, str]]:
    """``(quantity, fraction for the gauge, text)`` rows for one GPU."""
    mem_frac = (
        r.memory_used / r.memory_total if r.memory_used is not None and r.memory_total else None
    )
    mem = (
        f"{r.memory_used / GIB:.1f} / {r.memory_total / GIB:.1f} GiB"
        if r.memory_used is not None and r.memory_total is not None
        else "n/a"
    )
    util = "n/a" if r.utilization is None else f"{r.utilization:.0f} %"
    temp = "n/a" if r.temperature is None else f"{r.temperature:.0f} °C"
    if r.power is None:
        power, power_frac = "n/a", None
    elif r.power_limit:
        power, power_frac = f"{r.power:.0f} / {r.power_limit:.0f} W", r.power / r.power_limit
    else:
        power, power_frac = f"{r.power:.0f} W", None
    return [
        ("util", None if r.utilization is None else r.utilization / 100, util),
        ("memory", mem_frac, mem),
        ("temp", None if r.temperature is None else r.temperature / 100, temp),
        ("power", power_frac, power),
    ]


def summary_line(readings: list[gpu_api.GpuReading]) -> str:
    """One line for the training dashboard: ``GPU0 87% 12.3/80.0 GiB``."""
    parts = []
    for r in readings:
        util = "?" if r.utilization is None else f"{r.utilization:.0f}%"
        mem = (
            f" {r.memory_used / GIB:.1f}/{r.memory_total / GIB:.0f}G"
            if r.memory_used is not None and r.memory_total
            else ""
        )
        parts.append(f"GPU{r.index} {util}{mem}")
    return " ".join(parts)


class GpuCard(Static):
    """One GPU: name, then a gauge per quantity."""

    DEFAULT_CSS = "GpuCard { height: auto; border: round $accent; padding: 0 1; }"

    text: str = ""

    def show(self, reading: gpu_api.GpuReading) -> None:
        self.border_title = f"GPU {reading.index}: {reading.name}"
        table = Table.grid(padding=(0, 1))
        table.add_column(width=7)
        table.add_column(width=20)
        table.add_column()
        rows = describe(reading)
        for name, frac, text in rows:
            table.add_row(name, bar(frac), text)
        self.text = f"GPU {reading.index}: {reading.name}\n" + "\n".join(
            f"{name} {text}" for name, _, text in rows
        )
        self.update(table)


class GpuPanel(VerticalScroll):
    """Every GPU's gauges, or why there are none. Polls itself once a second."""

    DEFAULT_CSS = """
    GpuPanel { height: 1fr; }
    GpuPanel > #gpu-status { height: auto; padding: 0 1; }
    GpuPanel > #gpu-status.-none { color: $warning; text-style: bold; }
    """

    class Updated(Message):
        """New readings (``[]`` without a GPU); the dashboard shows a summary."""

        def __init__(self, readings: list[gpu_api.GpuReading], reason: str) -> None:
            super().__init__()
            self.readings = readings
            self.reason = reason

    def __init__(self, interval: float = REFRESH_S, **kwargs) -> None:
        super().__init__(**kwargs)
        self.interval = interval
        self.readings: list[gpu_api.GpuReading] = []
        self.reason = ""
        self.status_text = "reading GPUs…"

    def compose(self) -> ComposeResult:
        yield Static(self.status_text, id="gpu-status")

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(self.interval, self.poll)

    def poll(self) -> None:
        self.run_worker(self._read, thread=True, exclusive=True, group="gpu", exit_on_error=False)

    def _read(self) -> None:
        try:
            readings = gpu_api.read_gpus()
            reason = "" if readings else (self.reason or gpu_api.gpu_status()[1])
        except Exception as exc:  # the engine promises not to raise; never trust a driver
            readings, reason = [], f"no NVIDIA GPU (reading failed: {exc})"
        self.app.call_from_thread(self.show, readings, reason)

    def show(self, readings: list[gpu_api.GpuReading], reason: str) -> None:
        self.readings, self.reason = readings, reason
        status = self.query_one("#gpu-status", Static)
        if readings:
            count = len(readings)
            self.status_text = f"{count} NVIDIA GPU{'s' if count != 1 else ''} · refreshed every {self.interval:g}s"
        else:
            self.status_text = reason or "no NVIDIA GPU"
        status.update(self.status_text)
        status.set_class(not readings, "-none")
        cards = list(self.query(GpuCard))
        if len(cards) != len(readings):
            for card in cards:
                card.remove()
            cards = [GpuCard() for _ in readings]
            self.mount_all(cards)
        for card, reading in zip(cards, readings, strict=True):
            card.show(reading)
        self.post_message(self.Updated(readings, reason))
