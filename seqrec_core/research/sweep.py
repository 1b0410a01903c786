"""``seqrec sweep``: a grid of recipe overrides × seeds, run resumably, one table.

A sweep file (``recipes/sweeps/*.yaml``; ``docs/research.md``)::

    name: rq2_ml1m
    base: ../ml1m_sasrec.yaml        # a recipe path (relative to this file) or an inline recipe
    overrides: {train.epochs: 200}   # applied to every cell
    grid:                            # every combination is a cell
      model:                         # a whole section per value ...
        - {name: sasrec, heads: 1}
        - {name: lstm, layers: 1}
      model.max_len: [32, 64, 128, 200]   # ... or one value
      model.dim: [64, 128, 256]
    seeds: [42, 123, 2023]           # each seed is its own cell (and run)

A grid axis ``base:`` takes the place of the top-level ``base:`` and makes the
recipe itself an axis — each value a recipe file, labelled by its file name —
so models compared in one table each keep their own recipe (training schedule,
regularisation), with the other axes and ``overrides:`` applied to all::

    grid:
      base: [../ml1m_sasrec.yaml, ../ml1m_bert4rec.yaml]
      dataset.user_fraction: [0.25, 1.0]

Each cell is the base recipe with the overrides (shorter keys first, so a
section is replaced before one of its keys is set), ``train.seeds=[seed]`` and a
deterministic name built from the value labels, e.g.
``rq2_ml1m-sasrec-max_len32-dim64-seed42``. Cells run through
:func:`~seqrec_core.run.run_recipe` one after the other:

* a cell whose ``runs/<cell>/metrics.json`` has a finished status is skipped;
* a cell with a ``last.safetensors`` but no finished metrics (interrupted)
  continues with ``--resume`` semantics;
* any other cell starts (over).

After every finished cell the optional post-run analyses run once each
(popularity buckets, cost measurement; their JSON files mark them done). Then
the results table — one row per combination of the grid values, mean ± std over
seeds (population std, as ``summary.json``) — is written as CSV and Markdown
with the plots the sweep asks for and a README (command, commit, hardware).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.table import Table

from seqrec_core.errors import SeqrecError
from seqrec_core.plugins import Registry
from seqrec_core.recipe import Recipe, load_recipe, parse_override, read_recipe_file
from seqrec_core.research import reports
from seqrec_core.research.buckets import BUCKETS, DEFAULT_CUTS, analyze_buckets, check_cuts
from seqrec_core.research.cost import measure_run, run_cost
from seqrec_core.research.pool import launch_pool, seqrec_command

FINISHED = ("completed", "early_stopped")
LABEL_KEY = "_label"  # in a mapping value of a grid axis: its label in cell names and tables
#: The grid axis whose values are base recipes (paths relative to the sweep file): each
#: model with its own recipe, e.g. its own training schedule.
BASE_AXIS = "base"
COST_COLUMNS = (
    "concurrent_runs",
    "params",
    "epoch_train_s",
    "time_to_best_s",
    "total_s",
    "tokens_per_s",
    "gpu_mem_nvml_gib",
    "train_peak_gib",
    "latency_b1_ms",
    "latency_b256_ms",
)


# ------------------------------------------------------------------ the sweep file


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BucketsSpec(_Strict):
    """Per-bucket metrics after each cell (``docs/research.md``, RQ2)."""

    cuts: list[float] = Field(default_factory=lambda: list(DEFAULT_CUTS))
    k: int = Field(10, ge=1, description="top-k lists for coverage and bucket shares")


class PlotSpec(_Strict):
    """A figure of the results table.

    ``line``: ``y`` (mean ± std) vs ``x``, one line per ``hue``; ``heatmap``: ``value``
    over the grid axes ``x`` × ``y``; ``pareto``: ``y`` vs a cost ``x`` per ``hue``,
    with the Pareto front (higher y, lower x). Every kind draws one panel per value
    of ``facet`` (side by side, one y scale).
    """

    kind: Literal["line", "heatmap", "pareto"]
    x: str
    y: str
    value: str | None = None
    hue: str | None = None
    facet: str | None = None
    logx: bool = False


class SweepFile(_Strict):
    name: str | None = None
    description: str = ""
    base: str | dict[str, Any] | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    runs_dir: str | None = None
    checkpoints_dir: str | None = None
    report_dir: str | None = None
    split: Literal["valid", "test"] = "test"
    metrics: list[str] = Field(
        default_factory=list, description="metrics in the Markdown table (default: all)"
    )
    cost: bool = Field(False, description="post-run latency / memory measurement (RQ3)")
    seen: bool = Field(
        False, description="post-run share of history items in the unfiltered top-10 (U vs F gap)"
    )
    buckets: BucketsSpec | None = None
    plots: list[PlotSpec] = Field(default_factory=list)


@dataclass
class Axis:
    key: str  # dotted recipe path
    column: str  # table column / name part
    values: list[Any]
    labels: list[str]
    paths: list[Path] | None = None  # the base axis: its recipes, resolved

    @property
    def section(self) -> bool:
        return "." not in self.key


@dataclass
class Cell:
    name: str
    seed: int
    labels: dict[str, str]  # axis column → value label
    overrides: list[str]  # "key=<json>", in application order
    base: Path | None = None  # this cell's base recipe (grid.base), else the sweep's


@dataclass
class Sweep:
    name: str
    source: Path
    spec: SweepFile
    axes: list[Axis]
    base_path: Path | None
    runs_dir: Path
    checkpoints_dir: Path
    report_dir: Path

    @property
    def columns(self) -> list[str]:
        return [a.column for a in self.axes]


def value_labels(values: Sequence[Any]) -> list[str]:
    """Labels of an axis' values: scalars as written; lists joined by ``_``;
    mappings by their ``_label`` or else their ``name`` plus the scalar values
    that tell mappings of the same name apart."""
    labels = []
    for v in values:
        if isinstance(v, dict):
            if LABEL_KEY in v:
                labels.append(str(v[LABEL_KEY]))
                continue
            name = str(v.get("name", "value"))
            same = [o for o in values if isinstance(o, dict) and o.get("name") == v.get("name")]
            keys = [
                k
                for k in v
                if k not in ("name", LABEL_KEY)
                and not isinstance(v[k], dict | list)
                and any(o.get(k) != v[k] for o in same)
            ]
            labels.append("-".join([name, *(str(v[k]) for k in keys)]))
        elif isinstance(v, list):
            labels.append("_".join(str(x) for x in v) or "none")
        else:
            labels.append(str(v))
    return labels


def _base_recipes(path: Path, values: Sequence[Any], lines: dict) -> tuple[list[Path], list[str]]:
    """The base axis' recipe files (relative to the sweep file) and their labels
    (file names without ``.yaml``)."""
    line = lines.get(("grid", BASE_AXIS), 1)
    paths = []
    for v in values:
        if not isinstance(v, str):
            raise SeqrecError(
                f"{path}:{line}: grid.base: {v!r} is not a recipe path; expected a list of "
                "recipe files, e.g. [../ml1m_sasrec.yaml, ../ml1m_xlstm.yaml]"
            )
        resolved = (path.parent / v).resolve()
        if not resolved.is_file():
            raise SeqrecError(
                f"{path}:{line}: grid.base: recipe {v} not found (looked at {resolved})"
            )
        paths.append(resolved)
    labels = [p.name.removesuffix(".yaml").removesuffix(".yml") for p in paths]
    if len(set(labels)) != len(labels):
        raise SeqrecError(
            f"{path}:{line}: grid.base: two recipes have the same file name ({labels}); "
            "their cells and table rows are named after it — rename one"
        )
    return paths, labels


def _columns(keys: Sequence[str]) -> list[str]:
    short = [k.rsplit(".", 1)[-1] for k in keys]
    return [s if short.count(s) == 1 else k for s, k in zip(short, keys, strict=True)]


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Read and check a sweep file (errors name the file, line and key).
    ``overrides`` (``-o key=value``, as for ``seqrec run``) are added to the
    file's ``overrides:`` for every cell; they do not change cell names."""
    path = Path(path)
    data, lines = read_recipe_file(path)
    for text in overrides:
        key, value = parse_override(text)
        data.setdefault("overrides", {})[".".join(str(p) for p in key)] = value
    try:
        spec = SweepFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), 1)
        where = ".".join(str(p) for p in loc) or "<top level>"
        allowed = ", ".join(SweepFile.model_fields)
        hint = f"; allowed keys: {allowed}" if err["type"] == "extra_forbidden" else ""
        raise SeqrecError(f"{path}:{line}: {where}: {err['msg']}{hint}") from None
    name = spec.name or path.stem
    for key, values in spec.grid.items():
        if not values:
            raise SeqrecError(f"{path}:{lines.get(('grid', key), 1)}: grid.{key}: no values")
    for key in spec.grid:
        if key in ("name", "train.seeds") or key.startswith("output."):
            raise SeqrecError(
                f"{path}:{lines.get(('grid', key), 1)}: grid.{key}: set by the sweep itself "
                "(use the top-level 'seeds:' list for seeds)"
            )
    if spec.buckets is not None:
        check_cuts(spec.buckets.cuts)
    cols = _columns(list(spec.grid))
    axes = [
        Axis(key=key, column=col, values=list(values), labels=value_labels(values))
        for (key, values), col in zip(spec.grid.items(), cols, strict=True)
    ]
    base_axis = next((a for a in axes if a.key == BASE_AXIS), None)
    if base_axis is not None:
        base_axis.paths, base_axis.labels = _base_recipes(path, base_axis.values, lines)
        if spec.base is not None:
            raise SeqrecError(
                f"{path}:{lines.get(('base',), 1)}: base: both 'base:' and 'grid.base' are "
                "given; keep one (grid.base: a list of recipes, one per value)"
            )
    elif spec.base is None:
        raise SeqrecError(
            f"{path}: base: missing; name a recipe (base: ../ml1m_sasrec.yaml), write one "
            "inline, or give grid.base a list of recipes"
        )
    for a in axes:
        if len(set(a.labels)) != len(a.labels):
            raise SeqrecError(
                f"{path}:{lines.get(('grid', a.key), 1)}: grid.{a.key}: two values have the "
                f"same label ({a.labels}); give mappings a '{LABEL_KEY}:'"
            )
    base_path = None
    if isinstance(spec.base, str):
        base_path = (path.parent / spec.base).resolve()
        if not base_path.is_file():
            raise SeqrecError(f"{path}: base: recipe {spec.base} not found (looked at {base_path})")
    return Sweep(
        name=reports.slug(name),
        source=path,
        spec=spec,
        axes=axes,
        base_path=base_path,
        runs_dir=Path(spec.runs_dir or f"runs/sweeps/{name}"),
        checkpoints_dir=Path(spec.checkpoints_dir or f"checkpoints/sweeps/{name}"),
        report_dir=Path(spec.report_dir or f"reports/{name}"),
    )


# Core recipe sections: a mapping value on one of these sets its keys (the rest of
# the section stays as the base recipe has it). On a plugin section (dataset,
# split, model) a mapping replaces the section: another plugin has other options.
MERGED_SECTIONS = ("train", "eval", "loss", "output")


def _settings(key: str, value: Any) -> list[tuple[str, Any]]:
    if key in MERGED_SECTIONS and isinstance(value, dict):
        return [(f"{key}.{k}", v) for k, v in value.items() if k != LABEL_KEY]
    return [(key, value)]


def _override(key: str, value: Any) -> str:
    if isinstance(value, dict):
        value = {k: v for k, v in value.items() if k != LABEL_KEY}
    return f"{key}={json.dumps(value)}"


def expand(sweep: Sweep) -> list[Cell]:
    """Every cell of the sweep, grid order with seeds innermost."""
    cells = []
    ranges = [range(len(a.values)) for a in sweep.axes]
    for combo in itertools.product(*ranges):
        chosen = [(a, a.values[i], a.labels[i]) for a, i in zip(sweep.axes, combo, strict=True)]
        labels = {a.column: label for a, _, label in chosen}
        parts = [label if a.section else f"{a.column}{label}" for a, _, label in chosen]
        settings = [kv for k, v in sweep.spec.overrides.items() for kv in _settings(k, v)]
        settings += [kv for a, v, _ in chosen if a.paths is None for kv in _settings(a.key, v)]
        settings.sort(key=lambda kv: kv[0].count("."))  # stable: sections first
        base = next((a.paths[a.values.index(v)] for a, v, _ in chosen if a.paths is not None), None)
        for seed in sweep.spec.seeds:
            name = reports.slug("-".join([sweep.name, *parts, f"seed{seed}"]))
            overrides = [_override(k, v) for k, v in settings]
            overrides += [
                _override("name", name),
                _override("train.seeds", [seed]),
                _override("output.runs_dir", str(sweep.runs_dir)),
                _override("output.checkpoints_dir", str(sweep.checkpoints_dir)),
            ]
            cells.append(Cell(name, seed, labels, overrides, base))
    names = [c.name for c in cells]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise SeqrecError(f"{sweep.source}: two cells are both named {dup}; label the values")
    return cells


def cell_recipe(sweep: Sweep, cell: Cell, registry: Registry) -> Recipe:
    base = sweep.spec.base
    path = cell.base or sweep.base_path
    if path is not None:
        return load_recipe(path, registry, cell.overrides)
    return load_recipe(sweep.source, registry, cell.overrides, data=dict(base))  # type: ignore[arg-type]


def cell_state(recipe: Recipe) -> Literal["finished", "resume", "new"]:
    metrics = Path(recipe.output.runs_dir) / recipe.name / "metrics.json"
    if metrics.is_file():
        try:
            if json.loads(metrics.read_text()).get("status") in FINISHED:
                return "finished"
        except json.JSONDecodeError:
            pass
    if (Path(recipe.output.checkpoints_dir) / recipe.name / "last.safetensors").is_file():
        return "resume"
    return "new"


# ------------------------------------------------------------------ running


@dataclass
class SweepOutcome:
    cells: list[Cell]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per finished cell
    metrics: list[str] = field(default_factory=list)  # the runs' metric names
    table: list[dict[str, Any]] = field(default_factory=list)  # mean ± std per group
    files: list[Path] = field(default_factory=list)


def select(
    cells: list[Cell],
    only: Sequence[str] = (),
    shard: tuple[int, int] | None = None,
    names: Sequence[str] = (),
) -> list[Cell]:
    """Cells whose name contains one of ``only`` (all if empty) and, if
    ``names`` are given, is one of them exactly; with ``shard`` ``(i, n)``
    every ``n``-th of those, starting at the ``i``-th."""
    if names:
        unknown = sorted(set(names) - {c.name for c in cells})
        if unknown:
            raise SeqrecError(
                f"--cell {unknown[0]}: no such cell in this sweep (see --dry-run for the names)"
            )
    chosen = [c for c in cells if not only or any(s in c.name for s in only)]
    if names:
        chosen = [c for c in chosen if c.name in names]
    if shard is not None:
        i, n = shard
        if not 0 <= i < n:
            raise SeqrecError(f"--shard {i}/{n}: expected I/N with 0 <= I < N, e.g. 0/8")
        chosen = chosen[i::n]
    return chosen


def run_sweep(
    sweep: Sweep,
    registry: Registry,
    console: Console | None = None,
    only: Sequence[str] = (),
    dry_run: bool = False,
    keep_going: bool = False,
    run_cells: bool = True,
    shard: tuple[int, int] | None = None,
    names: Sequence[str] = (),
) -> SweepOutcome:
    """Run the sweep's unfinished cells (those ``only`` selects), then write its
    report folder over every finished cell of the sweep (not for a ``shard`` or
    ``names``: several processes run side by side; a ``--report-only`` pass after
    them writes the report of the whole sweep)."""
    from seqrec_core.run import run_recipe

    console = console or Console(stderr=True)
    part = shard is not None or bool(names)  # one process among several: no report
    cells = select(expand(sweep), only, shard, names)
    outcome = SweepOutcome(cells)
    recipes = {c.name: cell_recipe(sweep, c, registry) for c in cells}
    plan = Table(title=f"sweep {sweep.name}: {len(cells)} cells")
    plan.add_column("cell")
    plan.add_column("state")
    for c in cells:
        plan.add_row(c.name, cell_state(recipes[c.name]))
    console.print(plan)
    if dry_run:
        return outcome
    post = PostRun(sweep, registry)
    for i, cell in enumerate(cells, start=1):
        recipe = recipes[cell.name]
        state = cell_state(recipe)
        if state == "finished":
            outcome.skipped.append(cell.name)
        elif run_cells:
            console.rule(f"[bold]cell {i}/{len(cells)}[/] {cell.name} ({state})")
            try:
                run_recipe(
                    recipe,
                    registry,
                    console,
                    resume=state == "resume",
                    overwrite=state == "new",
                    samples=0,
                )
            except SeqrecError as exc:
                if not keep_going:
                    raise SeqrecError(f"sweep cell {cell.name}: {exc}") from None
                outcome.failed[cell.name] = str(exc)
                console.print(f"[red]cell {cell.name} failed:[/] {exc}")
                continue
            outcome.ran.append(cell.name)
        if cell_state(recipe) == "finished":
            post(recipe, console)
    if only and not part:
        # The report covers every finished cell of the sweep, not only those run now.
        outcome.cells, recipes = _report_cells(sweep, registry, recipes, console)
    outcome.rows, outcome.metrics = collect(sweep, outcome.cells, recipes)
    outcome.table = aggregate(outcome.rows, sweep.columns)
    if not part:
        outcome.files = write_sweep_report(sweep, outcome)
    console.print(
        f"sweep {sweep.name}: {len(outcome.ran)} ran, {len(outcome.skipped)} already finished, "
        f"{len(outcome.failed)} failed"
        + (f"; results in {sweep.report_dir}/" if not part else " (part: no report)")
    )
    return outcome


def _report_cells(
    sweep: Sweep, registry: Registry, known: dict[str, Recipe], console: Console
) -> tuple[list[Cell], dict[str, Recipe]]:
    """Every cell of the sweep with its recipe, for the report; a cell whose recipe
    the run's overrides do not fit (e.g. a model-specific ``-o``) is left out, saying so."""
    cells, recipes = [], dict(known)
    for cell in expand(sweep):
        if cell.name not in recipes:
            try:
                recipes[cell.name] = cell_recipe(sweep, cell, registry)
            except SeqrecError as exc:
                console.print(f"[yellow]cell {cell.name} left out of the report:[/] {exc}")
                continue
        cells.append(cell)
    return cells, recipes


def launch_cells(
    file: str | Path,
    names: Sequence[str],
    jobs: int,
    log_dir: Path,
    args: Sequence[str] = (),
    gpus: Sequence[str] = (),
    global_args: Sequence[str] = (),
    keep_going: bool = False,
    poll_s: float = 0.2,
    on_exit: Any = None,
) -> dict[str, int]:
    """Run the cells ``names`` with at most ``jobs`` processes side by side, one
    process per cell: ``seqrec sweep FILE --cell NAME ARGS``, its output in
    ``log_dir/<name>.log`` (:func:`~seqrec_core.research.pool.launch_pool`: GPUs,
    crashes, ``keep_going``). Returns each started cell's exit code."""
    commands = [
        (name, seqrec_command(global_args, "sweep", str(file), "--cell", name, *args))
        for name in names
    ]
    return launch_pool(commands, jobs, log_dir, gpus, keep_going, poll_s, on_exit)


class PostRun:
    """The per-cell analyses after training: popularity buckets, seen items, cost.
    Each writes ``runs/<cell>/<what>.json`` once; the data of a dataset is loaded
    once per sweep."""

    def __init__(self, sweep: Sweep, registry: Registry):
        self.sweep = sweep
        self.registry = registry
        self._data: dict[str, Any] = {}

    def _dataset(self, recipe: Recipe):
        from seqrec_core.data import load_dataset

        key = json.dumps(
            [recipe.to_dict()["dataset"], recipe.split.model_dump(mode="json")],
            sort_keys=True,
            default=str,
        )
        if key not in self._data:
            self._data = {key: load_dataset(recipe, self.registry)}  # keep one at a time
        return self._data[key]

    def __call__(self, recipe: Recipe, console: Console) -> None:
        from seqrec_core import checkpoint as ckpt_io
        from seqrec_core.run import atomic_write_text, resolve_device

        spec = self.sweep.spec
        run_dir = Path(recipe.output.runs_dir) / recipe.name
        want_buckets = spec.buckets is not None and not (run_dir / "buckets.json").is_file()
        want_cost = spec.cost and not (run_dir / "cost.json").is_file()
        want_seen = spec.seen and not (run_dir / "seen.json").is_file()
        if not (want_buckets or want_cost or want_seen):
            return
        ckpt_path = Path(recipe.output.checkpoints_dir) / recipe.name / "best.safetensors"
        ckpt = ckpt_io.load_checkpoint(ckpt_path)
        data = self._dataset(recipe)
        ckpt_io.check_dataset(ckpt, data)
        device = resolve_device(recipe.train.device)
        model = ckpt_io.build_model(ckpt, self.registry).to(device)
        if want_buckets:
            metrics = [self.registry.get("metrics", m) for m in recipe.eval.metrics]
            report = analyze_buckets(
                model,
                data,
                metrics,
                recipe.eval.ks,
                spec.split,
                spec.buckets.k,
                spec.buckets.cuts,
                recipe.eval.filter_seen,
                recipe.eval.batch_size,
                device,
            )
            atomic_write_text(run_dir / "buckets.json", json.dumps(report.to_json(), indent=2))
            console.print(f"{recipe.name}: wrote buckets.json")
        if want_seen:
            from seqrec_core.research.seen import seen_report

            seen = seen_report(model, data, spec.split, (1, 10), recipe.eval.batch_size, device)
            atomic_write_text(run_dir / "seen.json", json.dumps(seen, indent=2))
            console.print(f"{recipe.name}: wrote seen.json")
        if want_cost:  # last: the memory measurement trains the model a little
            numbers = measure_run(model, recipe, data, device)
            atomic_write_text(run_dir / "cost.json", json.dumps(numbers, indent=2))
            console.print(f"{recipe.name}: wrote cost.json")


# ------------------------------------------------------------------ results


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _bucket_columns(payload: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in BUCKETS:
        for metric, value in payload.get("metrics", {}).get(name, {}).items():
            out[f"{metric}[{name}]"] = value
        if name in payload.get("users", {}):
            out[f"users[{name}]"] = float(payload["users"][name])
    out.update(payload.get("lists", {}))
    return out


def collect(
    sweep: Sweep, cells: list[Cell], recipes: dict[str, Recipe]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per finished cell (grid labels, seed, metrics, cost, buckets), and
    the names of the runs' metrics."""
    rows = []
    names: dict[str, None] = {}
    for cell in cells:
        recipe = recipes[cell.name]
        run_dir = Path(recipe.output.runs_dir) / recipe.name
        m = _read_json(run_dir / "metrics.json")
        if m.get("status") not in FINISHED:
            continue
        stats = m.get("stats", {})
        split_metrics = m.get("metrics", {}).get(sweep.spec.split, {})
        if sweep.spec.split != "valid":
            # The validation value of the monitor: what model choices are made on.
            monitor = recipe.train.monitor
            valid_value = m.get("metrics", {}).get("valid", {}).get(monitor)
            if valid_value is not None:
                split_metrics = {f"valid {monitor}": valid_value, **split_metrics}
        names.update(dict.fromkeys(split_metrics))
        row: dict[str, Any] = {
            "cell": cell.name,
            "dataset": m.get("dataset"),
            "model": m.get("model"),
            **cell.labels,
            "seed": cell.seed,
            "interactions": stats.get("interactions"),
            "users": stats.get("users"),
            "items": stats.get("items"),
            "status": m.get("status"),
            **split_metrics,
            **run_cost(run_dir),
            **_read_json(run_dir / "cost.json"),
            **_bucket_columns(_read_json(run_dir / "buckets.json")),
            **{k: v for k, v in _read_json(run_dir / "seen.json").items() if k != "users"},
        }
        rows.append(row)
    return rows, list(names)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def aggregate(rows: list[dict[str, Any]], group: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and population std of every numeric column per combination of ``group``
    (``<col>`` = mean, ``<col>_std``), with ``seeds`` = how many rows."""
    import numpy as np

    skip = {"seed", *group}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(g) for g in group), []).append(r)
    out = []
    for key, members in groups.items():
        agg: dict[str, Any] = dict(zip(group, key, strict=True))
        for meta in ("dataset", "model"):
            if meta not in agg:
                agg[meta] = members[0].get(meta)
        agg["seeds"] = len(members)
        cols = dict.fromkeys(c for r in members for c in r if c not in skip)
        for c in cols:
            values = [r.get(c) for r in members]
            if all(_is_number(v) for v in values):
                arr = np.asarray(values, dtype=float)
                agg[c] = float(np.mean(arr))
                agg[f"{c}_std"] = float(np.std(arr))
        out.append(agg)
    return out


def _pm(row: dict[str, Any], col: str) -> str:
    mean, std = row.get(col), row.get(f"{col}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or row.get("seeds", 1) < 2:
        return reports.fmt(mean)
    return f"{reports.fmt(mean)} ± {reports.fmt(std)}"


def display_rows(
    table: list[dict[str, Any]], keys: Sequence[str], columns: Sequence[str]
) -> list[dict[str, str]]:
    return [
        {**{k: str(r.get(k)) for k in keys}, "seeds": str(r["seeds"])}
        | {c: _pm(r, c) for c in columns}
        for r in table
    ]


def write_sweep_report(sweep: Sweep, outcome: SweepOutcome) -> list[Path]:
    out = sweep.report_dir
    out.mkdir(parents=True, exist_ok=True)
    rows, table = outcome.rows, outcome.table
    keys = [*sweep.columns, *[k for k in ("dataset", "model") if k not in sweep.columns]]
    files: list[Path] = []
    if rows:
        files += reports.write_table(rows, out / "cells")
        files += reports.write_table(table, out / "results")[:1]
    metric_cols = [c for c in sweep.spec.metrics or outcome.metrics if any(c in r for r in table)]
    sections = []
    if sweep.spec.description:
        sections.append(sweep.spec.description.strip())
    done = len(rows)
    sections.append(
        f"{done} of {len(outcome.cells)} cells finished; mean ± std (population) over "
        f"seeds {sweep.spec.seeds} on the {sweep.spec.split} split, protocol as in "
        "each run's metrics.json."
    )
    md = out / "results.md"
    body = reports.markdown_table(display_rows(table, keys, metric_cols))
    md.write_text(body, encoding="utf-8")
    files.append(md)
    sections += ["## Results", body]
    if sweep.spec.cost:
        cost_cols = [c for c in COST_COLUMNS if any(c in r for r in table)]
        cost_md = reports.markdown_table(display_rows(table, keys, cost_cols))
        if any((r.get("concurrent_runs") or 1) > 1 for r in table):
            cost_md = (
                "Some runs shared their GPU with others (`concurrent_runs`, from "
                "`--jobs`): their times, tokens/s and latencies are not single-run "
                "speeds.\n\n" + cost_md
            )
        (out / "cost.md").write_text(cost_md, encoding="utf-8")
        files.append(out / "cost.md")
        sections += ["## Cost", cost_md]
    if sweep.spec.buckets is not None:
        k = sweep.spec.buckets.k
        first = (sweep.spec.metrics or metric_cols or ["NDCG@10"])[0]
        bcols = [f"{first}[{b}]" for b in BUCKETS] + [f"{b} share@{k}" for b in BUCKETS]
        bcols += [f"coverage@{k}", f"tail coverage@{k}"]
        bcols = [c for c in bcols if any(c in r for r in table)]
        b_md = reports.markdown_table(display_rows(table, keys, bcols))
        (out / "buckets.md").write_text(b_md, encoding="utf-8")
        files.append(out / "buckets.md")
        sections += [f"## Popularity buckets (cuts {sweep.spec.buckets.cuts})", b_md]
    if outcome.failed:
        sections += ["## Failed cells", *[f"- `{n}`: {e}" for n, e in outcome.failed.items()]]
    for spec in sweep.spec.plots:
        path = plot_results(table, spec, out, keys)
        if path is not None:
            files.append(path)
    files.append(reports.write_readme(out, f"Sweep {sweep.name}", "\n\n".join(sections), files))
    return files


# ------------------------------------------------------------------ plots


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _sort_key(v: Any):
    n = _num(v)
    return (0, n, "") if math.isfinite(n) else (1, 0.0, str(v))


def plot_results(
    table: list[dict[str, Any]], spec: PlotSpec, out: Path, keys: Sequence[str]
) -> Path | None:
    """One PNG for ``spec``; None when the table lacks its columns."""
    value = spec.value or spec.y
    needed = [spec.x, value] if spec.kind != "heatmap" else [spec.x, spec.y, value]
    if not table or any(all(c not in r for r in table) for c in needed):
        return None
    plt = reports.pyplot()
    name = reports.slug(
        f"{spec.kind}_{value}_vs_{spec.x}" + (f"_by_{spec.facet}" if spec.facet else "")
    )
    path = out / f"{name}.png"
    if spec.kind == "heatmap":
        return _heatmap(plt, table, spec, value, path)
    facets = sorted({r.get(spec.facet) for r in table} if spec.facet else {None}, key=_sort_key)
    fig, axes = plt.subplots(
        1, len(facets), figsize=(6 * len(facets), 4), sharey=True, squeeze=False
    )
    for ax, facet in zip(axes[0], facets, strict=True):
        rows = [r for r in table if spec.facet is None or r.get(spec.facet) == facet]
        _draw_xy(ax, rows, spec, value)
        if facet is not None:
            ax.set_title(f"{spec.facet} {facet}", fontsize=9)
    axes[0][0].set_ylabel(value)
    return reports.save_figure(fig, path)


def _draw_xy(ax, table: list[dict[str, Any]], spec: PlotSpec, value: str) -> None:
    """One panel of a line or Pareto plot: ``value`` vs ``spec.x`` per hue."""
    hues = sorted({r.get(spec.hue) for r in table} if spec.hue else {None}, key=_sort_key)
    for hue in hues:
        sel = [r for r in table if spec.hue is None or r.get(spec.hue) == hue]
        sel = sorted(sel, key=lambda r: _sort_key(r.get(spec.x)))
        x = [_num(r.get(spec.x)) for r in sel]
        y = [_num(r.get(value)) for r in sel]
        err = [_num(r.get(f"{value}_std", 0.0)) for r in sel]
        label = str(hue) if hue is not None else value
        if spec.kind == "line":
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, label=label)
        else:
            ax.errorbar(x, y, yerr=err, fmt="o", ms=5, capsize=3, label=label)
    if spec.kind == "pareto":
        pts = sorted(
            (_num(r.get(spec.x)), _num(r.get(value)))
            for r in table
            if math.isfinite(_num(r.get(spec.x))) and math.isfinite(_num(r.get(value)))
        )
        front, best = [], -math.inf
        for x, y in pts:
            if y > best:
                front.append((x, y))
                best = y
        if front:
            ax.step(
                *zip(*front, strict=True), where="post", color="grey", lw=1, label="Pareto front"
            )
    if spec.logx:
        ax.set_xscale("log")
    ax.set_xlabel(spec.x)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _heatmap(plt, table, spec: PlotSpec, value: str, path: Path) -> Path:
    import numpy as np

    facets = sorted({r.get(spec.facet) for r in table} if spec.facet else {None}, key=_sort_key)
    xs = sorted({r.get(spec.x) for r in table}, key=_sort_key)
    ys = sorted({r.get(spec.y) for r in table}, key=_sort_key)
    fig, axes = plt.subplots(
        1,
        len(facets),
        figsize=(1.5 + (0.9 * len(xs) + 1.2) * len(facets), 0.6 * len(ys) + 2.0),
        squeeze=False,
        layout="constrained",
    )
    grids = []
    for facet in facets:
        grid = np.full((len(ys), len(xs)), np.nan)
        for r in table:
            if spec.facet is None or r.get(spec.facet) == facet:
                grid[ys.index(r.get(spec.y)), xs.index(r.get(spec.x))] = _num(r.get(value))
        grids.append(grid)
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    for ax, facet, grid in zip(axes[0], facets, grids, strict=True):
        im = ax.imshow(grid, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto", origin="lower")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax.set_yticks(range(len(ys)), [str(y) for y in ys])
        ax.set_xlabel(spec.x)
        ax.set_ylabel(spec.y)
        if facet is not None:
            ax.set_title(f"{spec.facet} {facet}", fontsize=9)
        for (i, j), v in np.ndenumerate(grid):
            if math.isfinite(v):
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="white")
    fig.colorbar(im, ax=axes[0].tolist(), label=value, shrink=0.8)
    fig.suptitle(f"{value}: {spec.y} × {spec.x}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sweep_status(sweep: Sweep, registry: Registry) -> dict[str, str]:
    """Cell name → state, without running anything."""
    return {c.name: cell_state(cell_recipe(sweep, c, registry)) for c in expand(sweep)}
