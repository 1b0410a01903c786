"""The ``steam`` dataset plugin on fixtures in the published format: gzipped
lines of Python dict literals (reviews) and the games metadata file."""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import pytest
from pydantic import ValidationError

import seqrec_steam
from seqrec_core.errors import DataError
from seqrec_steam import Steam, _flat_tokens, parse_line, read_reviews

REVIEWS = [
    {
        "username": "Chaos Syren",
        "hours": 0.1,
        "products": 41,
        "product_id": "725280",
        "page_order": 0,
        "date": "2017-12-17",
        "text": "This would not be acceptable as an entertainment even back in the day.",
        "early_access": False,
        "page": 1,
    },
    {
        "username": "O'Brien",  # repr switches to double quotes
        "hours": 12.5,
        "product_id": "35140",
        "date": "2017-12-16",
        "text": 'Great "Batman" game\nwith a backslash \\ and naïve unicode',
        "found_funny": 2,
        "early_access": False,
    },
    {
        "username": "Chaos Syren",
        "hours": None,
        "product_id": "35140",
        "date": "2017-12-18",
        "text": "It's 'fine' — really",
        "compensation": "Product received for free",
        "early_access": True,
    },
    {  # a nested value: not a flat dict, so it goes to ast.literal_eval
        "username": "Zed",
        "product_id": "725280",
        "date": "2016-01-02",
        "text": "x",
        "tags": ["a", "b"],
    },
]

GAMES = [
    {
        "publisher": "Kotoshiro",
        "genres": ["Action", "Casual", "Indie"],
        "app_name": "Lost Summoner Kitty",
        "title": "Lost Summoner Kitty",
        "release_date": "2018-01-04",
        "tags": ["Strategy", "Action"],
        "price": 4.99,
        "early_access": False,
        "id": "725280",
        "developer": "Kotoshiro",
    },
    {
        "genres": ["Action"],
        "title": "Batman: Arkham Asylum Game of the Year Edition",
        "release_date": "2010-03-26",
        "id": "35140",
        "developer": "Rocksteady Studios, Feral Interactive (Mac)",
        "publisher": "Warner Bros. Interactive Entertainment",
    },
    {"app_name": "No id here", "title": "No id here"},
    {"app_name": "Duplicate", "id": "35140"},
]


def write_gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture
def steam_dir(tmp_path: Path) -> Path:
    """The published files: one ``repr(dict)`` per line, gzipped."""
    write_gz(tmp_path / "steam_reviews.json.gz", [repr(r) for r in REVIEWS])
    write_gz(tmp_path / "steam_games.json.gz", [repr(g) for g in GAMES])
    return tmp_path


def load(path: Path, **options):
    source = Steam()
    return source.load(source.Options(path=str(path), **options))


def test_fixture_is_python_literals_not_json(steam_dir):
    with gzip.open(steam_dir / "steam_reviews.json.gz", "rt", encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith("{'username': 'Chaos Syren'") and "False" in first


def test_reviews_become_interactions_in_file_order(steam_dir):
    raw = load(steam_dir)
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "timestamp"]
    assert df["user"].tolist() == ["Chaos Syren", "O'Brien", "Chaos Syren", "Zed"]
    assert df["item"].tolist() == [725280, 35140, 35140, 725280]  # app ids become ints
    assert df["timestamp"].tolist() == [1513468800, 1513382400, 1513555200, 1451692800]


def test_games_metadata_gives_titles(steam_dir, raw_to_sequences):
    raw = load(steam_dir)
    items = raw.items
    assert sorted(items.index) == [35140, 725280]  # entry without an id is skipped
    assert items.loc[725280, "title"] == "Lost Summoner Kitty"
    # no app_name: the title; the duplicate id keeps its first entry
    assert items.loc[35140, "title"] == "Batman: Arkham Asylum Game of the Year Edition"
    assert items.loc[35140, "developer"] == "Rocksteady Studios, Feral Interactive (Mac)"
    assert items.loc[725280, "genres"] == "Action|Casual|Indie"
    assert items.loc[725280, "year"] == 2018
    data = raw_to_sequences("steam", raw)
    user = int(data.user_map.to_internal(["Chaos Syren"])[0])
    seq = data.items[data.offsets[user] : data.offsets[user + 1]]
    assert data.titles(seq) == [
        "Lost Summoner Kitty",
        "Batman: Arkham Asylum Game of the Year Edition",
    ]


def test_games_file_is_optional(steam_dir):
    (steam_dir / "steam_games.json.gz").unlink()
    assert load(steam_dir).items is None
    assert load(steam_dir / "steam_reviews.json.gz").interactions.shape[0] == 4  # file path


@pytest.mark.parametrize(
    "record",
    [
        *REVIEWS,
        *GAMES,
        {"a": "tab\there", "b": -1.5e-3, "c": "\x07bell", "d": "'both' \"quotes\""},
        {"k": "ünïcödé ✓", "n": 0, "e": ""},
        {},
    ],
)
def test_fast_tokenizer_agrees_with_literal_eval(record):
    line = repr(record)
    assert parse_line(line) == ast.literal_eval(line) == record
    flat = not any(isinstance(v, list | dict) for v in record.values())
    assert (_flat_tokens(line) is not None) == flat  # flat dicts take the fast path


@pytest.mark.parametrize(
    "line",
    [
        "{'a': 1, }",
        "{'a': 1,'b': 2}",
        "{'a': 'x' 'y'}",
        "{'a': 1} ",
        "{'a': __import__('os')}",
    ],
)
def test_fast_tokenizer_defers_odd_lines_to_literal_eval(line):
    try:
        expected = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        with pytest.raises(DataError, match="not a Python dict literal"):
            parse_line(line, "f.gz", 3)
    else:
        assert parse_line(line.strip()) == expected


@pytest.mark.parametrize(
    "bad, expected",
    [
        ("{'username': 'x', 'product_id': '1', 'date': '2017-01-01'", "not a Python dict literal"),
        ('{"username": os.system("rm -rf /")}', "not a Python dict literal"),
        ("['username', 'product_id']", "expected a dict literal"),
        ("{'username': 'x', 'date': '2017-01-01'}", "the review has no 'product_id'"),
        ("{'username': 'x', 'product_id': '1', 'date': 'yesterday'}", "date is 'yesterday'"),
        ("{'username': '', 'product_id': '1', 'date': '2017-01-01'}", "username is ''"),
    ],
)
def test_bad_review_line_names_the_line(tmp_path, bad, expected):
    lines = [repr(r) for r in REVIEWS[:2]] + [bad] + [repr(REVIEWS[2])]
    write_gz(tmp_path / "steam_reviews.json.gz", lines)
    with pytest.raises(DataError) as err:
        read_reviews(tmp_path / "steam_reviews.json.gz")
    message = str(err.value)
    assert "steam_reviews.json.gz:3: " in message and expected in message
    assert "\n" not in message


def test_truncated_gzip_is_reported(tmp_path):
    path = write_gz(tmp_path / "steam_reviews.json.gz", [repr(r) for r in REVIEWS] * 50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="gzip stream is truncated or corrupt"):
        read_reviews(path)


def test_user_key_option(tmp_path):
    rows = [dict(r, user_id=f"7656{i}") for i, r in enumerate(REVIEWS[:3])]
    write_gz(tmp_path / "steam_reviews.json.gz", [repr(r) for r in rows])
    df = load(tmp_path, user_key="user_id").interactions
    assert df["user"].tolist() == ["76560", "76561", "76562"]


def test_missing_folder_or_file(tmp_path):
    with pytest.raises(DataError, match="does not exist; set dataset.path"):
        load(tmp_path / "nope")
    with pytest.raises(DataError, match=r"has no steam_reviews\.json\.gz"):
        load(tmp_path)


def test_options_and_fingerprint(steam_dir):
    with pytest.raises(ValidationError):
        Steam.Options(path="x", user="username")
    assert Steam.Options().path == "auto"
    source = Steam()
    options = source.Options(path=str(steam_dir))
    before = source.fingerprint(options)
    write_gz(steam_dir / "steam_games.json.gz", [repr(GAMES[0])])
    assert source.fingerprint(options) != before  # the games file counts too


def test_registered_and_cached_through_the_pipeline(steam_dir, load_via_pipeline):
    options = Steam.Options(path=str(steam_dir))
    data = load_via_pipeline(seqrec_steam, "steam", options)
    cached = load_via_pipeline(seqrec_steam, "steam", options)
    assert cached.titles([1, 2]) == data.titles([1, 2])
    assert data.stats()["interactions"] == 4 and data.n_users == 3
