"""The ``files`` dataset plugin: CSV/TSV, Parquet and SASRec text, item titles
from a second file, and precise errors for bad input."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

import seqrec_files
from seqrec_core.errors import DataError
from seqrec_files import Files


def load(path: Path, **options):
    source = Files()
    return source.load(source.Options(path=str(path), **options))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


CUSTOM = dict(user_col="session", item_col="product", time_col="when", rating_col="stars")


@pytest.fixture
def clicks_csv(tmp_path: Path) -> Path:
    return write(
        tmp_path / "clicks.csv",
        "session,product,when,stars,extra\n"
        "7,100,30,4.5,a\n"
        "7,200,10,3,b\n"
        "8,100,20,5,c\n"
        "7,300,20,1,d\n",
    )


def test_csv_with_custom_column_names(clicks_csv):
    raw = load(clicks_csv, **CUSTOM)
    df = raw.interactions
    assert list(df.columns) == ["user", "item", "timestamp", "rating"]
    assert df["user"].tolist() == [7, 7, 8, 7]  # file order, ints stay ints
    assert df["user"].dtype.kind == "i" and df["item"].dtype.kind == "i"
    assert df["item"].tolist() == [100, 200, 100, 300]
    assert df["timestamp"].tolist() == [30, 10, 20, 20]
    assert df["rating"].tolist() == [4.5, 3, 5, 1]
    assert raw.items is None


def test_csv_sequences_follow_the_time_column(clicks_csv, raw_to_sequences):
    data = raw_to_sequences("files", load(clicks_csv, **CUSTOM))
    user = int(data.user_map.to_internal([7])[0])
    history = data.items[data.offsets[user] : data.offsets[user + 1]]
    assert data.item_map.to_raw(history).tolist() == [200, 300, 100]


def test_string_ids_and_tsv_by_extension(tmp_path):
    path = write(tmp_path / "log.tsv", "user_id\titem_id\ttimestamp\nu1\tB00X\t5\nu2\t42\t6\n")
    df = load(path).interactions
    assert df["user"].tolist() == ["u1", "u2"]
    assert df["item"].astype(str).tolist() == ["B00X", "42"]


def test_custom_separator(tmp_path):
    path = write(tmp_path / "log.csv", "user_id;item_id;timestamp\n1;2;3\n")
    assert load(path, sep=";").interactions.to_dict("list") == {
        "user": [1],
        "item": [2],
        "timestamp": [3],
    }


def test_iso_dates_become_epoch_seconds(tmp_path):
    path = write(
        tmp_path / "log.csv",
        "user_id,item_id,timestamp\n1,2,2024-01-01T10:00:00\n1,3,2024-01-01 10:00:05\n",
    )
    assert load(path).interactions["timestamp"].tolist() == [1704103200, 1704103205]


def test_no_time_column_means_file_order(tmp_path, raw_to_sequences):
    path = write(tmp_path / "log.csv", "user_id,item_id\n1,30\n1,10\n1,20\n")
    raw = load(path, time_col=None)
    assert "timestamp" not in raw.interactions.columns
    data = raw_to_sequences("files", raw)
    assert data.item_map.to_raw(data.items).tolist() == [30, 10, 20]


def test_parquet(tmp_path):
    frame = pd.DataFrame(
        {
            "uid": [1, 1, 2],
            "iid": ["a", "b", "a"],
            "at": pd.to_datetime(
                ["2024-01-01 00:00:01", "2024-01-01 00:00:02", "2023-12-31"], format="ISO8601"
            ),
            "score": [1.0, 2.0, 3.0],
        }
    )
    frame.to_parquet(tmp_path / "log.parquet")
    df = load(
        tmp_path / "log.parquet", user_col="uid", item_col="iid", time_col="at", rating_col="score"
    ).interactions
    assert df["user"].tolist() == [1, 1, 2]
    assert df["item"].tolist() == ["a", "b", "a"]
    assert df["timestamp"].tolist() == [1704067201, 1704067202, 1703980800]
    assert df["rating"].tolist() == [1.0, 2.0, 3.0]


def test_parquet_missing_column(tmp_path):
    pd.DataFrame({"user": [1], "item_id": [2]}).to_parquet(tmp_path / "log.parquet")
    with pytest.raises(DataError, match=r"no column 'user_id' \(dataset\.user_col\)"):
        load(tmp_path / "log.parquet", time_col=None)


def test_sasrec_text_keeps_file_order(tmp_path, raw_to_sequences):
    path = write(tmp_path / "ml-1m.txt", "1 5\n1 3\n2 7\n\n1 9\n2 5\n")
    raw = load(path)
    assert raw.interactions.to_dict("list") == {"user": [1, 1, 2, 1, 2], "item": [5, 3, 7, 9, 5]}
    data = raw_to_sequences("files", raw)
    first = data.items[data.offsets[0] : data.offsets[1]]
    assert data.item_map.to_raw(first).tolist() == [5, 3, 9]


@pytest.mark.parametrize(
    "bad_line, expected",
    [
        ("1 x", "item is 'x', expected an integer"),
        ("1 2 3", "found 3 field(s), expected 2 fields (user, item) separated by whitespace"),
        ("1", "found 1 field(s)"),
    ],
)
def test_bad_sasrec_line(tmp_path, bad_line, expected):
    path = write(tmp_path / "seq.txt", f"1 5\n1 3\n{bad_line}\n2 7\n")
    with pytest.raises(DataError, match=re.escape(f"seq.txt:3: {expected}")):
        load(path)


def test_missing_column_lists_columns_and_suggests(tmp_path):
    path = write(tmp_path / "log.csv", "userid,item_id,ts\n1,2,3\n")
    with pytest.raises(DataError) as err:
        load(path)
    message = str(err.value)
    assert "no column 'user_id' (dataset.user_col) (did you mean 'userid'?)" in message
    assert "columns in the file: userid, item_id, ts" in message
    with pytest.raises(DataError, match="to null to use the file order"):
        load(path, user_col="userid")


@pytest.mark.parametrize(
    "body, expected",
    [
        ("1,2,3\n4,5\n", "log.csv:3: found 2 field(s), expected 3 (as in the header)"),
        ("1,2,3,4\n4,5,6\n", "log.csv:2: found 4 field(s), expected 3"),
        ("1,2,3\n\n4,5,6,7\n", "log.csv:4: found 4 field(s), expected 3"),
        (
            "1,2,3\n4,5,yesterday\n",
            "log.csv:3: column 'timestamp' is 'yesterday', expected a number",
        ),
        ("1,2,3\n4,,6\n", "log.csv:3: column 'item_id' is empty, expected an id"),
        ('"1\n2",2,3\n4,5,x\n', "log.csv:4: column 'timestamp' is 'x'"),
    ],
)
def test_bad_csv_line(tmp_path, body, expected):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n" + body)
    with pytest.raises(DataError, match=re.escape(expected)):
        load(path)


def test_non_numeric_rating(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,timestamp,r\n1,2,3,4\n1,3,4,good\n")
    with pytest.raises(DataError, match=r"log\.csv:3: column 'r' is 'good', expected a number"):
        load(path, rating_col="r")


def test_items_path_titles_join(tmp_path, raw_to_sequences):
    log = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,10,1\n1,20,2\n2,30,3\n")
    items = write(
        tmp_path / "items.csv",
        'item_id,name,year\n10,"Heat, The",1995\n20,Alien,1979\n30,,2000\n99,Unused,2001\n',
    )
    raw = load(log, items_path=str(items), title_col="name")
    assert raw.items.loc[10, "title"] == "Heat, The"
    assert raw.items.loc[30, "title"] == "item 30"  # empty title falls back
    assert raw.items.loc[20, "year"] == 1979
    data = raw_to_sequences("files", raw)
    assert data.titles(data.item_map.to_internal([10, 20])) == ["Heat, The", "Alien"]


def test_items_path_missing_title_column(tmp_path):
    log = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,10,1\n")
    items = write(tmp_path / "items.csv", "item_id,titel\n10,Heat\n")
    with pytest.raises(DataError, match=r"no column 'title' \(dataset\.title_col\).*'titel'"):
        load(log, items_path=str(items))


def test_items_path_duplicate_id(tmp_path):
    log = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,10,1\n")
    items = write(tmp_path / "items.csv", "item_id,title\n10,Heat\n11,Alien\n10,Heat again\n")
    with pytest.raises(DataError, match=r"items\.csv:4: column 'item_id' repeats item id 10"):
        load(log, items_path=str(items))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: not found; set dataset\.path"):
        load(tmp_path / "nope.csv")
    log = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,10,1\n")
    with pytest.raises(DataError, match=r"items\.csv: not found; set dataset\.items_path"):
        load(log, items_path=str(tmp_path / "items.csv"))


def test_unknown_extension_asks_for_format(tmp_path):
    path = write(tmp_path / "log.dat", "user_id,item_id,timestamp\n1,10,1\n")
    with pytest.raises(DataError, match="set dataset.format"):
        load(path)
    assert len(load(path, format="csv").interactions) == 1


def test_fingerprint_changes_with_the_files(tmp_path):
    log = write(tmp_path / "log.csv", "user_id,item_id,timestamp\n1,10,1\n")
    items = write(tmp_path / "items.csv", "item_id,title\n10,Heat\n")
    source = Files()
    options = source.Options(path=str(log), items_path=str(items))
    before = source.fingerprint(options)
    assert source.fingerprint(options) == before
    write(items, "item_id,title\n10,Heat (1995)\n")
    assert source.fingerprint(options) != before


def test_options_are_validated():
    with pytest.raises(ValidationError):
        Files.Options(path="x.csv", user_column="u")
    with pytest.raises(ValidationError):
        Files.Options(path="x.csv", format="json")


def test_registered_and_cached_through_the_pipeline(clicks_csv, load_via_pipeline):
    options = Files.Options(path=str(clicks_csv), **CUSTOM)
    data = load_via_pipeline(seqrec_files, "files", options)
    cached = load_via_pipeline(seqrec_files, "files", options)
    np.testing.assert_array_equal(data.items, cached.items)
    assert data.stats()["interactions"] == 4
