"""Downloading and importing the official dataset archives, safely and atomically.

A dataset plugin declares what it can download as :class:`Download` objects in
a ``downloads`` class attribute (``{"ml-1m": Download(...), …}``); the core
knows no dataset by name. ``seqrec data download NAME``, ``seqrec data add NAME
FILE`` and a recipe with ``path: auto`` all end up in :func:`install`.

Where things go (``$SEQREC_DATA``, default ``platformdirs.user_data_dir("seqrec")``)::

    <root>/<name>/                 the installed dataset (exists only when complete)
    <root>/<name>/.seqrec.json     what was installed from where, with checksums
    <root>/.downloads/<file>.part  a download in progress (resumed with HTTP Range)
    <root>/checksums.json          size + SHA-256 recorded on first use (trust on
                                   first use) for archives without a published checksum

Guarantees:

* **Verified**: every archive's size and SHA-256 are checked against the
  published values, or against the values recorded the first time it was
  installed (:data:`CHECKSUMS_FILE`); a mismatch deletes the bad file.
* **Atomic**: downloads go to ``*.part``; archives are extracted into a
  temporary directory that is renamed into place only after every required file
  was found, so a partial download or extraction never looks complete, and a
  failed ``add``/``download`` leaves the previous state as it was.
* **Safe extraction**: zip members with absolute paths, ``..`` components or
  symlinks are refused; members are written one by one, never via ``extractall``.
* **Resumable**: a rerun continues a ``.part`` file with an HTTP ``Range``
  request, or starts over when the server ignores it.
* **Offline-friendly**: without network the error names the URL, the expected
  size and checksum, and the ``seqrec data add`` command that imports a copy
  fetched elsewhere.

Only the standard library talks to the network (``urllib``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import platformdirs

from seqrec_core import __version__
from seqrec_core.errors import DataError, SeqrecError

CHECKSUMS_FILE = "checksums.json"
MARKER = ".seqrec.json"
CHUNK = 1 << 20
# Largest total uncompressed size an archive may declare (MovieLens-25M is ~1.2 GB);
# SEQREC_MAX_EXTRACT_GB raises it. Guards against zip bombs in archives whose
# checksum is not known in advance.
MAX_EXTRACT_BYTES = int(float(os.environ.get("SEQREC_MAX_EXTRACT_GB", "20")) * 2**30)
TIMEOUT_S = 60

#: ``progress(file name, bytes already there, total or None)`` → a context
#: manager yielding ``advance(n_bytes)``.
Progress = Callable[
    [str, int, int | None], contextlib.AbstractContextManager[Callable[[int], None]]
]


@dataclass(frozen=True)
class Archive:
    """One published file: a ``.zip`` (extracted) or any other file (kept as is,
    e.g. Steam's ``.json.gz``). ``size``/``sha256`` are the published values, or
    None to record them on first use."""

    url: str
    size: int | None = None
    sha256: str | None = None
    filename: str = ""  # default: the last part of the URL
    optional: bool = False  # the dataset works without it (e.g. titles only)

    @property
    def name(self) -> str:
        return self.filename or self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def is_zip(self) -> bool:
        return self.name.lower().endswith(".zip")


@dataclass(frozen=True)
class Download:
    """A downloadable dataset: its archives, the folder the data files end up
    in, the files that must be there, and the recipe ``dataset:`` section that
    reads it (for ``seqrec data info NAME``)."""

    name: str
    archives: tuple[Archive, ...]
    subdir: str = ""  # data folder inside the installed tree, e.g. "ml-1m"
    required: tuple[str, ...] = ()  # files that must exist in subdir after extraction
    dataset: dict[str, Any] = field(default_factory=dict)
    about: str = ""  # homepage / terms of use, shown by `seqrec data download`


# ----------------------------------------------------------------- locations


def data_root() -> Path:
    env = os.environ.get("SEQREC_DATA")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("seqrec"))


def install_dir(download: Download) -> Path:
    return data_root() / download.name


def data_dir(download: Download) -> Path:
    """Where the data files are once installed."""
    return install_dir(download) / download.subdir if download.subdir else install_dir(download)


def is_installed(download: Download) -> bool:
    return (install_dir(download) / MARKER).is_file()


def known_downloads(registry: Any) -> dict[str, Download]:
    """Every :class:`Download` the registered dataset plugins declare."""
    out: dict[str, Download] = {}
    for name in registry.names("datasets"):
        for key, dl in (getattr(registry.get("datasets", name), "downloads", None) or {}).items():
            out[key] = dl
    return out


def find_download(registry: Any, name: str) -> Download:
    from seqrec_core.plugins import did_you_mean

    known = known_downloads(registry)
    if name in known:
        return known[name]
    raise SeqrecError(
        f"unknown dataset '{name}'{did_you_mean(name, known)}; downloadable: "
        f"{', '.join(sorted(known)) or 'none'}"
    )


# ----------------------------------------------------------------- public entry points


def ensure(download: Download, progress: Progress | None = None) -> Path:
    """The installed data folder, downloading and installing it first if needed
    (what ``path: auto`` in a recipe does)."""
    if not is_installed(download):
        fetch(download, progress=progress)
    return data_dir(download)


def fetch(download: Download, force: bool = False, progress: Progress | None = None) -> Path:
    """Download (resuming), verify and install ``download``; returns the data folder.
    Already installed: nothing happens unless ``force``."""
    if is_installed(download) and not force:
        return data_dir(download)
    progress = progress or rich_progress()
    with _lock(download):
        if is_installed(download) and not force:
            return data_dir(download)
        files: dict[Archive, Path] = {}
        checks: dict[Archive, tuple[int, str]] = {}
        for archive in download.archives:
            try:
                files[archive], checks[archive] = _download(download, archive, progress)
            except DataError as exc:
                if not archive.optional:
                    raise
                print(f"seqrec: warning: {exc}; continuing without it", file=sys.stderr)
        try:
            install(download, files, checks, owned=True)
        finally:
            for path in files.values():  # verified copies: no use once installed or refused
                path.unlink(missing_ok=True)
    return data_dir(download)


def add(download: Download, paths: Iterable[Path | str]) -> Path:
    """Import archives the user already has (``seqrec data add``); verified
    exactly like a download. The given files are read, never moved."""
    paths = [Path(p).expanduser() for p in paths]
    files: dict[Archive, Path] = {}
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: not found; give the path of a downloaded {_names(download)}")
        archive = _match(download, path)
        if archive in files:
            raise DataError(f"{path}: {archive.name} is given twice ({files[archive]})")
        files[archive] = path
    with _lock(download):
        install(download, files)
    return data_dir(download)


def install(
    download: Download,
    files: dict[Archive, Path],
    verified: dict[Archive, tuple[int, str]] | None = None,
    owned: bool = False,
) -> None:
    """Verify ``files`` (unless ``verified`` gives their size and SHA-256
    already) and install them as ``download``, atomically. ``owned`` files
    (seqrec's own downloads) may be moved into place; others are copied."""
    for archive in download.archives:
        if archive not in files and not archive.optional:
            raise DataError(
                f"dataset '{download.name}' also needs {archive.name} (from {archive.url}); "
                f"give every file: seqrec data add {download.name} {_names(download, ' ')}"
            )
    target = install_dir(download)
    if target.exists() and not is_installed(download):
        raise DataError(
            f"{target} exists but was not installed by seqrec; move it away (or point "
            "dataset.path at it) and try again"
        )
    checks = {
        archive: (verified or {}).get(archive) or verify(download, archive, path)
        for archive, path in files.items()
    }
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".tmp-{download.name}-"))
    try:
        for archive, path in files.items():
            if archive.is_zip:
                extract_zip(path, tmp)
            elif owned:
                os.replace(path, tmp / archive.name)
            else:  # a copy: a link would let later edits of the user's file through
                shutil.copyfile(path, tmp / archive.name)
        base = tmp / download.subdir if download.subdir else tmp
        missing = [f for f in download.required if not (base / f).is_file()]
        if missing:
            inside = f"{download.subdir}/{missing[0]}" if download.subdir else missing[0]
            given = ", ".join(p.name for p in files.values())
            raise DataError(
                f"{given}: has no {inside}; is it the official {_names(download)} "
                f"(from {download.archives[0].url})?"
            )
        marker = {
            "name": download.name,
            "installed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "seqrec": __version__,
            "archives": [
                {"file": a.name, "url": a.url, "size": size, "sha256": sha}
                for a, (size, sha) in checks.items()
            ],
        }
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=root, prefix=f".old-{download.name}-"))
            target.rename(old / "data")
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for archive, (size, sha) in checks.items():
        if archive.sha256 is None:
            _record(download, archive, size, sha)


# ----------------------------------------------------------------- verification


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def expected(download: Download, archive: Archive) -> tuple[int | None, str | None, str]:
    """(size, sha256, where the values come from): published, else recorded on
    first use, else (None, None, "")."""
    if archive.sha256 is not None:
        return archive.size, archive.sha256.lower(), "published"
    rec = _records().get(_record_key(download, archive))
    if rec:
        return (
            rec["size"],
            rec["sha256"],
            f"recorded on first use in {data_root() / CHECKSUMS_FILE}",
        )
    return archive.size, None, ""


def verify(download: Download, archive: Archive, path: Path) -> tuple[int, str]:
    """Size and SHA-256 of ``path``; :class:`DataError` if they differ from
    the expected values."""
    size, sha, source = expected(download, archive)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        which = "the published" if source == "published" else "the first installed"
        short = ", truncated?" if actual_size < size else ""
        raise DataError(
            f"{path}: {actual_size:,} bytes, but {which} {archive.name} has {size:,}{short}; "
            f"{_refetch(download, archive)}"
        )
    actual = sha256_of(path)
    if sha is not None and actual != sha:
        hint = ""
        if archive.sha256 is None:
            hint = f" (if {archive.url} really changed, delete its entry from {CHECKSUMS_FILE})"
        raise DataError(
            f"{path}: SHA-256 {actual} does not match {archive.name}'s {sha} ({source}); "
            f"the file is corrupt or not the official one{hint}; {_refetch(download, archive)}"
        )
    return actual_size, actual


def _refetch(download: Download, archive: Archive) -> str:
    return (
        f"fetch {archive.url} again (seqrec data download {download.name} --force) or "
        f"import a good copy with: seqrec data add {download.name} /path/to/{archive.name}"
    )


def _record_key(download: Download, archive: Archive) -> str:
    return f"{download.name}/{archive.name}"


def _records() -> dict[str, Any]:
    path = data_root() / CHECKSUMS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable ({exc}); fix or delete it (it only holds checksums "
            "recorded on first download)"
        ) from None


def _record(download: Download, archive: Archive, size: int, sha: str) -> None:
    records = _records()
    key = _record_key(download, archive)
    if key in records:
        return
    records[key] = {
        "url": archive.url,
        "size": size,
        "sha256": sha,
        "recorded": time.strftime("%Y-%m-%d"),
    }
    _write_atomic(data_root() / CHECKSUMS_FILE, json.dumps(records, indent=2, sort_keys=True))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ----------------------------------------------------------------- extraction


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member(name: str, mode: int, archive: Path) -> PurePosixPath:
    """The member's relative path, or :class:`DataError` for an absolute path,
    a ``..`` component or a symlink."""
    posix = name.replace("\\", "/")
    path = PurePosixPath(posix)
    if posix.startswith("/") or _DRIVE.match(posix):
        problem = "an absolute path"
    elif ".." in path.parts:
        problem = "a '..' component (it would be written outside the target folder)"
    elif stat.S_ISLNK(mode):
        problem = "a symbolic link"
    else:
        return PurePosixPath(*[p for p in path.parts if p not in ("", ".")])
    raise DataError(f"{archive}: member {name!r} has {problem}; refusing to extract this archive")


def _check_sizes(path: Path, dest: Path, total: int) -> None:
    """Refuse, before writing anything, an archive that declares more bytes than
    :data:`MAX_EXTRACT_BYTES` or than ``dest`` has free (zipfile never reads a
    member past its declared size, so the declaration bounds what is written)."""
    gib = total / 2**30
    if total > MAX_EXTRACT_BYTES:
        raise DataError(
            f"{path}: declares {gib:.1f} GiB uncompressed, more than the limit of "
            f"{MAX_EXTRACT_BYTES / 2**30:.1f} GiB; refusing to extract it (if the archive is "
            "genuine, raise SEQREC_MAX_EXTRACT_GB)"
        )
    free = shutil.disk_usage(dest).free
    if total > free:
        raise DataError(
            f"{path}: needs {gib:.1f} GiB to extract but {dest} has {free / 2**30:.1f} GiB "
            "free; free some space or point SEQREC_DATA elsewhere"
        )


def extract_zip(path: Path, dest: Path) -> None:
    """Extract ``path`` into ``dest`` member by member after checking every
    member name first; CRC errors and truncation become :class:`DataError`."""
    try:
        with zipfile.ZipFile(path) as zf:
            members = [
                (info, check_member(info.filename, info.external_attr >> 16, path))
                for info in zf.infolist()
            ]
            _check_sizes(path, dest, sum(info.file_size for info, _ in members))
            for info, rel in members:
                if not rel.parts:
                    continue
                target = dest.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except zipfile.BadZipFile as exc:
        raise DataError(
            f"{path}: not a complete zip archive ({exc}); it is truncated or corrupt — "
            "delete it and download it again"
        ) from None
    except (EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise DataError(f"{path}: cannot be extracted ({type(exc).__name__}: {exc})") from None


def _match(download: Download, path: Path) -> Archive:
    """Which of the dataset's archives ``path`` is (by file name; a dataset with
    a single archive takes any name)."""
    for archive in download.archives:
        if path.name == archive.name:
            return archive
    if len(download.archives) == 1:
        return download.archives[0]
    raise DataError(
        f"{path}: dataset '{download.name}' expects {_names(download)}; name the file as "
        "published so seqrec knows which one it is"
    )


def _names(download: Download, sep: str = " and ") -> str:
    return sep.join(a.name for a in download.archives)


# ----------------------------------------------------------------- HTTP


def _download(
    download: Download, archive: Archive, progress: Progress
) -> tuple[Path, tuple[int, str]]:
    """Fetch ``archive`` into ``<root>/.downloads`` (resuming a ``.part``) and
    verify it; returns the verified file and its (size, SHA-256)."""
    folder = data_root() / ".downloads"
    folder.mkdir(parents=True, exist_ok=True)
    part = folder / f"{archive.name}.part"
    done = folder / archive.name
    size, _, _ = expected(download, archive)
    for attempt in (1, 2):
        resumed = part.exists() and part.stat().st_size > 0
        if size is not None and resumed and part.stat().st_size > size:
            part.unlink()
            resumed = False
        if not (size is not None and resumed and part.stat().st_size == size):
            _transfer(download, archive, part, size, progress)
        try:
            check = verify(download, archive, part)
        except DataError:
            part.unlink(missing_ok=True)
            if resumed and attempt == 1:
                continue  # the kept part was bad: start over once, from zero
            raise
        os.replace(part, done)
        return done, check
    raise AssertionError("unreachable")  # pragma: no cover


def _transfer(
    download: Download, archive: Archive, part: Path, size: int | None, progress: Progress
) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"seqrec/{__version__} (+urllib)"}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(archive.url, headers=headers)
    try:
        with contextlib.ExitStack() as stack:
            try:
                response = stack.enter_context(urllib.request.urlopen(request, timeout=TIMEOUT_S))
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have:  # range not satisfiable: start over
                    part.unlink()
                    return _transfer(download, archive, part, size, progress)
                raise
            if have and response.status != 206:
                have = 0  # the server ignored Range: start over
            elif have and not _range_starts_at(response.headers.get("Content-Range"), have):
                have = 0
                response.close()
                part.unlink()
                return _transfer(download, archive, part, size, progress)
            length = response.headers.get("Content-Length")
            total = size or (have + int(length) if length and length.isdigit() else None)
            with (
                progress(archive.name, have, total) as advance,
                open(part, "ab" if have else "wb") as out,
            ):
                while block := response.read(CHUNK):
                    out.write(block)
                    advance(len(block))
            got = part.stat().st_size
            if total is not None and got < total:
                raise ConnectionError(f"connection closed after {got:,} of {total:,} bytes")
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise DataError(_offline_message(download, archive, part, exc)) from None
    return None


def _range_starts_at(content_range: str | None, start: int) -> bool:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return bool(match) and int(match.group(1)) == start


def _offline_message(download: Download, archive: Archive, part: Path, exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
    size, sha, _ = expected(download, archive)
    facts = ", ".join(
        x for x in (f"{size:,} bytes" if size else "", f"SHA-256 {sha}" if sha else "") if x
    )
    kept = (
        f"; {part.stat().st_size:,} bytes kept in {part}, a rerun resumes"
        if part.exists() and part.stat().st_size
        else ""
    )
    return (
        f"could not download {archive.url} ({str(reason).strip() or type(exc).__name__}){kept}; "
        f"without network fetch that file{f' ({facts})' if facts else ''} elsewhere and run: "
        f"seqrec data add {download.name} /path/to/{archive.name}"
    )


# ----------------------------------------------------------------- progress, locking


def rich_progress() -> Progress:
    """A rich progress bar on stderr per file."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    @contextlib.contextmanager
    def start(name: str, done: int, total: int | None) -> Iterator[Callable[[int], None]]:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with RichProgress(*columns, console=Console(stderr=True)) as bar:
            verb = "resuming" if done else "downloading"
            task = bar.add_task(f"{verb} {name}", total=total, completed=done)
            yield lambda n: bar.update(task, advance=n)

    return start


@contextlib.contextmanager
def quiet_progress(name: str, done: int, total: int | None) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


@contextlib.contextmanager
def _lock(download: Download) -> Iterator[None]:
    """One installer per dataset at a time (POSIX advisory lock; a no-op elsewhere)."""
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(root / f".lock-{download.name}", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
