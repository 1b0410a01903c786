"""The ``synthetic`` dataset: generated in memory, no files, no network.

A seeded generator with structure a sequential model can learn and a
popularity baseline cannot:

* **taste clusters** — items fall into ``n_clusters`` genres; each user prefers
  one or two of them;
* **item-to-item transitions** — every item has three fixed successors (from
  its own cluster); with probability ``transition_prob`` the next item is one
  of the previous item's successors, otherwise a fresh pick from the user's
  taste (or, now and then, from the whole catalogue);
* **Zipf popularity** — fresh picks and successors favour popular items
  (weight ``rank ** -popularity_exponent``);
* **skewed lengths** — ``min_length`` plus a log-normal tail, mean ``mean_length``;
* increasing timestamps, 1-5 ratings (higher inside the user's taste), and
  item titles such as "The Silent Harbor (1994)" with year and genre.

The same options always give the same data; :data:`GENERATOR_VERSION` is part
of the fingerprint so cached data is rebuilt when the generator changes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from seqrec_core import hookimpl
from seqrec_core.data import RawData

__all__ = ["GENERATOR_VERSION", "Synthetic", "generate"]

GENERATOR_VERSION = 1
N_SUCCESSORS = 3
SUCCESSOR_PROBS = np.array([0.6, 0.3, 0.1])  # which successor follows, by slot
EXPLORE_PROB = 0.1  # a fresh pick ignores the user's taste
PRIMARY_PROB = 0.7  # a two-cluster user's fresh pick comes from the first cluster
LENGTH_SIGMA = 0.9  # log-normal spread of sequence lengths (beyond min_length)
MAX_LENGTH_FACTOR = 20  # lengths are capped at this many times mean_length
START = 946_684_800  # 2000-01-01 UTC

GENRES = (
    "Drama", "Comedy", "Thriller", "Romance", "Sci-Fi", "Horror", "Documentary",
    "Animation", "Western", "Crime", "Fantasy", "Musical", "Mystery", "War",
    "Adventure", "Film-Noir", "Action", "Family", "Sport", "History",
)  # fmt: skip
ADJECTIVES = (
    "Silent", "Hidden", "Broken", "Golden", "Crimson", "Endless", "Forgotten", "Last",
    "Burning", "Frozen", "Secret", "Distant", "Wild", "Lonely", "Electric", "Velvet",
    "Hollow", "Shining", "Bitter", "Midnight", "Iron", "Paper", "Restless", "Savage",
    "Quiet", "Stolen", "Northern", "Lost", "Scarlet", "Wandering", "Glass", "Eternal",
    "Faded", "Fearless", "Gentle", "Haunted", "Little", "Dark", "Bright", "Sleeping",
)  # fmt: skip
NOUNS = (
    "Harbor", "River", "Garden", "Kingdom", "Mirror", "Storm", "Empire", "Orchard",
    "Frontier", "Lighthouse", "Station", "Island", "Window", "Horizon", "Citadel",
    "Valley", "Compass", "Carnival", "Voyage", "Detective", "Witness", "Stranger",
    "Engine", "Orchestra", "Canyon", "Circus", "Cathedral", "Desert", "Forest", "Summer",
    "Winter", "Highway", "Shadow", "Promise", "Machine", "Letter", "Ocean", "Bridge",
    "Tower", "Dream",
)  # fmt: skip


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n_users: int = Field(1000, ge=1, description="number of users")
    n_items: int = Field(500, ge=2, description="number of items in the catalogue")
    n_clusters: int = Field(10, ge=1, description="taste clusters (genres) of items")
    mean_length: float = Field(30, gt=0, description="mean interactions per user")
    min_length: int = Field(5, ge=1, description="fewest interactions of any user")
    transition_prob: float = Field(
        0.6, ge=0.0, le=1.0, description="chance the next item is a successor of the previous one"
    )
    popularity_exponent: float = Field(
        1.0, ge=0.0, description="Zipf exponent of item popularity (0: uniform)"
    )
    seed: int = Field(0, ge=0, description="random seed; the same options give the same data")

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticOptions:
        if self.n_clusters > self.n_items:
            raise ValueError(
                f"n_clusters ({self.n_clusters}) must not exceed n_items ({self.n_items})"
            )
        if self.mean_length < self.min_length:
            raise ValueError(
                f"mean_length ({self.mean_length}) must be at least min_length ({self.min_length})"
            )
        return self


class Synthetic:
    """Generated interactions with clusters, item transitions and Zipf popularity."""

    name = "synthetic"
    Options = SyntheticOptions

    def load(self, options: SyntheticOptions) -> RawData:
        return generate(options)

    def fingerprint(self, options: SyntheticOptions) -> str:
        return f"synthetic-v{GENERATOR_VERSION}:{options.model_dump_json()}"


def generate(options: SyntheticOptions) -> RawData:
    """Generate the dataset described by ``options`` (deterministic in the options)."""
    o = options
    rng = np.random.default_rng(o.seed)
    n_items, n_clusters = o.n_items, o.n_clusters

    # Items: balanced clusters, Zipf weights over a random popularity ranking.
    item_cluster = rng.permutation(np.arange(n_items) % n_clusters)
    rank = rng.permutation(n_items) + 1
    weight = rank.astype(float) ** -o.popularity_exponent
    sampler = _ClusterSampler(item_cluster, weight, n_clusters)
    successors = _successors(rng, sampler, item_cluster)

    # Users: one or two preferred clusters, and a sequence length each.
    primary = rng.integers(n_clusters, size=o.n_users)
    two = (rng.random(o.n_users) < 0.5) & (n_clusters > 1)
    secondary = np.where(
        two, (primary + rng.integers(1, max(n_clusters, 2), size=o.n_users)) % n_clusters, primary
    )
    lengths = _lengths(rng, o)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    n = int(offsets[-1])
    user = np.repeat(np.arange(o.n_users), lengths)
    first = np.zeros(n, dtype=bool)
    first[offsets[:-1]] = True

    # Fresh picks for every position from the user's taste (or the whole catalogue).
    explore = rng.random(n) < EXPLORE_PROB
    cluster = np.where(rng.random(n) < PRIMARY_PROB, primary[user], secondary[user])
    fresh = np.where(
        explore, sampler.sample_global(rng.random(n)), sampler.sample(cluster, rng.random(n))
    )

    # Transitions: a position that follows its predecessor takes one of its
    # successors. Resolve chains depth by depth (depth = distance to the last
    # fresh position), so the loop runs max-chain-length times, not n times.
    follows = (rng.random(n) < o.transition_prob) & ~first
    slot = rng.choice(N_SUCCESSORS, size=n, p=SUCCESSOR_PROBS)
    items = fresh
    position = np.arange(n)
    depth = position - np.maximum.accumulate(np.where(follows, 0, position))
    by_depth = np.argsort(depth, kind="stable")
    bounds = np.searchsorted(depth[by_depth], np.arange(1, depth.max(initial=0) + 2))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        pos = by_depth[lo:hi]
        items[pos] = successors[items[pos - 1], slot[pos]]

    # Timestamps: a start per user, then gaps of a minute to a few days.
    gaps = 60 + rng.exponential(43_200, size=n).astype(np.int64)
    gaps[first] = START + rng.integers(0, 3 * 365 * 86_400, size=o.n_users)
    total = np.cumsum(gaps)
    timestamp = total - np.repeat(total[offsets[:-1]] - gaps[offsets[:-1]], lengths)

    liked = (item_cluster[items] == primary[user]) | (item_cluster[items] == secondary[user])
    rating = np.clip(np.rint(np.where(liked, 4.0, 2.8) + rng.normal(0, 0.9, size=n)), 1, 5)

    interactions = pd.DataFrame(
        {
            "user": user + 1,
            "item": items + 1,
            "timestamp": timestamp,
            "rating": rating.astype(np.int64),
        }
    )
    names = _cluster_names(n_clusters)
    taste = np.where(two, names[primary] + "|" + names[secondary], names[primary])
    users = pd.DataFrame({"taste": taste}, index=pd.RangeIndex(1, o.n_users + 1, name="user"))
    return RawData(interactions=interactions, items=_items(rng, item_cluster, names), users=users)


class _ClusterSampler:
    """Popularity-weighted sampling of items, within one cluster or overall.

    Items are laid out by cluster with each cluster's cumulative weights in
    ``(c, c + 1]``; a uniform ``u`` drawn for cluster ``c`` lands at ``c + u``,
    so one ``searchsorted`` samples every position at once.
    """

    def __init__(self, item_cluster: np.ndarray, weight: np.ndarray, n_clusters: int):
        self.order = np.argsort(item_cluster, kind="stable")
        clusters = item_cluster[self.order]
        w = weight[self.order]
        cum = np.cumsum(w)
        start = np.searchsorted(clusters, np.arange(n_clusters))
        end = np.searchsorted(clusters, np.arange(n_clusters), side="right")
        before = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
        total = cum[end - 1] - before
        within = (cum - before[clusters]) / total[clusters]
        within[end - 1] = 1.0  # exact upper edge despite rounding
        self.keys = clusters + within
        self.global_cum = np.cumsum(weight) / weight.sum()
        self.global_cum[-1] = 1.0

    def sample(self, cluster: np.ndarray, u: np.ndarray) -> np.ndarray:
        u = np.minimum(u, 1 - 1e-9)  # c + u must stay below c + 1 after rounding
        return self.order[np.searchsorted(self.keys, cluster + u, side="right")]

    def sample_global(self, u: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.global_cum, u, side="right")


def _successors(
    rng: np.random.Generator, sampler: _ClusterSampler, item_cluster: np.ndarray
) -> np.ndarray:
    """``[n_items, N_SUCCESSORS]``: popular items of the same cluster, never the item itself."""
    n_items = len(item_cluster)
    shape = (n_items, N_SUCCESSORS)
    clusters = np.broadcast_to(item_cluster[:, None], shape)
    succ = sampler.sample(clusters, rng.random(shape))
    me = np.arange(n_items)[:, None]
    for _ in range(8):  # redraw self-loops; singleton clusters fall back to any item
        self_loop = succ == me
        if not self_loop.any():
            break
        succ[self_loop] = sampler.sample(clusters[self_loop], rng.random(self_loop.sum()))
    self_loop = succ == me
    succ[self_loop] = (me + 1 + rng.integers(n_items - 1, size=shape))[self_loop] % n_items
    return succ


def _lengths(rng: np.random.Generator, o: SyntheticOptions) -> np.ndarray:
    """``min_length`` plus a log-normal tail whose mean makes the total ``mean_length``."""
    extra = o.mean_length - o.min_length
    if extra <= 0:
        return np.full(o.n_users, o.min_length, dtype=np.int64)
    mu = np.log(extra + 0.5) - LENGTH_SIGMA**2 / 2  # +0.5: flooring loses half on average
    tail = np.floor(rng.lognormal(mu, LENGTH_SIGMA, size=o.n_users)).astype(np.int64)
    cap = max(o.min_length, int(MAX_LENGTH_FACTOR * o.mean_length))
    return np.minimum(o.min_length + tail, cap)


def _cluster_names(n_clusters: int) -> np.ndarray:
    names = [
        GENRES[c % len(GENRES)] + ("" if c < len(GENRES) else f" {c // len(GENRES) + 1}")
        for c in range(n_clusters)
    ]
    return np.array(names, dtype=object)


def _items(rng: np.random.Generator, item_cluster: np.ndarray, names: np.ndarray) -> pd.DataFrame:
    """Titles like "The Silent Harbor (1994)" or "Harbor of the Silent River (1987)"."""
    n_items = len(item_cluster)
    a, m = len(ADJECTIVES), len(NOUNS)
    short, long = a * m, m * a * m  # sizes of the two title patterns
    n_short = min(short, (n_items + 1) // 2)
    pick = np.concatenate(
        [
            rng.permutation(short)[:n_short],
            short + rng.permutation(max(long, n_items - n_short))[: n_items - n_short],
        ]
    )
    pick = pick[rng.permutation(n_items)]
    year = rng.integers(1950, 2021, size=n_items)
    titles = []
    for k, y in zip(pick.tolist(), year.tolist(), strict=True):
        if k < short:
            base = f"The {ADJECTIVES[k // m]} {NOUNS[k % m]}"
        else:
            sequel, k = divmod(k - short, long)
            noun, rest = divmod(k, a * m)
            base = f"{NOUNS[noun]} of the {ADJECTIVES[rest // m]} {NOUNS[rest % m]}"
            base += f" {sequel + 1}" if sequel else ""
        titles.append(f"{base} ({y})")
    return pd.DataFrame(
        {
            "title": titles,
            "year": pd.array(year, dtype="Int64"),
            "genres": names[item_cluster],
        },
        index=pd.RangeIndex(1, n_items + 1, name="item"),
    )


@hookimpl
def register_datasets(register) -> None:
    register(Synthetic)
