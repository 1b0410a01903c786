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

Splits are plugins (``register_splits`` in :mod:`seqrec_core.hookspecs`; the
built-ins ``leave_one_out`` and ``temporal`` are in ``seqrec_splits``). Core
keeps only the protocol default, leave-one-out (section 5.1): it is what
:class:`SequenceData` gets without an explicit split, and
:func:`~seqrec_core.plugins.load_plugins` registers :class:`LeaveOneOut` itself
when no plugin provides ``leave_one_out``, so a registry without split plugins
still splits.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

DEFAULT_SPLIT = "leave_one_out"


@dataclass(frozen=True)
class SplitArrays:
    """A split as per-user positions (see the module docstring).

    ``spec`` is the split's name and options (filled in by the core, it keys the
    cached ``split-<hash>.npz``); ``info`` is whatever the split wants to show
    and keep, e.g. the resolved time cutoffs (JSON-able values)."""

    train_end: np.ndarray
    valid_pos: np.ndarray
    test_pos: np.ndarray
    spec: dict[str, Any] = field(default_factory=lambda: {"name": DEFAULT_SPLIT})
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec.get("name", DEFAULT_SPLIT))


def split_spec(name: str = DEFAULT_SPLIT, options: BaseModel | None = None) -> dict[str, Any]:
    """A split's name and validated options as plain JSON-able data (unset,
    i.e. ``None``, options left out) — what the split cache is keyed by."""
    spec: dict[str, Any] = {"name": name}
    if options is not None:
        spec.update(options.model_dump(mode="json", exclude_none=True))
    return spec


def split_key(spec: dict[str, Any]) -> str:
    """A short stable hash of a split spec (cache file names)."""
    blob = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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
        spec={"name": DEFAULT_SPLIT},
    )


class LeaveOneOut:
    """The protocol's default split as a split component (no options): the
    last item is the test target, the one before it the validation target."""

    name = DEFAULT_SPLIT

    def split(
        self, offsets: np.ndarray, timestamps: np.ndarray | None, options: BaseModel | None
    ) -> SplitArrays:
        return leave_one_out(offsets)
