"""Reading delimited data files fast, and reporting a bad line precisely.

pandas parses large files quickly but either skips problems silently (a short
line becomes NaN, an extra field on the first line is dropped with a warning) or
names them vaguely ("invalid literal for int()"). So every reader here has two
paths: pandas with explicit dtypes for speed, and — only when pandas fails or
leaves a hole — a plain Python scan that finds the first offending line and
raises a one-line :class:`DataError` ``file:line: what is wrong, expected what``.

Shared by the dataset plugins (``files``, ``movielens``, …).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import lzma
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from seqrec_core.errors import DataError

#: Column kinds; ``int32``/``float32`` halve the memory of big id/rating columns.
Kind = Literal["int", "float", "str", "int32", "float32"]
_PANDAS_DTYPE = {
    "int": "int64",
    "float": "float64",
    "str": str,
    "int32": "int32",
    "float32": "float32",
}
_EXPECTED = {
    "int": "an integer",
    "float": "a number",
    "str": "text",
    "int32": "an integer",
    "float32": "a number",
}
_COMPRESSED = (".gz", ".bz2", ".xz")
_SEP_NAMES = {
    "\t": "tab",
    " ": "space",
    ",": "comma",
    "|": "'|'",
    ";": "';'",
    "::": "'::'",
    None: "whitespace",
}


def fingerprint_files(paths: Iterable[Path]) -> str:
    """Path, size and mtime of each existing file: changes when any file changes."""
    parts = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        else:
            parts.append(f"{p.resolve()}:absent")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def open_text(path: Path, encoding: str):
    """A text stream of ``path``, decompressing .gz/.bz2/.xz as pandas does."""
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(Path(path).suffix.lower())
    if opener is None:
        return open(path, encoding=encoding, newline="")
    return opener(path, "rt", encoding=encoding, newline="")


def sep_name(sep: str | None) -> str:
    return _SEP_NAMES.get(sep, repr(sep))


def _shorten(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _decode_error(path: Path, exc: UnicodeDecodeError, encoding: str) -> DataError:
    return DataError(
        f"{path}: not valid {encoding} text ({exc.reason} at byte {exc.start}); "
        "set the file's encoding (e.g. latin-1)"
    )


# ----------------------------------------------------------------- headerless tables


def read_table(
    path: Path,
    columns: Sequence[tuple[str, Kind]],
    sep: str | None,
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """A header-less delimited file whose columns are known (``sep=None``: runs
    of whitespace). Blank lines are skipped. Every line must have exactly
    ``len(columns)`` fields of the given kinds, else :class:`DataError` names the
    first bad line.

    All-numeric tables go through pandas (fast: millions of lines per second;
    ``::``-separated MovieLens files too, see :func:`_read_double_colon`);
    tables with text columns are parsed line by line, because pandas cannot tell
    a missing trailing text field from an empty one (they are small metadata
    files in practice).
    """
    path = Path(path)
    names = [n for n, _ in columns]
    if any(kind == "str" for _, kind in columns):
        rows = list(_checked_rows(path, columns, sep, encoding))
        df = pd.DataFrame(rows, columns=names)
        for name, kind in columns:
            df[name] = df[name].astype(_PANDAS_DTYPE[kind])
        return df
    if sep == "::" and path.suffix.lower() not in _COMPRESSED:
        return _read_double_colon(path, columns, encoding)
    try:
        with warnings.catch_warnings():
            # "Length of header or names does not match": pandas would drop data.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                path,
                sep=r"\s+" if sep is None else sep,
                header=None,
                names=names,
                dtype={n: _PANDAS_DTYPE[k] for n, k in columns},
                index_col=False,
                quoting=csv.QUOTE_NONE,
                encoding=encoding,
                engine="c" if sep is None or len(sep) == 1 else "python",
            )
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc, encoding) from None
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        for _ in _checked_rows(path, columns, sep, encoding):
            pass  # raises at the first bad line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: could not be parsed: {reason}") from None


def _read_double_colon(
    path: Path, columns: Sequence[tuple[str, Kind]], encoding: str
) -> pd.DataFrame:
    """A numeric ``a::b::c`` file (MovieLens 1M/10M ``ratings.dat``) at C speed.

    pandas only has a slow Python parser for multi-character separators, so
    this reads with ``sep=":"`` into ``2n - 1`` columns and keeps the even ones.
    That alone would accept a stray ``:`` or extra fields, so it also counts
    ``::`` in the file: with ``n`` numeric fields per line the count is exactly
    ``(n - 1) × rows`` only if every line is ``v::v::…::v``. On any mismatch a
    line-by-line scan names the first bad line. (About 8x faster than
    ``engine="python"``.)
    """
    names = [n for n, _ in columns]
    wide = [f"_sep{i}" if i % 2 else names[i // 2] for i in range(2 * len(names) - 1)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                path,
                sep=":",
                header=None,
                names=wide,
                usecols=names,
                dtype={n: _PANDAS_DTYPE[k] for n, k in columns},
                index_col=False,
                quoting=csv.QUOTE_NONE,
                encoding=encoding,
                engine="c",
            )[names]
        ok = _count_pairs(path) == (len(names) - 1) * len(df) and not df.isna().any().any()
        problem = "a line is not " + "::".join(names)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc, encoding) from None
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        ok, problem = False, str(exc).strip().splitlines()[0] if str(exc).strip() else "?"
    if ok:
        return df
    for _ in _checked_rows(path, columns, "::", encoding):
        pass  # raises at the first bad line
    raise DataError(f"{path}: could not be parsed: {problem}")


def _count_pairs(path: Path, chunk: int = 1 << 24) -> int:
    """Occurrences of ``::`` in the file, read in chunks (a run of colons that
    straddles a chunk boundary is carried over whole)."""
    count, carry = 0, b""
    with open(path, "rb") as f:
        while block := f.read(chunk):
            buf = carry + block
            head = buf.rstrip(b":")
            carry = buf[len(head) :]
            count += head.count(b"::")
    return count + carry.count(b"::")


def _checked_rows(
    path: Path, columns: Sequence[tuple[str, Kind]], sep: str | None, encoding: str
) -> Iterator[list]:
    """Parsed rows of a header-less file; :class:`DataError` at the first bad line."""
    n = len(columns)
    layout = f"{n} fields ({', '.join(name for name, _ in columns)}) separated by {sep_name(sep)}"
    try:
        with open_text(path, encoding) as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                fields = line.split(sep)
                if len(fields) != n:
                    raise DataError(
                        f"{path}:{lineno}: found {len(fields)} field(s), expected {layout}: "
                        f"{_shorten(line)!r}"
                    )
                row = []
                for value, (name, kind) in zip(fields, columns, strict=True):
                    if kind == "str":
                        row.append(value)
                        continue
                    try:
                        row.append(int(value) if kind.startswith("int") else float(value))
                    except ValueError:
                        raise DataError(
                            f"{path}:{lineno}: {name} is {value!r}, expected {_EXPECTED[kind]}"
                        ) from None
                yield row
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc, encoding) from None


# ----------------------------------------------------------------- CSV with a header


class CsvFile:
    """A delimited text file with a header row (quoted fields allowed)."""

    def __init__(self, path: Path, sep: str, encoding: str = "utf-8"):
        self.path = Path(path)
        self.sep = sep
        self.encoding = encoding

    def _read(self, **kwargs) -> pd.DataFrame:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", pd.errors.ParserWarning)
                return pd.read_csv(
                    self.path, sep=self.sep, encoding=self.encoding, index_col=False, **kwargs
                )
        except UnicodeDecodeError as exc:
            raise _decode_error(self.path, exc, self.encoding) from None
        except pd.errors.EmptyDataError:
            raise DataError(f"{self.path}: the file is empty; expected a header line") from None

    def columns(self) -> list[str]:
        return [str(c) for c in self._read(nrows=0).columns]

    def read(self) -> pd.DataFrame:
        """All rows; a wrong field count raises :class:`DataError` with the line."""
        try:
            return self._read(low_memory=False)
        except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as exc:
            n = len(self.columns())
            for lineno, fields in self.records():
                if len(fields) != n:
                    raise DataError(self._shape_message(lineno, len(fields), n)) from None
            raise DataError(f"{self.path}: could not be parsed: {exc}") from None

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """``(line number, fields)`` of each data row, as pandas counts rows
        (header and blank lines skipped)."""
        try:
            with open_text(self.path, self.encoding) as f:
                reader = csv.reader(f, delimiter=self.sep)
                next(reader, None)
                for fields in reader:
                    if fields:
                        yield reader.line_num, fields
        except UnicodeDecodeError as exc:
            raise _decode_error(self.path, exc, self.encoding) from None

    def _shape_message(self, lineno: int, found: int, n: int) -> str:
        return (
            f"{self.path}:{lineno}: found {found} field(s), expected {n} "
            f"(as in the header) separated by {sep_name(self.sep)}"
        )

    def bad_row(self, row: int, column: str, problem: str) -> DataError:
        """A :class:`DataError` for data row ``row`` (0-based, as in the DataFrame)."""
        n = len(self.columns())
        for i, (lineno, fields) in enumerate(self.records()):
            if i == row:
                if len(fields) != n:
                    return DataError(self._shape_message(lineno, len(fields), n))
                return DataError(f"{self.path}:{lineno}: column '{column}' {problem}")
        return DataError(f"{self.path}: data row {row + 1}: column '{column}' {problem}")


def read_csv_typed(
    path: Path,
    columns: Sequence[tuple[str, Kind]],
    sep: str = ",",
    encoding: str = "utf-8",
) -> pd.DataFrame:
    """The ``columns`` of a CSV file with a header (other columns are ignored),
    parsed by pandas' C engine with explicit dtypes (20M MovieLens rows in about
    2 s). A missing column, a wrong field count or a bad value raises a one-line
    :class:`DataError` naming the file and line."""
    table = CsvFile(path, sep, encoding)
    header = table.columns()
    names = [n for n, _ in columns]
    missing = [n for n in names if n not in header]
    if missing:
        raise DataError(
            f"{path}:1: the header has no column '{missing[0]}'; expected the columns "
            f"{', '.join(names)}, found {', '.join(header) or 'none'}"
        )
    try:
        # Every column is read (no usecols): pandas drops surplus fields of a
        # row silently when only some columns are selected.
        df = table._read(
            dtype={n: _PANDAS_DTYPE[k] for n, k in columns},
            engine="c",
        )[names]
        bad = [n for n, k in columns if k != "str" and df[n].isna().any()]
    except (ValueError, OverflowError, pd.errors.ParserError, pd.errors.ParserWarning):
        bad = names
    if not bad:
        return df
    kinds = dict(columns)
    index = {name: header.index(name) for name in names}
    for lineno, fields in table.records():
        if len(fields) != len(header):
            raise DataError(table._shape_message(lineno, len(fields), len(header)))
        for name in names:
            value = fields[index[name]]
            if kinds[name] == "str":
                continue
            try:
                number = int(value) if kinds[name].startswith("int") else float(value)
                if number != number:  # NaN
                    raise ValueError(value)
            except ValueError:
                raise DataError(
                    f"{path}:{lineno}: column '{name}' is {value!r}, expected "
                    f"{_EXPECTED[kinds[name]]}"
                ) from None
    raise DataError(f"{path}: could not be parsed with columns {', '.join(names)}")


# ----------------------------------------------------------------- value checks


def first_bad(mask: np.ndarray | pd.Series) -> int | None:
    """Index of the first True in ``mask``, or None."""
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if len(hits) else None
