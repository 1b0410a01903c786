"""What the NVIDIA GPUs are doing right now: the engine's one GPU reader.

Used by the ``gpu_monitor`` callback (per-epoch utilisation, memory, temperature
and power in ``events.jsonl`` and TensorBoard) and by the TUI. Readings come
from NVML through ``pynvml`` (the ``nvidia-ml-py`` distribution), which talks to
the driver directly, so it sees every process on the GPU, not only PyTorch's
allocations, and costs no CUDA context.

Nothing here ever raises because a GPU, driver or library is missing: a CPU
machine gets ``[]`` from :func:`read_gpus` and ``(False, "no NVIDIA GPU (…)")``
from :func:`gpu_status`. A quantity a GPU cannot report (power on some boards,
say) is ``None`` in its :class:`GpuReading` rather than an error.

NVML numbers GPUs by PCI order and ignores ``CUDA_VISIBLE_DEVICES``, so on a
shared machine :func:`read_gpus` lists every GPU, each with NVML's ``index``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

#: How many training runs share this process's device, set by ``seqrec sweep/tune
#: --jobs`` for the processes it starts (recorded in metrics.json, so shared-GPU
#: times are read accordingly; a sharing run hands memory back after evaluations).
CONCURRENT_RUNS_ENV = "SEQREC_CONCURRENT_RUNS"


def concurrent_runs() -> int:
    """Runs sharing this process's device (``SEQREC_CONCURRENT_RUNS``; 1 if unset)."""
    try:
        return max(1, int(os.environ.get(CONCURRENT_RUNS_ENV, "1")))
    except ValueError:
        return 1


#: Fields of :class:`GpuReading` that :class:`GpuSampler` averages and maximises.
SAMPLED = ("utilization", "memory_used", "temperature", "power")


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment. ``None`` where NVML could not read a quantity."""

    index: int
    name: str
    utilization: float | None  # % of time a kernel ran over NVML's last sample period
    memory_used: int | None  # bytes
    memory_total: int | None  # bytes
    temperature: float | None  # °C
    power: float | None  # W
    power_limit: float | None  # W

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GpuSummary:
    """One GPU over a sampling window: mean and max of each sampled quantity."""

    index: int
    name: str
    samples: int
    utilization_mean: float | None
    utilization_max: float | None
    memory_used_mean: float | None
    memory_used_max: int | None
    temperature_mean: float | None
    temperature_max: float | None
    power_mean: float | None
    power_max: float | None
    memory_total: int | None
    power_limit: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # pynvml's messages look like "NVML Shared Library Not Found" / "Driver Not Loaded".
    if text.lower().startswith("nvml "):
        text = text[5:]
    return text.lower()


def _import_pynvml() -> tuple[ModuleType | None, str]:
    try:
        import pynvml
    except Exception as exc:  # ImportError, or a broken install
        return None, f"no NVIDIA GPU (nvidia-ml-py is not installed: {_error_text(exc)})"
    return pynvml, ""


def _call(fn: Any, *args: Any) -> Any:
    """``fn(*args)``, or ``None`` when NVML cannot answer (unsupported, GPU lost, …)."""
    try:
        return fn(*args)
    except Exception:
        return None


class _Nvml:
    """One ``nvmlInit`` … ``nvmlShutdown`` session with the device handles."""

    def __init__(self) -> None:
        self.module: ModuleType | None = None
        self.handles: list[Any] = []
        self.names: list[str] = []
        self.reason = "NVML session not opened"

    @property
    def is_open(self) -> bool:
        return self.module is not None

    def open(self) -> bool:
        if self.is_open:
            return True
        nvml, reason = _import_pynvml()
        if nvml is None:
            self.reason = reason
            return False
        try:
            nvml.nvmlInit()
        except Exception as exc:
            self.reason = f"no NVIDIA GPU (NVML: {_error_text(exc)})"
            return False
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:
            _call(nvml.nvmlShutdown)
            self.reason = f"no NVIDIA GPU (NVML: {_error_text(exc)})"
            return False
        if not handles:
            _call(nvml.nvmlShutdown)
            self.reason = "no NVIDIA GPU (NVML found no devices)"
            return False
        self.module, self.handles = nvml, handles
        self.names = [self._name(h, i) for i, h in enumerate(handles)]
        self.reason = ""
        return True

    def _name(self, handle: Any, index: int) -> str:
        name = _call(self.module.nvmlDeviceGetName, handle)
        if isinstance(name, bytes):  # older pynvml returns bytes
            name = name.decode(errors="replace")
        return str(name) if name else f"GPU {index}"

    def read(self) -> list[GpuReading]:
        nvml = self.module
        if nvml is None:
            return []
        readings = []
        for index, handle in enumerate(self.handles):
            util = _call(nvml.nvmlDeviceGetUtilizationRates, handle)
            mem = _call(nvml.nvmlDeviceGetMemoryInfo, handle)
            temp = _call(
                nvml.nvmlDeviceGetTemperature, handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)
            )
            power_mw = _call(nvml.nvmlDeviceGetPowerUsage, handle)
            limit_mw = _call(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            readings.append(
                GpuReading(
                    index=index,
                    name=self.names[index],
                    utilization=_float(getattr(util, "gpu", None)),
                    memory_used=_int(getattr(mem, "used", None)),
                    memory_total=_int(getattr(mem, "total", None)),
                    temperature=_float(temp),
                    power=None if power_mw is None else _float(power_mw / 1000.0),
                    power_limit=None if limit_mw is None else _float(limit_mw / 1000.0),
                )
            )
        return readings

    def close(self) -> None:
        if self.module is not None:
            _call(self.module.nvmlShutdown)
            self.reason = "NVML session closed"
        self.module, self.handles, self.names = None, [], []


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def read_gpus() -> list[GpuReading]:
    """One reading per NVIDIA GPU; ``[]`` when there is none (or no driver/library)."""
    session = _Nvml()
    if not session.open():
        return []
    try:
        return session.read()
    finally:
        session.close()


def gpu_status() -> tuple[bool, str]:
    """``(True, "2 NVIDIA GPUs: …")`` or ``(False, "no NVIDIA GPU (<why>)")``."""
    session = _Nvml()
    if not session.open():
        return False, session.reason
    try:
        names = ", ".join(f"{i}: {n}" for i, n in enumerate(session.names))
        count = len(session.names)
        return True, f"{count} NVIDIA GPU{'s' if count != 1 else ''} ({names})"
    finally:
        session.close()


class _Stats:
    """Running count, sum and max of one quantity, ignoring ``None``."""

    __slots__ = ("count", "total", "peak")

    def __init__(self) -> None:
        self.count, self.total, self.peak = 0, 0.0, None

    def add(self, value: float | None) -> None:
        if value is None:
            return
        self.count += 1
        self.total += value
        self.peak = value if self.peak is None else max(self.peak, value)

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class GpuSampler:
    """Samples every GPU every ``interval`` seconds in a daemon thread.

    Keeps, per GPU, the mean and max of utilisation, memory used, temperature
    and power since the last ``summary(reset=True)``, so a caller can ask "what
    did this epoch look like" without sampling itself. ``sample_once`` takes a
    sample in the caller's thread (tests, or short windows). On a machine
    without a GPU everything works and returns ``[]``; ``available`` and
    ``reason`` say why.

    ::

        with GpuSampler(interval=1.0) as sampler:
            train_one_epoch()
            per_gpu = sampler.summary()
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = float(interval)
        self._nvml = _Nvml()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: list[GpuReading] = []
        self._stats: dict[int, dict[str, _Stats]] = {}
        self._samples: dict[int, int] = {}
        self._static: dict[int, GpuReading] = {}
        self._tried = False

    @property
    def available(self) -> bool:
        self._ensure_open()
        return self._nvml.is_open

    @property
    def reason(self) -> str:
        """Why there are no readings ("" when there are)."""
        self._ensure_open()
        return self._nvml.reason

    def _ensure_open(self) -> bool:
        with self._lock:
            if not self._tried:
                self._tried = True
                self._nvml.open()
            return self._nvml.is_open

    def start(self) -> GpuSampler:
        """Open NVML and start the sampling thread (nothing to do without a GPU)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        with self._lock:
            if not self._nvml.is_open:  # a fresh start after stop() retries NVML
                self._tried = False
        if not self._ensure_open() or self.interval <= 0:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="seqrec-gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            self.sample_once()
            if self._stop.wait(self.interval):
                return

    def sample_once(self) -> list[GpuReading]:
        """Read every GPU now and add the readings to the running statistics."""
        if not self._ensure_open():
            return []
        with self._lock:
            if not self._nvml.is_open:  # stopped meanwhile
                return []
            readings = self._nvml.read()
            for r in readings:
                stats = self._stats.setdefault(r.index, {f: _Stats() for f in SAMPLED})
                for f in SAMPLED:
                    stats[f].add(getattr(r, f))
                self._samples[r.index] = self._samples.get(r.index, 0) + 1
                self._static[r.index] = r
            self._latest = readings
        return readings

    def latest(self) -> list[GpuReading]:
        """The most recent readings (``[]`` before the first sample or without a GPU)."""
        with self._lock:
            return list(self._latest)

    def summary(self, reset: bool = True) -> list[GpuSummary]:
        """Per-GPU mean/max since the last reset; samples once if none was taken."""
        if not self._samples:
            self.sample_once()
        with self._lock:
            out = []
            for index in sorted(self._stats):
                s, r = self._stats[index], self._static[index]
                out.append(
                    GpuSummary(
                        index=index,
                        name=r.name,
                        samples=self._samples.get(index, 0),
                        utilization_mean=s["utilization"].mean,
                        utilization_max=s["utilization"].peak,
                        memory_used_mean=s["memory_used"].mean,
                        memory_used_max=_int(s["memory_used"].peak),
                        temperature_mean=s["temperature"].mean,
                        temperature_max=s["temperature"].peak,
                        power_mean=s["power"].mean,
                        power_max=s["power"].peak,
                        memory_total=r.memory_total,
                        power_limit=r.power_limit,
                    )
                )
            if reset:
                self._stats, self._samples = {}, {}
        return out

    def reset(self) -> None:
        """Forget the statistics gathered so far (a new window starts now)."""
        with self._lock:
            self._stats, self._samples = {}, {}

    def stop(self) -> None:
        """Stop the thread and shut NVML down; safe to call more than once."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(self.interval, 1.0) + 1.0)
        with self._lock:
            self._nvml.close()

    def __enter__(self) -> GpuSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
