"""Recipe → :class:`SequenceData`, through the dataset plugin and the on-disk cache.

Processed data is cached under ``$SEQREC_CACHE`` (default: the platform cache
dir, ``…/seqrec/processed``) keyed by dataset name, plugin options, filters, the
plugin's file fingerprint and :data:`DATA_FORMAT`. The split is not part of the
key: a cache directory holds the sequences once and one small
``split-<hash>.npz`` per split computed from them.

Layout of a cache directory (nothing executable, no pickles)::

    offsets.npy items.npy [timestamps.npy] user_raw.npy item_raw.npy
    items.parquet users.parquet         metadata, rows in internal-id order
    split-<hash>.npz                    train_end, valid_pos, test_pos (+ info)
    meta.json                           written last; a directory without it is ignored

Large arrays are memory-mapped copy-on-write on reload, so a cached ML-20M
loads in well under a second.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import platformdirs
from pydantic import BaseModel, ValidationError

from seqrec_core import __version__
from seqrec_core.data.core import (
    IdMap,
    SequenceData,
    build_sequences,
    filter_interactions,
    validate_interactions,
)
from seqrec_core.data.splits import DEFAULT_SPLIT, LeaveOneOut, SplitArrays, split_key, split_spec
from seqrec_core.errors import DataError
from seqrec_core.plugins import Registry, options_schema

DATA_FORMAT = 2  # bump when the processing rules or the cache layout change
MMAP_BYTES = 1 << 20  # arrays larger than this are memory-mapped on reload


def cache_root() -> Path:
    env = os.environ.get("SEQREC_CACHE")
    return Path(env) if env else Path(platformdirs.user_cache_dir("seqrec")) / "processed"


def cache_key(dataset: str, options: dict, filters: dict, fingerprint: str) -> str:
    blob = json.dumps(
        {
            "dataset": dataset,
            "options": options,
            "filters": filters,
            "fingerprint": fingerprint,
            "format": DATA_FORMAT,
            "version": __version__,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def save_sequences(data: SequenceData, directory: Path) -> None:
    """Write ``data`` (sequences, id maps, metadata, its split) to ``directory``
    atomically: everything goes to a temporary sibling that is renamed into place."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".tmp-"))
    try:
        arrays = {
            "offsets": data.offsets,
            "items": data.items,
            "user_raw": data.user_map.raw,
            "item_raw": data.item_map.raw,
        }
        if data.timestamps is not None:
            arrays["timestamps"] = data.timestamps
        for key, value in arrays.items():
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(value), allow_pickle=False)
        data.item_meta.to_parquet(tmp / "items.parquet")
        data.user_meta.to_parquet(tmp / "users.parquet")
        _write_split(tmp, data.split)
        (tmp / "meta.json").write_text(
            json.dumps({"name": data.name, "format": DATA_FORMAT, "n_users": data.n_users})
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(directory)  # atomic: a half-written cache never looks complete
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)


def _load_array(path: Path) -> np.ndarray:
    if path.stat().st_size > MMAP_BYTES:
        # Copy-on-write: writable (torch.from_numpy does not warn), never
        # written back, and read lazily from the page cache.
        return np.asarray(np.load(path, mmap_mode="c", allow_pickle=False))
    return np.load(path, allow_pickle=False)


def load_sequences(
    directory: Path, split: Any = None, options: BaseModel | None = None
) -> SequenceData:
    """The cached sequences in ``directory`` with the split ``split`` (a split
    component, default leave-one-out; see :func:`apply_split`), read from its
    ``split-<hash>.npz`` or computed and stored there."""
    arrays = {
        key: _load_array(directory / f"{key}.npy")
        for key in ("offsets", "items", "user_raw", "item_raw", "timestamps")
        if (directory / f"{key}.npy").is_file()
    }
    meta = json.loads((directory / "meta.json").read_text())
    item_map = IdMap(arrays["item_raw"], offset=1)
    user_map = IdMap(arrays["user_raw"], offset=0)
    data = SequenceData(
        name=meta["name"],
        offsets=arrays["offsets"],
        items=arrays["items"],
        user_map=user_map,
        item_map=item_map,
        item_meta=_read_meta(directory / "items.parquet", item_map),
        user_meta=_read_meta(directory / "users.parquet", user_map),
        timestamps=arrays.get("timestamps"),
    )
    return apply_split(data, split, options, directory)


def apply_split(
    data: SequenceData,
    split: Any = None,
    options: BaseModel | None = None,
    directory: Path | None = None,
) -> SequenceData:
    """``data`` with the split ``split`` — a split component as registered
    (``registry.get("splits", name)``; None: leave-one-out) — and its validated
    ``options`` (None: the defaults). With a cache ``directory`` the split's
    arrays are read from / written to it, keyed by name + options."""
    split = LeaveOneOut if split is None else split
    component = split() if isinstance(split, type) else split
    name = getattr(component, "name", DEFAULT_SPLIT)
    if options is None:
        options = _split_options(split, name, {})
    spec = split_spec(name, options)
    if data.split is not None and data.split.spec == spec:
        return data
    path = directory / f"split-{split_key(spec)}.npz" if directory is not None else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            arrays = SplitArrays(
                z["train_end"], z["valid_pos"], z["test_pos"], spec, json.loads(str(z["info"]))
            )
        return data.with_split(arrays)
    arrays = dataclasses.replace(component.split(data.offsets, data.timestamps, options), spec=spec)
    if path is not None:
        try:
            _write_split(directory, arrays)
        except OSError:  # a read-only cache must not stop a run
            pass
    return data.with_split(arrays)


def _split_options(split: Any, name: str, values: dict) -> BaseModel:
    """Validated options for a split used outside a resolved recipe."""
    try:
        return options_schema(split).model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(["split", *map(str, err["loc"])])
        msg = err["msg"].removeprefix("Value error, ")
        raise DataError(f"{where}: {msg} (split '{name}')") from None


def _write_split(directory: Path, split: SplitArrays) -> None:
    path = directory / f"split-{split_key(split.spec)}.npz"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".split-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                train_end=split.train_end,
                valid_pos=split.valid_pos,
                test_pos=split.test_pos,
                info=np.array(json.dumps(split.info, default=str)),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_meta(path: Path, id_map: IdMap) -> pd.DataFrame:
    # Parquet drops the rows of a frame without columns; rebuild its index.
    meta = pd.read_parquet(path)
    if meta.columns.empty:
        kind = "item" if id_map.offset else "user"
        meta = pd.DataFrame(
            index=pd.RangeIndex(id_map.offset, id_map.offset + len(id_map), name=kind)
        )
    return meta


def load_dataset(
    recipe: Any,
    registry: Registry,
    use_cache: bool | None = None,
    log=None,
    timings: dict[str, float] | None = None,
) -> SequenceData:
    """Load, filter, remap and split the recipe's dataset (cached on disk).

    ``recipe`` needs ``dataset`` (the core section), ``dataset_options`` and
    optionally ``split`` / ``split_options`` (default leave-one-out; see
    :func:`recipe_split`). ``timings``, if given, gets the seconds of each step
    (``benchmarks/data_scale.py``)."""
    clock = _Clock(timings)
    section = recipe.dataset
    source = registry.get("datasets", section.name)()
    options = recipe.dataset_options
    split, split_options = recipe_split(recipe, registry)
    filters = {
        "min_rating": section.min_rating,
        "user_core": section.user_core,
        "item_core": section.item_core,
    }
    fraction = getattr(section, "user_fraction", 1.0)
    if fraction < 1.0:  # only then part of the cache key: existing caches stay valid
        filters.update(
            user_fraction=fraction, user_sample_seed=getattr(section, "user_sample_seed", 0)
        )
    use_cache = section.cache if use_cache is None else use_cache
    directory = None
    if use_cache:
        fp = source.fingerprint(options)
        key = cache_key(section.name, options.model_dump(mode="json"), filters, fp)
        directory = cache_root() / f"{section.name}-{key}"
        clock("fingerprint")
        if (directory / "meta.json").is_file():
            if log:
                log(f"using cached processed data {directory}")
            data = load_sequences(directory, split, split_options)
            clock("cache_read")
            return data
    raw = source.load(options)
    clock("parse")
    items_meta, users_meta = raw.items, raw.users
    df = validate_interactions(raw.interactions, f"dataset '{section.name}'")
    del raw  # let the unfiltered table go as soon as filtering copied what it keeps
    df = filter_interactions(df, **filters)
    clock("filter")
    data = build_sequences(section.name, df, items_meta, users_meta)
    del df
    clock("build")
    if directory is not None:
        try:
            save_sequences(data, directory)
        except OSError as exc:  # a read-only cache must not stop a run
            if log:
                log(f"could not write data cache {directory}: {exc}")
            directory = None
        clock("cache_write")
    data = apply_split(data, split, split_options, directory)
    clock("split")
    return data


def recipe_split(recipe: Any, registry: Registry) -> tuple[Any, BaseModel]:
    """The recipe's split component (from the registry) and its options: the
    recipe's validated ``split_options``, or — for a recipe that was not
    resolved (a plain namespace) — the ``split`` section's keys validated here."""
    section = getattr(recipe, "split", None)
    name = getattr(section, "name", None) or DEFAULT_SPLIT
    split = registry.get("splits", name)
    options = getattr(recipe, "split_options", None)
    if options is None:
        options = _split_options(split, name, dict(getattr(section, "model_extra", None) or {}))
    return split, options


class _Clock:
    """``clock(step)`` stores the seconds since the previous call under ``step``."""

    def __init__(self, timings: dict[str, float] | None):
        self.timings = timings
        self.last = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[step] = self.timings.get(step, 0.0) + now - self.last
        self.last = now
