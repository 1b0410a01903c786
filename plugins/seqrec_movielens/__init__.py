"""MovieLens from the official GroupLens files: the ``movielens`` dataset.

Four releases, each read from its official archive layout::

    dataset:
      name: movielens
      variant: ml-1m            # ml-100k (default), ml-1m, ml-10m, ml-20m
      path: auto                # download on first use (default), or the unzipped folder

=========  ===================  ==============================================
variant    folder in the zip    files read (first one required)
=========  ===================  ==============================================
ml-100k    ``ml-100k``          ``u.data`` (tab), ``u.item`` (``|``, Latin-1),
                                ``u.user``, ``u.genre``
ml-1m      ``ml-1m``            ``ratings.dat``, ``movies.dat``, ``users.dat``
                                (``::``, Latin-1)
ml-10m     ``ml-10M100K``       ``ratings.dat``, ``movies.dat``, ``tags.dat`` (``::``)
ml-20m     ``ml-20m``           ``ratings.csv``, ``movies.csv``, ``tags.csv``
                                (CSV with a header, quoted titles)
=========  ===================  ==============================================

Item metadata for every release: ``title``, ``year`` (from the title, else the
release date), ``genres`` (``|``-joined); ML-10M/20M add ``tags`` (the
:data:`TOP_TAGS` most used user tags, lower-cased). User metadata where the data
has it: ``age``, ``gender``, ``occupation``, ``zip_code`` (100K, 1M; 1M also
``age_group``). Text files are read as UTF-8, or as Latin-1 when they are not
valid UTF-8 (ML-1M titles such as "Misérables").

``path: auto`` downloads the official archive from GroupLens into
``$SEQREC_DATA`` on first use, verified against its published SHA-256 (ML-10M:
recorded on first download); see ``docs/datasets.md``. MovieLens may not be
redistributed: nothing is bundled.
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
from seqrec_core.data.download import Archive, Download, ensure
from seqrec_core.data.readers import fingerprint_files, read_csv_typed, read_table
from seqrec_core.errors import DataError

__all__ = ["DOWNLOADS", "ML100K_GENRES", "MovieLens", "VARIANTS", "Variant"]

AUTO = "auto"
TOP_TAGS = 5
_LATIN1 = "latin-1"  # the ML-100K/1M metadata files predate UTF-8 (e.g. "Misérables")


@dataclass(frozen=True)
class Variant:
    files: tuple[str, ...]  # every file the parser may read; files[0] is required
    parse: Callable[[Path], RawData]
    folder: str  # the folder name inside the official zip


Name = Literal["ml-100k", "ml-1m", "ml-10m", "ml-20m"]


class MovieLensOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        AUTO,
        description="directory with the official files (the unzipped folder, e.g. the one "
        "that contains ratings.dat), or 'auto': download the official archive into "
        "$SEQREC_DATA on first use",
    )
    variant: Name = Field("ml-100k", description="which MovieLens release")


class MovieLens:
    """MovieLens ratings with movie titles, years, genres, tags and user demographics."""

    name = "movielens"
    Options = MovieLensOptions

    def load(self, options: MovieLensOptions) -> RawData:
        return VARIANTS[options.variant].parse(_directory(options))

    def fingerprint(self, options: MovieLensOptions) -> str:
        directory = _directory(options)
        files = [directory / f for f in VARIANTS[options.variant].files]
        return f"{options.variant}:{fingerprint_files(files)}"


def _directory(options: MovieLensOptions) -> Path:
    """The data directory (downloaded first for ``path: auto``); a
    :class:`DataError` saying how to fix ``path`` if the variant's main file is
    not in it."""
    variant = VARIANTS[options.variant]
    if options.path == AUTO:
        return ensure(DOWNLOADS[options.variant])
    directory = Path(options.path).expanduser()
    main = variant.files[0]
    if (directory / main).is_file():
        return directory
    fix = (
        f"point dataset.path at the directory that contains {main} "
        f"(the unzipped {variant.folder} folder), or set it to auto to download it"
    )
    if directory.is_file():
        problem = "is a file, not a directory"
        if directory.name == main:
            fix = f"set dataset.path to {directory.parent}"
    elif directory.is_dir():
        problem = f"has no {main}"
        nested = directory / variant.folder / main
        if nested.is_file():
            fix = f"set dataset.path to {nested.parent}"
    else:
        problem = "does not exist"
    raise DataError(f"{directory}: {problem}; {fix}")


# ----------------------------------------------------------------- shared helpers


def movie_year(titles: pd.Series, release_dates: pd.Series | None = None) -> pd.Series:
    """The last ``(YYYY)`` in the title (or the first year of a ``(YYYY-YYYY)``
    range), else the year of the release date (``01-Jan-1995``); nullable ``Int64``."""
    titles = titles.astype(object)
    year = titles.str.extract(r".*\((\d{4})\)", expand=False)
    year = year.fillna(titles.str.extract(r".*\((\d{4})[-–]\d{0,4}\)", expand=False))
    if release_dates is not None:
        year = year.fillna(release_dates.str.extract(r"(\d{4})\s*$", expand=False))
    return pd.to_numeric(year, errors="coerce").astype("Int64")


def _genres(values: pd.Series) -> pd.Series:
    """``|``-joined genres as published; "(no genres listed)" becomes empty."""
    return values.fillna("").astype(str).replace("(no genres listed)", "")


def _text_lines(path: Path) -> list[str]:
    """The lines of a small text file: UTF-8, or Latin-1 when it is not valid
    UTF-8 (every byte sequence is valid Latin-1)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode(_LATIN1)
    return text.splitlines()


def _fields(path: Path, lineno: int, line: str, n: int, layout: str) -> list[str]:
    """A ``::`` line with ``n`` fields where only the one before last may
    contain ``::`` itself (titles, tags): split from both ends."""
    head = line.split("::", n - 2)
    if len(head) == n - 1:
        last = head[-1].rsplit("::", 1)
        if len(last) == 2:
            return [*head[:-1], *last]
    found = line.count("::") + 1
    raise DataError(
        f"{path}:{lineno}: found {found} field(s), expected {n} ({layout}) separated by '::': "
        f"{line[:60]!r}"
    )


def _int_field(path: Path, lineno: int, name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{path}:{lineno}: {name} is {value!r}, expected an integer") from None


def _movies_dat(path: Path) -> pd.DataFrame:
    """ML-1M/10M ``movies.dat``: ``MovieID::Title::Genres``."""
    ids, titles, genres = [], [], []
    for lineno, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        movie, title, genre = _fields(path, lineno, line, 3, "MovieID, Title, Genres")
        ids.append(_int_field(path, lineno, "MovieID", movie))
        titles.append(title.strip())
        genres.append(genre.strip())
    return _movie_frame(pd.Series(ids), pd.Series(titles, dtype=object), pd.Series(genres))


def _movie_frame(ids: pd.Series, titles: pd.Series, genres: pd.Series) -> pd.DataFrame:
    titles = titles.astype(object).where(titles.notna(), "").astype(str).str.strip()
    frame = pd.DataFrame(
        {
            "title": titles.to_numpy(),
            "year": movie_year(titles).to_numpy(),
            "genres": _genres(genres).to_numpy(),
        },
        index=pd.Index(ids.to_numpy(), name="item"),
    )
    dup = frame.index.duplicated()
    if dup.any():
        raise DataError(f"movie id {frame.index[dup][0]} is listed twice in the movies file")
    return frame


def top_tags(items: pd.Series, tags: pd.Series, k: int = TOP_TAGS) -> pd.Series:
    """Per item, its ``k`` most used tags (lower-cased, ties alphabetical), ``|``-joined."""
    frame = pd.DataFrame(
        {"item": items.to_numpy(), "tag": tags.astype(object).fillna("").astype(str).to_numpy()}
    )
    frame["tag"] = frame["tag"].str.strip().str.lower().str.replace("|", "/", regex=False)
    frame = frame[frame["tag"] != ""]
    counts = frame.groupby(["item", "tag"]).size().reset_index(name="n")
    counts = counts.sort_values(["item", "n", "tag"], ascending=[True, False, True])
    return counts.groupby("item").head(k).groupby("item")["tag"].agg("|".join)


def _with_tags(items: pd.DataFrame | None, tags: pd.Series | None) -> pd.DataFrame | None:
    if items is None or tags is None:
        return items
    items = items.copy()
    items["tags"] = tags.reindex(items.index).fillna("").to_numpy()
    return items


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


# ----------------------------------------------------------------- ML-1M

#: ML-1M README: occupation codes of users.dat.
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
#: ML-1M README: age codes of users.dat (the lower bound of each range).
ML1M_AGES = {
    1: "Under 18",
    18: "18-24",
    25: "25-34",
    35: "35-44",
    45: "45-49",
    50: "50-55",
    56: "56+",
}


def parse_ml1m(directory: Path) -> RawData:
    """``ratings.dat`` (required), ``movies.dat``, ``users.dat`` (optional)."""
    interactions = read_table(
        directory / "ratings.dat",
        [("user", "int"), ("item", "int"), ("rating", "int"), ("timestamp", "int")],
        sep="::",
    )
    items = _movies_dat(directory / "movies.dat") if (directory / "movies.dat").is_file() else None
    users = None
    if (directory / "users.dat").is_file():
        users = _ml1m_users(directory / "users.dat")
    return RawData(interactions=interactions, items=items, users=users)


def _ml1m_users(path: Path) -> pd.DataFrame:
    table = read_table(
        path,
        [
            ("user", "int"),
            ("gender", "str"),
            ("age", "int"),
            ("occupation", "int"),
            ("zip_code", "str"),
        ],
        sep="::",
        encoding=_LATIN1,
    )
    occupation = [
        ML1M_OCCUPATIONS[c] if 0 <= c < len(ML1M_OCCUPATIONS) else str(c)
        for c in table["occupation"].tolist()
    ]
    return pd.DataFrame(
        {
            "age": table["age"].to_numpy(),
            "age_group": [ML1M_AGES.get(a, str(a)) for a in table["age"].tolist()],
            "gender": table["gender"].to_numpy(),
            "occupation": occupation,
            "zip_code": table["zip_code"].to_numpy(),
        },
        index=pd.Index(table["user"].to_numpy(), name="user"),
    )


# ----------------------------------------------------------------- ML-10M


def parse_ml10m(directory: Path) -> RawData:
    """``ratings.dat`` (required; half-star ratings), ``movies.dat``, ``tags.dat``."""
    interactions = read_table(
        directory / "ratings.dat",
        [("user", "int32"), ("item", "int32"), ("rating", "float32"), ("timestamp", "int")],
        sep="::",
    )
    items = _movies_dat(directory / "movies.dat") if (directory / "movies.dat").is_file() else None
    tags = None
    if items is not None and (directory / "tags.dat").is_file():
        tags = _tags_dat(directory / "tags.dat")
    return RawData(interactions=interactions, items=_with_tags(items, tags))


def _tags_dat(path: Path) -> pd.Series:
    """ML-10M ``tags.dat``: ``UserID::MovieID::Tag::Timestamp`` → top tags per movie."""
    movies, tags = [], []
    for lineno, line in enumerate(_text_lines(path), 1):
        if not line.strip():
            continue
        _, movie, tag, _ = _fields(path, lineno, line, 4, "UserID, MovieID, Tag, Timestamp")
        movies.append(_int_field(path, lineno, "MovieID", movie))
        tags.append(tag)
    return top_tags(pd.Series(movies, dtype="int64"), pd.Series(tags, dtype=object))


# ----------------------------------------------------------------- ML-20M


def parse_ml20m(directory: Path) -> RawData:
    """``ratings.csv`` (required), ``movies.csv``, ``tags.csv``: CSV with headers."""
    ratings = read_csv_typed(
        directory / "ratings.csv",
        [("userId", "int32"), ("movieId", "int32"), ("rating", "float32"), ("timestamp", "int")],
    )
    ratings.columns = ["user", "item", "rating", "timestamp"]
    items = tags = None
    if (directory / "movies.csv").is_file():
        movies = read_csv_typed(
            directory / "movies.csv", [("movieId", "int"), ("title", "str"), ("genres", "str")]
        )
        items = _movie_frame(movies["movieId"], movies["title"], movies["genres"])
    if items is not None and (directory / "tags.csv").is_file():
        frame = read_csv_typed(directory / "tags.csv", [("movieId", "int"), ("tag", "str")])
        tags = top_tags(frame["movieId"], frame["tag"])
    return RawData(interactions=ratings, items=_with_tags(items, tags))


# ----------------------------------------------------------------- variants and downloads

VARIANTS: dict[str, Variant] = {
    "ml-100k": Variant(("u.data", "u.item", "u.user", "u.genre"), parse_ml100k, "ml-100k"),
    "ml-1m": Variant(("ratings.dat", "movies.dat", "users.dat"), parse_ml1m, "ml-1m"),
    "ml-10m": Variant(("ratings.dat", "movies.dat", "tags.dat"), parse_ml10m, "ml-10M100K"),
    "ml-20m": Variant(("ratings.csv", "movies.csv", "tags.csv"), parse_ml20m, "ml-20m"),
}

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
ABOUT = (
    "MovieLens by GroupLens Research (https://grouplens.org/datasets/movielens/): free for "
    "research use, may not be redistributed; cite Harper & Konstan, TiiS 2015"
)
#: Published sizes and SHA-256 (as recorded by TensorFlow Datasets); ML-10M has
#: none at hand, so its checksum is recorded on first download.
_ARCHIVES = {
    "ml-100k": Archive(
        GROUPLENS + "ml-100k.zip",
        4_924_029,
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
    ),
    "ml-1m": Archive(
        GROUPLENS + "ml-1m.zip",
        5_917_549,
        "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
    ),
    "ml-10m": Archive(GROUPLENS + "ml-10m.zip"),
    "ml-20m": Archive(
        GROUPLENS + "ml-20m.zip",
        198_702_078,
        "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
    ),
}
DOWNLOADS: dict[str, Download] = {
    name: Download(
        name=name,
        archives=(_ARCHIVES[name],),
        subdir=variant.folder,
        required=variant.files,
        dataset={"name": "movielens", "variant": name},
        about=ABOUT,
    )
    for name, variant in VARIANTS.items()
}
MovieLens.downloads = DOWNLOADS


@hookimpl
def register_datasets(register) -> None:
    register(MovieLens)
