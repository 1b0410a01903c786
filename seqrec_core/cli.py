"""The ``seqrec`` command (also ``python -m seqrec_core``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

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
        print(
            f"seqrec: internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
