"""Splits: which part of each user's sequence is training, validation target and
test target (``docs/protocol.md``, section 5).

Every split is three per-user arrays over the CSR sequences of
:class:`~seqrec_core.data.core.SequenceData` (absolute positions into
``items``, so the arrays work with ``offsets`` directly):

* ``train_end[u]`` — end (exclusive) of the training part ``[offsets[u], train_end[u])``;
* ``valid_pos[u]`` — position of the validation target, ``-1`` when the user has none;
* ``test_pos[u]`` — position of the test target, ``-1`` when the user has none.

An input history is always a prefix of the user's chronological sequence
(everything before the target), so training windows, evaluation batches and
the models see the same contiguous slices for every split.

Two splits exist: ``leave_one_out`` (the last item is the test target, the one
before it the validation target) and ``temporal`` (global time cutoffs, given
as timestamps or as quantiles of all interaction times).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqrec_core.errors import DataError

SPLITS = ("leave_one_out", "temporal")
DEFAULT_QUANTILES = (0.8, 0.9)  # temporal split: validation and test cutoffs


@dataclass(frozen=True)
class SplitArrays:
    """A split as per-user positions (see the module docstring)."""

    train_end: np.ndarray
    valid_pos: np.ndarray
    test_pos: np.ndarray
    spec: dict[str, Any] = field(default_factory=lambda: {"name": "leave_one_out"})
    info: dict[str, Any] = field(default_factory=dict)  # e.g. resolved cutoffs

    @property
    def name(self) -> str:
        return str(self.spec.get("name", "leave_one_out"))


def split_spec(section: Any) -> dict[str, Any]:
    """The recipe's ``split:`` section (or None) as plain JSON-able data."""
    if section is None:
        return {"name": "leave_one_out"}
    if hasattr(section, "model_dump"):
        section = section.model_dump(mode="json")
    spec = {k: v for k, v in dict(section).items() if v is not None}
    spec.setdefault("name", "leave_one_out")
    if spec["name"] == "leave_one_out":
        return {"name": "leave_one_out"}
    return spec


def split_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a split spec (cache file names)."""
    blob = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------- leave-one-out


def leave_one_out(offsets: np.ndarray) -> SplitArrays:
    """Users with ``n >= 3`` interactions: test target ``s[n-1]``, validation
    target ``s[n-2]``, training ``s[0..n-3]``; shorter users are training only."""
    offsets = np.asarray(offsets, dtype=np.int64)
    start, stop = offsets[:-1], offsets[1:]
    evaluated = stop - start >= 3
    return SplitArrays(
        train_end=np.where(evaluated, stop - 2, stop),
        valid_pos=np.where(evaluated, stop - 2, -1),
        test_pos=np.where(evaluated, stop - 1, -1),
        spec={"name": "leave_one_out"},
    )


# ----------------------------------------------------------------- temporal


def to_epoch_seconds(value: Any, what: str) -> float:
    """A cutoff given as a number (used as is) or an ISO date/time (UTC unless
    it carries an offset) → seconds since 1970-01-01 UTC."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a timestamp or an ISO date, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, dt.date):
        moment = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{what}: {value!r} is neither a number nor an ISO date/time "
                "(e.g. 2008-01-01 or 2008-01-01T12:00:00)"
            ) from None
    else:
        raise ValueError(f"{what}: expected a timestamp or an ISO date, got {value!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def check_temporal(
    cutoff_by: str, valid_cutoff: Any, test_cutoff: Any
) -> tuple[float | None, float | None]:
    """Validate a temporal split's cutoffs (raises ``ValueError`` with the fix);
    returns them as numbers (quantiles or epoch seconds)."""
    if cutoff_by == "quantile":
        if valid_cutoff is None and test_cutoff is None:
            return DEFAULT_QUANTILES
        out = []
        for key, value, default in zip(
            ("valid_cutoff", "test_cutoff"),
            (valid_cutoff, test_cutoff),
            DEFAULT_QUANTILES,
            strict=True,
        ):
            value = default if value is None else value
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
                raise ValueError(
                    f"split.{key} is {value!r}; with cutoff_by: quantile it must be a fraction "
                    "between 0 and 1 (e.g. 0.9), or set cutoff_by: timestamp"
                )
            out.append(float(value))
    else:
        if valid_cutoff is None or test_cutoff is None:
            raise ValueError(
                "with cutoff_by: timestamp set both split.valid_cutoff and split.test_cutoff "
                "(epoch seconds or ISO dates such as 2008-01-01)"
            )
        out = [
            to_epoch_seconds(valid_cutoff, "split.valid_cutoff"),
            to_epoch_seconds(test_cutoff, "split.test_cutoff"),
        ]
    if not out[0] < out[1]:
        shown = [
            v if c is None else c for v, c in zip(out, (valid_cutoff, test_cutoff), strict=True)
        ]
        raise ValueError(
            f"split.valid_cutoff ({shown[0]!r}) must be before split.test_cutoff ({shown[1]!r})"
        )
    return out[0], out[1]


def quantile_cutoff(timestamps: np.ndarray, q: float) -> float:
    """The ``k``-th smallest timestamp, ``k = floor(q * n)`` (0-based): at most a
    fraction ``q`` of the interactions are strictly before it."""
    n = len(timestamps)
    if n == 0:
        raise DataError("the temporal split needs interactions; the dataset is empty")
    k = min(n - 1, int(np.floor(q * n)))
    return float(np.partition(np.asarray(timestamps), k)[k])


def temporal(
    offsets: np.ndarray, timestamps: np.ndarray, valid_cutoff: float, test_cutoff: float
) -> SplitArrays:
    """Global time cutoffs ``valid_cutoff < test_cutoff``, per user with the
    chronological sequence ``s`` and times ``t``:

    * training: every ``s[i]`` with ``t[i] < valid_cutoff``;
    * validation target: the first ``s[i]`` with ``valid_cutoff <= t[i] < test_cutoff``,
      input = everything before it (= the training part);
    * test target: the first ``s[i]`` with ``t[i] >= test_cutoff``, input =
      everything before it (training part and validation period);
    * a target needs at least one item before it (otherwise the user has no
      target in that split).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    t = np.asarray(timestamps)
    start, stop = offsets[:-1], offsets[1:]

    def first_at_or_after(cutoff: float) -> np.ndarray:
        # Sequences are sorted by time, so the first position at/after the
        # cutoff is the user's start plus the number of earlier interactions.
        before = np.concatenate([[0], np.cumsum(t < cutoff, dtype=np.int64)])
        return start + (before[stop] - before[start])

    train_end = first_at_or_after(valid_cutoff)
    test_first = first_at_or_after(test_cutoff)
    has_valid = (train_end < stop) & (train_end < test_first) & (train_end > start)
    has_test = (test_first < stop) & (test_first > start)
    return SplitArrays(
        train_end=train_end,
        valid_pos=np.where(has_valid, train_end, -1),
        test_pos=np.where(has_test, test_first, -1),
        spec={},
    )


def make_split(offsets: np.ndarray, timestamps: np.ndarray | None, spec: dict) -> SplitArrays:
    """The split described by ``spec`` (see :func:`split_spec`)."""
    name = spec.get("name", "leave_one_out")
    if name == "leave_one_out":
        return leave_one_out(offsets)
    if name != "temporal":
        raise DataError(f"unknown split '{name}'; available: {', '.join(SPLITS)}")
    if timestamps is None:
        raise DataError(
            "split.name is temporal but this dataset has no timestamps (its file order is "
            "its time order); use split: {name: leave_one_out} or a dataset with times"
        )
    cutoff_by = spec.get("cutoff_by", "quantile")
    try:
        valid, test = check_temporal(cutoff_by, spec.get("valid_cutoff"), spec.get("test_cutoff"))
    except ValueError as exc:
        raise DataError(str(exc)) from None
    info: dict[str, Any] = {"cutoff_by": cutoff_by}
    if cutoff_by == "quantile":
        info.update(valid_quantile=valid, test_quantile=test)
        valid = quantile_cutoff(timestamps, valid)
        test = quantile_cutoff(timestamps, test)
        if not valid < test:
            raise DataError(
                f"split: the valid and test quantiles ({info['valid_quantile']}, "
                f"{info['test_quantile']}) both fall on timestamp {valid:g}; move them apart"
            )
    info.update(valid_cutoff=valid, test_cutoff=test)
    arrays = temporal(offsets, timestamps, valid, test)
    return SplitArrays(arrays.train_end, arrays.valid_pos, arrays.test_pos, dict(spec), info)
