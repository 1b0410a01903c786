"""The ``seqrec`` command (also ``python -m seqrec_core``)."""

from __future__ import annotations

import argparse
import os
import sys

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
    return parser


def main(argv: list[str] | None = None) -> int:
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
