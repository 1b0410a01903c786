"""Recipe → :class:`SequenceData`, through the dataset plugin and the on-disk cache.

Processed data is cached under ``$SEQREC_CACHE`` (default: the platform cache
dir, ``…/seqrec/processed``) keyed by dataset name, plugin options, filters, the
plugin's file fingerprint and :data:`DATA_FORMAT`. Cache files are ``.npz``
(loaded with ``allow_pickle=False``) and Parquet — nothing executable.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import platformdirs

from seqrec_core import __version__
from seqrec_core.data.core import (
    IdMap,
    SequenceData,
    build_sequences,
    filter_interactions,
    validate_interactions,
)
from seqrec_core.plugins import Registry

DATA_FORMAT = 1  # bump when the processing rules change


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
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".tmp-"))
    np.savez(
        tmp / "arrays.npz",
        offsets=data.offsets,
        items=data.items,
        user_raw=data.user_map.raw,
        item_raw=data.item_map.raw,
    )
    data.item_meta.to_parquet(tmp / "items.parquet")
    data.user_meta.to_parquet(tmp / "users.parquet")
    (tmp / "meta.json").write_text(json.dumps({"name": data.name}))
    try:
        tmp.rename(directory)  # atomic: a half-written cache never looks complete
    except OSError:  # another process won the race
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


def load_sequences(directory: Path) -> SequenceData:
    with np.load(directory / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads((directory / "meta.json").read_text())
    item_map = IdMap(arrays["item_raw"], offset=1)
    user_map = IdMap(arrays["user_raw"], offset=0)
    return SequenceData(
        name=meta["name"],
        offsets=arrays["offsets"],
        items=arrays["items"],
        user_map=user_map,
        item_map=item_map,
        item_meta=_read_meta(directory / "items.parquet", item_map),
        user_meta=_read_meta(directory / "users.parquet", user_map),
    )


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
    recipe: Any, registry: Registry, use_cache: bool | None = None, log=None
) -> SequenceData:
    """Load, filter, remap and split the recipe's dataset (cached on disk)."""
    section = recipe.dataset
    source = registry.get("datasets", section.name)()
    options = recipe.dataset_options
    filters = {
        "min_rating": section.min_rating,
        "user_core": section.user_core,
        "item_core": section.item_core,
    }
    use_cache = section.cache if use_cache is None else use_cache
    directory = None
    if use_cache:
        fp = source.fingerprint(options)
        key = cache_key(section.name, options.model_dump(mode="json"), filters, fp)
        directory = cache_root() / f"{section.name}-{key}"
        if (directory / "meta.json").is_file():
            if log:
                log(f"using cached processed data {directory}")
            return load_sequences(directory)
    raw = source.load(options)
    df = validate_interactions(raw.interactions, f"dataset '{section.name}'")
    df = filter_interactions(df, **filters)
    data = build_sequences(section.name, df, raw.items, raw.users)
    if directory is not None:
        try:
            save_sequences(data, directory)
        except OSError as exc:  # a read-only cache must not stop a run
            if log:
                log(f"could not write data cache {directory}: {exc}")
    return data
