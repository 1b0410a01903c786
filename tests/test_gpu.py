"""seqrec_core.gpu against a fake NVML (two GPUs) and against this machine."""

from __future__ import annotations

import sys
import time
import types
from types import SimpleNamespace

import pytest
import torch

from seqrec_core import gpu
from seqrec_core.events import EventBus
from seqrec_core.gpu import GpuSampler, gpu_status, read_gpus

GIB = 2**30


class FakeNvml(types.ModuleType):
    """Just enough of pynvml: GPUs are dicts whose values the test may change."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: list[dict], init_error: str | None = None) -> None:
        super().__init__("pynvml")
        self.gpus = gpus
        self.init_error = init_error
        self.inits = 0
        self.shutdowns = 0

    def _get(self, handle: int, key: str):
        value = self.gpus[handle][key]
        if value is None:
            raise self.NVMLError("Not Supported")
        return value

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return self._get(handle, "name")

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=self._get(handle, "util"), memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle):
        used, total = self._get(handle, "used"), self._get(handle, "total")
        return SimpleNamespace(used=used, total=total, free=total - used)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._get(handle, "temp")

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._get(handle, "power_mw")

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self._get(handle, "limit_mw")


def two_gpus() -> list[dict]:
    return [
        dict(
            name="NVIDIA H200",
            util=50,
            used=10 * GIB,
            total=141 * GIB,
            temp=40,
            power_mw=300_000,
            limit_mw=700_000,
        ),
        dict(
            name=b"NVIDIA H100",  # older pynvml returns bytes
            util=0,
            used=1 * GIB,
            total=80 * GIB,
            temp=30,
            power_mw=None,  # "Not Supported"
            limit_mw=None,
        ),
    ]


@pytest.fixture
def fake_nvml(monkeypatch) -> FakeNvml:
    fake = FakeNvml(two_gpus())
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


# -- no GPU ----------------------------------------------------------------------


def test_missing_library_is_a_reason_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` fail
    assert read_gpus() == []
    ok, reason = gpu_status()
    assert not ok
    assert reason.startswith("no NVIDIA GPU (nvidia-ml-py is not installed")


def test_missing_driver_is_a_reason_not_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], init_error="Driver Not Loaded"))
    assert read_gpus() == []
    assert gpu_status() == (False, "no NVIDIA GPU (NVML: driver not loaded)")
    with GpuSampler(interval=0.01) as sampler:
        assert not sampler.available
        assert sampler.reason == "no NVIDIA GPU (NVML: driver not loaded)"
        assert sampler.sample_once() == []


def test_no_devices_shuts_nvml_down(monkeypatch):
    fake = FakeNvml([])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert gpu_status() == (False, "no NVIDIA GPU (NVML found no devices)")
    assert fake.inits == fake.shutdowns == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_this_machine_without_gpu():
    if gpu_status()[0]:
        pytest.skip("NVML sees a GPU here")
    assert read_gpus() == []
    ok, reason = gpu_status()
    assert not ok and "no NVIDIA GPU" in reason
    sampler = GpuSampler(interval=0.01).start()
    try:
        assert sampler.sample_once() == []
        assert sampler.latest() == []
        assert sampler.summary() == []
        assert "no NVIDIA GPU" in sampler.reason
    finally:
        sampler.stop()
    sampler.stop()  # twice is fine
    with GpuSampler() as sampler:
        assert sampler.summary(reset=False) == []


# -- fake NVML -------------------------------------------------------------------


def test_read_gpus_parses_readings(fake_nvml):
    first, second = read_gpus()
    assert first == gpu.GpuReading(
        index=0,
        name="NVIDIA H200",
        utilization=50.0,
        memory_used=10 * GIB,
        memory_total=141 * GIB,
        temperature=40.0,
        power=300.0,  # milliwatts → watts
        power_limit=700.0,
    )
    assert second.name == "NVIDIA H100"
    assert (second.power, second.power_limit) == (None, None)  # unsupported, not an error
    assert second.memory_total == 80 * GIB
    assert fake_nvml.inits == fake_nvml.shutdowns == 1


def test_gpu_status_names_the_gpus(fake_nvml):
    assert gpu_status() == (True, "2 NVIDIA GPUs (0: NVIDIA H200, 1: NVIDIA H100)")


def test_sampler_mean_and_max_since_reset(fake_nvml):
    sampler = GpuSampler(interval=60)
    for util, used, temp, power_mw in [(20, 4, 40, 100_000), (60, 12, 50, 300_000)]:
        fake_nvml.gpus[0].update(util=util, used=used * GIB, temp=temp, power_mw=power_mw)
        sampler.sample_once()
    assert sampler.latest()[0].utilization == 60.0

    first, second = sampler.summary(reset=True)
    assert first.samples == 2
    assert first.utilization_mean == pytest.approx(40.0)
    assert first.utilization_max == 60.0
    assert first.memory_used_mean == pytest.approx(8 * GIB)
    assert first.memory_used_max == 12 * GIB
    assert first.temperature_mean == pytest.approx(45.0)
    assert first.temperature_max == 50.0
    assert first.power_mean == pytest.approx(200.0)
    assert first.power_max == 300.0
    assert (first.memory_total, first.power_limit) == (141 * GIB, 700.0)
    assert second.power_mean is None and second.utilization_mean == 0.0

    # After a reset with nothing sampled, summary() takes one fresh sample.
    fake_nvml.gpus[0].update(util=90)
    again = sampler.summary(reset=False)
    assert again[0].samples == 1 and again[0].utilization_mean == 90.0
    sampler.reset()
    sampler.stop()
    assert fake_nvml.inits == fake_nvml.shutdowns == 1


def test_sampler_thread_samples_and_stops(fake_nvml):
    with GpuSampler(interval=0.005) as sampler:
        deadline = time.monotonic() + 5
        while sampler.summary(reset=False)[0].samples < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sampler.summary()[0].samples >= 3
        thread = sampler._thread
        assert thread is not None and thread.daemon
    assert not thread.is_alive()
    assert fake_nvml.inits == fake_nvml.shutdowns == 1


def test_gpu_monitor_with_fake_gpus_feeds_tensorboard(fake_nvml, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from seqrec_gpu import GpuMonitor, GpuMonitorOptions
    from seqrec_tensorboard import TensorBoardCallback

    run = SimpleNamespace(name="gpu-run", run_dir=tmp_path, recipe=None, seed=1)
    # tensorboard is registered last, so without tryfirst it would run before gpu_monitor
    monitor = GpuMonitor(GpuMonitorOptions(interval=60))
    bus = EventBus(tmp_path / "events.jsonl", [monitor, TensorBoardCallback()], run=run)
    bus.emit("fit_start", run="gpu-run", params=10, epochs=1, batches=1)
    bus.emit("epoch_start", epoch=1, batches=1)
    fake_nvml.gpus[0].update(util=80, used=20 * GIB, power_mw=500_000)
    monitor.sampler.sample_once()
    event = bus.emit("epoch_end", epoch=1, train_loss=1.0, metrics={}, epoch_time=1.0)
    bus.emit("fit_end", status="completed", test={}, valid={})
    bus.close()

    h200 = event["gpu"][0]
    assert "gpu_status" not in event
    assert h200["index"] == 0 and h200["name"] == "NVIDIA H200"
    assert h200["memory_used"] == 20 * GIB and h200["memory_total"] == 141 * GIB
    assert h200["power_limit"] == 700.0
    assert h200["samples"] >= 1
    assert monitor.sampler is None  # stopped at fit_end
    assert fake_nvml.inits == fake_nvml.shutdowns

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in ("utilization", "memory_used_mib", "temperature", "power_w"):
        assert f"gpu/0/{tag}" in scalars
        assert f"gpu/1/{tag}" in scalars or tag == "power_w"  # GPU 1 reports no power
    assert acc.Scalars("gpu/0/memory_used_mib")[0].value == 20 * 1024


# -- a real GPU ------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_read_gpus_on_a_real_gpu():
    readings = read_gpus()
    assert readings, gpu_status()[1]
    assert all(r.memory_total and r.memory_total > 0 for r in readings)
    assert gpu_status()[0]
    with GpuSampler(interval=0.05) as sampler:
        torch.ones(1024, 1024, device="cuda").sum().item()
        summary = sampler.summary()
    assert summary and summary[0].samples >= 1 and summary[0].memory_used_max
