"""seqrec_splits: the built-in splits (``docs/protocol.md``, section 5).

* ``leave_one_out`` (the default): the last item of each user is the test
  target, the one before it the validation target. It is the protocol's
  default, so its class lives in core (:class:`seqrec_core.data.splits.LeaveOneOut`,
  used even when this plugin is disabled); registering it here lists it with
  the other splits.
* ``temporal``: global time cutoffs for validation and test, given as
  quantiles of all interaction times or as timestamps / ISO dates.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqrec_core import hookimpl
from seqrec_core.data.splits import LeaveOneOut, SplitArrays
from seqrec_core.errors import DataError

DEFAULT_QUANTILES = (0.8, 0.9)  # validation and test cutoffs

Cutoff = float | dt.datetime | dt.date | str | None


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


def check_temporal(cutoff_by: str, valid_cutoff: Any, test_cutoff: Any) -> tuple[float, float]:
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
    )


class TemporalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cutoff_by: Literal["quantile", "timestamp"] = Field(
        "quantile",
        description="cutoffs are quantiles of all interaction times (0.9: the last 10% of "
        "interactions are at/after it), or timestamps (epoch seconds or ISO dates)",
    )
    valid_cutoff: Cutoff = Field(
        None, description="start of the validation period (default quantile 0.8)"
    )
    test_cutoff: Cutoff = Field(None, description="start of the test period (default quantile 0.9)")

    @model_validator(mode="after")
    def _cutoffs(self) -> TemporalOptions:
        check_temporal(self.cutoff_by, self.valid_cutoff, self.test_cutoff)
        return self


class Temporal:
    """Global time cutoffs (protocol section 5.2)."""

    name = "temporal"
    Options = TemporalOptions

    def split(
        self, offsets: np.ndarray, timestamps: np.ndarray | None, options: TemporalOptions
    ) -> SplitArrays:
        if timestamps is None:
            raise DataError(
                "split.name is temporal but this dataset has no timestamps (its file order is "
                "its time order); use split: {name: leave_one_out} or a dataset with times"
            )
        try:
            valid, test = check_temporal(
                options.cutoff_by, options.valid_cutoff, options.test_cutoff
            )
        except ValueError as exc:
            raise DataError(str(exc)) from None
        info: dict[str, Any] = {"cutoff_by": options.cutoff_by}
        if options.cutoff_by == "quantile":
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
        return SplitArrays(arrays.train_end, arrays.valid_pos, arrays.test_pos, info=info)


@hookimpl
def register_splits(register):
    register(LeaveOneOut)
    register(Temporal)
