"""Steam reviews as used by SASRec and BERT4Rec: the ``steam`` dataset.

The data (Kang & McAuley, ICDM 2018; Pathak et al., SIGIR 2017) is one review
per line, each line a Python dict literal (not JSON: single quotes, ``True``,
``None``), gzipped::

    {'username': 'Chaos Syren', 'hours': 0.1, 'products': 41, 'product_id': '725280',
     'page_order': 0, 'date': '2017-12-17', 'text': '...', 'early_access': False, 'page': 1}

A review is an interaction of ``username`` with ``product_id`` on ``date``
(day resolution; reviews of one day keep the file order). The optional games
file (``steam_games.json.gz``, the same kind of lines with ``id``,
``app_name``/``title``, ``genres``, ``release_date``, ``developer``,
``publisher``) gives titles::

    dataset:
      name: steam
      path: auto                # download on first use (default), a folder, or the reviews file

Lines are parsed without ``eval``: a flat dict of strings, numbers, booleans
and ``None`` (every review line) is read by a strict tokenizer that accepts
exactly Python's literal syntax for those values (about 8x faster than
``ast.literal_eval``); anything else (lists, nested dicts, odd spacing) goes to
``ast.literal_eval``. A line neither accepts is reported as ``file:line``.
"""

from __future__ import annotations

import ast
import datetime as dt
import gzip
import re
import zlib
from array import array
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from seqrec_core import hookimpl
from seqrec_core.data import RawData
from seqrec_core.data.download import Archive, Download, ensure
from seqrec_core.data.readers import fingerprint_files, open_text
from seqrec_core.errors import DataError

__all__ = ["DOWNLOADS", "Steam", "parse_line", "read_games", "read_reviews"]

AUTO = "auto"
REVIEWS = "steam_reviews.json.gz"
GAMES = "steam_games.json.gz"


class SteamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        AUTO,
        description=f"folder with {REVIEWS} (and optionally {GAMES}), the reviews file "
        "itself, or 'auto': download both into $SEQREC_DATA on first use",
    )
    reviews_file: str = Field(REVIEWS, description="name of the reviews file in the folder")
    games_file: str | None = Field(
        GAMES, description="name of the games metadata file (titles); null: no titles"
    )
    user_key: Literal["username", "user_id"] = Field(
        "username", description="which review field identifies the user"
    )


class Steam:
    """Steam game reviews (user, game, day) with game titles, genres and developers."""

    name = "steam"
    Options = SteamOptions

    def load(self, options: SteamOptions) -> RawData:
        reviews, games = _files(options)
        items = read_games(games) if games is not None else None
        return RawData(interactions=read_reviews(reviews, options.user_key), items=items)

    def fingerprint(self, options: SteamOptions) -> str:
        reviews, games = _files(options)
        return f"steam:{options.user_key}:" + fingerprint_files(
            [reviews] + ([games] if games is not None else [])
        )


def _files(options: SteamOptions) -> tuple[Path, Path | None]:
    """(reviews file, games file or None)."""
    if options.path == AUTO:
        folder = ensure(DOWNLOADS["steam"])
        reviews = folder / options.reviews_file
    else:
        given = Path(options.path).expanduser()
        if given.is_file():
            folder, reviews = given.parent, given
        elif given.is_dir():
            folder, reviews = given, given / options.reviews_file
            if not reviews.is_file():
                raise DataError(
                    f"{given}: has no {options.reviews_file}; point dataset.path at the folder "
                    f"that contains it (or at the reviews file), or set it to auto to download it"
                )
        else:
            raise DataError(
                f"{given}: does not exist; set dataset.path to the folder with "
                f"{options.reviews_file}, or to auto to download it"
            )
    games = folder / options.games_file if options.games_file else None
    return reviews, games if games is not None and games.is_file() else None


# ----------------------------------------------------------------- lines

_STR = r"'[^'\\\n]*(?:\\.[^'\\\n]*)*'|\"[^\"\\\n]*(?:\\.[^\"\\\n]*)*\""
_NUM = r"-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"
# One `'key': value` pair of a dict repr, followed by ", " or by the final "}".
_PAIR = re.compile(rf"'(\w+)': ({_STR}|{_NUM}|True|False|None)(?:, |(?=\}}$))")


def _flat_tokens(line: str) -> dict[str, str] | None:
    """``{'k': v, …}`` with scalar literal values → ``{key: value token}``;
    None if the line is anything else (the caller falls back to literal_eval)."""
    end = len(line) - 1
    if line[:1] != "{" or line[end:] != "}" or line.endswith(", }"):
        return None
    out: dict[str, str] = {}
    pos, match = 1, _PAIR.match
    while pos < end:
        m = match(line, pos)
        if m is None:
            return None
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return out


def _value(token: str) -> Any:
    """The Python value of one literal token from :func:`_flat_tokens`."""
    if token[0] in "'\"" and "\\" not in token:
        return token[1:-1]
    return ast.literal_eval(token)


def parse_line(line: str, path: Path | str = "<line>", lineno: int = 0) -> dict[str, Any]:
    """One Python-literal dict line → dict: the fast tokenizer when the line is a
    flat dict of scalars, else ``ast.literal_eval``; :class:`DataError` with
    ``path:lineno`` when it is neither."""
    tokens = _flat_tokens(line)
    if tokens is not None:
        return {k: _value(v) for k, v in tokens.items()}
    return _literal(line, path, lineno)


def _literal(line: str, path: Path | str, lineno: int) -> dict[str, Any]:
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        reason = getattr(exc, "msg", None) or str(exc).splitlines()[0] or type(exc).__name__
        raise DataError(
            f"{path}:{lineno}: not a Python dict literal ({reason}): {line[:60]!r}"
        ) from None
    if not isinstance(value, dict):
        raise DataError(
            f"{path}:{lineno}: expected a dict literal {{'key': value, …}}, got "
            f"{type(value).__name__}: {line[:60]!r}"
        )
    return value


def _lines(path: Path):
    """``(line number, stripped line)`` of non-blank lines; a damaged gzip
    stream becomes a :class:`DataError` naming the last good line."""
    lineno = 0
    try:
        with open_text(path, "utf-8") as f:
            for lineno, raw in enumerate(f, 1):
                line = raw.strip()
                if line:
                    yield lineno, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(
            f"{path}:{lineno + 1}: the gzip stream is truncated or corrupt ({exc}); "
            "download the file again"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}:{lineno + 1}: not valid UTF-8 text ({exc.reason})") from None


# ----------------------------------------------------------------- reviews

_EPOCH = dt.date(1970, 1, 1)


def read_reviews(path: Path, user_key: str = "username") -> pd.DataFrame:
    """Columns ``user`` (str), ``item`` (int when every id is a number, else
    str), ``timestamp`` (the review day as seconds since 1970, UTC), in file order."""
    users: list[Any] = []
    items: list[Any] = []
    days = array("q")
    seen_users: dict[Any, Any] = {}  # one string object per user name (memory)
    day_of: dict[str, int] = {}
    wanted = (user_key, "product_id", "date")
    for lineno, line in _lines(path):
        tokens = _flat_tokens(line)
        if tokens is not None:
            try:
                user, item, date = (_value(tokens[k]) for k in wanted)
            except KeyError as exc:
                raise _missing(path, lineno, exc.args[0], wanted) from None
        else:
            record = _literal(line, path, lineno)
            missing = [k for k in wanted if k not in record]
            if missing:
                raise _missing(path, lineno, missing[0], wanted)
            user, item, date = (record[k] for k in wanted)
        if not isinstance(user, str | int) or user == "":
            raise DataError(f"{path}:{lineno}: {user_key} is {user!r}, expected a name or id")
        if not isinstance(item, str | int) or item == "":
            raise DataError(f"{path}:{lineno}: product_id is {item!r}, expected an id")
        day = day_of.get(date) if isinstance(date, str) else None
        if day is None:
            day = _day(date, path, lineno)
            day_of[date] = day
        users.append(seen_users.setdefault(user, user))
        items.append(item)
        days.append(day)
    if not users:
        raise DataError(f"{path}: no reviews in the file")
    item_ids = _ids(items)
    return pd.DataFrame(
        {
            "user": pd.Series(users, dtype=object).astype(str),
            "item": item_ids,
            "timestamp": np.frombuffer(days, dtype=np.int64) * 86_400,
        }
    )


def _missing(path: Path, lineno: int, key: str, wanted: tuple[str, ...]) -> DataError:
    return DataError(
        f"{path}:{lineno}: the review has no '{key}'; expected the keys {', '.join(wanted)}"
    )


def _day(value: Any, path: Path, lineno: int) -> int:
    try:
        return (dt.date.fromisoformat(str(value).strip()) - _EPOCH).days
    except ValueError:
        raise DataError(
            f"{path}:{lineno}: date is {value!r}, expected a date like 2017-12-17"
        ) from None


def _ids(values: list[Any]) -> np.ndarray:
    """Ids as int64 when every one is a whole number (Steam app ids), else str."""
    series = pd.Series(values, dtype=object)
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.notna().all() and (numbers % 1 == 0).all():
        return numbers.astype(np.int64).to_numpy()
    return series.astype(str).to_numpy()


# ----------------------------------------------------------------- games


def read_games(path: Path) -> pd.DataFrame:
    """Games metadata indexed by app id: ``title`` (``app_name``, else
    ``title``), ``year``, ``genres`` (``|``-joined), ``developer``, ``publisher``,
    ``release_date``. Entries without an id are skipped; a repeated id keeps
    its first entry."""
    rows: dict[Any, dict[str, Any]] = {}
    for lineno, line in _lines(path):
        record = parse_line(line, path, lineno)
        game = record.get("id")
        if game is None or game == "":
            continue
        title = record.get("app_name") or record.get("title") or f"app {game}"
        genres = record.get("genres") or []
        release = str(record.get("release_date") or "")
        rows.setdefault(
            game,
            {
                "title": str(title).strip(),
                "genres": "|".join(map(str, genres)) if isinstance(genres, list) else str(genres),
                "developer": str(record.get("developer") or ""),
                "publisher": str(record.get("publisher") or ""),
                "release_date": release,
            },
        )
    frame = pd.DataFrame.from_dict(rows, orient="index")
    if frame.empty:
        return pd.DataFrame(columns=["title"])
    years = frame["release_date"].astype(object).str.extract(r"^(\d{4})", expand=False)
    frame.insert(1, "year", pd.to_numeric(years, errors="coerce").astype("Int64").to_numpy())
    frame.index = pd.Index(_ids(list(frame.index)), name="item")
    return frame


# ----------------------------------------------------------------- download

UCSD = "https://cseweb.ucsd.edu/~wckang/"
#: No published checksums: size and SHA-256 are recorded on first download.
DOWNLOADS: dict[str, Download] = {
    "steam": Download(
        name="steam",
        archives=(Archive(UCSD + REVIEWS), Archive(UCSD + GAMES, optional=True)),
        required=(REVIEWS,),
        dataset={"name": "steam"},
        about="Steam reviews by Kang & McAuley (https://cseweb.ucsd.edu/~jmcauley/datasets.html"
        "#steam_data): for research use; cite SASRec (ICDM 2018) and Pathak et al. (SIGIR 2017)",
    )
}
Steam.downloads = DOWNLOADS


@hookimpl
def register_datasets(register) -> None:
    register(Steam)
