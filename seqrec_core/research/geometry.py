"""Geometry of item embedding tables (RQ4): ``seqrec analyze geometry ckpt …``.

The table analysed is ``model.item_embeddings()`` rows ``1..n_items`` (padding
and special tokens left out) of each checkpoint. Measures (``docs/research.md``
has the definitions and references):

* **spectrum** — eigenvalues of the covariance of the centred table; cumulative
  explained variance; ``dims@90%`` (principal components for 90 % of the
  variance, the PCA intrinsic dimension); **effective rank** (Roy & Vetterli
  2007: ``exp`` of the entropy of the normalised eigenvalues);
* **TwoNN** intrinsic dimension (Facco et al. 2017): from the ratio of each
  point's second to first nearest-neighbour distance (Euclidean), the slope of
  ``-log(1 - F(μ))`` on ``log μ`` through the origin, the 10 % largest ratios
  discarded;
* **anisotropy** — the mean cosine between two different items, computed
  exactly in ``O(n·d)`` as ``(‖Σ u_i‖² − n) / (n(n − 1))`` for unit rows ``u_i``
  (no sampling needed at any table size); 0 for directions spread evenly, 1 for
  all rows pointing the same way;
* **isotropy** — the partition-function ratio of Mu & Viswanath (ICLR 2018,
  after Arora et al. 2016): ``min_c Z(c) / max_c Z(c)`` with
  ``Z(c) = Σ_i exp(cᵀ w_i)`` over the eigenvectors ``c`` of ``WᵀW`` (and their
  negatives), on the raw (uncentred) rows; 1 = isotropic. It depends on the
  scale of the rows, so compare tables of similar norms;
* **L2 norms** — distribution, and its Spearman correlation with popularity;
* **hubness** at ``k`` (Radovanović et al. 2010): ``N_k(i)``, how often item
  ``i`` is among the ``k`` cosine nearest neighbours of the others; its
  skewness, its Gini coefficient, the share of hubs (``N_k > 2k``) and of
  anti-hubs (``N_k = 0``);
* **t-SNE** 2-D map (cosine, scikit-learn), coloured by popularity bucket;
* **linear CKA** (Kornblith et al. 2019) between tables of the same catalogue
  (equal ``item_map_digest``);
* **neighbourhood stability** — the mean overlap ``|A ∩ B| / k`` of every
  item's ``k`` nearest neighbours in two tables; "across seeds" averages it
  over checkpoints of the same model and options;
* **neighbours** of a few items by title (default: the most popular).

Popularity comes from ``histories.safetensors`` beside the checkpoint (the
training-part counts under leave-one-out; all interactions for a temporal
split, whose timestamps are not stored there). Without it the maps are not
coloured and the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqrec_core import checkpoint as ckpt_io
from seqrec_core.errors import SeqrecError
from seqrec_core.research import reports
from seqrec_core.research.buckets import BUCKETS, DEFAULT_CUTS, popularity_buckets

BUCKET_COLOURS = {"head": "#c0392b", "mid": "#e67e22", "tail": "#2980b9"}


# ------------------------------------------------------------------ loading


@dataclass
class ItemEmbeddings:
    """One checkpoint's item table and what is known about its items."""

    label: str
    path: Path
    matrix: np.ndarray  # float32 [n_items, d]; row i is item i + 1
    digest: str
    model: str
    options: dict[str, Any]
    seed: int | None
    item_ids: list[Any]
    titles: list[str]
    popularity: np.ndarray | None = None  # [n_items + 1], index 0 = padding
    note: str = ""
    runtime_options: frozenset[str] = frozenset()  # the model class's (kernels, launch)

    @property
    def family(self) -> str:
        """Checkpoints of one family differ only in their seed (and in options that
        choose how the model computes, e.g. kernels: ``Recommender.runtime_options``)."""
        options = {k: v for k, v in self.options.items() if k not in self.runtime_options}
        return json.dumps([self.digest, self.model, options], sort_keys=True, default=str)


def popularity_beside(path: Path, ckpt: ckpt_io.Checkpoint) -> tuple[np.ndarray | None, str]:
    """Item counts from ``histories.safetensors`` next to the checkpoint, and how
    they were counted."""
    from seqrec_core.data.core import IdMap, SequenceData

    hist_path = path.parent / "histories.safetensors"
    if not hist_path.is_file():
        return None, "no histories.safetensors beside the checkpoint: popularity unknown"
    hist = ckpt_io.load_checkpoint(hist_path)
    digest = ckpt.meta["dataset"]["item_map_digest"]
    if hist.meta.get("item_map_digest") != digest:
        return None, "histories.safetensors beside it belongs to another catalogue: ignored"
    offsets = hist.tensors["offsets"].numpy().astype(np.int64)
    items = hist.tensors["items"].numpy().astype(np.int64)
    n_items = int(ckpt.meta["dataset"]["n_items"])
    split = (ckpt.meta.get("recipe") or {}).get("split", {}).get("name", "leave_one_out")
    if split != "leave_one_out":
        counts = np.bincount(items, minlength=n_items + 1)
        return counts, f"popularity: all interactions ({split} split; no timestamps stored)"
    seqs = SequenceData(
        "histories",
        offsets,
        items,
        IdMap(np.arange(len(offsets) - 1), 0),
        IdMap(np.arange(n_items), 1),
    )
    return seqs.train_item_counts(), "popularity: training-part counts (leave-one-out)"


def popularity_from_dataset(
    ckpt: ckpt_io.Checkpoint, registry: Any, overrides: Sequence[str]
) -> tuple[np.ndarray | None, str]:
    """Training-part item counts from the dataset the checkpoint was trained on,
    loaded through its stored recipe with ``overrides`` (e.g. the data's path on
    this machine); the catalogue must be the checkpoint's."""
    from seqrec_core.data import load_dataset
    from seqrec_core.recipe import load_recipe

    if "recipe" not in ckpt.meta:
        return None, "no recipe stored in the checkpoint: popularity unknown"
    recipe = load_recipe(None, registry, overrides, data=ckpt.meta["recipe"])
    data = load_dataset(recipe, registry)
    ckpt_io.check_dataset(ckpt, data)
    return data.train_item_counts(), "popularity: training-part counts (dataset reloaded)"


def load_item_embeddings(
    path: str | Path,
    registry: Any,
    label: str | None = None,
    data_overrides: Sequence[str] | None = None,
):
    """The item table of a checkpoint (model rebuilt through its plugin).
    Popularity comes from ``histories.safetensors`` beside it or, failing that
    and with ``data_overrides`` given (possibly empty), from its dataset."""
    path = Path(path)
    ckpt = ckpt_io.load_checkpoint(path)
    if ckpt.meta.get("kind") not in ("best", "last"):
        raise SeqrecError(f"{path}: a seqrec {ckpt.meta.get('kind')} file, not a model checkpoint")
    model = ckpt_io.build_model(ckpt, registry)
    table = getattr(model, "item_embeddings", None)
    name = ckpt.meta["model"]["name"]
    if table is None:
        raise SeqrecError(
            f"{path}: model '{name}' has no item embedding table (item_embeddings()); "
            "geometry needs a model with learned item vectors"
        )
    n_items = int(ckpt.meta["model"]["n_items"])
    with torch.no_grad():
        matrix = table().detach().float().cpu().numpy()[1 : n_items + 1]
    ds = ckpt.meta["dataset"]
    popularity, note = popularity_beside(path, ckpt)
    if popularity is None and data_overrides is not None:
        popularity, note = popularity_from_dataset(ckpt, registry, data_overrides)
    return ItemEmbeddings(
        label=label or ckpt.meta.get("run") or path.parent.name,
        path=path,
        matrix=np.ascontiguousarray(matrix, dtype=np.float32),
        digest=ds["item_map_digest"],
        model=name,
        options=ckpt.meta["model"].get("options", {}),
        seed=ckpt.meta.get("seed"),
        item_ids=list(ds["item_ids"]),
        titles=list(ds["titles"]),
        popularity=popularity,
        note=note,
        runtime_options=frozenset(type(model).runtime_options),
    )


# ------------------------------------------------------------------ measures


def spectrum(x: np.ndarray) -> np.ndarray:
    """Eigenvalues (descending) of the covariance of the centred rows of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    return s**2 / max(1, len(x) - 1)


def explained_variance(eig: np.ndarray) -> np.ndarray:
    total = eig.sum()
    return np.cumsum(eig) / total if total > 0 else np.ones_like(eig)


def dims_for(eig: np.ndarray, share: float = 0.9) -> int:
    """Fewest principal components that explain ``share`` of the variance."""
    return int(np.searchsorted(explained_variance(eig), share - 1e-12) + 1)


def effective_rank(eig: np.ndarray) -> float:
    p = eig[eig > 0] / eig.sum() if eig.sum() > 0 else np.ones(1)
    return float(np.exp(-(p * np.log(p)).sum()))


def knn(
    x: np.ndarray, k: int, metric: str = "cosine", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of every row: ``(indices, values)`` with cosine
    similarities (``metric="cosine"``, descending) or Euclidean distances
    (``"euclidean"``, ascending). Exact, in chunks of rows."""
    n = len(x)
    k = min(k, n - 1)
    if k < 1:
        raise SeqrecError("nearest neighbours need at least two items")
    if metric == "cosine":
        t = torch.nn.functional.normalize(torch.from_numpy(np.asarray(x, np.float32)), dim=1)
    else:
        arr = np.asarray(x, dtype=np.float64)
        t = torch.from_numpy(arr - arr.mean(0))  # distances are shift-invariant; less cancellation
        sq = (t * t).sum(1)
    idx, val = [], []
    for start in range(0, n, chunk):
        block = t[start : start + chunk]
        score = block @ t.T
        if metric != "cosine":
            score = -(sq[start : start + chunk, None] + sq[None, :] - 2 * score).clamp_min(0)
        rows = torch.arange(len(block))
        score[rows, rows + start] = -math.inf
        v, i = score.topk(k, dim=1)
        idx.append(i)
        val.append(v if metric == "cosine" else (-v).sqrt())
    return torch.cat(idx).numpy(), torch.cat(val).double().numpy()


def twonn(x: np.ndarray, discard: float = 0.1) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017); see the module docstring."""
    _, dist = knn(x, 2, "euclidean")
    r1, r2 = dist[:, 0], dist[:, 1]
    ok = r1 > 0  # duplicates have no ratio
    mu = np.sort(r2[ok] / r1[ok])
    n = len(mu)
    if n < 3:
        return math.nan
    keep = max(2, int(n * (1 - discard)))
    f = np.arange(1, n + 1) / n
    xs = np.log(mu[:keep])
    ys = -np.log(1 - f[:keep])
    denom = (xs * xs).sum()
    return float((xs * ys).sum() / denom) if denom > 0 else math.nan


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    x = x[norms > 0]
    return x / norms[norms > 0, None]


def anisotropy(x: np.ndarray) -> float:
    """Mean cosine over all pairs of different rows (exact, ``O(n·d)``)."""
    u = _unit_rows(x)
    n = len(u)
    if n < 2:
        return math.nan
    s = u.sum(0)
    return float((s @ s - n) / (n * (n - 1)))


def isotropy(x: np.ndarray) -> float:
    """Partition-function isotropy ``min Z(c) / max Z(c)`` (Mu & Viswanath 2018)."""
    w = np.asarray(x, dtype=np.float64)
    _, _, vt = np.linalg.svd(w, full_matrices=False)
    directions = np.concatenate([vt, -vt])
    logits = w @ directions.T
    top = logits.max(0)
    log_z = top + np.log(np.exp(logits - top).sum(0))
    return float(np.exp(log_z.min() - log_z.max()))


def skewness(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    sd = v.std()
    return float(((v - v.mean()) ** 3).mean() / sd**3) if sd > 0 else 0.0


def gini(v: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0 = all equal, → 1 = one has all)."""
    v = np.sort(np.asarray(v, dtype=np.float64))
    n, total = len(v), v.sum()
    if n == 0 or total == 0:
        return 0.0
    return float(((2 * np.arange(1, n + 1) - n - 1) @ v) / (n * total))


def k_occurrence(indices: np.ndarray, n: int) -> np.ndarray:
    """``N_k``: how often each row is among the others' nearest neighbours."""
    return np.bincount(indices.ravel(), minlength=n)


def hubness(indices: np.ndarray, n: int) -> dict[str, float]:
    k = indices.shape[1]
    occ = k_occurrence(indices, n)
    return {
        "hub skewness": skewness(occ),
        "hub gini": gini(occ),
        "max N_k": float(occ.max()),
        "hubs %": float((occ > 2 * k).mean() * 100),
        "antihubs %": float((occ == 0).mean() * 100),
    }


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) of two representations of the same rows."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape[0] != y.shape[0]:
        raise SeqrecError(f"CKA needs the same items in both tables ({len(x)} vs {len(y)} rows)")
    x = x - x.mean(0)
    y = y - y.mean(0)
    num = np.linalg.norm(y.T @ x) ** 2
    den = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(num / den) if den > 0 else math.nan


def knn_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean ``|A_i ∩ B_i| / k`` over rows of two ``[n, k]`` neighbour-index arrays."""
    k = a.shape[1]
    hits = (a[:, :, None] == b[:, None, :]).any(-1).sum(1)
    return float(hits.mean() / k)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    import pandas as pd

    return float(pd.Series(a).corr(pd.Series(b), method="spearman"))


def tsne_map(x: np.ndarray, max_points: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE (cosine) of at most ``max_points`` random rows: ``(rows, coords)``."""
    from sklearn.manifold import TSNE

    n = len(x)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(n, max_points), replace=False))
    perplexity = float(min(30.0, max(2.0, (len(rows) - 1) / 3)))
    coords = TSNE(
        n_components=2, metric="cosine", init="pca", perplexity=perplexity, random_state=seed
    ).fit_transform(np.asarray(x[rows], dtype=np.float32))
    return rows, coords


# ------------------------------------------------------------------ the analysis


@dataclass
class GeometryReport:
    tables: list[ItemEmbeddings]
    rows: list[dict[str, Any]]  # scalar measures per checkpoint
    cka: np.ndarray  # [m, m], NaN across catalogues
    overlap: np.ndarray  # [m, m] k-NN overlap, NaN across catalogues
    spectra: list[np.ndarray] = field(default_factory=list)  # eigenvalues per table
    knn: list[np.ndarray] = field(default_factory=list)  # [n, k] neighbour indices per table
    neighbours: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)


def unique_labels(labels: Sequence[str]) -> list[str]:
    out: list[str] = []
    for lab in labels:
        new, i = lab, 2
        while new in out:
            new, i = f"{lab}#{i}", i + 1
        out.append(new)
    return out


def analyze_geometry(
    paths: Sequence[str | Path],
    registry: Any,
    out: Path,
    k: int = 10,
    titles: Sequence[str] = (),
    n_neighbours: int = 5,
    tsne: bool = True,
    tsne_max: int = 5000,
    cuts: Sequence[float] = DEFAULT_CUTS,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    prov: dict | None = None,
    data_overrides: Sequence[str] | None = None,
) -> GeometryReport:
    """Every measure for every checkpoint; PNGs, tables and README in ``out``.
    ``data_overrides``: see :func:`load_item_embeddings`."""
    log = log or (lambda _msg: None)
    tables = [load_item_embeddings(p, registry, data_overrides=data_overrides) for p in paths]
    for t, lab in zip(tables, unique_labels([t.label for t in tables]), strict=True):
        t.label = lab
    out.mkdir(parents=True, exist_ok=True)
    notes = sorted({f"{t.label}: {t.note}" for t in tables if t.note})
    rows, spectra, neighbours_idx = [], [], []
    for t in tables:
        log(f"{t.label}: {t.matrix.shape[0]} items × {t.matrix.shape[1]} dims")
        eig = spectrum(t.matrix)
        spectra.append(eig)
        idx, _ = knn(t.matrix, k)
        neighbours_idx.append(idx)
        norms = np.linalg.norm(t.matrix, axis=1)
        row: dict[str, Any] = {
            "checkpoint": t.label,
            "model": t.model,
            "seed": t.seed,
            "items": t.matrix.shape[0],
            "dim": t.matrix.shape[1],
            "dims@90%": dims_for(eig, 0.9),
            "effective rank": effective_rank(eig),
            "TwoNN": twonn(t.matrix),
            "anisotropy": anisotropy(t.matrix),
            "isotropy (Z ratio)": isotropy(t.matrix),
            "norm mean": float(norms.mean()),
            "norm std": float(norms.std()),
            "norm~popularity ρ": (
                spearman(norms, t.popularity[1:]) if t.popularity is not None else math.nan
            ),
            **hubness(idx, len(t.matrix)),
        }
        rows.append(row)
    m = len(tables)
    cka = np.full((m, m), np.nan)
    overlap = np.full((m, m), np.nan)
    for i in range(m):
        for j in range(m):
            if tables[i].digest == tables[j].digest:
                cka[i, j] = linear_cka(tables[i].matrix, tables[j].matrix) if i != j else 1.0
                overlap[i, j] = knn_overlap(neighbours_idx[i], neighbours_idx[j])
    if len({t.digest for t in tables}) > 1:
        notes.append("CKA and k-NN overlap only between checkpoints of the same catalogue")
    for i, t in enumerate(tables):
        same = [j for j, o in enumerate(tables) if j != i and o.family == t.family]
        rows[i][f"kNN@{k} stability (seeds)"] = (
            float(np.mean([overlap[i, j] for j in same])) if same else math.nan
        )
    report = GeometryReport(tables, rows, cka, overlap, spectra, neighbours_idx, notes=notes)
    report.neighbours = item_neighbours(tables, titles, n_neighbours, report.notes)
    report.files = write_geometry_report(report, out, k, tsne, tsne_max, cuts, seed, prov)
    return report


def item_neighbours(
    tables: Sequence[ItemEmbeddings], titles: Sequence[str], n: int, notes: list[str]
) -> list[dict[str, Any]]:
    """Nearest items (cosine) of the given titles in every table; without titles,
    the 5 most popular items of the first table (its first 5 items when popularity
    is unknown)."""
    from seqrec_core.recommend import Catalogue

    if not tables:
        return []
    first = tables[0]
    if not titles:
        if first.popularity is not None:
            counts = first.popularity[1:]
            order = np.lexsort((np.arange(len(counts)), -counts))[:5]
        else:
            order = np.arange(min(5, len(first.titles)))
        titles = [first.titles[i] for i in order]
    out = []
    for t in tables:
        catalogue = Catalogue(t.item_ids, t.titles)
        unit = torch.nn.functional.normalize(torch.from_numpy(t.matrix), dim=1)
        for title in titles:
            try:
                item = catalogue.resolve(title)
            except SeqrecError as exc:
                notes.append(f"{t.label}: {exc}")
                continue
            sims = unit @ unit[item - 1]
            sims[item - 1] = -math.inf
            values, idx = sims.topk(min(n, len(sims) - 1))
            out.append(
                {
                    "item": catalogue.titles[item],
                    "checkpoint": t.label,
                    "neighbours": "; ".join(
                        f"{catalogue.titles[i + 1]} ({v:.2f})"
                        for v, i in zip(values.tolist(), idx.tolist(), strict=True)
                    ),
                }
            )
    return out


# ------------------------------------------------------------------ figures and report


def write_geometry_report(
    report: GeometryReport,
    out: Path,
    k: int,
    tsne: bool,
    tsne_max: int,
    cuts: Sequence[float],
    seed: int,
    prov: dict | None = None,
) -> list[Path]:
    plt = reports.pyplot()
    tables, spectra = report.tables, report.spectra
    files: list[Path] = []

    fig, ax = plt.subplots(figsize=(6, 4))
    for t, eig in zip(tables, spectra, strict=True):
        ax.plot(np.arange(1, len(eig) + 1), np.maximum(eig, 1e-12), label=t.label)
    ax.set_yscale("log")
    ax.set_xlabel("component")
    ax.set_ylabel("eigenvalue (covariance)")
    ax.set_title("eigenvalue spectrum of the item table")
    ax.legend(fontsize=7)
    files.append(reports.save_figure(fig, out / "spectrum.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for t, eig in zip(tables, spectra, strict=True):
        ax.plot(np.arange(1, len(eig) + 1), explained_variance(eig), label=t.label)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("components")
    ax.set_ylabel("cumulative explained variance")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    files.append(reports.save_figure(fig, out / "explained_variance.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for t in tables:
        ax.hist(np.linalg.norm(t.matrix, axis=1), bins=50, histtype="step", label=t.label)
    ax.set_xlabel("L2 norm of the item vector")
    ax.set_ylabel("items")
    ax.legend(fontsize=7)
    files.append(reports.save_figure(fig, out / "norms.png"))

    with_pop = [t for t in tables if t.popularity is not None]
    if with_pop:
        fig, ax = plt.subplots(figsize=(6, 4))
        for t in with_pop:
            ax.scatter(
                t.popularity[1:] + 1,
                np.linalg.norm(t.matrix, axis=1),
                s=3,
                alpha=0.4,
                label=t.label,
            )
        ax.set_xscale("log")
        ax.set_xlabel("training interactions + 1")
        ax.set_ylabel("L2 norm")
        ax.legend(fontsize=7, markerscale=3)
        files.append(reports.save_figure(fig, out / "norms_vs_popularity.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for t, idx in zip(tables, report.knn, strict=True):
        occ = k_occurrence(idx, len(t.matrix))
        ax.hist(occ, bins=np.arange(occ.max() + 2) - 0.5, histtype="step", label=t.label)
    ax.set_yscale("log")
    ax.set_xlabel(f"k-occurrence N_{k} (times among others' {k} nearest)")
    ax.set_ylabel("items")
    ax.legend(fontsize=7)
    files.append(reports.save_figure(fig, out / "hubness.png"))

    if tsne:
        for t in tables:
            files.append(_tsne_figure(plt, t, out, tsne_max, cuts, seed))

    if len(tables) > 1:
        labels = [t.label for t in tables]
        files.append(_matrix_figure(plt, report.cka, labels, "linear CKA", out / "cka.png"))
        files.append(
            _matrix_figure(
                plt, report.overlap, labels, f"k-NN overlap @ {k}", out / "knn_overlap.png"
            )
        )

    files += reports.write_table(report.rows, out / "geometry")
    sections = [
        "Scalar measures of each checkpoint's item embedding table (definitions: "
        "`docs/research.md`, `seqrec_core/research/geometry.py`).",
        reports.markdown_table(report.rows),
    ]
    if len(tables) > 1:
        labels = [t.label for t in tables]
        for name, mat in (("Linear CKA", report.cka), (f"k-NN overlap @ {k}", report.overlap)):
            rows = [
                {"": a, **{b: mat[i, j] for j, b in enumerate(labels)}}
                for i, a in enumerate(labels)
            ]
            sections += [f"## {name}", reports.markdown_table(rows)]
    if report.neighbours:
        files += reports.write_table(report.neighbours, out / "neighbours")
        sections += ["## Nearest items (cosine)", reports.markdown_table(report.neighbours)]
    if report.notes:
        sections += ["## Notes", "\n".join(f"- {n}" for n in report.notes)]
    files.append(
        reports.write_readme(out, "Item embedding geometry", "\n\n".join(sections), files, prov)
    )
    return files


def _tsne_figure(plt, t: ItemEmbeddings, out: Path, tsne_max: int, cuts, seed: int) -> Path:
    rows, coords = tsne_map(t.matrix, tsne_max, seed)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if t.popularity is not None:
        buckets = popularity_buckets(t.popularity, cuts)[rows + 1]
        for b, name in reversed(list(enumerate(BUCKETS))):  # head drawn last, on top
            sel = buckets == b
            ax.scatter(*coords[sel].T, s=3, c=BUCKET_COLOURS[name], label=name, alpha=0.7)
        ax.legend(markerscale=4, fontsize=8, title=f"popularity (cuts {list(cuts)})")
    else:
        ax.scatter(*coords.T, s=3, c="#555555", alpha=0.7)
        ax.text(0.01, 0.01, "popularity unknown: not coloured", transform=ax.transAxes, fontsize=7)
    ax.set_title(f"t-SNE (cosine) of {t.label}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return reports.save_figure(fig, out / f"tsne_{reports.slug(t.label)}.png")


def _matrix_figure(plt, mat: np.ndarray, labels: list[str], title: str, path: Path) -> Path:
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * n, 1.0 + 0.7 * n))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    for (i, j), v in np.ndenumerate(mat):
        if math.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return reports.save_figure(fig, path)
