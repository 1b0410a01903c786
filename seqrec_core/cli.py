"""The ``seqrec`` command (also ``python -m seqrec_core``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seqrec_core import __version__
from seqrec_core.errors import SeqrecError
from seqrec_core.plugins import KINDS, load_plugins


def _registry(args: argparse.Namespace):
    disabled = [p.removeprefix("no:") for p in args.plugin if p.startswith("no:")]
    unknown = [p for p in args.plugin if not p.startswith("no:")]
    if unknown:
        raise SeqrecError(f"-p {unknown[0]}: expected -p no:<plugin name> to disable a plugin")
    return load_plugins(disabled=disabled)


def cmd_run(args: argparse.Namespace) -> int:
    from seqrec_core.recipe import load_recipe
    from seqrec_core.run import run_recipe

    registry = _registry(args)
    recipe = load_recipe(args.recipe, registry, args.override)
    run_recipe(
        recipe,
        registry,
        Console(stderr=True),
        resume=args.resume,
        overwrite=args.overwrite,
        samples=args.samples,
    )
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from seqrec_core.recommend import load_for_inference, recommendation_table, top_k

    registry = _registry(args)
    model, catalogue, histories, ckpt = load_for_inference(args.checkpoint, registry)
    if (args.user is None) == (not args.history):
        raise SeqrecError("give exactly one of --user ID or --history ITEM [ITEM ...]")
    if args.user is not None:
        if histories is None:
            raise SeqrecError(
                f"{args.checkpoint}: no histories.safetensors beside it, so users are unknown; "
                "use --history with titles or item ids"
            )
        history = histories.of(args.user)
        label = f"user {args.user}"
    else:
        history = [catalogue.resolve(h) for h in args.history]
        label = "the given history"
    recs = top_k(model, history, args.k, exclude_seen=args.exclude_seen, catalogue=catalogue)
    Console().print(
        recommendation_table(
            recs, history, catalogue, f"top-{args.k} for {label} ({ckpt.meta['model']['name']})"
        )
    )
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    registry = _registry(args)
    table = Table(title="seqrec plugins")
    for col in ("plugin", "version", "module", *KINDS, "status"):
        table.add_column(col)
    for info in sorted(registry.plugins.values(), key=lambda p: p.name):
        status = (
            "disabled"
            if info.disabled
            else (f"[red]error: {escape(info.error)}[/]" if info.error else "ok")
        )
        table.add_row(
            info.name,
            info.version,
            info.module,
            *(", ".join(info.registered[k]) for k in KINDS),
            status,
        )
    Console().print(table)
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from seqrec_core.data.download import data_dir, fetch, find_download, is_installed

    download = find_download(_registry(args), args.name)
    console = Console(stderr=True)
    if is_installed(download) and not args.force:
        console.print(f"{download.name}: already installed in {data_dir(download)}")
    else:
        if download.about:
            console.print(download.about, markup=False, highlight=False)
        fetch(download, force=args.force)
        console.print(f"{download.name}: installed in {data_dir(download)}")
    return 0


def cmd_data_add(args: argparse.Namespace) -> int:
    from seqrec_core.data.download import add, find_download

    download = find_download(_registry(args), args.name)
    path = add(download, args.files)
    Console(stderr=True).print(f"{download.name}: verified and installed in {path}")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    from seqrec_core.data.download import data_dir, data_root, is_installed, known_downloads

    table = Table(title=f"downloadable datasets (in {data_root()})")
    for col in ("name", "recipe dataset section", "files", "status"):
        table.add_column(col)
    for name, download in sorted(known_downloads(_registry(args)).items()):
        section = ", ".join(f"{k}: {v}" for k, v in download.dataset.items())
        files = ", ".join(a.name + (" (optional)" if a.optional else "") for a in download.archives)
        status = f"installed: {data_dir(download)}" if is_installed(download) else "—"
        table.add_row(name, escape(section), escape(files), escape(status))
    Console().print(table)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    import json

    from seqrec_core.data import load_dataset
    from seqrec_core.data.info import data_recipe, dataset_info, info_table

    registry = _registry(args)
    recipe = data_recipe(args.target, args.override, registry)
    data = load_dataset(recipe, registry, log=Console(stderr=True).print)
    info = dataset_info(data)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        Console().print(info_table(info))
    return 0


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="download, import and inspect datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)

    download = dsub.add_parser(
        "download", help="download, verify and install a dataset (e.g. ml-1m, steam)"
    )
    download.add_argument("name", help="dataset name, e.g. ml-100k, ml-1m, ml-10m, ml-20m, steam")
    download.add_argument(
        "--force", action="store_true", help="download and install again even if installed"
    )
    download.set_defaults(func=cmd_data_download)

    add = dsub.add_parser("add", help="import archive(s) you already have, verified the same way")
    add.add_argument("name", help="dataset name, e.g. ml-1m")
    add.add_argument("files", nargs="+", metavar="FILE", help="the archive(s), e.g. ./ml-1m.zip")
    add.set_defaults(func=cmd_data_add)

    listing = dsub.add_parser("list", help="downloadable datasets and where they are installed")
    listing.set_defaults(func=cmd_data_list)

    info = dsub.add_parser(
        "info", help="users, items, interactions, density, lengths, popularity, split"
    )
    info.add_argument(
        "target", help="a recipe file, a downloadable name (ml-1m) or a dataset plugin name"
    )
    info.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override dataset.* or split.* values, e.g. -o dataset.user_core=5 "
        "-o split.name=temporal",
    )
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=cmd_data_info)


def cmd_sweep(args: argparse.Namespace) -> int:
    from seqrec_core.research.sweep import load_sweep, run_sweep

    registry = _registry(args)
    sweep = load_sweep(args.file, args.override)
    if args.report_dir:
        sweep.report_dir = Path(args.report_dir)
    console = Console(stderr=True, quiet=args.quiet)
    failed_cells: dict[str, int] = {}
    pooled = args.jobs > 1 and not (args.shard or args.cell or args.dry_run or args.report_only)
    if pooled:
        from seqrec_core.research.pool import exit_text, visible_gpus
        from seqrec_core.research.sweep import (
            cell_recipe,
            cell_state,
            expand,
            launch_cells,
            select,
        )

        gpus = [g for g in args.gpus.split(",") if g] if args.gpus else visible_gpus()
        todo = [
            c.name
            for c in select(expand(sweep), args.only)
            if cell_state(cell_recipe(sweep, c, registry)) != "finished"
        ]
        passed = [x for o in args.override for x in ("-o", o)]
        passed += ["--quiet"] if args.quiet else []
        log_dir = sweep.report_dir / "logs"
        console.print(
            f"sweep {sweep.name}: {len(todo)} cells to run, {args.jobs} at a time"
            + (f" on GPUs {', '.join(gpus)}" if gpus else "")
            + f"; their output: {log_dir}/<cell>.log"
        )
        done = [0]

        def report(name: str, code: int) -> None:
            done[0] += 1
            if code:
                console.print(
                    f"[red]cell {name} {exit_text(code)}[/] ({done[0]}/{len(todo)}): "
                    f"see {log_dir}/{name}.log"
                )
            else:
                console.print(f"cell {name} done ({done[0]}/{len(todo)})")

        codes = launch_cells(
            args.file,
            todo,
            args.jobs,
            log_dir,
            passed,
            gpus,
            [x for p in args.plugin for x in ("-p", p)],
            keep_going=args.keep_going,
            on_exit=report,
        )
        failed_cells = {name: code for name, code in codes.items() if code}
    outcome = run_sweep(
        sweep,
        registry,
        console,
        only=args.only,
        dry_run=args.dry_run,
        keep_going=args.keep_going,
        run_cells=not args.report_only and not pooled,
        shard=_shard(args.shard) if args.shard else None,
        names=args.cell,
    )
    if not args.dry_run and not args.shard and not args.cell:
        Console().print(f"{sweep.report_dir}/README.md")
    return 1 if outcome.failed or failed_cells else 0


def cmd_tune(args: argparse.Namespace) -> int:
    from seqrec_core.research.tune import (
        prepare_tune,
        results_table,
        run_one_trial,
        run_tune,
        run_tune_jobs,
    )

    if args.trials < 1:
        raise SeqrecError(f"--trials {args.trials}: expected at least 1 (the total, resumed too)")
    registry = _registry(args)
    setup = prepare_tune(
        args.recipe,
        args.space,
        registry,
        overrides=args.override,
        monitor=args.monitor,
        seed_of_run=args.seed_of_run,
        out=args.out,
    )
    console = Console(stderr=True, quiet=args.quiet)
    common = dict(sampler=args.sampler, seed=args.seed)
    if args.one_trial:
        run_one_trial(setup, args.trials, **common, console=console, quiet=args.quiet,
                      keep_checkpoints=args.keep_checkpoints, log=args.one_trial)  # fmt: skip
        return 0
    if args.jobs < 1:
        raise SeqrecError(f"--jobs {args.jobs}: expected at least 1")
    if args.jobs > 1:
        from seqrec_core.research.pool import visible_gpus

        trial_args = [args.recipe, "--space", args.space, "--trials", str(args.trials)]
        trial_args += ["--sampler", args.sampler, "--seed", str(args.seed)]
        trial_args += ["--out", str(setup.out), "--monitor", setup.monitor]
        trial_args += ["--seed-of-run", str(setup.seed)]
        trial_args += [x for o in args.override for x in ("-o", o)]
        trial_args += ["--keep-checkpoints"] if args.keep_checkpoints else []
        trial_args += ["--quiet"] if args.quiet else []
        outcome = run_tune_jobs(
            setup,
            args.trials,
            args.jobs,
            trial_args,
            **common,
            gpus=[g for g in args.gpus.split(",") if g] if args.gpus else visible_gpus(),
            global_args=[x for p in args.plugin for x in ("-p", p)],
            console=console,
            keep_checkpoints=args.keep_checkpoints,
        )
    else:
        outcome = run_tune(
            setup, args.trials, **common, console=console, quiet=args.quiet,
            keep_checkpoints=args.keep_checkpoints,
        )  # fmt: skip
    Console().print(results_table(setup, outcome))
    if outcome.best is None:
        Console(stderr=True).print(f"no trial completed; see {setup.out}/trials.md")
        return 1
    Console().print(f"{setup.out}/best.yaml  (seqrec run {setup.out}/best.yaml)")
    return 0


def _add_pool_args(parser: argparse.ArgumentParser, what: str, unit: str, then: str = ""):
    """``--jobs`` and ``--gpus`` of the commands that run side-by-side processes."""
    parser.add_argument(
        "--jobs", type=int, default=1, metavar="N",
        help=f"run {what} N at a time, one process per {unit} (a crash loses that {unit} "
        f"only){then}; on GPUs the processes are spread over --gpus",
    )  # fmt: skip
    parser.add_argument(
        "--gpus", metavar="IDS",
        help="GPU ids for --jobs, e.g. 0,1 (default: every visible GPU; several jobs may share one)",
    )  # fmt: skip


def _shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not sep or not i.isdigit() or not n.isdigit():
        raise SeqrecError(f"--shard {text}: expected I/N, e.g. --shard 0/8")
    return int(i), int(n)


def cmd_analyze_geometry(args: argparse.Namespace) -> int:
    from seqrec_core.research.geometry import analyze_geometry

    console = Console(stderr=True)
    report = analyze_geometry(
        args.checkpoints,
        _registry(args),
        Path(args.out),
        k=args.k,
        titles=args.titles or (),
        n_neighbours=args.neighbours,
        tsne=not args.no_tsne,
        tsne_max=args.tsne_max,
        cuts=args.cuts,
        seed=args.seed,
        log=console.print,
        data_overrides=args.override if args.override else None,
    )
    table = Table(title="item embedding geometry")
    cols = ["checkpoint", "dims@90%", "TwoNN", "anisotropy", "isotropy (Z ratio)", "hub skewness"]
    for col in cols:
        table.add_column(col, justify="right")
    for row in report.rows:
        table.add_row(
            *(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in cols)
        )
    Console().print(table)
    console.print(f"wrote {len(report.files)} files to {args.out}/ (README.md: the full report)")
    return 0


def _checkpoint_with_data(args: argparse.Namespace, path: str, registry, console):
    """A checkpoint's model (on ``args.device``), its recipe (``--recipe`` or the
    stored one, with ``-o`` overrides) and the dataset it was trained on."""
    from seqrec_core import checkpoint as ckpt_io
    from seqrec_core.data import load_dataset
    from seqrec_core.recipe import load_recipe
    from seqrec_core.run import resolve_device

    ckpt = ckpt_io.load_checkpoint(path)
    if args.recipe:
        recipe = load_recipe(args.recipe, registry, args.override)
    elif "recipe" in ckpt.meta:
        recipe = load_recipe(None, registry, args.override, data=ckpt.meta["recipe"])
    else:
        raise SeqrecError(f"{path}: no recipe stored in it; give one with --recipe")
    data = load_dataset(recipe, registry, log=console.print)
    ckpt_io.check_dataset(ckpt, data)
    device = resolve_device(args.device)
    model = ckpt_io.build_model(ckpt, registry).to(device)
    return model, recipe, data, device


def cmd_analyze_seen(args: argparse.Namespace) -> int:
    from seqrec_core.research.reports import write_table
    from seqrec_core.research.seen import seen_report

    registry = _registry(args)
    console = Console(stderr=True)
    rows = []
    for path in args.checkpoints:
        model, recipe, data, device = _checkpoint_with_data(args, path, registry, console)
        report = seen_report(model, data, args.split, (1, args.k), recipe.eval.batch_size, device)
        rows.append({"checkpoint": path, "model": recipe.model.name, **report})
    table = Table(title=f"history items in the unfiltered top-{args.k} ({args.split} split)")
    for col in rows[0]:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        files = write_table(rows, Path(args.out) / "seen")
        console.print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def cmd_analyze_buckets(args: argparse.Namespace) -> int:
    from seqrec_core.research.buckets import BUCKETS, analyze_buckets, plot_buckets
    from seqrec_core.research.reports import markdown_table, write_readme, write_table

    registry = _registry(args)
    console = Console(stderr=True)
    model, recipe, data, device = _checkpoint_with_data(args, args.checkpoint, registry, console)
    report = analyze_buckets(
        model,
        data,
        [registry.get("metrics", m) for m in recipe.eval.metrics],
        recipe.eval.ks,
        args.split,
        args.k,
        args.cuts,
        recipe.eval.filter_seen,
        recipe.eval.batch_size,
        device,
    )
    rows = report.rows()
    table = Table(
        title=f"{args.split} metrics by popularity bucket of the target (cuts {args.cuts})"
    )
    for col in rows[0]:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    shares = ", ".join(f"{k} {v:.4f}" for k, v in report.lists.items())
    Console().print(shares)
    if args.out:
        out = Path(args.out)
        files = [*write_table(rows, out / "buckets")]
        files += write_table([report.lists], out / "lists")
        metric = args.metric or next(iter(report.metrics["overall"]), "")
        files.append(plot_buckets(report, metric, out / "buckets.png"))
        body = "\n\n".join(
            [
                f"`{args.checkpoint}` on the {args.split} split; items in buckets "
                f"{dict(zip(BUCKETS, (report.sizes[b] for b in BUCKETS), strict=True))}.",
                markdown_table(rows),
                markdown_table([report.lists]),
            ]
        )
        write_readme(out, "Metrics by popularity bucket", body, files)
        console.print(f"wrote {out}/")
    return 0


def cmd_bench_latency(args: argparse.Namespace) -> int:
    from seqrec_core.research.latency import (
        LatencyConfig,
        fits,
        run_latency,
        write_latency_report,
    )

    given = {
        k: v
        for k, v in {
            "models": args.models,
            "dim": args.dim,
            "blocks": args.blocks,
            "heads": args.heads,
            "n_items": args.items,
            "lengths": args.lengths,
            "batches": args.batches,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "device": args.device,
        }.items()
        if v is not None
    }
    if args.max_length is not None:
        given["lengths"] = list(range(args.step, args.max_length + 1, args.step))
    if args.no_amp:
        given["amp"] = False
    cfg = LatencyConfig.tiny(**given) if args.tiny else LatencyConfig(**given)
    console = Console(stderr=True)
    rows = run_latency(_registry(args), cfg, log=console.print)
    table = Table(title="latency ∝ L^α")
    fit_rows = fits(rows)
    for col in fit_rows[0] if fit_rows else []:
        table.add_column(col, justify="right")
    for row in fit_rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
    Console().print(table)
    if args.out:
        write_latency_report(rows, cfg, Path(args.out))
        console.print(f"wrote {args.out}/")
    return 0


def _add_research_parsers(sub) -> None:
    """``sweep``, ``tune``, ``analyze`` and ``bench`` (docs/research.md, docs/tuning.md)."""
    sweep = sub.add_parser(
        "sweep", help="run a grid of recipes × seeds (resumable) and write one results table"
    )
    sweep.add_argument("file", help="a sweep file, e.g. recipes/sweeps/rq2_ml1m.yaml")
    sweep.add_argument("--dry-run", action="store_true", help="list the cells and their state")
    sweep.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value in every cell, e.g. -o dataset.path=../data/ml-1m.txt",
    )  # fmt: skip
    sweep.add_argument(
        "--only", action="append", default=[], metavar="TEXT",
        help="run only cells whose name contains TEXT (repeatable)",
    )  # fmt: skip
    sweep.add_argument(
        "--keep-going", action="store_true", help="go on with the next cell when one fails"
    )
    sweep.add_argument(
        "--report-only", action="store_true", help="write the tables from finished cells only"
    )
    sweep.add_argument("--report-dir", help="where the tables go (default: the sweep's report_dir)")
    sweep.add_argument("--quiet", action="store_true", help="no per-cell training output")
    sweep.add_argument(
        "--shard", metavar="I/N",
        help="run every N-th cell from the I-th (parallel processes; no report: "
        "follow with --report-only)",
    )  # fmt: skip
    sweep.add_argument(
        "--cell", action="append", default=[], metavar="NAME",
        help="run only the cell of exactly this name (repeatable; no report)",
    )  # fmt: skip
    _add_pool_args(sweep, "the unfinished cells", "cell", ", then write the report")
    sweep.set_defaults(func=cmd_sweep)

    tune = sub.add_parser(
        "tune", help="search recipe values with Optuna on validation metrics (resumable)"
    )
    tune.add_argument("recipe", help="the recipe to tune, e.g. recipes/ml1m_sasrec.yaml")
    tune.add_argument(
        "--space", required=True, help="search space file, e.g. recipes/spaces/sasrec.yaml"
    )
    tune.add_argument(
        "--trials", type=int, required=True,
        help="trials in total: a resumed tune runs only the missing ones",
    )  # fmt: skip
    tune.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    tune.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    tune.add_argument(
        "--seed-of-run", type=int,
        help="the training seed of every trial (default: the first of train.seeds)",
    )  # fmt: skip
    tune.add_argument(
        "--monitor", help="validation metric to maximise (default: the recipe's train.monitor)"
    )
    tune.add_argument("--out", help="output folder (default: reports/tune/<recipe name>)")
    tune.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value in every trial (and best.yaml), as for seqrec run",
    )  # fmt: skip
    tune.add_argument(
        "--keep-checkpoints", action="store_true",
        help="keep every trial's checkpoints (default: deleted after the trial)",
    )  # fmt: skip
    tune.add_argument("--quiet", action="store_true", help="no per-trial training output")
    _add_pool_args(tune, "trials", "trial")
    tune.add_argument("--one-trial", metavar="LOG", help=argparse.SUPPRESS)  # a --jobs process
    tune.set_defaults(func=cmd_tune)

    analyze = sub.add_parser("analyze", help="analyses of trained checkpoints")
    asub = analyze.add_subparsers(dest="analyze_command", required=True)
    geo = asub.add_parser(
        "geometry", help="item embedding geometry of checkpoints: spectrum, TwoNN, hubness, CKA, …"
    )
    geo.add_argument("checkpoints", nargs="+", metavar="CKPT", help="best.safetensors files")
    geo.add_argument("--out", default="reports/rq4_geometry", help="report folder")
    geo.add_argument("-k", type=int, default=10, help="neighbours for hubness and stability")
    geo.add_argument("--titles", nargs="*", help="items to list neighbours of (default: popular)")
    geo.add_argument("--neighbours", type=int, default=5, help="neighbours listed per title")
    geo.add_argument("--no-tsne", action="store_true", help="skip the t-SNE maps (slow)")
    geo.add_argument("--tsne-max", type=int, default=5000, help="items sampled for t-SNE")
    geo.add_argument(
        "--cuts", type=float, nargs=2, default=[0.2, 0.5], metavar=("HEAD", "MID"),
        help="popularity bucket cut points (fractions of items)",
    )  # fmt: skip
    geo.add_argument("--seed", type=int, default=0, help="t-SNE seed")
    geo.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="without histories.safetensors beside a checkpoint, count item popularity "
        "from its dataset, loaded with these recipe overrides (e.g. -o dataset.path=...)",
    )  # fmt: skip
    geo.set_defaults(func=cmd_analyze_geometry)

    buckets = asub.add_parser(
        "buckets", help="metrics by popularity bucket (head/mid/tail) of the target item"
    )
    buckets.add_argument("checkpoint", help="best.safetensors")
    buckets.add_argument(
        "--recipe", help="recipe for the data (default: the one in the checkpoint)"
    )
    buckets.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value, e.g. -o dataset.path=data/ml-1m/ml-1m.txt",
    )  # fmt: skip
    buckets.add_argument("--split", choices=["valid", "test"], default="test")
    buckets.add_argument(
        "--cuts", type=float, nargs=2, default=[0.2, 0.5], metavar=("HEAD", "MID"),
        help="head = top HEAD of items by training count, tail = after MID (default 0.2 0.5)",
    )  # fmt: skip
    buckets.add_argument("-k", type=int, default=10, help="top-k for coverage and shares")
    buckets.add_argument("--metric", help="metric of the bar chart (default: the first)")
    buckets.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    buckets.add_argument("--out", help="write tables, a plot and a README here")
    buckets.set_defaults(func=cmd_analyze_buckets)

    seen = asub.add_parser(
        "seen", help="how often the unfiltered top-K holds items the user already has (U vs F gap)"
    )
    seen.add_argument("checkpoints", nargs="+", metavar="CKPT", help="best.safetensors files")
    seen.add_argument("--recipe", help="recipe for the data (default: the one in each checkpoint)")
    seen.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value, e.g. -o dataset.path=data/ml-1m/ml-1m.txt",
    )  # fmt: skip
    seen.add_argument("--split", choices=["valid", "test"], default="test")
    seen.add_argument("-k", type=int, default=10, help="top-K list length")
    seen.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    seen.add_argument("--out", help="write seen.csv / seen.md here")
    seen.set_defaults(func=cmd_analyze_seen)

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    lat = bsub.add_parser(
        "latency", help="inference latency vs sequence length, power-law exponent α per model"
    )
    lat.add_argument("--models", nargs="*", help="model plugins (default: every trainable one)")
    lat.add_argument("--dim", type=int)
    lat.add_argument("--blocks", type=int, help="blocks (or layers) of every model")
    lat.add_argument("--heads", type=int)
    lat.add_argument("--items", type=int, help="catalogue size (default 3416, ML-1M)")
    lat.add_argument("--lengths", type=int, nargs="+", help="sequence lengths")
    lat.add_argument(
        "--max-length", type=int, help="lengths STEP, 2·STEP, … up to this (default 64 … 1536)"
    )
    lat.add_argument("--step", type=int, default=64, help="length step with --max-length")
    lat.add_argument("--batches", type=int, nargs="+", help="batch sizes (default 32 512)")
    lat.add_argument("--warmup", type=int)
    lat.add_argument("--repeat", type=int)
    lat.add_argument("--device", choices=["auto", "cpu", "cuda"])
    lat.add_argument("--no-amp", action="store_true", help="fp32 on CUDA instead of bf16")
    lat.add_argument("--tiny", action="store_true", help="tiny CPU settings (smoke test)")
    lat.add_argument("--out", help="write tables, plot and README here, e.g. reports/latency")
    lat.set_defaults(func=cmd_bench_latency)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqrec", description="Sequential recommendation: train, evaluate and compare models."
    )
    parser.add_argument("--version", action="version", version=f"seqrec {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "-p",
        dest="plugin",
        action="append",
        default=[],
        metavar="no:NAME",
        help="disable a plugin by name (repeatable); also SEQREC_DISABLE_PLUGINS=a,b",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a YAML recipe")
    run.add_argument("recipe", help="path to a recipe YAML file")
    run.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. -o train.lr=3e-4 -o model.name=pop",
    )
    run.add_argument("--resume", action="store_true", help="continue from checkpoints/<run>/last")
    run.add_argument(
        "--overwrite", action="store_true", help="start over even if the run has checkpoints"
    )
    run.add_argument(
        "--samples", type=int, default=3, help="users to show top-10 for at the end (0: none)"
    )
    run.set_defaults(func=cmd_run)

    rec = sub.add_parser("recommend", help="top-K recommendations from a checkpoint")
    rec.add_argument("checkpoint", help="path to best.safetensors (or last.safetensors)")
    rec.add_argument("--user", help="a user id of the training data")
    rec.add_argument(
        "--history", nargs="+", metavar="ITEM", help="titles or item ids, oldest first"
    )
    rec.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    rec.add_argument(
        "--exclude-seen", action="store_true", help="never recommend items in the history"
    )
    rec.set_defaults(func=cmd_recommend)

    plugins = sub.add_parser("plugins", help="list installed plugins and what they register")
    plugins.set_defaults(func=cmd_plugins)
    _add_data_parser(sub)
    _add_research_parsers(sub)
    return parser


def _stop_on_sigterm(signum, frame) -> None:
    # A terminated run stops like Ctrl-C: the trainer reports "interrupted" and
    # keeps its last checkpoint (written at every epoch end).
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or bool(os.environ.get("SEQREC_DEBUG"))
    try:
        return int(args.func(args) or 0)
    except SeqrecError as exc:
        if debug:
            raise
        print(f"seqrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("seqrec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda's, raised outside a step
            first = str(exc).splitlines()[0] if str(exc) else ""
            print(
                f"seqrec: error: CUDA out of memory ({first[:160]}); lower train.batch_size "
                "or eval.batch_size, or share the GPU with fewer runs (--jobs)",
                file=sys.stderr,
            )
            return 1
        print(
            f"seqrec: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
