"""RQ4 geometry measures on embeddings with known answers, and the report on
tiny trained checkpoints (CPU)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import model_registry, synthetic_recipe
from rich.console import Console

import seqrec_sasrec
from seqrec_core.errors import SeqrecError
from seqrec_core.research import geometry as g
from seqrec_core.research.reports import PNG_MAGIC
from seqrec_core.run import run_recipe

N, D = 1500, 24


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="module")
def isotropic(rng):
    return rng.standard_normal((N, D)) / np.sqrt(D)


@pytest.fixture(scope="module")
def rank2(rng):
    """A 2-D Gaussian cloud in D dims, shifted far from the origin."""
    basis = np.linalg.qr(rng.standard_normal((D, 2)))[0].T
    offset = rng.standard_normal(D)
    offset *= 3 / np.linalg.norm(offset)
    return offset + rng.standard_normal((N, 2)) @ basis


def test_spectrum_and_explained_variance(isotropic, rank2):
    iso_eig, r2_eig = g.spectrum(isotropic), g.spectrum(rank2)
    assert len(iso_eig) == D and np.all(np.diff(iso_eig) <= 1e-12)  # descending
    assert g.dims_for(r2_eig, 0.9) == 2
    assert g.dims_for(iso_eig, 0.9) >= int(0.8 * D)
    assert g.effective_rank(r2_eig) == pytest.approx(2.0, abs=0.1)
    assert g.effective_rank(iso_eig) > 0.9 * D
    assert g.explained_variance(r2_eig)[1] == pytest.approx(1.0, abs=1e-9)


def test_twonn_recovers_the_true_dimension(rng, rank2):
    assert g.twonn(rank2) == pytest.approx(2.0, abs=0.3)
    basis = np.linalg.qr(rng.standard_normal((D, 5)))[0].T
    five = rng.standard_normal((N, 5)) @ basis
    assert g.twonn(five) == pytest.approx(5.0, rel=0.15)


def test_anisotropy_and_isotropy(isotropic, rank2):
    assert abs(g.anisotropy(isotropic)) < 0.01
    assert g.anisotropy(rank2) > 0.5
    # The closed form equals the brute-force mean over pairs.
    sub = rank2[:200]
    u = sub / np.linalg.norm(sub, axis=1, keepdims=True)
    cos = u @ u.T
    brute = (cos.sum() - np.trace(cos)) / (len(sub) * (len(sub) - 1))
    assert g.anisotropy(sub) == pytest.approx(brute, rel=1e-9)
    assert g.isotropy(isotropic) > 0.8
    assert g.isotropy(rank2) < 0.05


def test_planted_hub_shows_up(rng):
    centre = np.ones(D)
    points = centre + rng.standard_normal((800, D))
    with_hub = np.vstack([points, centre])  # the centroid: near everyone
    idx, sims = g.knn(with_hub, 10)
    assert not (idx == np.arange(len(with_hub))[:, None]).any()  # never its own neighbour
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # most similar first
    occ = g.k_occurrence(idx, len(with_hub))
    assert occ.argmax() == len(points)
    assert occ[-1] > len(points) / 4
    assert occ.sum() == 10 * len(with_hub)
    plain = g.hubness(g.knn(points, 10)[0], len(points))
    hub = g.hubness(idx, len(with_hub))
    assert hub["hub skewness"] > 3 * max(plain["hub skewness"], 1.0)
    assert hub["max N_k"] == occ[-1]


def test_gini_and_skewness():
    assert g.gini(np.full(10, 3.0)) == pytest.approx(0.0)
    assert g.gini(np.array([0, 0, 0, 5.0])) == pytest.approx(0.75)
    assert g.skewness(np.array([1.0, 1.0, 1.0])) == 0.0
    assert g.skewness(np.array([0, 0, 0, 0, 10.0])) > 1


def test_linear_cka(rng, isotropic):
    rotation = np.linalg.qr(rng.standard_normal((D, D)))[0]
    assert g.linear_cka(isotropic, isotropic) == pytest.approx(1.0)
    assert g.linear_cka(isotropic, isotropic @ rotation) == pytest.approx(1.0)
    assert g.linear_cka(isotropic, 3.0 * isotropic + 1.0) == pytest.approx(1.0)
    assert g.linear_cka(isotropic, rng.standard_normal((N, D))) < 0.05
    with pytest.raises(Exception, match="same items"):
        g.linear_cka(isotropic, isotropic[:10])


def test_knn_overlap(isotropic, rng):
    idx, _ = g.knn(isotropic, 10)
    assert g.knn_overlap(idx, idx) == 1.0
    other, _ = g.knn(rng.standard_normal((N, D)), 10)
    assert g.knn_overlap(idx, other) < 0.05


def _train_two_seeds(monkeypatch, tmp_path):
    registry = model_registry(monkeypatch, tmp_path, seqrec_sasrec)
    recipe = synthetic_recipe(
        registry,
        tmp_path,
        {"name": "sasrec", "max_len": 20, "dim": 16, "blocks": 1, "heads": 1},
        epochs=2,
        name="geo",
        seeds=[1, 2],
    )
    run_recipe(recipe, registry, Console(quiet=True), samples=0)
    ckpts = sorted((tmp_path / "ckpt").glob("geo-seed*/best.safetensors"))
    assert len(ckpts) == 2
    return registry, ckpts


def test_geometry_report_on_tiny_checkpoints(monkeypatch, tmp_path):
    import seqrec_core.cli

    registry, ckpts = _train_two_seeds(monkeypatch, tmp_path)
    # A copy without histories.safetensors: no popularity, map not coloured.
    bare = tmp_path / "bare" / "best.safetensors"
    bare.parent.mkdir()
    shutil.copy(ckpts[0], bare)
    monkeypatch.setattr(seqrec_core.cli, "load_plugins", lambda **_: registry)
    out = tmp_path / "report"
    args = ["analyze", "geometry", *map(str, ckpts), str(bare), "--out", str(out), "-k", "5"]
    assert seqrec_core.cli.main(args) == 0

    for name in (
        "spectrum.png",
        "explained_variance.png",
        "norms.png",
        "norms_vs_popularity.png",
        "hubness.png",
        "cka.png",
        "knn_overlap.png",
        "tsne_geo-seed1.png",
        "tsne_geo-seed2.png",
    ):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name
    readme = (out / "README.md").read_text()
    assert "How this was produced" in readme and "- commit: `" in readme
    assert "no histories.safetensors" in readme
    table = (out / "geometry.csv").read_text().splitlines()
    assert len(table) == 1 + 3 and "TwoNN" in table[0]
    assert (out / "neighbours.csv").is_file()


def test_geometry_measures_of_one_family(monkeypatch, tmp_path):
    registry, ckpts = _train_two_seeds(monkeypatch, tmp_path)
    report = g.analyze_geometry(ckpts, registry, tmp_path / "r", k=5, tsne=False)
    assert [t.label for t in report.tables] == ["geo-seed1", "geo-seed2"]
    assert report.tables[0].matrix.shape == (40, 16)  # rows 1..n_items only
    assert report.tables[0].popularity is not None
    assert np.allclose(np.diag(report.cka), 1.0)
    assert 0 < report.cka[0, 1] < 1
    stability = report.rows[0]["kNN@5 stability (seeds)"]
    assert stability == pytest.approx(report.overlap[0, 1])
    # Default neighbour queries: the most popular items of the first table.
    counts = report.tables[0].popularity[1:]
    top = report.tables[0].titles[int(np.argmax(counts))]
    assert report.neighbours[0]["item"] == top
    assert not (tmp_path / "r" / "tsne_geo-seed1.png").exists()


def test_popularity_from_the_dataset_when_no_histories_beside(monkeypatch, tmp_path):
    registry, ckpts = _train_two_seeds(monkeypatch, tmp_path)
    bare = tmp_path / "bare" / "best.safetensors"
    bare.parent.mkdir()
    shutil.copy(ckpts[0], bare)
    with_hist = g.load_item_embeddings(ckpts[0], registry)
    assert g.load_item_embeddings(bare, registry).popularity is None
    reloaded = g.load_item_embeddings(bare, registry, data_overrides=[])
    assert "dataset reloaded" in reloaded.note
    assert np.array_equal(reloaded.popularity, with_hist.popularity)
    # Another catalogue than the checkpoint's is refused, naming the mismatch.
    with pytest.raises(SeqrecError):
        g.load_item_embeddings(bare, registry, data_overrides=["dataset.n_items=41"])


def test_seeds_of_one_model_stay_one_family_across_runtime_options():
    """Options that only choose kernels or launch settings (the model class's
    ``runtime_options``) do not split a model's seeds into families; any other
    option does."""

    def table(seed, **options):
        return g.ItemEmbeddings(
            label=f"x{seed}",
            path=Path("x"),
            matrix=np.zeros((2, 2), np.float32),
            digest="d",
            model="xlstm",
            options={"dim": 64, **options},
            seed=seed,
            item_ids=[1, 2],
            titles=["a", "b"],
            runtime_options=frozenset({"triton_args", "kernel"}),
        )

    old = table(2023, triton_args={})
    new = table(42, triton_args={"num_warps_intra": 2}, kernel="triton")
    assert old.family == new.family
    assert table(1, dropout=0.1).family != table(2, dropout=0.2).family


def test_xlstm_declares_its_kernel_options_runtime_only():
    import seqrec_xlstm

    runtime = seqrec_xlstm.XLSTM.runtime_options
    assert {"kernel", "triton_args"} <= runtime
    assert runtime <= set(seqrec_xlstm.XLSTMOptions.model_fields)
    assert "dim" not in runtime
    assert seqrec_sasrec.SASRec.runtime_options == frozenset()
