"""Data-core and POP baseline benchmark on the real MovieLens files.

    python benchmarks/data_pop.py [--shared ../shared/data]

Prints (1) ML-100K load + filter + split time and peak Python memory and
(2) POP full-ranking Recall@10 / NDCG@10 on ML-100K (movielens plugin, official
files) and ML-1M (files plugin on the SASRec-preprocessed ``ml-1m.txt``), under
both protocols: U (rank all items) and F (seen items filtered).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from rich.console import Console
from rich.table import Table

from seqrec_core.data import load_dataset
from seqrec_core.evaluate import evaluate
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe
from seqrec_core.run import build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shared", default=str(Path(__file__).resolve().parents[2] / "shared/data")
    )
    args = parser.parse_args()
    shared = Path(args.shared)
    os.environ["SEQREC_CACHE"] = tempfile.mkdtemp(prefix="seqrec-bench-")  # measure cold loads
    registry = load_plugins()
    console = Console()

    datasets = {
        "ML-100K": {"name": "movielens", "path": str(shared / "ml-100k"), "cache": False},
        "ML-1M (SASRec)": {
            "name": "files",
            "path": str(shared / "ml-1m-sasrec/ml-1m.txt"),
            "format": "sasrec",
            "cache": False,
        },
    }
    load = Table(title="data core: load + filter + remap + split (cold, no cache)")
    for col in ("dataset", "users", "items", "interactions", "seconds", "peak MiB (Python)"):
        load.add_column(col, justify="right")
    pop = Table(title="POP, full ranking, leave-one-out, test split")
    for col in ("dataset", "protocol", "HR@10", "NDCG@10", "users"):
        pop.add_column(col, justify="right")

    for label, ds in datasets.items():
        recipe = load_recipe(
            None, registry, data={"name": "bench", "dataset": ds, "model": {"name": "pop"}}
        )
        tracemalloc.start()
        t0 = time.perf_counter()
        data = load_dataset(recipe, registry)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        s = data.stats()
        load.add_row(
            label,
            f"{s['users']:,}",
            f"{s['items']:,}",
            f"{s['interactions']:,}",
            f"{seconds:.2f}",
            f"{peak:.0f}",
        )
        model = build_model(recipe, registry, data)
        model.prepare(data)
        metrics = [registry.get("metrics", m) for m in ("hr", "ndcg")]
        for protocol, filter_seen in (("U", False), ("F", True)):
            m = evaluate(model, data, "test", metrics, [10], filter_seen=filter_seen)
            pop.add_row(
                label, protocol, f"{m['HR@10']:.4f}", f"{m['NDCG@10']:.4f}", f"{s['test_users']:,}"
            )
    console.print(load)
    console.print(pop)


if __name__ == "__main__":
    main()
