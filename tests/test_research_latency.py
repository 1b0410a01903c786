"""``seqrec bench latency``: the power-law fit on synthetic timings, and a tiny
CPU run through the CLI that writes tables and a plot."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from helpers import model_registry

import seqrec_core.cli
import seqrec_lstm
import seqrec_sasrec
from seqrec_core.errors import SeqrecError
from seqrec_core.research.latency import (
    LatencyConfig,
    LatencyRow,
    fit_power_law,
    fits,
    model_names,
    run_latency,
    time_call,
)
from seqrec_core.research.reports import PNG_MAGIC

LENGTHS = np.arange(64, 1537, 64)


@pytest.mark.parametrize("alpha", [0.13, 0.64, 0.98, 1.26, 2.0])
def test_alpha_fit_recovers_the_exponent(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    times = 2e-4 * LENGTHS**alpha * np.exp(rng.normal(0, 0.01, len(LENGTHS)))
    fit = fit_power_law(LENGTHS, times)
    assert fit.alpha == pytest.approx(alpha, abs=0.02)
    assert fit.r2 > 0.95
    assert fit.n == len(LENGTHS)
    assert np.allclose(fit.predict(LENGTHS), times, rtol=0.05)


def test_fit_skips_missing_points_and_reports_poor_fits():
    times = 1e-3 * LENGTHS.astype(float)
    times[3] = math.nan  # e.g. out of memory
    assert fit_power_law(LENGTHS, times).alpha == pytest.approx(1.0)
    assert fit_power_law(LENGTHS, times).n == len(LENGTHS) - 1
    noise = np.random.default_rng(0).uniform(1e-3, 2e-3, len(LENGTHS))
    assert fit_power_law(LENGTHS, noise).r2 < 0.5
    assert math.isnan(fit_power_law([64], [1.0]).alpha)


def test_fits_table_has_full_and_upper_range():
    rows = [LatencyRow("m", 32, int(n), 1e-4 * n**1.5, 10) for n in LENGTHS]
    (row,) = fits(rows)
    assert row["alpha"] == pytest.approx(1.5)
    assert row["alpha upper"] == pytest.approx(1.5)
    assert row["upper from L"] == LENGTHS[len(LENGTHS) // 2]


def test_time_call_counts_repeats():
    calls = []
    times = time_call(lambda: calls.append(1), "cpu", warmup=2, repeat=5)
    assert len(times) == 5 and len(calls) == 7 and all(t >= 0 for t in times)


def test_tiny_cpu_bench_and_report(monkeypatch, tmp_path):
    registry = model_registry(monkeypatch, tmp_path, seqrec_sasrec, seqrec_lstm)
    assert sorted(model_names(registry, [])) == ["lstm", "sasrec"]  # POP has nothing to time
    with pytest.raises(SeqrecError, match="unknown model"):
        model_names(registry, ["nope"])
    rows = run_latency(registry, LatencyConfig.tiny(models=["sasrec"], lengths=[8, 16]))
    assert [(r.batch, r.length) for r in rows] == [(2, 8), (8, 8), (2, 16), (8, 16)]
    assert all(r.seconds > 0 and r.tokens_per_s > 0 for r in rows)

    monkeypatch.setattr(seqrec_core.cli, "load_plugins", lambda **_: registry)
    out = tmp_path / "latency"
    argv = ["bench", "latency", "--tiny", "--lengths", "8", "16", "32", "--out", str(out)]
    assert seqrec_core.cli.main(argv) == 0
    assert (out / "latency.png").read_bytes()[:8] == PNG_MAGIC
    alpha = (out / "alpha.csv").read_text().splitlines()
    assert len(alpha) == 1 + 2 * 2  # two models × two batch sizes
    assert "L=32" in (out / "latency_ms.md").read_text()
    assert "Exponent α" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "argv0, expected",
    [
        ("/x/seqrec_core/cli.py", "seqrec bench latency"),
        ("/x/seqrec_core/__main__.py", "python -m seqrec_core bench latency"),
        ("/venv/bin/seqrec", "seqrec bench latency"),
    ],
)
def test_reports_name_the_command_a_user_would_type(monkeypatch, argv0, expected):
    from seqrec_core.research.reports import provenance

    monkeypatch.setattr(sys, "argv", [argv0, "bench", "latency"])
    assert provenance()["command"] == expected
