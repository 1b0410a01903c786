"""The benchmarks' shared helpers: ``--option KEY=VALUE`` model options."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import benchtools  # noqa: E402

import seqrec_sasrec  # noqa: E402
import seqrec_xlstm  # noqa: E402

SASREC, XLSTM = seqrec_sasrec.SASRec, seqrec_xlstm.XLSTM


def size_args(**extra):
    base = dict(dim=16, blocks=1, heads=2, max_len=32, items=50, batch=2, option=None)
    return SimpleNamespace(**{**base, **extra})


def test_options_are_yaml_values_applied_to_the_models_that_have_them():
    opts = benchtools.parse_options(
        ["chunk_size=16", "triton_args={num_warps_intra: 4}", "dropout=0.3"], [SASREC, XLSTM]
    )
    assert opts == {"chunk_size": 16, "triton_args": {"num_warps_intra": 4}, "dropout": 0.3}
    args = size_args(option=opts)
    x = benchtools.build_model(XLSTM, args)
    s = benchtools.build_model(SASREC, args)
    assert x.options.chunk_size == 16 and x.options.triton_args == {"num_warps_intra": 4}
    assert x.options.dropout == 0.3 and s.options.dropout == 0.3
    assert not hasattr(s.options, "chunk_size")


@pytest.mark.parametrize(
    "pairs, needle",
    [(["chunk"], "expected KEY=VALUE"), (["chunk_size=16"], "no benchmarked model has it")],
)
def test_bad_options_are_one_line_errors(pairs, needle):
    with pytest.raises(SystemExit, match=needle):
        benchtools.parse_options(pairs, [SASREC])
