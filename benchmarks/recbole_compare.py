"""seqrec vs RecBole: SASRec on the same data, same model size, same GPU.

    python benchmarks/recbole_compare.py --data ml-1m.txt --epochs 3
    python benchmarks/recbole_compare.py --data ml-1m.txt --epochs 3 --skip-recbole
    python benchmarks/recbole_compare.py --data tiny.txt --device cpu --epochs 1 -o model.max_len=20

Prints one table, a row per library: seconds per *training* epoch (median over
the epochs; validation, checkpointing and the test pass are not timed), the
speed-up over RecBole, training targets per epoch, epochs run (best), and test
HR@10 / NDCG@10 of the best validation epoch under both of seqrec's protocols
(docs/protocol.md section 7: U = all items ranked, F = the user's history
filtered out, the target always a candidate, ties counted against the model).

What runs
---------
``--data`` is a SASRec-format file ("user item" per line, each user's lines in
time order). seqrec trains on it with ``--recipe`` (default
recipes/ml1m_sasrec.yaml; ``-o KEY=VALUE`` overrides it as on the command line).
For RecBole (1.2.1, ``pip install recbole``) the file is converted to an atomic
``.inter`` file in a temporary folder (``user_id:token``, ``item_id:token``,
``timestamp:float`` = the line number, so RecBole's time order is the file
order) and RecBole's own ``SASRec`` + ``Trainer`` train on it with settings
taken from the same resolved recipe:

* model size: ``hidden_size = model.dim``, ``n_layers = model.blocks``,
  ``n_heads = model.heads``, ``inner_size = model.ffn_factor * model.dim`` (seqrec's
  feed-forward width; RecBole's default would be 256), both dropouts =
  ``model.dropout``, ``MAX_ITEM_LIST_LENGTH = model.max_len``, GELU;
* training: ``loss_type: CE`` (full softmax, ``train_neg_sample_args: None``),
  ``train_batch_size = train.batch_size``, ``learning_rate = train.lr``,
  ``learner``/``weight_decay`` = ``train.optimizer``/``train.weight_decay``,
  ``clip_grad_norm = train.grad_clip``;
* split and evaluation: ``eval_args: {split: {LS: valid_and_test}, order: TO,
  group_by: user, mode: full}`` (leave-one-out, full ranking), ``metrics: [NDCG,
  Hit]``, ``topk: [10]``, ``valid_metric: NDCG@10``;
* both run exactly ``--epochs`` epochs (early stopping off: RecBole's
  ``stopping_step`` and seqrec's ``train.patience`` are set past the end), validate
  every epoch, and are tested with the weights of the best validation epoch. An
  epoch is not the same work in both (below), so for a converged comparison give
  RecBole its own count: ``--recbole-opt epochs=30 --recbole-opt stopping_step=31``
  (the table's "epochs (best)" column shows each library's), and
  ``--recbole-time-limit SECONDS`` to stop it before an epoch that would start past
  that budget and test its best validated epoch, so a time-limited command still
  brings its row back.

What stays different, because RecBole has no knob for it: RecBole's SASRec is
post-LayerNorm, fp32 (its ``enable_amp`` is fp16 without a scaler, left off), with
no LR schedule and Adam's default betas; seqrec's recipe is pre-LN, bf16 autocast on
CUDA, cosine schedule with warm-up, betas (0.9, 0.98). And an *epoch* means
different work: RecBole trains on every prefix of every training sequence (one
target per sample, ``len(train_data.dataset)`` samples: every training item but
each user's first), seqrec on one window per user (``train.windows: last``: the last
``max_len`` + 1 items, every position a target), so users with more than
``max_len`` training items contribute fewer targets to a seqrec epoch. The
"targets/epoch" column shows both numbers; compare seconds per epoch with it.
For the same training targets give seqrec ``-o train.windows=sliding`` (earlier
windows too, every target once per epoch): at ``max_len`` 50 on ML-1M the last
windows hold only 27 % of the targets, and RecBole's model tested 0.018 NDCG@10
higher than seqrec's (reports/performance/README.md, session 8).

The protocols, exactly
----------------------
RecBole's own full-ranking evaluator, for a *sequential* model, does **not**
remove the user's history (``FullSortEvalDataLoader`` passes no history index when
``MODEL_TYPE`` is sequential; only the padding item 0 is masked), and it breaks
score ties by ``torch.topk`` order. Its NDCG@10 / HR@10 are therefore protocol U
(up to ties) and are printed under the table as they come. The table's RecBole
numbers are recomputed here from RecBole's model scores with seqrec's exact rules
(U and F, whole history filtered for F, ties against the model), so both rows of
the table use the same protocol.

RecBole 1.2.1 on current numpy / pandas / torch (checked with numpy 2.4,
pandas 3.1, torch 2.13 CPU) and what this script does about it:

* ``Config.compatibility_settings`` assigns ``np.float_``, ``np.complex_`` and
  ``np.unicode_``, removed in numpy 2 (AttributeError at ``Config(...)``): the
  script puts aliases back on ``numpy`` before building the config.
* ``Trainer.evaluate(load_best_model=True)`` calls ``torch.load`` without
  ``weights_only=False`` and fails on torch >= 2.6 (UnpicklingError; the checkpoint
  pickles the config): the script never unpickles it — it replaces the trainer's
  ``_save_checkpoint`` so the best epoch's weights are kept in memory, loads them
  and evaluates with ``load_best_model=False``.
* ``quick_start`` imports ``ray`` (a hard ``Requires-Dist`` pinned to
  ``ray<=2.6.3``, no Python 3.12 wheels): the script never imports quick_start, so ray
  is not needed. ``thop`` (only for ``get_flops``) and ``plotly`` (hyper-parameter
  tuning) are not needed either.
* pandas 3 copy-on-write turns RecBole's ``feat[field].fillna(..., inplace=True)``
  into a no-op with a ChainedAssignmentError warning; it only matters for missing
  values, which this converted file never has. Warnings from RecBole are silenced.
* RecBole writes ``log/`` and ``log_tensorboard/`` into the working directory and
  sets ``CUDA_VISIBLE_DEVICES`` from ``gpu_id``: the script runs RecBole inside
  its temporary folder and passes the current ``CUDA_VISIBLE_DEVICES`` (or "0") as
  ``gpu_id``, restoring the variable afterwards.

On the H200 device machine (no network)
---------------------------------------
RecBole and the packages it needs that the device image lacks travel as wheels
in two git-ignored folders: ``.whl/`` (seqrec's own missing ones) and
``.whl_recbole/`` (recbole-1.2.1, colorlog, texttable; torch, numpy, scipy,
pandas, scikit-learn, pyyaml, tensorboard, tqdm, colorama, tabulate, psutil are on
the image already). Fill ``.whl_recbole/`` here with::

    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl_recbole recbole==1.2.1 colorlog==6.12.0 texttable==1.7.2

The data never goes into git: put ml-1m.txt into a git-ignored folder such as
``.devdata/`` (already in .git/info/exclude). Carry ``.whl``, ``.whl_recbole`` and
``.devdata`` (``carry: [".whl", ".whl_recbole", ".devdata"]``) and start the
command with the install prefix::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl .whl_recbole/*.whl && export PYTHONPATH=/tmp/site || exit; \\
    PYTHONUNBUFFERED=1 python3 benchmarks/recbole_compare.py --data .devdata/ml-1m.txt \\
        --epochs 3 --json $OUT/recbole_compare.json

``--json`` is rewritten after each library, so a command cut off at its limit
still brings back the rows that finished; ``--add-json FILE`` puts such rows into
a later table (e.g. ``--skip-recbole --add-json recbole_rows.json``).

Budget: seqrec runs first (seconds). RecBole's ML-1M epoch is ~1M samples of
length 200 at batch 128 (~7.7k steps; its data augmentation also builds a
[~1M, 200] int64 item-list tensor, ~1.6 GB of host memory, in about a minute of
CPU), and every epoch is followed by a full validation pass; keep ``--epochs``
small enough for one device command (10 minutes), 3 by default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.table import Table

from seqrec_core import hookimpl

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = ROOT / "recipes" / "ml1m_sasrec.yaml"
INSTALL_HINT = (
    "RecBole is not importable, skipped: pip install recbole==1.2.1 "
    "(offline: carry .whl_recbole/, see this script's docstring)"
)
K = 10


# ------------------------------------------------------------------ data


def read_sasrec(path: str | Path) -> list[tuple[str, str]]:
    """``user item`` pairs of a SASRec-format file, in file order (blank lines skipped)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise SystemExit(f"{path}:{lineno}: expected 'user item', got {line.strip()!r}")
            rows.append((parts[0], parts[1]))
    if not rows:
        raise SystemExit(f"{path}: no 'user item' lines")
    return rows


def to_atomic(src: str | Path, out_dir: str | Path, name: str = "seqdata") -> Path:
    """Write ``src`` (SASRec format) as RecBole's atomic file ``out_dir/name/name.inter``.

    Columns ``user_id:token``, ``item_id:token``, ``timestamp:float``, tab-separated; the
    timestamp is the 0-based line number among the data lines, so RecBole's time
    order (``order: TO``) is the file order. Returns the ``.inter`` path."""
    rows = read_sasrec(src)
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for t, (user, item) in enumerate(rows):
            fh.write(f"{user}\t{item}\t{t}\n")
    return path


def test_histories(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Per user, the test input: every item but the last (leave-one-out)."""
    seqs: dict[str, list[str]] = {}
    for user, item in rows:
        seqs.setdefault(user, []).append(item)
    return {u: s[:-1] for u, s in seqs.items()}


# ------------------------------------------------------------------ metrics


def ranks_from_scores(
    scores: torch.Tensor,
    targets: torch.Tensor,
    hist_rows: torch.Tensor | None = None,
    hist_cols: torch.Tensor | None = None,
) -> torch.Tensor:
    """seqrec's rank rule (docs/protocol.md section 7) on ``scores [B, N + 1]``:
    candidates are items 1..N (minus ``(hist_rows, hist_cols)`` for F, the target
    always kept); rank = candidates scoring >= the target; NaN counts as -inf."""
    scores = torch.nan_to_num(scores.float(), nan=-math.inf)
    rows = torch.arange(len(targets), device=scores.device)
    cand = torch.ones_like(scores, dtype=torch.bool)
    cand[:, 0] = False
    if hist_rows is not None:
        cand[hist_rows, hist_cols] = False
    cand[rows, targets] = True
    target = scores[rows, targets].unsqueeze(1)
    return ((scores >= target) & cand).sum(1)


def hr_ndcg(ranks: np.ndarray, k: int = K) -> tuple[float, float]:
    hit = ranks <= k
    ndcg = np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)
    return float(hit.mean()) if len(ranks) else 0.0, float(ndcg.mean()) if len(ranks) else 0.0


# ------------------------------------------------------------------ seqrec


class _Recorder:
    name = "recbole_compare_recorder"

    def __init__(self):
        self.epochs: list[dict] = []

    @hookimpl
    def on_epoch_end(self, run, event):
        self.epochs.append(event)


def seqrec_recipe(args, work: Path):
    from seqrec_core.plugins import load_plugins
    from seqrec_core.recipe import load_recipe

    registry = load_plugins()
    overrides = [
        *args.overrides,
        f"dataset.path={Path(args.data).resolve()}",
        f"train.epochs={args.epochs}",
        f"train.patience={args.epochs + 1}",
        f"train.device={args.device}",
        "train.monitor=NDCG@10",
        "eval.ks=[10]",
        "eval.metrics=[hr, ndcg]",
        "eval.both_protocols=true",
        "callbacks=[]",
        f"output.runs_dir={work / 'runs'}",
        f"output.checkpoints_dir={work / 'ckpt'}",
    ]
    return load_recipe(args.recipe, registry, overrides=overrides), registry


def run_seqrec(recipe, registry, settings: list[str] | None = None) -> dict[str, Any]:
    from seqrec_core.data import load_dataset
    from seqrec_core.run import resolve_device
    from seqrec_core.train import Trainer

    data = load_dataset(recipe, registry)
    device = resolve_device(recipe.train.device)
    rec = _Recorder()
    trainer = Trainer(recipe, registry, data, recipe.train.seeds[0], recipe.name, device, [rec])
    result = trainer.fit()
    times = [e["train_time"] for e in rec.epochs]
    targets = [e["tokens_per_s"] * e["train_time"] for e in rec.epochs]
    out = {
        "library": "seqrec",
        "settings": list(settings or []),
        "epoch_times": times,
        "s_per_epoch": statistics.median(times) if times else math.nan,
        "targets_per_epoch": round(statistics.median(targets)) if targets else 0,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "users": data.n_users,
        "items": data.n_items,
    }
    for proto in ("U", "F"):
        out[f"HR@10 {proto}"] = result.test[f"HR@10/{proto}"]
        out[f"NDCG@10 {proto}"] = result.test[f"NDCG@10/{proto}"]
    del trainer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# ------------------------------------------------------------------ RecBole


def recbole_missing() -> str | None:
    """None when RecBole's config, data, SASRec and trainer import; else what is missing."""
    _numpy_aliases()
    try:
        import recbole.config  # noqa: F401
        import recbole.data  # noqa: F401
        import recbole.model.sequential_recommender  # noqa: F401
        import recbole.trainer  # noqa: F401
    except ImportError as exc:
        return getattr(exc, "name", None) or str(exc)
    return None


def _numpy_aliases() -> None:
    """RecBole 1.2.1's Config assigns np.float_ / np.complex_ / np.unicode_ (gone in numpy 2)."""
    for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if old not in np.__dict__:
            setattr(np, old, new)


def recbole_config(recipe, work: Path, name: str, device: str, extra: dict) -> dict[str, Any]:
    """RecBole's config dict from the resolved seqrec recipe (see the docstring)."""
    m, t = recipe.model_options, recipe.train
    if recipe.model.name != "sasrec":
        raise SystemExit(f"only SASRec is compared; the recipe's model is {recipe.model.name}")
    cfg: dict[str, Any] = {
        "data_path": str(work),
        "checkpoint_dir": str(work / "recbole_saved"),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": m.max_len,
        "n_layers": m.blocks,
        "n_heads": m.heads,
        "hidden_size": m.dim,
        "inner_size": m.ffn_factor * m.dim,
        "hidden_dropout_prob": m.dropout,
        "attn_dropout_prob": m.dropout,
        "hidden_act": "gelu",
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "train_batch_size": t.batch_size,
        "learning_rate": t.lr,
        "learner": t.optimizer,
        "weight_decay": t.weight_decay,
        "clip_grad_norm": {"max_norm": t.grad_clip} if t.grad_clip else None,
        "epochs": t.epochs,
        "stopping_step": t.epochs + 1,
        "eval_step": 1,
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "metrics": ["NDCG", "Hit"],
        "topk": [K],
        "valid_metric": f"NDCG@{K}",
        "seed": t.seeds[0],
        "show_progress": False,
        "gpu_id": "" if device == "cpu" else os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
    }
    cfg.update(extra)
    return cfg


def run_recbole(args, recipe, work: Path) -> dict[str, Any]:
    _numpy_aliases()
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_logger, init_seed

    name = "seqdata"
    to_atomic(args.data, work, name)
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    extra = {}
    for text in args.recbole_opts:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--recbole-opt {text}: expected KEY=VALUE (VALUE is YAML)")
        extra[key.strip()] = yaml.safe_load(raw)
    cfg = recbole_config(recipe, work, name, device.type, extra)

    cvd, argv = os.environ.get("CUDA_VISIBLE_DEVICES"), sys.argv
    with warnings.catch_warnings(), contextlib.chdir(work):
        warnings.simplefilter("ignore")
        sys.argv = argv[:1]  # RecBole's Config also reads --key=value from the command line
        try:
            config = Config(model="SASRec", dataset=name, config_dict=cfg)
        finally:
            sys.argv = argv
            if cvd is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = cvd
        config["device"] = device
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        dataset = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, dataset)
        model = SASRec(config, train_data.dataset).to(device)
        trainer = Trainer(config, model)

        times: list[float] = []
        inner = trainer._train_epoch
        fit_start = time.perf_counter()

        def timed_train_epoch(*a, **kw):
            limit = args.recbole_time_limit
            if limit is not None and times and time.perf_counter() - fit_start > limit:
                # checked before an epoch: every epoch trained has been validated
                raise _TimeLimit
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = inner(*a, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            # progress, so a run cut off by a time limit still shows its epochs
            print(f"RecBole training epoch {len(times)}: {times[-1]:.2f} s", flush=True)
            return loss

        trainer._train_epoch = timed_train_epoch
        # Keep the best weights in memory instead of RecBole's pickled checkpoint file
        # (reading that back would mean unpickling it, which seqrec never does).
        best: dict = {}

        def keep_best(epoch, *a, net=model, **kw):
            best["epoch"] = epoch
            best["state_dict"] = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best["other_parameter"] = net.other_parameter()

        trainer._save_checkpoint = keep_best
        stopped = False
        try:
            trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        except _TimeLimit:
            stopped = True
            print(
                f"RecBole: --recbole-time-limit {args.recbole_time_limit:g} s reached after "
                f"{len(times)} epoch(s); testing its best epoch",
                flush=True,
            )
        model.load_state_dict(best["state_dict"])
        model.load_other_parameter(best.get("other_parameter"))
        own = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        best_epoch = int(best["epoch"]) + 1  # RecBole counts from 0

        histories = test_histories(read_sasrec(args.data))
        uid_map = dataset.field2token_id["user_id"]
        iid_map = dataset.field2token_id["item_id"]
        hist_ids = {
            uid_map[u]: np.fromiter((iid_map[i] for i in h), dtype=np.int64, count=len(h))
            for u, h in histories.items()
            if u in uid_map
        }
        ranks_u, ranks_f = [], []
        model.eval()
        with torch.no_grad():
            for interaction, _hist, _pos_u, pos_i in test_data:
                interaction = interaction.to(device)
                scores = model.full_sort_predict(interaction).view(len(interaction), -1)
                targets = pos_i.to(device)
                ranks_u.append(ranks_from_scores(scores, targets).cpu())
                uids = interaction[config["USER_ID_FIELD"]].cpu().numpy()
                hs = [hist_ids[int(u)] for u in uids]
                rows = torch.from_numpy(np.repeat(np.arange(len(hs)), [len(h) for h in hs]))
                cols = torch.from_numpy(np.concatenate(hs) if hs else np.zeros(0, np.int64))
                ranks_f.append(
                    ranks_from_scores(scores, targets, rows.to(device), cols.to(device)).cpu()
                )
    ru = torch.cat(ranks_u).numpy()
    rf = torch.cat(ranks_f).numpy()
    out = {
        "library": "RecBole",
        "settings": list(args.recbole_opts),
        "epoch_times": times,
        "s_per_epoch": statistics.median(times) if times else math.nan,
        "targets_per_epoch": len(train_data.dataset),
        "epochs": len(times),
        "best_epoch": best_epoch,
        "stopped_by_time_limit": stopped,
        "users": dataset.user_num - 1,
        "items": dataset.item_num - 1,
        "own": {k: float(v) for k, v in own.items()},
    }
    out["HR@10 U"], out["NDCG@10 U"] = hr_ndcg(ru)
    out["HR@10 F"], out["NDCG@10 F"] = hr_ndcg(rf)
    del trainer, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


class _TimeLimit(Exception):
    """--recbole-time-limit reached (raised before RecBole's next epoch)."""


# ------------------------------------------------------------------ report


def device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU x{torch.get_num_threads()}"


def report(rows: list[dict], args, console: Console) -> None:
    base = next((r["s_per_epoch"] for r in rows if r["library"] == "RecBole"), None)
    first = rows[0]
    table = Table(
        title=f"SASRec on {Path(args.data).name} ({first['users']} users, {first['items']} "
        f"items), {device_name(args.device)}"
    )
    cols = ["library", "settings", "s/epoch (train)", "speed-up", "targets/epoch"]
    cols += ["epochs (best)", "NDCG@10 F", "HR@10 F", "NDCG@10 U", "HR@10 U"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("library", "settings") else "right")
    for r in rows:
        speed = f"{base / r['s_per_epoch']:.1f}x" if base and r["s_per_epoch"] > 0 else "-"
        table.add_row(
            r["library"],
            " ".join(r.get("settings", [])) or "-",  # rows of older --json files have none
            f"{r['s_per_epoch']:.2f}",
            speed,
            f"{r['targets_per_epoch']:,}",
            f"{r['epochs']} ({r['best_epoch']})",
            f"{r['NDCG@10 F']:.4f}",
            f"{r['HR@10 F']:.4f}",
            f"{r['NDCG@10 U']:.4f}",
            f"{r['HR@10 U']:.4f}",
        )
    console.print(table)
    console.print(
        "F: history items filtered, U: all items ranked (docs/protocol.md); both rows "
        "scored by seqrec's rank rule. s/epoch: median training time per epoch."
    )
    for r in rows:
        if "own" in r:
            own = ", ".join(f"{k} {v:.4f}" for k, v in r["own"].items())
            console.print(
                f"RecBole's own evaluator (full ranking, no history filter for sequential "
                f"models = U, ties by topk): {own}"
            )
        console.print(
            f"{r['library']} epoch times (s): " + ", ".join(f"{t:.2f}" for t in r["epoch_times"])
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="SASRec-format file: 'user item' per line")
    p.add_argument("--recipe", default=str(DEFAULT_RECIPE))
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--skip-recbole", action="store_true")
    p.add_argument("--skip-seqrec", action="store_true")
    p.add_argument(
        "-o", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE"
    )
    p.add_argument("--json", help="also write the rows (and per-epoch times) to this file")
    p.add_argument(
        "--recbole-time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="RecBole trains no further epoch once this many seconds have passed since its "
        "training began, and is tested at its best validated epoch (one device command can "
        "then still bring back its row)",
    )
    p.add_argument(
        "--add-json",
        action="append",
        default=[],
        help="add the rows of an earlier --json file to the table (e.g. RecBole and seqrec "
        "run as two device commands)",
    )
    p.add_argument(
        "--recbole-opt",
        dest="recbole_opts",
        action="append",
        default=[],
        help="extra RecBole config KEY=YAML (after the derived ones)",
    )
    args = p.parse_args(argv)
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    args.data = str(Path(args.data).resolve())  # RecBole runs in its own working folder
    console = Console(width=160)
    work = Path(tempfile.mkdtemp(prefix="seqrec-recbole-"))
    os.environ.setdefault("SEQREC_CACHE", str(work / "cache"))
    recipe, registry = seqrec_recipe(args, work)
    rows: list[dict] = []

    def keep(row: dict) -> None:
        rows.append(row)
        if args.json:  # after each library: a run cut off later keeps this row
            Path(args.json).write_text(json.dumps(rows, indent=1))

    if not args.skip_seqrec:
        keep(run_seqrec(recipe, registry, args.overrides))
    if not args.skip_recbole:
        missing = recbole_missing()
        if missing is None:
            keep(run_recbole(args, recipe, work))
        else:
            console.print(f"{INSTALL_HINT} (missing module: {missing})", markup=False)
    for path in args.add_json:
        rows.extend(json.loads(Path(path).read_text()))
    if rows:
        report(rows, args, console)
    return {"rows": rows, "work": str(work)}


if __name__ == "__main__":
    main()
