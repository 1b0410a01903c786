"""The ``movielens`` dataset plugin on a small fixture written in the exact
official ML-100K format (and, opt-in, on the real files when present)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

import seqrec_movielens
from seqrec_core.errors import DataError
from seqrec_movielens import ML100K_GENRES, MovieLens

REAL_ML100K = Path(
    os.environ.get("SEQREC_ML100K", Path(__file__).parents[2] / "shared" / "data" / "ml-100k")
)

U_DATA = [  # user item rating timestamp, in file order (not sorted by time)
    (196, 242, 3, 881250949),
    (186, 302, 3, 891717742),
    (196, 1, 5, 881250900),
    (22, 543, 1, 878887116),
    (196, 543, 4, 881251000),
    (186, 1, 2, 891717000),
    (22, 267, 4, 878887000),
]


def _flags(*genres: str) -> str:
    return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


KIDS = "Children's"
U_ITEM = [
    f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|"
    f"{_flags('Animation', KIDS, 'Comedy')}",
    f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|"
    f"{_flags('Comedy')}",
    f"267|unknown||||{_flags('unknown')}",
    f"302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/x|"
    f"{_flags('Crime', 'Film-Noir', 'Mystery', 'Thriller')}",
    f"543|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables|"
    f"{_flags('Drama', 'Musical')}",
    f"1412|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1995||"
    f"http://us.imdb.com/y|{_flags('Animation')}",
    f"1500|Heidi Fleiss: Hollywood Madam |09-Feb-1996||http://us.imdb.com/z|"
    f"{_flags('Documentary')}",
]

U_USER = [
    "22|25|M|writer|40206",
    "186|39|F|executive|00000",
    "196|49|M|writer|55105",
    "300|26|F|other|T8H1N",
]


def write_ml100k(directory: Path, data_lines: list[str] | None = None, genre_file: bool = True):
    """The official layout: tab-separated u.data, Latin-1 pipe-separated
    u.item / u.user / u.genre, Unix newlines."""
    directory.mkdir(parents=True, exist_ok=True)
    if data_lines is None:
        data_lines = ["\t".join(map(str, row)) for row in U_DATA]
    (directory / "u.data").write_bytes(("\n".join(data_lines) + "\n").encode("ascii"))
    (directory / "u.item").write_bytes(("\n".join(U_ITEM) + "\n").encode("latin-1"))
    (directory / "u.user").write_bytes(("\n".join(U_USER) + "\n").encode("latin-1"))
    if genre_file:
        genres = "".join(f"{g}|{i}\n" for i, g in enumerate(ML100K_GENRES)) + "\n"
        (directory / "u.genre").write_bytes(genres.encode("latin-1"))
    return directory


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    return write_ml100k(tmp_path / "ml-100k")


def load(path: Path):
    source = MovieLens()
    return source.load(source.Options(path=str(path)))


def test_fixture_is_in_the_official_encoding(ml100k):
    raw_bytes = (ml100k / "u.item").read_bytes()
    assert "Misérables".encode("latin-1") in raw_bytes
    with pytest.raises(UnicodeDecodeError):
        raw_bytes.decode("utf-8")


def test_ratings_in_file_order(ml100k):
    df = load(ml100k).interactions
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert [tuple(r) for r in df.itertuples(index=False)] == U_DATA
    assert all(df[c].dtype.kind == "i" for c in df.columns)


def test_item_titles_years_and_genres(ml100k):
    items = load(ml100k).items
    assert sorted(items.index) == [1, 242, 267, 302, 543, 1412, 1500]
    assert items.loc[543, "title"] == "Misérables, Les (1995)"
    assert items.loc[1500, "title"] == "Heidi Fleiss: Hollywood Madam"  # stripped
    assert items.loc[1, "year"] == 1995
    assert items.loc[242, "year"] == 1996  # the title's year, not the 1997 release
    assert items.loc[1412, "year"] == 1995  # "(1995) (V)"
    assert items.loc[1500, "year"] == 1996  # no year in the title: release date
    assert items["year"].isna().tolist() == [i == 267 for i in items.index]
    assert items.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert items.loc[302, "genres"] == "Crime|Film-Noir|Mystery|Thriller"
    assert items.loc[267, "genres"] == "unknown"


def test_genre_names_come_from_u_genre(tmp_path):
    directory = write_ml100k(tmp_path / "ml")
    renamed = [("Kids" if g == "Children's" else g) for g in ML100K_GENRES]
    (directory / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(renamed)))
    assert load(directory).items.loc[1, "genres"] == "Animation|Kids|Comedy"


def test_without_u_genre_the_known_genre_list_is_used(tmp_path):
    directory = write_ml100k(tmp_path / "ml", genre_file=False)
    assert load(directory).items.loc[1, "genres"] == "Animation|Children's|Comedy"


def test_user_metadata(ml100k):
    users = load(ml100k).users
    assert sorted(users.index) == [22, 186, 196, 300]
    assert users.loc[186].to_dict() == {
        "age": 39,
        "gender": "F",
        "occupation": "executive",
        "zip_code": "00000",  # zip codes stay text
    }
    assert users.loc[300, "zip_code"] == "T8H1N"


def test_metadata_files_are_optional(ml100k, raw_to_sequences):
    (ml100k / "u.item").unlink()
    (ml100k / "u.user").unlink()
    raw = load(ml100k)
    assert raw.items is None and raw.users is None
    data = raw_to_sequences("movielens", raw)
    assert data.titles([1]) == ["item 1"]


def test_build_sequences_orders_by_time_with_titles(ml100k, raw_to_sequences):
    data = raw_to_sequences("movielens", load(ml100k))
    assert data.n_users == 3 and data.n_items == 5
    user = int(data.user_map.to_internal([196])[0])
    history = data.items[data.offsets[user] : data.offsets[user + 1]]
    assert data.item_map.to_raw(history).tolist() == [1, 242, 543]  # by timestamp
    assert data.titles(data.item_map.to_internal([543])) == ["Misérables, Les (1995)"]
    assert data.item_meta.loc[data.item_map.to_internal([242])[0], "year"] == 1996
    assert data.user_meta.loc[user, "occupation"] == "writer"


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("186\t302\t3\t891717742\t7", "found 5 field(s), expected 4 fields"),
        ("186\t302\t3", "found 3 field(s), expected 4 fields"),
        ("186 302 3 891717742", "found 1 field(s)"),
        ("186\tabc\t3\t891717742", "item is 'abc', expected an integer"),
        ("186\t302\t3.5\t891717742", "rating is '3.5', expected an integer"),
        ("186\t302\t3\t", "timestamp is '', expected an integer"),
    ],
)
def test_bad_line_in_u_data_is_reported_with_its_line(tmp_path, bad_line, expected):
    lines = ["\t".join(map(str, row)) for row in U_DATA]
    lines[2] = bad_line
    directory = write_ml100k(tmp_path / "ml", data_lines=lines)
    with pytest.raises(DataError) as err:
        load(directory)
    message = str(err.value)
    assert f"u.data:3: {expected}" in message
    assert "\n" not in message


def test_extra_field_on_the_first_line_is_not_dropped(tmp_path):
    lines = ["\t".join(map(str, row)) for row in U_DATA]
    lines[0] += "\t99"
    with pytest.raises(DataError, match=r"u\.data:1: found 5 field"):
        load(write_ml100k(tmp_path / "ml", data_lines=lines))


def test_blank_lines_are_skipped_and_counted(tmp_path):
    lines = ["\t".join(map(str, row)) for row in U_DATA]
    lines.insert(1, "")
    assert len(load(write_ml100k(tmp_path / "ok", data_lines=lines)).interactions) == len(U_DATA)
    lines[4] = "x\t1\t1\t1"
    with pytest.raises(DataError, match=r"u\.data:5: user is 'x'"):
        load(write_ml100k(tmp_path / "bad", data_lines=lines))


def test_bad_line_in_u_item_is_reported(ml100k):
    lines = list(U_ITEM)
    lines[1] = "242|Kolya (1996)|24-Jan-1997"
    (ml100k / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"u\.item:2: found 3 field\(s\), expected 24 fields"):
        load(ml100k)


def test_missing_directory_says_what_to_do(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as err:
        load(missing)
    message = str(err.value)
    assert str(missing) in message and "does not exist" in message
    assert (
        "point dataset.path at the directory that contains u.data (the unzipped ml-100k folder)"
        in message
    )


def test_directory_without_u_data(tmp_path):
    with pytest.raises(DataError, match=r"has no u\.data; point dataset\.path"):
        load(tmp_path)


def test_parent_of_the_data_folder_gets_a_hint(ml100k):
    with pytest.raises(DataError, match=re.escape(f"set dataset.path to {ml100k}")):
        load(ml100k.parent)


def test_path_to_u_data_itself_gets_a_hint(ml100k):
    expected = f"u.data: is a file, not a directory; set dataset.path to {ml100k}"
    with pytest.raises(DataError, match=re.escape(expected)):
        load(ml100k / "u.data")


def test_fingerprint_changes_with_the_files(ml100k):
    source = MovieLens()
    options = source.Options(path=str(ml100k))
    before = source.fingerprint(options)
    assert source.fingerprint(options) == before
    with open(ml100k / "u.data", "a") as f:
        f.write("22\t1\t5\t878887200\n")
    after_data = source.fingerprint(options)
    assert after_data != before
    (ml100k / "u.user").unlink()
    assert source.fingerprint(options) != after_data


def test_options_are_validated():
    with pytest.raises(ValidationError):
        MovieLens.Options(path="x", variant="ml-1m")  # not supported yet
    with pytest.raises(ValidationError):
        MovieLens.Options(path="x", variants="ml-100k")
    with pytest.raises(ValidationError):
        MovieLens.Options()


def test_registered_and_cached_through_the_pipeline(ml100k, load_via_pipeline):
    options = MovieLens.Options(path=str(ml100k))
    data = load_via_pipeline(seqrec_movielens, "movielens", options, min_rating=3)
    assert data.stats()["interactions"] == 5  # ratings >= 3
    cached = load_via_pipeline(seqrec_movielens, "movielens", options, min_rating=3)
    assert cached.titles([1, 2, 3]) == data.titles([1, 2, 3])
    assert "Misérables, Les (1995)" in cached.titles(range(1, cached.n_items + 1))


@pytest.mark.skipif(not (REAL_ML100K / "u.data").is_file(), reason="real ML-100K not present")
def test_real_ml100k(raw_to_sequences):
    raw = load(REAL_ML100K)
    assert len(raw.interactions) == 100_000
    assert raw.interactions["user"].nunique() == 943
    assert raw.interactions["item"].nunique() == 1682
    assert len(raw.items) == 1682 and len(raw.users) == 943
    assert raw.items.loc[543, "title"] == "Misérables, Les (1995)"
    assert raw.items["year"].notna().sum() == 1681  # all but "unknown"
    data = raw_to_sequences("movielens", raw)
    assert (data.n_users, data.n_items, len(data.items)) == (943, 1682, 100_000)
