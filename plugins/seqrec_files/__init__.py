"""Bring-your-own data: the ``files`` dataset.

Reads an interaction table from CSV/TSV, Parquet or SASRec-style text
(``user item`` per line, in time order) plus, optionally, item metadata with
titles from a second file::

    dataset:
      name: files
      path: data/clicks.csv
      user_col: session
      item_col: product
      time_col: ts          # null: the file order is the time order
      items_path: data/products.csv
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from seqrec_core import hookimpl
from seqrec_core.data import RawData
from seqrec_core.data.readers import CsvFile, fingerprint_files, first_bad, read_table
from seqrec_core.errors import DataError
from seqrec_core.plugins import did_you_mean

__all__ = ["Files"]

Format = Literal["csv", "parquet", "sasrec"]
_BY_SUFFIX: dict[str, Format] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "sasrec",
}
_COMPRESSED = {".gz", ".bz2", ".xz"}
# Reports a bad value: (0-based data row, column, what is wrong) -> error.
BadRow = Callable[[int, str, str], DataError]


class FilesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="interaction file: .csv/.tsv, .parquet, or SASRec .txt ('user item' lines)"
    )
    format: Literal["auto", "csv", "parquet", "sasrec"] = Field(
        "auto",
        description="file format; auto: by extension (.csv/.tsv → csv, .parquet → parquet, "
        ".txt → sasrec)",
    )
    user_col: str = Field("user_id", description="column with the user id (csv/parquet)")
    item_col: str = Field(
        "item_id", description="column with the item id (csv/parquet, and in items_path)"
    )
    time_col: str | None = Field(
        "timestamp",
        description="column with the time (a number or ISO date/time); null: file order is "
        "time order (csv/parquet)",
    )
    rating_col: str | None = Field(
        None, description="column with a numeric rating, for dataset.min_rating (csv/parquet)"
    )
    sep: str | None = Field(
        None, description="field separator for csv; default ',' (a tab for .tsv files)"
    )
    encoding: str = Field("utf-8", description="text encoding of csv/txt files")
    items_path: str | None = Field(
        None, description="optional item metadata file (csv or parquet) with item_col and title_col"
    )
    title_col: str = Field("title", description="column with the item title in items_path")


class Files:
    """Interactions (and optional item titles) from your own files."""

    name = "files"
    Options = FilesOptions

    def load(self, options: FilesOptions) -> RawData:
        path = _existing_file(options.path, "path")
        fmt = _format(path, options.format)
        if fmt == "sasrec":
            interactions = read_table(
                path, [("user", "int"), ("item", "int")], sep=None, encoding=options.encoding
            )
        else:
            wanted = {
                "user_col": options.user_col,
                "item_col": options.item_col,
                "time_col": options.time_col,
                "rating_col": options.rating_col,
            }
            frame, bad = _read_frame(path, fmt, options, wanted)
            interactions = _interactions(frame, options, bad)
        items = None
        if options.items_path:
            items = _items(_existing_file(options.items_path, "items_path"), options)
        return RawData(interactions=interactions.reset_index(drop=True), items=items)

    def fingerprint(self, options: FilesOptions) -> str:
        paths = [Path(options.path).expanduser()]
        if options.items_path:
            paths.append(Path(options.items_path).expanduser())
        return fingerprint_files(paths)


# ----------------------------------------------------------------- files and formats


def _existing_file(value: str, option: str) -> Path:
    path = Path(value).expanduser()
    if path.is_file():
        return path
    what = "is a directory" if path.is_dir() else "not found"
    raise DataError(
        f"{path}: {what}; set dataset.{option} to a data file (.csv, .tsv, .parquet or SASRec .txt)"
    )


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSED:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _format(path: Path, fmt: str) -> Format:
    if fmt != "auto":
        return fmt  # type: ignore[return-value]
    try:
        return _BY_SUFFIX[_suffix(path)]
    except KeyError:
        raise DataError(
            f"{path}: cannot tell the format from the extension '{_suffix(path)}'; set "
            "dataset.format to csv, parquet or sasrec"
        ) from None


def _sep(path: Path, options: FilesOptions) -> str:
    if options.sep is not None:
        return options.sep
    return "\t" if _suffix(path) == ".tsv" else ","


def _require(path: Path, columns: list[str], wanted: dict[str, str | None]) -> None:
    for option, col in wanted.items():
        if col is None or col in columns:
            continue
        fix = f"set dataset.{option} to one of them"
        if option == "time_col":
            fix += ", or to null to use the file order"
        elif option == "rating_col":
            fix += ", or to null for no ratings"
        raise DataError(
            f"{path}: no column '{col}' (dataset.{option}){did_you_mean(col, columns)}; "
            f"columns in the file: {', '.join(columns)}; {fix}"
        )


def _read_frame(
    path: Path, fmt: Format, options: FilesOptions, wanted: dict[str, str | None]
) -> tuple[pd.DataFrame, BadRow]:
    """The table with the ``wanted`` columns checked, and how to report a bad row."""
    if fmt == "parquet":
        columns = _parquet_columns(path)
        _require(path, columns, wanted)
        needed = list(dict.fromkeys(c for c in wanted.values() if c is not None))
        try:
            frame = pd.read_parquet(path, columns=needed)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: could not read Parquet: {exc}") from None

        def bad(row: int, col: str, problem: str) -> DataError:
            return DataError(f"{path}: row {row + 1}: column '{col}' {problem}")

        return frame, bad
    table = CsvFile(path, _sep(path, options), options.encoding)
    _require(path, table.columns(), wanted)
    return table.read(), table.bad_row


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None


# ----------------------------------------------------------------- columns


def _ids(series: pd.Series, col: str, bad: BadRow) -> pd.Series:
    row = first_bad(series.isna())
    if row is not None:
        raise bad(row, col, "is empty, expected an id")
    return series


def _numbers(series: pd.Series, col: str, bad: BadRow) -> pd.Series:
    values = series if pd.api.types.is_numeric_dtype(series) else _to_numeric(series)
    row = first_bad(values.isna())
    if row is not None:
        raise bad(row, col, f"{_shown(series.iloc[row])}, expected a number")
    return values


def _to_numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce")


def _shown(value) -> str:
    return "is empty" if pd.isna(value) else f"is {str(value)!r}"


def _times(series: pd.Series, col: str, bad: BadRow) -> pd.Series:
    """Numbers as they are; dates/times (ISO strings or datetime columns) as
    seconds since 1970-01-01 UTC."""
    if pd.api.types.is_datetime64_any_dtype(series):
        return _epoch_seconds(series, col, bad)
    if pd.api.types.is_numeric_dtype(series) or _to_numeric(series).notna().any():
        return _numbers(series, col, bad)
    try:
        parsed = pd.to_datetime(series, errors="coerce", format="ISO8601", utc=True)
    except (ValueError, TypeError):
        parsed = pd.Series(pd.NaT, index=series.index)
    row = first_bad(parsed.isna())
    if row is not None:
        raise bad(
            row,
            col,
            f"{_shown(series.iloc[row])}, expected a number or an ISO date/time "
            "(e.g. 2024-05-01T12:30:00)",
        )
    return _epoch_seconds(parsed, col, bad)


def _epoch_seconds(series: pd.Series, col: str, bad: BadRow) -> pd.Series:
    row = first_bad(series.isna())
    if row is not None:
        raise bad(row, col, "is empty, expected a date/time")
    if series.dt.tz is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    seconds = (series - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
    whole = np.all(np.mod(seconds.to_numpy(), 1) == 0)
    return seconds.astype("int64") if whole else seconds


def _interactions(frame: pd.DataFrame, options: FilesOptions, bad: BadRow) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "user": _ids(frame[options.user_col], options.user_col, bad),
            "item": _ids(frame[options.item_col], options.item_col, bad),
        }
    )
    if options.time_col is not None:
        out["timestamp"] = _times(frame[options.time_col], options.time_col, bad)
    if options.rating_col is not None:
        out["rating"] = _numbers(frame[options.rating_col], options.rating_col, bad)
    return out


def _items(path: Path, options: FilesOptions) -> pd.DataFrame:
    """Item metadata indexed by raw item id, with ``title`` and the file's other columns."""
    fmt = "parquet" if _suffix(path) in (".parquet", ".pq") else "csv"
    wanted = {"item_col": options.item_col, "title_col": options.title_col}
    if fmt == "parquet":
        _require(path, _parquet_columns(path), wanted)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise DataError(f"{path}: could not read Parquet: {exc}") from None

        def bad(row: int, col: str, problem: str) -> DataError:
            return DataError(f"{path}: row {row + 1}: column '{col}' {problem}")

    else:
        table = CsvFile(path, _sep(path, options), options.encoding)
        _require(path, table.columns(), wanted)
        frame, bad = table.read(), table.bad_row
    ids = _ids(frame[options.item_col], options.item_col, bad)
    dup = first_bad(ids.duplicated())
    if dup is not None:
        raise bad(dup, options.item_col, f"repeats item id {ids.iloc[dup]}; list each item once")
    titles = frame[options.title_col]
    items = frame.drop(columns=[c for c in (options.item_col, "title") if c in frame.columns])
    items = items.drop(columns=[options.title_col], errors="ignore")
    items.insert(0, "title", titles.where(titles.notna(), "item " + ids.astype(str)).astype(str))
    items.index = pd.Index(ids.to_numpy(), name="item")
    return items


@hookimpl
def register_datasets(register) -> None:
    register(Files)
