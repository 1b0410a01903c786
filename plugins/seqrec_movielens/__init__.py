"""MovieLens from the official GroupLens files: the ``movielens`` dataset.

Point ``path`` at the unzipped folder, exactly as it comes out of the zip::

    dataset:
      name: movielens
      variant: ml-100k
      path: data/ml-100k        # contains u.data, u.item, u.user, u.genre

MovieLens may not be redistributed, so nothing is downloaded or bundled.

Each variant is a :class:`Variant`: the files it reads (the first is required)
and a parser ``Path -> RawData``. Adding ML-1M/10M/20M means writing their
parser functions, adding a ``VARIANTS`` entry and extending the ``variant``
literal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from seqrec_core import hookimpl
from seqrec_core.data import RawData
from seqrec_core.data.readers import fingerprint_files, read_table
from seqrec_core.errors import DataError

__all__ = ["MovieLens", "VARIANTS", "Variant"]


@dataclass(frozen=True)
class Variant:
    files: tuple[str, ...]  # every file the parser may read; files[0] is required
    parse: Callable[[Path], RawData]


class MovieLensOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="directory with the official files, e.g. the unzipped ml-100k folder "
        "(the one that contains u.data)"
    )
    variant: Literal["ml-100k"] = Field("ml-100k", description="which MovieLens release")


class MovieLens:
    """MovieLens ratings with movie titles, years, genres and user demographics."""

    name = "movielens"
    Options = MovieLensOptions

    def load(self, options: MovieLensOptions) -> RawData:
        return VARIANTS[options.variant].parse(_directory(options))

    def fingerprint(self, options: MovieLensOptions) -> str:
        directory = _directory(options)
        files = [directory / f for f in VARIANTS[options.variant].files]
        return f"{options.variant}:{fingerprint_files(files)}"


def _directory(options: MovieLensOptions) -> Path:
    """The data directory; a :class:`DataError` saying how to fix ``path`` if the
    variant's main file is not in it."""
    directory = Path(options.path).expanduser()
    main = VARIANTS[options.variant].files[0]
    if (directory / main).is_file():
        return directory
    fix = (
        f"point dataset.path at the directory that contains {main} "
        f"(the unzipped {options.variant} folder)"
    )
    if directory.is_file():
        problem = "is a file, not a directory"
        if directory.name == main:
            fix = f"set dataset.path to {directory.parent}"
    elif directory.is_dir():
        problem = f"has no {main}"
        nested = directory / options.variant / main
        if nested.is_file():
            fix = f"set dataset.path to {nested.parent}"
    else:
        problem = "does not exist"
    raise DataError(f"{directory}: {problem}; {fix}")


# ----------------------------------------------------------------- ML-100K

ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_LATIN1 = "latin-1"  # the ML-100K metadata files predate UTF-8 (e.g. "Misérables")


def parse_ml100k(directory: Path) -> RawData:
    """``u.data`` (required), ``u.item``, ``u.user`` and ``u.genre`` (optional)."""
    interactions = read_table(
        directory / "u.data",
        [("user", "int"), ("item", "int"), ("rating", "int"), ("timestamp", "int")],
        sep="\t",
    )
    items = users = None
    if (directory / "u.item").is_file():
        items = _ml100k_items(directory / "u.item", _ml100k_genres(directory / "u.genre"))
    if (directory / "u.user").is_file():
        users = read_table(
            directory / "u.user",
            [
                ("user", "int"),
                ("age", "int"),
                ("gender", "str"),
                ("occupation", "str"),
                ("zip_code", "str"),
            ],
            sep="|",
            encoding=_LATIN1,
        ).set_index("user")
    return RawData(interactions=interactions, items=items, users=users)


def _ml100k_genres(path: Path) -> tuple[str, ...]:
    """Genre names by flag position, from ``u.genre`` (``name|index``) if present."""
    if not path.is_file():
        return ML100K_GENRES
    table = read_table(path, [("genre", "str"), ("index", "int")], sep="|", encoding=_LATIN1)
    if sorted(table["index"]) != list(range(len(table))):
        raise DataError(
            f"{path}: genre indices are {sorted(table['index'])}, expected 0..{len(table) - 1} "
            "each once; restore the file from the official zip or delete it"
        )
    return tuple(table.sort_values("index")["genre"])


def _ml100k_items(path: Path, genres: tuple[str, ...]) -> pd.DataFrame:
    columns = [
        ("item", "int"),
        ("title", "str"),
        ("release_date", "str"),
        ("video_release_date", "str"),
        ("imdb_url", "str"),
        *[(f"genre_{g}", "int") for g in genres],
    ]
    table = read_table(path, columns, sep="|", encoding=_LATIN1)
    flags = table[[f"genre_{g}" for g in genres]].to_numpy() > 0
    titles = table["title"].str.strip()
    return pd.DataFrame(
        {
            "title": titles,
            "year": movie_year(titles, table["release_date"]),
            "genres": [
                "|".join(g for g, on in zip(genres, row, strict=True) if on) for row in flags
            ],
            "release_date": table["release_date"],
            "imdb_url": table["imdb_url"],
        }
    ).set_index(pd.Index(table["item"], name="item"))


def movie_year(titles: pd.Series, release_dates: pd.Series | None = None) -> pd.Series:
    """The last ``(YYYY)`` in the title, else the year of the release date
    (``01-Jan-1995``); nullable ``Int64``."""
    year = titles.str.extract(r".*\((\d{4})\)", expand=False)
    if release_dates is not None:
        year = year.fillna(release_dates.str.extract(r"(\d{4})\s*$", expand=False))
    return pd.to_numeric(year, errors="coerce").astype("Int64")


VARIANTS: dict[str, Variant] = {
    "ml-100k": Variant(files=("u.data", "u.item", "u.user", "u.genre"), parse=parse_ml100k),
}


@hookimpl
def register_datasets(register) -> None:
    register(MovieLens)
