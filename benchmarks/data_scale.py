"""Data pipeline at MovieLens scale: parse + filter + split, peak memory, cached reload.

    python benchmarks/data_scale.py                    # ML-100K-, ML-1M- and ML-20M-sized
    python benchmarks/data_scale.py --sizes 20m --cores 2 --repeat 3 --workdir /big/tmp

For each size, synthetic ratings with the real dataset's shape (users, items,
rows; sparse movie ids; per-user sorted rows like the official files) are
written **in that release's official format** into a temporary folder —
ML-100K: ``u.data`` (tab) + ``u.item`` (Latin-1) + ``u.user``; ML-1M:
``ratings.dat``/``movies.dat``/``users.dat`` (``::``, Latin-1); ML-20M:
``ratings.csv``/``movies.csv`` (quoted titles)/``tags.csv`` — and read by the
``movielens`` plugin exactly as real files would be. No MovieLens data is used.

Each measurement runs in a fresh child process pinned to ``--cores`` CPUs
(``os.sched_setaffinity``):

* **cold**: ``load_dataset`` with an empty cache — parse, validate, filter
  (5-core users and items), remap + chronological sort + leave-one-out split,
  write the cache;
* **reload**: ``load_dataset`` again in a new process — the cache hit
  (memory-mapped arrays); then the first temporal split (quantiles 0.8/0.9),
  computed and stored.

Peak memory is the child's peak resident set size — the whole process
(interpreter, numpy/pandas/pyarrow and the data), not only Python allocations
— read from ``VmHWM`` in ``/proc/self/status``. (``resource.getrusage(...)
.ru_maxrss`` is the same high-water mark, but Linux carries it across
``fork``/``exec``, so in a child of this script it would include the parent's
size at spawn time; it is the fallback where ``/proc`` is missing.) ``base``
is the same figure right after the imports.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: (users, items, rating rows, movie-id range, variant) of the real releases.
SIZES = {
    "100k": (943, 1_682, 100_000, 1_682, "ml-100k"),
    "1m": (6_040, 3_706, 1_000_209, 3_952, "ml-1m"),
    "20m": (138_493, 26_744, 20_000_263, 131_262, "ml-20m"),
}
LABEL = {"100k": "ML-100K", "1m": "ML-1M", "20m": "ML-20M"}
GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Drama", "Sci-Fi")


# ----------------------------------------------------------------- generation


def ratings(n_users: int, n_items: int, n_rows: int, id_range: int, half_stars: bool, seed=0):
    """(user, movie, rating (×2 if half_stars), timestamp), sorted by user then
    movie like the official files; every user has >= 20 rows, no (user, movie)
    repeats, Zipf-like item popularity."""
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0, 1.2, n_users)
    lengths = 20 + np.floor(weights / weights.sum() * (n_rows - 20 * n_users)).astype(np.int64)
    lengths = np.minimum(lengths, n_items)
    while lengths.sum() < n_rows:  # hand out the rounding remainder
        room = np.flatnonzero(lengths < n_items)
        lengths[room[: n_rows - lengths.sum()]] += 1
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    user = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    # Each user rates a contiguous run of the popularity ranking starting at a
    # skewed offset: distinct items, and popular items are rated by many.
    start = np.floor(n_items * rng.beta(0.5, 4, n_users)).astype(np.int64)
    rank = (start[user] + np.arange(n_rows) - offsets[user]) % n_items
    movie_ids = np.sort(rng.choice(id_range, size=n_items, replace=False)) + 1
    movie = movie_ids[rng.permutation(n_items)][rank]
    order = np.lexsort([movie, user])
    user, movie = user[order], movie[order]
    first = rng.integers(789_652_009, 1_427_784_002, size=n_users)
    timestamp = first[user] + rng.integers(0, 86_400 * 400, size=n_rows)
    stars = rng.choice(10 if half_stars else 5, size=n_rows) + 1
    return user + 1, movie, stars, timestamp, movie_ids


def write_table(path: Path, columns: list[np.ndarray], sep: str, header: str | None = None):
    """Fast delimited text output through pyarrow (``sep`` of several
    characters is written as a tab and replaced)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = [f"c{i}" for i in range(len(columns))]
    table = pa.table(dict(zip(names, [pa.array(c) for c in columns], strict=True)))
    options = pacsv.WriteOptions(
        include_header=False, quoting_style="none", delimiter=sep if len(sep) == 1 else "\t"
    )
    with open(path, "wb") as out:
        if header:
            out.write(header.encode() + b"\n")
        if len(sep) == 1:
            pacsv.write_csv(table, out, options)
        else:
            buf = pa.BufferOutputStream()
            pacsv.write_csv(table, buf, options)
            out.write(buf.getvalue().to_pybytes().replace(b"\t", sep.encode()))


def titles(movie_ids: np.ndarray, rng) -> list[str]:
    """Titles with the quirks of the real files: commas, accents, articles."""
    out = []
    for i, m in enumerate(movie_ids.tolist()):
        year = 1920 + (m * 7) % 95
        name = ("Misérables, Les", "American President, The", "Heat", "Toy Story")[i % 4]
        out.append(f"{name} {m} ({year})")
    return out


def write_dataset(size: str, folder: Path) -> Path:
    n_users, n_items, n_rows, id_range, variant = SIZES[size]
    rng = np.random.default_rng(1)
    half = variant == "ml-20m"
    user, movie, stars, timestamp, movie_ids = ratings(n_users, n_items, n_rows, id_range, half)
    names = titles(movie_ids, rng)
    genres = ["|".join(GENRES[j] for j in range(len(GENRES)) if (m >> j) & 1) for m in movie_ids]
    folder.mkdir(parents=True, exist_ok=True)
    if variant == "ml-100k":
        perm = rng.permutation(n_rows)  # u.data is not sorted
        write_table(
            folder / "u.data", [user[perm], movie[perm], stars[perm], timestamp[perm]], "\t"
        )
        flags = "|".join(["0"] * 19)
        lines = [
            f"{m}|{t}|01-Jan-{t[-5:-1]}||http://us.imdb.com/M/title-exact?x|{flags}"
            for m, t in zip(movie_ids.tolist(), names, strict=True)
        ]
        (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
        users = [
            f"{u}|{20 + u % 50}|{'MF'[u % 2]}|writer|{10000 + u}" for u in range(1, n_users + 1)
        ]
        (folder / "u.user").write_bytes(("\n".join(users) + "\n").encode("latin-1"))
    elif variant == "ml-1m":
        write_table(folder / "ratings.dat", [user, movie, stars, timestamp], "::")
        lines = [
            f"{m}::{t}::{g}" for m, t, g in zip(movie_ids.tolist(), names, genres, strict=True)
        ]
        (folder / "movies.dat").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
        users = [f"{u}::{'MF'[u % 2]}::25::{u % 21}::{10000 + u}" for u in range(1, n_users + 1)]
        (folder / "users.dat").write_bytes(("\n".join(users) + "\n").encode("latin-1"))
    else:
        rating_text = np.array([f"{k / 2:.1f}" for k in range(1, 11)])[stars - 1]
        write_table(
            folder / "ratings.csv",
            [user, movie, rating_text, timestamp],
            ",",
            "userId,movieId,rating,timestamp",
        )
        quoted = [f'"{t}"' if "," in t else t for t in names]
        lines = [f"{m},{t},{g}" for m, t, g in zip(movie_ids.tolist(), quoted, genres, strict=True)]
        (folder / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(lines) + "\n")
        n_tags = 465_564  # as in ML-20M; tags with commas are quoted, as there
        pick = rng.integers(0, n_rows, size=n_tags)
        words = ["atmospheric", "dark comedy", '"twist, ending"', "classic", "sci-fi"]
        lines = [
            f"{u},{m},{words[k % 5]},{t}"
            for u, m, k, t in zip(
                user[pick].tolist(),
                movie[pick].tolist(),
                pick.tolist(),
                timestamp[pick].tolist(),
                strict=True,
            )
        ]
        (folder / "tags.csv").write_text("userId,movieId,tag,timestamp\n" + "\n".join(lines) + "\n")
    return folder


# ----------------------------------------------------------------- measurement (child)


def child(mode: str, variant: str, path: str, cores: int) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cores])
    from types import SimpleNamespace

    import seqrec_movielens
    import seqrec_splits
    from seqrec_core.data import load_dataset
    from seqrec_core.plugins import load_plugins
    from seqrec_core.recipe import DatasetSection, SplitSection

    base = peak_rss_mib()
    registry = load_plugins(extra=[seqrec_movielens, seqrec_splits], use_entry_points=False)
    recipe = SimpleNamespace(
        dataset=DatasetSection(name="movielens", user_core=5, item_core=5),
        dataset_options=seqrec_movielens.MovieLens.Options(path=path, variant=variant),
        split=SplitSection(),
    )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load_dataset(recipe, registry, timings=timings)
    total = time.perf_counter() - t0
    result = {"total": total, **timings, "users": data.n_users, "items": data.n_items}
    result["interactions"] = int(len(data.items))
    result["maxrss_mib"] = peak_rss_mib()
    if mode == "reload":
        recipe.split = SplitSection(name="temporal")
        t0 = time.perf_counter()
        temporal = load_dataset(recipe, registry)
        result["temporal_split"] = time.perf_counter() - t0
        result["temporal_test_users"] = int(temporal.stats()["test_users"])
        result["temporal_maxrss_mib"] = peak_rss_mib()
    result["base_mib"] = base
    print(json.dumps(result))


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(mode: str, variant: str, path: Path, cache: Path, cores: int) -> dict:
    env = dict(os.environ, SEQREC_CACHE=str(cache))
    cmd = [sys.executable, __file__, "--child", mode, variant, str(path), "--cores", str(cores)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100k,1m,20m", help="comma list of 100k, 1m, 20m")
    parser.add_argument("--cores", type=int, default=2, help="CPUs each measurement may use")
    parser.add_argument("--workdir", default=None, help="where to write the files (~1 GB)")
    parser.add_argument("--verbose", action="store_true", help="print every timing as JSON")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the fastest counts")
    parser.add_argument(
        "--child", nargs=3, metavar=("MODE", "VARIANT", "PATH"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child, cores=args.cores)
        return

    work = Path(tempfile.mkdtemp(prefix="seqrec-scale-", dir=args.workdir))
    header = [
        "input (official format)",
        "rows",
        "users / items kept",
        "parse",
        "filter + build",
        "cache write",
        "cold total",
        "peak RSS",
        "cached reload",
        "reload peak RSS",
        "first temporal split (peak RSS)",
    ]
    rows = []
    try:
        for size in args.sizes.split(","):
            n_users, n_items, n_rows, _, variant = SIZES[size]
            t0 = time.perf_counter()
            folder = write_dataset(size, work / size / variant)
            print(f"{LABEL[size]}: wrote {folder} in {time.perf_counter() - t0:.1f}s", flush=True)
            # Best of --repeat (a busy machine only ever makes a run slower);
            # the memory figure is the largest seen.
            colds, warms = [], []
            for rep in range(args.repeat):
                cache = work / size / f"cache{rep}"
                colds.append(measure("cold", variant, folder, cache, args.cores))
                warms.append(measure("reload", variant, folder, cache, args.cores))
                shutil.rmtree(cache, ignore_errors=True)
            cold = dict(min(colds, key=lambda r: r["total"]))
            warm = dict(min(warms, key=lambda r: r["total"]))
            cold["maxrss_mib"] = max(r["maxrss_mib"] for r in colds)
            warm["maxrss_mib"] = max(r["maxrss_mib"] for r in warms)
            warm["temporal_split"] = min(r["temporal_split"] for r in warms)
            warm["temporal_maxrss_mib"] = max(r["temporal_maxrss_mib"] for r in warms)
            if args.verbose:
                print(json.dumps({"size": size, "cold": colds, "reload": warms}))
            rows.append(
                [
                    f"{LABEL[size]}-sized",
                    f"{n_rows:,}",
                    f"{cold['users']:,} / {cold['items']:,}",
                    f"{cold['parse']:.2f} s",
                    f"{cold['filter'] + cold['build']:.2f} s",
                    f"{cold['cache_write']:.2f} s",
                    f"**{cold['total']:.2f} s**",
                    f"{cold['maxrss_mib']:,.0f} MiB (base {cold['base_mib']:.0f})",
                    f"**{warm['total']:.3f} s**",
                    f"{warm['maxrss_mib']:,.0f} MiB",
                    f"{warm['temporal_split']:.2f} s ({warm['temporal_maxrss_mib']:,.0f} MiB)",
                ]
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"data pipeline, {args.cores} cores, best of {args.repeat}: parse + 5-core filter + "
        "remap/sort + leave-one-out + cache write (cold), then cached reload in a new process"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\npython {sys.version.split()[0]}, numpy {np.__version__}, "
        f"pandas {__import__('pandas').__version__}, {os.cpu_count()} CPUs on the machine"
    )


if __name__ == "__main__":
    main()
