"""The ``movielens`` dataset plugin on small fixtures written in the exact
official formats of ML-100K, ML-1M, ML-10M and ML-20M (and, opt-in, on the
real ML-100K files when present)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
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


def load(path: Path, variant: str = "ml-100k"):
    source = MovieLens()
    return source.load(source.Options(path=str(path), variant=variant))


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
        MovieLens.Options(path="x", variant="ml-25m")
    with pytest.raises(ValidationError):
        MovieLens.Options(path="x", variants="ml-100k")
    assert MovieLens.Options().path == "auto"  # download on first use
    assert MovieLens.Options(variant="ml-20m").variant == "ml-20m"


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


# ------------------------------------------------------------------ ML-1M (:: and Latin-1)

ML1M_RATINGS = [  # UserID::MovieID::Rating::Timestamp, in file order
    (1, 1193, 5, 978300760),
    (1, 661, 3, 978302109),
    (1, 914, 3, 978301968),
    (2, 1357, 5, 978298709),
    (2, 73, 4, 978299000),
    (2, 260, 4, 978298000),
]
ML1M_MOVIES = [
    "73::Misérables, Les (1995)::Drama|Musical",
    "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Fantasy|Sci-Fi",
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical",
    "914::My Fair Lady (1964)::Musical|Romance",
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
    "1357::Shine (1996)::Drama|Romance",
]
ML1M_USERS = ["1::F::1::10::48067", "2::M::56::16::70072"]


def write_ml1m(directory: Path, ratings: list[str] | None = None) -> Path:
    """The official ML-1M layout: ``::`` separated, Latin-1 metadata."""
    directory.mkdir(parents=True, exist_ok=True)
    if ratings is None:
        ratings = ["::".join(map(str, r)) for r in ML1M_RATINGS]
    (directory / "ratings.dat").write_bytes(("\n".join(ratings) + "\n").encode("ascii"))
    (directory / "movies.dat").write_bytes(("\n".join(ML1M_MOVIES) + "\n").encode("latin-1"))
    (directory / "users.dat").write_bytes(("\n".join(ML1M_USERS) + "\n").encode("latin-1"))
    return directory


def test_ml1m_ratings_titles_and_users(tmp_path, raw_to_sequences):
    directory = write_ml1m(tmp_path / "ml-1m")
    assert "Misérables".encode("latin-1") in (directory / "movies.dat").read_bytes()
    raw = load(directory, "ml-1m")
    df = raw.interactions
    assert [tuple(r) for r in df.itertuples(index=False)] == ML1M_RATINGS
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    items = raw.items
    assert items.loc[73, "title"] == "Misérables, Les (1995)"  # Latin-1 decoded
    assert items.loc[260, "title"] == "Star Wars: Episode IV - A New Hope (1977)"  # ':' kept
    assert items.loc[260, "genres"] == "Action|Adventure|Fantasy|Sci-Fi"
    assert items.loc[1193, "year"] == 1975
    users = raw.users
    assert users.loc[1].to_dict() == {
        "age": 1,
        "age_group": "Under 18",
        "gender": "F",
        "occupation": "K-12 student",
        "zip_code": "48067",
    }
    assert users.loc[2, "occupation"] == "self-employed"
    assert users.loc[2, "age_group"] == "56+"
    data = raw_to_sequences("movielens", raw)
    user = int(data.user_map.to_internal([1])[0])
    seq = data.items[data.offsets[user] : data.offsets[user + 1]]
    assert data.item_map.to_raw(seq).tolist() == [1193, 914, 661]  # by timestamp
    assert "Misérables, Les (1995)" in data.titles(range(1, data.n_items + 1))


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("2::73::4", "found 3 field(s), expected 4 fields (user, item, rating, timestamp)"),
        ("2::73::4::978299000::1", "found 5 field(s)"),
        ("2:73::4::978299000", "found 3 field(s)"),
        ("2::x::4::978299000", "item is 'x', expected an integer"),
        ("2\t73\t4\t978299000", "found 1 field(s)"),
    ],
)
def test_ml1m_bad_rating_line_names_the_line(tmp_path, bad_line, expected):
    lines = ["::".join(map(str, r)) for r in ML1M_RATINGS]
    lines[4] = bad_line
    directory = write_ml1m(tmp_path / "ml-1m", ratings=lines)
    with pytest.raises(DataError) as err:
        load(directory, "ml-1m")
    message = str(err.value)
    assert f"ratings.dat:5: {expected}" in message
    assert "\n" not in message


def test_ml1m_bad_movie_line_names_the_line(tmp_path):
    directory = write_ml1m(tmp_path / "ml-1m")
    lines = list(ML1M_MOVIES)
    lines[2] = "661::James and the Giant Peach (1996)"
    (directory / "movies.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"movies\.dat:3: found 2 field\(s\), expected 3"):
        load(directory, "ml-1m")
    lines[2] = "six::James and the Giant Peach (1996)::Drama"
    (directory / "movies.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"movies\.dat:3: MovieID is 'six', expected an integer"):
        load(directory, "ml-1m")


def test_double_colon_reader_matches_the_slow_parser(tmp_path):
    """The fast ``::`` path and a plain line split agree, blank lines and CRLF included."""
    from seqrec_core.data.readers import read_table

    lines = [f"{u}::{i}::{r}::{t}" for u, i, r, t in ML1M_RATINGS]
    text = lines[0] + "\r\n\n" + "\n".join(lines[1:]) + "\n"
    (tmp_path / "ratings.dat").write_text(text)
    cols = [("user", "int"), ("item", "int"), ("rating", "float"), ("timestamp", "int")]
    df = read_table(tmp_path / "ratings.dat", cols, sep="::")
    assert [tuple(r) for r in df.itertuples(index=False)] == ML1M_RATINGS


# ------------------------------------------------------------------ ML-10M (half stars, tags)

ML10M_RATINGS = ["1::122::5::838985046", "1::185::4.5::838983525", "2::122::0.5::838983421"]
ML10M_MOVIES = [
    "122::Boomerang (1992)::Comedy|Romance",
    "185::Net, The (1995)::Action|Crime|Thriller",
    "5000::Misérables, Les (2000)::(no genres listed)",
]
ML10M_TAGS = [
    "15::122::dark comedy::1215184630",
    "20::122::Dark Comedy::1215184631",
    "21::122::eddie murphy::1215184632",
    "22::185::sci-fi: classic::1215184633",
    "23::185::hacker::1215184634",
]


def write_ml10m(directory: Path) -> Path:
    """The official ML-10M layout (folder ml-10M100K): ``::`` separated."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.dat").write_text("\n".join(ML10M_RATINGS) + "\n")
    (directory / "movies.dat").write_bytes(("\n".join(ML10M_MOVIES) + "\n").encode("utf-8"))
    (directory / "tags.dat").write_text("\n".join(ML10M_TAGS) + "\n")
    return directory


def test_ml10m_half_stars_titles_and_tags(tmp_path):
    raw = load(write_ml10m(tmp_path / "ml-10M100K"), "ml-10m")
    df = raw.interactions
    assert df["rating"].tolist() == [5.0, 4.5, 0.5]
    assert df["item"].tolist() == [122, 185, 122]
    assert df["timestamp"].tolist() == [838985046, 838983525, 838983421]
    items = raw.items
    assert items.loc[5000, "title"] == "Misérables, Les (2000)"  # UTF-8 here
    assert items.loc[5000, "genres"] == ""  # "(no genres listed)"
    assert items.loc[185, "year"] == 1995
    assert items.loc[122, "tags"] == "dark comedy|eddie murphy"  # by count, case folded
    assert items.loc[185, "tags"] == "hacker|sci-fi: classic"
    assert raw.users is None


def test_ml10m_hint_for_the_parent_folder(tmp_path):
    write_ml10m(tmp_path / "ml-10M100K")
    with pytest.raises(
        DataError, match=re.escape(f"set dataset.path to {tmp_path / 'ml-10M100K'}")
    ):
        load(tmp_path, "ml-10m")


# ------------------------------------------------------------------ ML-20M (CSV, quoted titles)

ML20M_RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,2,3.5,1112486027\n"
    "1,29,3.5,1112484676\n"
    "1,11,4.0,1112484580\n"
    "2,3,4.0,974820889\n"
    "2,11,5.0,974820691\n"
)
ML20M_MOVIES = (
    "movieId,title,genres\n"
    "2,Jumanji (1995),Adventure|Children|Fantasy\n"
    "3,Grumpier Old Men (1995),Comedy|Romance\n"
    '11,"American President, The (1995)",Comedy|Drama|Romance\n'
    '29,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Adventure|Drama\n'
    '131,"Babylon 5 ""In the Beginning"" (1994-1998)",Sci-Fi\n'
    "131262,Innocence (2014),(no genres listed)\n"
)
ML20M_TAGS = (
    "userId,movieId,tag,timestamp\n"
    "18,11,Mark Waters,1240597180\n"
    '65,11,"politics, romance",1368150078\n'
    "65,29,dark hero,1368150079\n"
    "70,11,politics,1368150080\n"
    '71,11,"politics, romance",1368150081\n'
)


def write_ml20m(directory: Path, ratings: str = ML20M_RATINGS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratings.csv").write_text(ratings, encoding="utf-8")
    (directory / "movies.csv").write_text(ML20M_MOVIES, encoding="utf-8")
    (directory / "tags.csv").write_text(ML20M_TAGS, encoding="utf-8")
    return directory


def test_ml20m_csv_with_quoted_titles(tmp_path, raw_to_sequences):
    raw = load(write_ml20m(tmp_path / "ml-20m"), "ml-20m")
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert df["item"].tolist() == [2, 29, 11, 3, 11]
    assert df["rating"].tolist() == [3.5, 3.5, 4.0, 4.0, 5.0]
    assert df["timestamp"].dtype == np.int64
    items = raw.items
    assert items.loc[11, "title"] == "American President, The (1995)"  # comma inside quotes
    assert items.loc[29, "title"].startswith("City of Lost Children, The (Cité")
    assert items.loc[131, "title"] == 'Babylon 5 "In the Beginning" (1994-1998)'
    assert items.loc[131, "year"] == 1994  # first year of a range
    assert items.loc[131262, "genres"] == ""
    assert items.loc[11, "tags"] == "politics, romance|mark waters|politics"
    assert items.loc[2, "tags"] == ""
    data = raw_to_sequences("movielens", raw)
    assert data.titles(data.item_map.to_internal([11])) == ["American President, The (1995)"]
    first = data.items[data.offsets[0] : data.offsets[1]]
    assert data.item_map.to_raw(first).tolist() == [11, 29, 2]  # by timestamp


@pytest.mark.parametrize(
    "line, expected",
    [
        ("2,3,4.0", "ratings.csv:4: found 3 field(s), expected 4 (as in the header)"),
        ("2,3,4.0,974820889,9", "ratings.csv:4: found 5 field(s)"),
        (
            "2,three,4.0,974820889",
            "ratings.csv:4: column 'movieId' is 'three', expected an integer",
        ),
        ("2,3,,974820889", "ratings.csv:4: column 'rating' is '', expected a number"),
    ],
)
def test_ml20m_bad_line_names_the_line(tmp_path, line, expected):
    rows = ML20M_RATINGS.splitlines()
    rows[3] = line
    directory = write_ml20m(tmp_path / "ml-20m", "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        load(directory, "ml-20m")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_ml20m_wrong_header(tmp_path):
    directory = write_ml20m(tmp_path / "ml-20m", "user,movie,rating,time\n1,2,3.5,1\n")
    with pytest.raises(DataError, match=r"ratings\.csv:1: the header has no column 'userId'"):
        load(directory, "ml-20m")


# ------------------------------------------------------------------ cache invalidation


def test_cache_is_rebuilt_when_a_file_or_an_option_changes(tmp_path, load_via_pipeline):
    from seqrec_core.data.pipeline import cache_root

    directory = write_ml1m(tmp_path / "ml-1m")
    options = MovieLens.Options(path=str(directory), variant="ml-1m")
    first = load_via_pipeline(seqrec_movielens, "movielens", options)
    assert len(list(cache_root().iterdir())) == 1
    again = load_via_pipeline(seqrec_movielens, "movielens", options)
    np.testing.assert_array_equal(first.items, again.items)
    assert len(list(cache_root().iterdir())) == 1  # a hit: nothing new

    with open(directory / "ratings.dat", "a") as f:  # a changed source file
        f.write("3::73::5::978300000\n")
    changed = load_via_pipeline(seqrec_movielens, "movielens", options)
    assert changed.n_users == first.n_users + 1
    assert len(list(cache_root().iterdir())) == 2

    filtered = load_via_pipeline(seqrec_movielens, "movielens", options, min_rating=5)
    assert len(filtered.items) == 3  # a changed option
    assert len(list(cache_root().iterdir())) == 3


def test_bad_input_leaves_the_cache_as_it_was(tmp_path, load_via_pipeline):
    from seqrec_core.data.pipeline import cache_root

    directory = write_ml1m(tmp_path / "ml-1m")
    options = MovieLens.Options(path=str(directory), variant="ml-1m")
    load_via_pipeline(seqrec_movielens, "movielens", options)
    before = sorted(p.name for p in cache_root().rglob("*"))
    with open(directory / "ratings.dat", "a") as f:
        f.write("3::73::five::978300000\n")
    with pytest.raises(DataError, match=r"ratings\.dat:7: rating is 'five'"):
        load_via_pipeline(seqrec_movielens, "movielens", options)
    assert sorted(p.name for p in cache_root().rglob("*")) == before
