"""Interaction tables → filtered, remapped, chronologically ordered CSR sequences
with a split (leave-one-out unless a split plugin gives another,
:mod:`seqrec_core.data.splits`). See
``docs/protocol.md`` for the exact rules."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel

from seqrec_core.data.splits import SplitArrays, leave_one_out
from seqrec_core.errors import DataError

Split = Literal["train", "valid", "test"]
PAD = 0


@dataclass
class RawData:
    """What a dataset plugin returns.

    ``interactions``: columns ``user``, ``item`` and optionally ``timestamp``
    (numeric) and ``rating``; rows in the original file order (the tie-break for
    equal timestamps). Without ``timestamp`` the file order is the time order.
    ``items``: optional metadata indexed by raw item id, with at least ``title``
    (other columns, e.g. ``year``, ``genres``, are kept as they are).
    ``users``: optional metadata indexed by raw user id.
    """

    interactions: pd.DataFrame
    items: pd.DataFrame | None = None
    users: pd.DataFrame | None = None


class DatasetSource(Protocol):
    """The interface a dataset plugin class implements."""

    name: str
    Options: type[BaseModel]

    def load(self, options: Any) -> RawData: ...

    def fingerprint(self, options: Any) -> str:
        """A string that changes when the source files change (sizes, mtimes)."""
        ...


class IdMap:
    """Raw ids ↔ internal ids. ``offset`` is 1 for items (0 is padding), 0 for users."""

    def __init__(self, raw: np.ndarray, offset: int):
        self.raw = np.asarray(raw)
        self.offset = offset
        self._index: dict[Any, int] | None = None

    def __len__(self) -> int:
        return len(self.raw)

    def _lookup(self) -> dict[Any, int]:
        if self._index is None:
            self._index = {k: i + self.offset for i, k in enumerate(self.raw.tolist())}
        return self._index

    def to_internal(self, raw_ids: Any) -> np.ndarray:
        """Internal ids of ``raw_ids``; raises ``KeyError`` naming an unknown id."""
        index = self._lookup()
        out = []
        for r in np.atleast_1d(np.asarray(raw_ids)).tolist():
            key = _coerce(r, self.raw.dtype)
            if key not in index:
                raise KeyError(r)
            out.append(index[key])
        return np.asarray(out, dtype=np.int64)

    def to_raw(self, internal: Any) -> np.ndarray:
        idx = np.asarray(internal, dtype=np.int64) - self.offset
        bad = (idx < 0) | (idx >= len(self.raw))
        if bad.any():
            first = int(np.asarray(internal, dtype=np.int64)[bad].ravel()[0])
            raise KeyError(
                f"internal id {first} has no raw id "
                f"(valid: {self.offset}..{self.offset + len(self.raw) - 1})"
            )
        return self.raw[idx]

    def digest(self) -> str:
        """SHA-256 of the raw ids in internal order: identifies the mapping."""
        return hashlib.sha256(json.dumps(self.raw.tolist()).encode()).hexdigest()


def _coerce(value: Any, dtype: np.dtype) -> Any:
    if dtype.kind in "iu":
        if isinstance(value, float):
            return int(value) if value.is_integer() else value
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    return str(value)


def _raw_id_array(values: np.ndarray) -> np.ndarray:
    """Raw ids as a non-object array (ints if they all are, else unicode)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
        return arr.astype(np.int64)
    return arr.astype(str)


def validate_interactions(df: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in ("user", "item") if c not in df.columns]
    if missing:
        raise DataError(f"{source}: interaction table lacks column(s) {missing}")
    for col in ("user", "item"):
        if df[col].isna().any():
            row = int(np.flatnonzero(df[col].isna().to_numpy())[0])
            raise DataError(f"{source}: row {row + 1}: empty {col} id")
    if "timestamp" in df.columns and not pd.api.types.is_numeric_dtype(df["timestamp"]):
        raise DataError(
            f"{source}: column 'timestamp' must be numeric, got {df['timestamp'].dtype}"
        )
    return df


def filter_interactions(
    df: pd.DataFrame,
    min_rating: float | None = None,
    user_core: int = 0,
    item_core: int = 0,
    user_fraction: float = 1.0,
    user_sample_seed: int = 0,
) -> pd.DataFrame:
    """Rating threshold, user subsample, then iterative k-core, keeping the
    original row order."""
    if min_rating is not None:
        if "rating" not in df.columns:
            raise DataError("dataset.min_rating is set but this dataset has no ratings; remove it")
        keep = (df["rating"] >= min_rating).to_numpy()
        if not keep.all():
            df = df.take(np.flatnonzero(keep))
    if user_fraction < 1.0:
        df = subsample_users(df, user_fraction, user_sample_seed)
    return kcore(df, user_core, item_core)


def subsample_users(df: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """Keep all interactions of a seeded random ``fraction`` of the users (at
    least one). Nested: with the same seed, a smaller fraction keeps a subset of
    the users a larger one keeps, so data-size sweeps compare like with like."""
    codes, uniques = factorize(df["user"], sort=True)
    order = np.random.default_rng(seed).permutation(len(uniques))
    n_keep = max(1, int(round(fraction * len(uniques))))
    chosen = np.zeros(len(uniques), dtype=bool)
    chosen[order[:n_keep]] = True
    return df.take(np.flatnonzero(chosen[codes]))


def kcore(df: pd.DataFrame, user_core: int, item_core: int) -> pd.DataFrame:
    """Drop users with < ``user_core`` and items with < ``item_core`` interactions,
    repeatedly, until both hold for every remaining row (a fixed point)."""
    if user_core <= 1 and item_core <= 1 or len(df) == 0:
        return df
    users, _ = factorize(df["user"], sort=False)
    items, _ = factorize(df["item"], sort=False)
    n_users, n_items = int(users.max()) + 1, int(items.max()) + 1
    rows = None  # positions still kept; None: all (the arrays shrink every pass)
    while True:
        ok = np.bincount(users, minlength=n_users)[users] >= user_core
        ok &= np.bincount(items, minlength=n_items)[items] >= item_core
        if ok.all():
            break
        rows = np.flatnonzero(ok) if rows is None else rows[ok]
        users, items = users[ok], items[ok]
    # take() by position is several times faster than boolean indexing on 20M rows
    return df if rows is None else df.take(rows)


def factorize(values: pd.Series | np.ndarray, sort: bool = True) -> tuple[np.ndarray, Any]:
    """``pd.factorize`` (int64 codes, uniques), with a fast path for
    non-negative integer ids of a bounded range (MovieLens, Steam): a presence
    table instead of hashing, about 5x faster on 20M rows. Uniques come out
    sorted either way when ``sort``."""
    arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
    if arr.dtype.kind in "iu" and len(arr):
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi < max(1 << 20, 4 * len(arr)):
            present = np.zeros(hi + 1, dtype=bool)
            present[arr] = True
            code_of = np.cumsum(present, dtype=np.int64) - 1
            return code_of[arr], np.flatnonzero(present).astype(arr.dtype)
    codes, uniques = pd.factorize(values, sort=sort)
    return codes.astype(np.int64, copy=False), uniques


def chronological_order(user_codes: np.ndarray, timestamps: np.ndarray | None) -> np.ndarray:
    """Row order by (user, timestamp, original row): a stable sort on one
    combined int64 key (much faster than ``np.lexsort`` on 20M rows)."""
    user_codes = np.asarray(user_codes, dtype=np.int64)
    if timestamps is None:
        return np.argsort(user_codes, kind="stable")
    t = np.asarray(timestamps)
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64)
    if t.dtype.kind in "iu" or (
        t.dtype.kind == "f"
        and np.isfinite(t).all()
        and np.abs(t).max() < 2**52
        and np.all(np.mod(t, 1) == 0)
    ):
        t = t.astype(np.int64, copy=False)
        key = t - t.min()  # the time rank part of the key, built in place below
    else:
        # Dense ranks keep ties tied (and NaN last, as a sort would).
        key = np.unique(t, return_inverse=True)[1].astype(np.int64, copy=False).ravel()
    bits = max(1, int(key.max()).bit_length())
    if bits + int(user_codes.max()).bit_length() >= 63:  # does not fit one key
        return np.lexsort([np.arange(len(user_codes)), t, user_codes])
    key |= user_codes << bits
    return np.argsort(key, kind="stable")


@dataclass
class SequenceData:
    """Chronological item sequences in CSR form with a split.

    Users are rows ``0..n_users-1``; items are ``1..n_items`` with 0 as padding.
    ``items[offsets[u]:offsets[u+1]]`` is user ``u``'s whole sequence and
    ``timestamps`` (if the dataset has times) the matching times. ``split``
    holds, per user, the end of the training part and the positions of the
    validation and test targets (:mod:`seqrec_core.data.splits`); without one,
    leave-one-out is used: a user with at least 3 interactions has their last
    item as test target, the second to last as validation target and the rest
    as training; shorter users are training only.
    """

    name: str
    offsets: np.ndarray  # int64 [n_users + 1]
    items: np.ndarray  # int64 [n_interactions], internal ids 1..n_items
    user_map: IdMap
    item_map: IdMap
    item_meta: pd.DataFrame = field(default_factory=pd.DataFrame)  # index = internal id (1..)
    user_meta: pd.DataFrame = field(default_factory=pd.DataFrame)  # index = internal row
    timestamps: np.ndarray | None = None  # [n_interactions], aligned with items
    split: SplitArrays | None = None

    def __post_init__(self) -> None:
        if self.split is None:
            self.split = leave_one_out(self.offsets)

    # ---------------------------------------------------------------- sizes
    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def train_lengths(self) -> np.ndarray:
        return self.split.train_end - self.offsets[:-1]

    def _positions(self, split: Split) -> np.ndarray:
        if split == "train":
            raise ValueError("the train split has no held-out targets")
        return self.split.valid_pos if split == "valid" else self.split.test_pos

    def eval_users(self, split: Split) -> np.ndarray:
        """Users with a target in ``split`` (ascending)."""
        return np.flatnonzero(self._positions(split) >= 0)

    def targets(self, split: Split, users: np.ndarray | None = None) -> np.ndarray:
        users = self.eval_users(split) if users is None else np.asarray(users)
        pos = self._positions(split)[users]
        if (pos < 0).any():
            bad = int(np.asarray(users).ravel()[np.flatnonzero(pos.ravel() < 0)[0]])
            raise ValueError(f"user row {bad} has no {split} target in this split")
        return self.items[pos]

    def history_bounds(self, split: Split, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[start, end) of each user's input history for ``split``: everything
        before the target. train: the training part; a user without a target
        gets the training part (valid) or the whole sequence (test)."""
        users = np.asarray(users)
        start = self.offsets[users]
        if split == "train":
            return start, self.split.train_end[users]
        pos = self._positions(split)[users]
        fallback = self.split.train_end[users] if split == "valid" else self.offsets[users + 1]
        return start, np.where(pos >= 0, pos, fallback)

    def padded(self, split: Split, users: np.ndarray, max_len: int | None = None) -> np.ndarray:
        """Histories as a left-padded ``[len(users), max_len]`` int64 matrix (0 = pad),
        keeping the last ``max_len`` items; ``max_len=None`` fits the longest."""
        start, end = self.history_bounds(split, users)
        if max_len is None:
            max_len = int((end - start).max(initial=1))
        pos = end[:, None] - max_len + np.arange(max_len)[None, :]
        valid = pos >= start[:, None]
        out = self.items[np.where(valid, pos, 0)] if len(self.items) else np.zeros_like(pos)
        return np.where(valid, out, PAD).astype(np.int64)

    def train_item_counts(self) -> np.ndarray:
        """Interactions per item in the training part, ``[n_items + 1]`` (index 0 = pad)."""
        start, end = self.history_bounds("train", np.arange(self.n_users))
        mask = np.zeros(len(self.items) + 1, dtype=np.int64)
        np.add.at(mask, start, 1)
        np.add.at(mask, end, -1)
        in_train = np.cumsum(mask)[:-1] > 0
        return np.bincount(self.items[in_train], minlength=self.n_items + 1)

    def with_split(self, split: SplitArrays) -> SequenceData:
        """The same sequences with another split (arrays are shared, not copied)."""
        return dataclasses.replace(self, split=split)

    def titles(self, internal_ids: Any) -> list[str]:
        ids = np.atleast_1d(np.asarray(internal_ids, dtype=np.int64))
        fallback = [f"item {r}" for r in self.item_map.to_raw(ids)]
        if "title" not in self.item_meta.columns:
            return fallback
        col = self.item_meta["title"]
        return [
            str(t) if isinstance(t, str) or not pd.isna(t) else fb
            for t, fb in zip(col.reindex(ids).tolist(), fallback, strict=True)
        ]

    def stats(self) -> dict[str, Any]:
        n_inter = int(len(self.items))
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": n_inter,
            "density": n_inter / max(1, self.n_users * self.n_items),
            "avg_length": n_inter / max(1, self.n_users),
            "train_interactions": int(self.train_lengths.sum()),
            "valid_users": int((self.split.valid_pos >= 0).sum()),
            "test_users": int((self.split.test_pos >= 0).sum()),
        }


def _aligned_meta(meta: pd.DataFrame | None, id_map: IdMap, kind: str) -> pd.DataFrame:
    """Metadata rows in internal-id order (missing ids → NaN rows)."""
    index = pd.RangeIndex(id_map.offset, id_map.offset + len(id_map), name=kind)
    if meta is None or not len(meta):
        return pd.DataFrame(index=index)
    meta = meta.copy()
    meta.index = [_coerce(i, id_map.raw.dtype) for i in meta.index]
    dup = meta.index.duplicated()
    if dup.any():
        raise DataError(f"{kind} metadata lists {kind} id {meta.index[dup][0]!r} more than once")
    out = meta.reindex(id_map.raw.tolist())
    out.index = index
    return out


def build_sequences(
    name: str,
    df: pd.DataFrame,
    items_meta: pd.DataFrame | None = None,
    users_meta: pd.DataFrame | None = None,
) -> SequenceData:
    """Remap ids (users 0.., items 1.. by sorted raw id) and order each user's
    interactions by timestamp, ties broken by original row order. The split is
    leave-one-out; :func:`seqrec_core.data.pipeline.apply_split` applies others."""
    if len(df) == 0:
        raise DataError(
            f"dataset '{name}' is empty after filtering; lower dataset.min_rating / "
            "user_core / item_core"
        )
    # Intermediates are dropped as soon as possible: at 20M rows each is 160 MB.
    user_codes, user_raw = factorize(df["user"])
    timestamps = df["timestamp"].to_numpy() if "timestamp" in df.columns else None
    order = chronological_order(user_codes, timestamps)
    counts = np.bincount(user_codes, minlength=len(user_raw))
    del user_codes
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    item_codes, item_raw = factorize(df["item"])
    items = item_codes[order]
    del item_codes
    items += 1
    if timestamps is not None:
        kind = np.int64 if timestamps.dtype.kind in "iub" else np.float64
        timestamps = timestamps[order].astype(kind, copy=False)
    del order

    item_map = IdMap(_raw_id_array(np.asarray(item_raw)), offset=1)
    user_map = IdMap(_raw_id_array(np.asarray(user_raw)), offset=0)
    item_df = _aligned_meta(items_meta, item_map, "item")
    user_df = _aligned_meta(users_meta, user_map, "user")
    return SequenceData(
        name, offsets, items, user_map, item_map, item_df, user_df, timestamps=timestamps
    )
