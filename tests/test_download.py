"""Downloads, imports and safe extraction (``seqrec_core.data.download``,
``seqrec data download|add|list|info``).

Every archive is generated here and served by a local HTTP server on
127.0.0.1 that understands ``Range`` and can drop a connection half-way; the
plugins' URL tables are monkeypatched to point at it. No test touches the
internet.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import seqrec_movielens
import seqrec_steam
from seqrec_core.cli import main
from seqrec_core.data import download as dl
from seqrec_core.errors import DataError
from seqrec_movielens import MovieLens

# ------------------------------------------------------------------ fixtures

RATINGS = (
    "1::1193::5::978300760\n1::661::3::978302109\n1::914::3::978301968\n2::1193::4::978298709\n"
)
MOVIES = "661::James and the Giant Peach (1996)::Animation\n914::My Fair Lady (1964)::Musical\n"
MOVIES += "1193::Misérables, Les (1995)::Drama\n"
USERS = "1::F::1::10::48067\n2::M::56::16::70072\n"


def make_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def ml1m_members(folder: str = "ml-1m") -> dict[str, bytes]:
    """The official ML-1M zip layout: ml-1m/{ratings,movies,users}.dat, Latin-1."""
    return {
        f"{folder}/": b"",
        f"{folder}/ratings.dat": RATINGS.encode(),
        f"{folder}/movies.dat": MOVIES.encode("latin-1"),
        f"{folder}/users.dat": USERS.encode("latin-1"),
        f"{folder}/README": b"fixture\n",
    }


ML1M_ZIP = make_zip(ml1m_members())


class Server:
    """Serves ``files`` (URL path → bytes) with Range support; ``cut[path] = n``
    drops the connection after ``n`` body bytes, once; ``ignore_range`` answers
    200 with the whole file."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.ignore_range:
                    start = int(re.match(r"bytes=(\d+)-", rng).group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = server.cut.pop(self.path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def dirs(tmp_path, monkeypatch):
    """Private data and cache roots; the CLI sees the dataset and split plugins
    plus POP and the metrics (no model plugins to import)."""
    import seqrec_core.cli
    import seqrec_metrics
    import seqrec_pop
    import seqrec_splits
    import seqrec_synthetic
    from seqrec_core.plugins import load_plugins

    monkeypatch.setenv("SEQREC_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("SEQREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("SEQREC_DEBUG", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    plugins = [seqrec_movielens, seqrec_steam, seqrec_synthetic, seqrec_splits]
    plugins += [seqrec_pop, seqrec_metrics]

    def fake_load_plugins(disabled=(), **_):
        return load_plugins(disabled=disabled, extra=plugins, use_entry_points=False)

    monkeypatch.setattr(seqrec_core.cli, "load_plugins", fake_load_plugins)
    return tmp_path


def serve(
    server: Server,
    monkeypatch,
    name: str,
    data: bytes,
    published: bytes | None = None,
    checksum: bool = True,
) -> dl.Download:
    """Serve ``data`` as ``name``'s archive; the plugin's table announces the
    size and SHA-256 of ``published`` (default: ``data``), or none."""
    published = data if published is None else published
    original = seqrec_movielens.DOWNLOADS[name]
    archive = original.archives[0]
    archive = dataclasses.replace(
        archive,
        url=server.url(archive.name),
        size=len(published) if checksum else None,
        sha256=hashlib.sha256(published).hexdigest() if checksum else None,
    )
    server.files[f"/{archive.name}"] = data
    patched = dataclasses.replace(original, archives=(archive,))
    monkeypatch.setitem(seqrec_movielens.DOWNLOADS, name, patched)
    return patched


def leftovers(tmp_path: Path) -> list[str]:
    """Files in the data root other than locks and the checksum record."""
    root = tmp_path / "data"
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".lock-")
    )


def run_cli(*argv: str) -> int:
    return main(list(argv))


# ------------------------------------------------------------------ download + install


def test_download_verifies_extracts_and_installs(server, monkeypatch, tmp_path, capsys):
    serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    assert run_cli("data", "download", "ml-1m") == 0
    folder = tmp_path / "data" / "ml-1m" / "ml-1m"
    assert (folder / "ratings.dat").read_text() == RATINGS
    marker = json.loads((tmp_path / "data" / "ml-1m" / ".seqrec.json").read_text())
    assert marker["archives"][0]["sha256"] == hashlib.sha256(ML1M_ZIP).hexdigest()
    # no .part, no archive, no temporary folders left behind
    assert not list((tmp_path / "data" / ".downloads").iterdir())
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert "installed in" in capsys.readouterr().err
    # a second call is a no-op
    assert run_cli("data", "download", "ml-1m") == 0
    assert len(server.requests) == 1


def test_path_auto_downloads_on_first_use(server, monkeypatch, load_via_pipeline):
    serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    options = MovieLens.Options(variant="ml-1m")  # path: auto
    data = load_via_pipeline(seqrec_movielens, "movielens", options)
    assert data.n_users == 2 and len(data.items) == 4
    assert "Misérables, Les (1995)" in data.titles(range(1, data.n_items + 1))
    again = load_via_pipeline(seqrec_movielens, "movielens", options)
    np.testing.assert_array_equal(again.items, data.items)
    assert len(server.requests) == 1  # downloaded once


def test_checksum_mismatch_deletes_the_file_and_installs_nothing(server, monkeypatch, tmp_path):
    tampered = ML1M_ZIP[:-1] + bytes([ML1M_ZIP[-1] ^ 1])  # same size, other bytes
    serve(server, monkeypatch, "ml-1m", tampered, published=ML1M_ZIP)
    with pytest.raises(DataError) as err:
        dl.fetch(seqrec_movielens.DOWNLOADS["ml-1m"], progress=dl.quiet_progress)
    message = str(err.value)
    assert "SHA-256" in message and "does not match" in message
    assert "seqrec data add ml-1m" in message and "\n" not in message
    assert leftovers(tmp_path) == []
    assert not dl.is_installed(seqrec_movielens.DOWNLOADS["ml-1m"])


def test_truncated_download_with_a_known_size(server, monkeypatch, tmp_path):
    # The server's whole file is short: a size mismatch, not a hang or a bad install.
    serve(server, monkeypatch, "ml-1m", ML1M_ZIP[:400], published=ML1M_ZIP)
    with pytest.raises(DataError, match=r"connection closed after 400 of"):
        dl.fetch(seqrec_movielens.DOWNLOADS["ml-1m"], progress=dl.quiet_progress)
    assert not dl.is_installed(seqrec_movielens.DOWNLOADS["ml-1m"])


def test_truncated_archive_without_a_checksum_is_refused_and_not_recorded(
    server, monkeypatch, tmp_path
):
    download = serve(server, monkeypatch, "ml-10m", ML1M_ZIP[:-200], checksum=False)
    with pytest.raises(DataError, match="not a complete zip archive"):
        dl.fetch(download, progress=dl.quiet_progress)
    assert not (tmp_path / "data" / dl.CHECKSUMS_FILE).exists()  # nothing trusted
    assert leftovers(tmp_path) == []


def test_interrupted_download_resumes_with_range(server, monkeypatch, tmp_path):
    download = serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    server.cut["/ml-1m.zip"] = 700
    with pytest.raises(DataError) as err:
        dl.fetch(download, progress=dl.quiet_progress)
    message = str(err.value)
    assert "a rerun resumes" in message and "seqrec data add ml-1m" in message
    part = tmp_path / "data" / ".downloads" / "ml-1m.zip.part"
    assert part.stat().st_size == 700
    assert not dl.is_installed(download)  # a partial download never looks complete
    dl.fetch(download, progress=dl.quiet_progress)
    assert server.requests[-1] == ("/ml-1m.zip", "bytes=700-")
    assert dl.is_installed(download) and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, monkeypatch, tmp_path):
    download = serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    server.cut["/ml-1m.zip"] = 500
    with pytest.raises(DataError):
        dl.fetch(download, progress=dl.quiet_progress)
    server.ignore_range = True
    dl.fetch(download, progress=dl.quiet_progress)
    assert dl.is_installed(download)
    assert (dl.data_dir(download) / "ratings.dat").read_text() == RATINGS


def test_bad_partial_download_is_restarted_once(server, monkeypatch, tmp_path):
    download = serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    part = tmp_path / "data" / ".downloads" / "ml-1m.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage" * 10)  # resumed bytes that are not the file's
    dl.fetch(download, progress=dl.quiet_progress)
    assert dl.is_installed(download)
    assert [r[1] for r in server.requests] == ["bytes=70-", None]


def test_offline_error_says_which_file_to_fetch_and_how_to_add_it(monkeypatch):
    original = seqrec_movielens.DOWNLOADS["ml-1m"]
    archive = dataclasses.replace(original.archives[0], url="http://127.0.0.1:9/ml-1m.zip")
    monkeypatch.setitem(
        seqrec_movielens.DOWNLOADS, "ml-1m", dataclasses.replace(original, archives=(archive,))
    )
    with pytest.raises(DataError) as err:
        dl.fetch(seqrec_movielens.DOWNLOADS["ml-1m"], progress=dl.quiet_progress)
    message = str(err.value)
    assert message.startswith("could not download http://127.0.0.1:9/ml-1m.zip (")
    assert "5,917,549 bytes" in message
    assert "SHA-256 a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20" in message
    assert message.endswith("seqrec data add ml-1m /path/to/ml-1m.zip")
    assert "\n" not in message


def test_http_error_is_reported(server, monkeypatch):
    download = serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    server.files.clear()
    with pytest.raises(DataError, match=r"\(HTTP 404 .*seqrec data add ml-1m"):
        dl.fetch(download, progress=dl.quiet_progress)


# ------------------------------------------------------------------ unsafe or wrong archives


@pytest.mark.parametrize(
    "members, symlinks, problem",
    [
        ({"ml-1m/../../evil.txt": b"x"}, None, "a '..' component"),
        ({"/tmp/evil.txt": b"x"}, None, "an absolute path"),
        ({"C:/evil.txt": b"x"}, None, "an absolute path"),
        ({}, {"ml-1m/link": "/etc/passwd"}, "a symbolic link"),
    ],
)
def test_unsafe_members_are_refused(tmp_path, members, symlinks, problem):
    archive = make_zip({**ml1m_members(), **members}, symlinks)
    path = tmp_path / "ml-1m.zip"
    path.write_bytes(archive)
    download = seqrec_movielens.DOWNLOADS["ml-1m"]
    with pytest.raises(DataError, match=re.escape(problem)):
        dl.install(
            dataclasses.replace(download, archives=(dl.Archive("x/ml-1m.zip"),)),
            {dl.Archive("x/ml-1m.zip"): path},
        )
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "limit, free, problem", [(100, 10**12, "more than the limit"), (10**12, 100, "free")]
)
def test_archives_declaring_too_much_are_refused_before_writing(
    tmp_path, monkeypatch, limit, free, problem
):
    members = ml1m_members()
    path = tmp_path / "ml-1m.zip"
    path.write_bytes(make_zip(members))
    assert sum(len(v) for v in members.values()) > 100
    monkeypatch.setattr(dl, "MAX_EXTRACT_BYTES", limit)
    monkeypatch.setattr(
        dl.shutil, "disk_usage", lambda p: SimpleNamespace(total=free, used=0, free=free)
    )
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(DataError, match=problem):
        dl.extract_zip(path, dest)
    assert list(dest.iterdir()) == []


def test_missing_file_inside_the_archive(tmp_path):
    members = ml1m_members()
    del members["ml-1m/ratings.dat"]
    path = tmp_path / "ml-1m.zip"
    path.write_bytes(make_zip(members))
    download = dataclasses.replace(
        seqrec_movielens.DOWNLOADS["ml-1m"], archives=(dl.Archive("x/ml-1m.zip"),)
    )
    with pytest.raises(
        DataError, match=r"ml-1m\.zip: has no ml-1m/ratings\.dat; is it the official"
    ):
        dl.add(download, [path])
    assert not dl.is_installed(download)
    assert leftovers(tmp_path) == []


def test_wrong_top_folder_is_a_missing_file(tmp_path):
    path = tmp_path / "ml-1m.zip"
    path.write_bytes(make_zip(ml1m_members("ml-1m-copy")))
    download = dataclasses.replace(
        seqrec_movielens.DOWNLOADS["ml-1m"], archives=(dl.Archive("x/ml-1m.zip"),)
    )
    with pytest.raises(DataError, match=r"has no ml-1m/ratings\.dat"):
        dl.add(download, [path])


# ------------------------------------------------------------------ seqrec data add


def test_data_add_imports_a_local_archive(server, monkeypatch, tmp_path, load_via_pipeline):
    serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    local = tmp_path / "ml-1m.zip"
    local.write_bytes(ML1M_ZIP)
    assert run_cli("data", "add", "ml-1m", str(local)) == 0
    assert local.read_bytes() == ML1M_ZIP  # the user's file is untouched
    data = load_via_pipeline(seqrec_movielens, "movielens", MovieLens.Options(variant="ml-1m"))
    assert len(data.items) == 4
    assert server.requests == []  # nothing was downloaded


def test_data_add_refuses_a_wrong_file_and_keeps_the_old_install(
    server, monkeypatch, tmp_path, capsys
):
    serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    local = tmp_path / "ml-1m.zip"
    local.write_bytes(ML1M_ZIP)
    assert run_cli("data", "add", "ml-1m", str(local)) == 0
    installed = sorted(p.name for p in (tmp_path / "data" / "ml-1m").rglob("*"))
    other = tmp_path / "other" / "ml-1m.zip"
    other.parent.mkdir()
    other.write_bytes(make_zip({"ml-1m/ratings.dat": b"1::2::3::4\n"}))
    capsys.readouterr()
    assert run_cli("data", "add", "ml-1m", str(other)) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqrec: error: ") and err.count("\n") == 1
    assert "bytes, but the published ml-1m.zip has" in err
    assert sorted(p.name for p in (tmp_path / "data" / "ml-1m").rglob("*")) == installed


def test_unknown_dataset_lists_the_known_ones(capsys):
    assert run_cli("data", "download", "ml-2m") == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'ml-2m' (did you mean 'ml-20m'?)" in err
    assert "downloadable: ml-100k, ml-10m, ml-1m, ml-20m, steam" in err


def test_data_list_shows_what_is_installed(server, monkeypatch, capsys):
    serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    run_cli("data", "download", "ml-1m")
    capsys.readouterr()
    assert run_cli("data", "list") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "ml-1m" in out and "installed" in out and "steam_games.json.gz (optional)" in out


# ------------------------------------------------------------------ trust on first use


def test_checksum_is_recorded_on_first_download_and_verified_afterwards(
    server, monkeypatch, tmp_path
):
    members = ml1m_members("ml-10M100K")
    members["ml-10M100K/tags.dat"] = members.pop("ml-10M100K/users.dat")
    zip10 = make_zip(members)
    download = serve(server, monkeypatch, "ml-10m", zip10, checksum=False)
    dl.fetch(download, progress=dl.quiet_progress)
    records = json.loads((tmp_path / "data" / dl.CHECKSUMS_FILE).read_text())
    assert records["ml-10m/ml-10m.zip"]["sha256"] == hashlib.sha256(zip10).hexdigest()
    assert records["ml-10m/ml-10m.zip"]["size"] == len(zip10)
    # a different file later (same size) is refused against the record
    other = bytearray(zip10)
    other[-30] ^= 1
    (tmp_path / "ml-10m.zip").write_bytes(bytes(other))
    with pytest.raises(DataError, match="recorded on first use") as err:
        dl.add(download, [tmp_path / "ml-10m.zip"])
    assert "delete its entry from checksums.json" in str(err.value)


# ------------------------------------------------------------------ steam: two files


def test_steam_downloads_reviews_and_optional_games(
    server, monkeypatch, tmp_path, load_via_pipeline
):
    reviews = gzip.compress(
        "\n".join(
            repr({"username": u, "product_id": p, "date": d, "text": "t"})
            for u, p, d in [
                ("a", "10", "2017-01-01"),
                ("a", "20", "2017-01-02"),
                ("b", "10", "2017-01-03"),
            ]
        ).encode()
    )
    games = gzip.compress(repr({"id": "10", "app_name": "Ten Game"}).encode())
    original = seqrec_steam.DOWNLOADS["steam"]
    archives = tuple(dataclasses.replace(a, url=server.url(a.name)) for a in original.archives)
    monkeypatch.setitem(
        seqrec_steam.DOWNLOADS, "steam", dataclasses.replace(original, archives=archives)
    )
    server.files["/steam_reviews.json.gz"] = reviews
    server.files["/steam_games.json.gz"] = games
    data = load_via_pipeline(seqrec_steam, "steam", seqrec_steam.Steam.Options())
    assert data.n_users == 2 and len(data.items) == 3
    assert data.titles(data.item_map.to_internal([10])) == ["Ten Game"]
    records = json.loads((tmp_path / "data" / dl.CHECKSUMS_FILE).read_text())
    assert set(records) == {"steam/steam_reviews.json.gz", "steam/steam_games.json.gz"}


def test_steam_add_needs_the_reviews_file(tmp_path):
    games = tmp_path / "steam_games.json.gz"
    games.write_bytes(gzip.compress(b"{'id': '1'}"))
    with pytest.raises(DataError, match=r"also needs steam_reviews\.json\.gz"):
        dl.add(seqrec_steam.DOWNLOADS["steam"], [games])


# ------------------------------------------------------------------ seqrec data info


def test_data_info_by_name_and_by_recipe(server, monkeypatch, tmp_path, capsys):
    serve(server, monkeypatch, "ml-1m", ML1M_ZIP)
    assert run_cli("data", "info", "ml-1m", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["users"], info["items"], info["interactions"]) == (2, 3, 4)
    assert info["popularity"]["top 1% items"] == pytest.approx(0.5)  # item 1193: 2 of 4
    assert info["sequence length"]["max"] == 3
    assert info["split"] == {
        "name": "leave_one_out",
        "train interactions": 2,
        "valid users": 1,
        "test users": 1,
    }
    assert info["user metadata"] == ["age", "age_group", "gender", "occupation", "zip_code"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\ndataset: {name: movielens, variant: ml-1m}\nmodel: {name: pop}\n"
        "split: {name: temporal, cutoff_by: timestamp, valid_cutoff: 978300000, "
        "test_cutoff: 978302000}\n"
    )
    assert run_cli("data", "info", str(recipe)) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "temporal" in out and "test cutoff │ 2000-12-31 22:33:20 UTC" in out
    assert "test users │ 1" in out and "valid users │ 0" in out


def test_data_info_rejects_other_overrides(capsys):
    assert run_cli("data", "info", "synthetic", "-o", "model.dim=3") == 2
    assert "only dataset.* and split.* overrides" in capsys.readouterr().err
    assert run_cli("data", "info", "synthetik") == 2
    assert "(did you mean 'synthetic'?)" in capsys.readouterr().err


def test_steam_add_copies_both_files(tmp_path, load_via_pipeline):
    reviews = tmp_path / "in" / "steam_reviews.json.gz"
    reviews.parent.mkdir()
    reviews.write_bytes(
        gzip.compress(b"{'username': 'a', 'product_id': '7', 'date': '2017-01-01'}\n")
    )
    games = tmp_path / "in" / "steam_games.json.gz"
    games.write_bytes(gzip.compress(b"{'id': '7', 'app_name': 'Seven', 'genres': ['X']}\n"))
    folder = dl.add(seqrec_steam.DOWNLOADS["steam"], [games, reviews])
    installed = folder / "steam_reviews.json.gz"
    assert installed.read_bytes() == reviews.read_bytes()
    assert installed.stat().st_ino != reviews.stat().st_ino  # a copy, not a link
    assert reviews.exists() and games.exists()
    data = load_via_pipeline(seqrec_steam, "steam", seqrec_steam.Steam.Options())
    assert data.titles([1]) == ["Seven"]
