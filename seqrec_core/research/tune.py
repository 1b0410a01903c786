"""``seqrec tune``: search recipe values with Optuna, judged on the validation split.

A space file maps dotted recipe keys (as ``-o`` takes them) to distributions::

    train.lr: {float: [1.0e-4, 1.0e-2], log: true}
    model.dropout: {float: [0.0, 0.5]}
    model.blocks: {int: [1, 4]}
    model.dim: {choice: [64, 128, 256]}      # or the shorthand [64, 128, 256]

Every trial is the recipe with the sampled values applied the way ``seqrec run
-o`` applies overrides, trained with one seed; its objective is the best
validation value of the monitor (``train.monitor`` or ``--monitor``). The test
split is never evaluated (``Trainer(evaluate_test=False)``): tuning on it would
leak the test set into the model choice.

The study lives in ``<out>/study.journal`` (an Optuna journal file), so running
the same command again resumes: finished trials are kept and ``--trials N``
means N in total. After every trial ``trials.csv``, ``trials.md``, ``README.md``
and ``best.yaml`` (the recipe with the best values, ready for ``seqrec run``)
are rewritten.

``--jobs N`` runs trials side by side, one process per trial (small models leave
most of a GPU idle; several GPUs are used in turn): every process takes the next
trial from the shared journal under a file lock (so exactly ``--trials`` are
started and no two processes draw with the same sampler seed), and TPE treats
the trials still running as if they had scored their worst ("constant liar"),
so parallel draws spread out. A process that crashes loses its trial only
(recorded as failed, naming its log); the others go on.
"""

from __future__ import annotations

import builtins
import copy
import gc
import json
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from seqrec_core.errors import RecipeError, SeqrecError
from seqrec_core.plugins import Registry
from seqrec_core.recipe import (
    Path_,
    Recipe,
    _apply_override,
    _raise_validation,
    _Where,
    load_recipe,
    parse_override,
    read_recipe_file,
    resolve,
)
from seqrec_core.research import reports

STUDY_FILE = "study.journal"
#: Keys each trial sets itself (``output.*`` too).
RESERVED = {
    "name": "the trials are named by seqrec tune",
    "train.seeds": "each trial trains one seed: use --seed-of-run",
    "train.monitor": "the objective's metric: use --monitor",
}
_SCALARS = (bool, int, float, str, type(None))
_EXAMPLE = "{float: [1e-4, 1e-2], log: true}, {int: [1, 4]} or {choice: [64, 128]}"


# ------------------------------------------------------------------ the space file


class Distribution(BaseModel):
    """One key's search range: exactly one of ``float``, ``int`` or ``choice``."""

    model_config = ConfigDict(extra="forbid")

    # Field names are the words of the space file; builtins.* keeps the types apart.
    float: list[builtins.float] | None = Field(None, description="[low, high], uniform or log")
    int: list[builtins.int] | None = Field(None, description="[low, high], both included")
    choice: list[Any] | None = Field(None, description="the values to pick from")
    log: builtins.bool = Field(False, description="sample float/int on a log scale")
    step: builtins.float | None = Field(None, gt=0, description="float/int grid step")

    @model_validator(mode="after")
    def _check(self) -> Distribution:
        kinds = [k for k in ("float", "int", "choice") if getattr(self, k) is not None]
        if len(kinds) != 1:
            got = " and ".join(kinds) or "neither"
            raise ValueError(
                f"expected exactly one of float, int or choice ({_EXAMPLE}), got {got}"
            )
        kind = kinds[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("expected choice: a non-empty list of values")
            bad = next((v for v in self.choice if not isinstance(v, _SCALARS)), None)
            if bad is not None:
                raise ValueError(
                    f"expected choice values that are numbers, strings, booleans or null, got {bad!r}"
                )
            if self.log or self.step is not None:
                raise ValueError("expected log and step only with float or int")
            return self
        bounds = getattr(self, kind)
        if len(bounds) != 2:
            raise ValueError(f"expected {kind}: [low, high], got {bounds}")
        low, high = bounds
        if not low <= high:
            raise ValueError(f"expected {kind}: [low, high] with low <= high, got {bounds}")
        if self.log and low <= 0:
            raise ValueError(f"expected low > 0 with log: true, got {bounds}")
        if self.log and self.step is not None:
            raise ValueError(
                "expected log: true or step, not both (Optuna samples one or the other)"
            )
        if kind == "int" and self.step is not None and self.step != round(self.step):
            raise ValueError(f"expected an integer step for int, got {self.step}")
        return self

    @property
    def kind(self) -> Literal["float", "int", "choice"]:
        return next(k for k in ("float", "int", "choice") if getattr(self, k) is not None)

    def values_to_check(self) -> list[Any]:
        """The first value (low end / first choice), then the others worth validating."""
        if self.kind == "choice":
            return list(dict.fromkeys(self.choice))  # type: ignore[arg-type]
        low, high = getattr(self, self.kind)
        return [low] if high == low else [low, high]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(name, self.choice)
        low, high = getattr(self, self.kind)
        if self.kind == "int":
            step = builtins.int(self.step or 1)
            return trial.suggest_int(name, low, high, step=step, log=self.log)
        return trial.suggest_float(name, low, high, step=self.step, log=self.log)


@dataclass
class Param:
    key: str  # dotted, as in the file
    path: Path_  # parsed like an -o key
    dist: Distribution
    line: builtins.int


@dataclass
class Space:
    source: Path
    params: list[Param]

    def where(self, param: Param) -> str:
        return f"{self.source}:{param.line}"

    def fingerprint(self) -> str:
        return json.dumps(
            {p.key: p.dist.model_dump(mode="json", exclude_defaults=True) for p in self.params},
            sort_keys=True,
        )

    def suggest(self, trial: Any) -> dict[str, Any]:
        return {p.key: p.dist.suggest(trial, p.key) for p in self.params}


def load_space(path: str | Path) -> Space:
    """Read and check a space file; errors name the file, line and key."""
    path = Path(path)
    if not path.is_file():
        raise SeqrecError(f"{path}: space file not found")
    data, lines = read_recipe_file(path)
    where = _Where(str(path), lines)
    if not data:
        raise SeqrecError(
            f"{path}:1: a space maps recipe keys to distributions, e.g. "
            "'train.lr: {float: [1e-4, 1e-2], log: true}'; this one is empty"
        )
    params = []
    for key, value in data.items():
        line = lines.get((key,), 1)
        if not isinstance(key, str):
            raise SeqrecError(
                f"{path}:{line}: {key!r}: expected a dotted recipe key, e.g. train.lr"
            )
        reason = RESERVED.get(key) or (
            "the trials' output folders are set by seqrec tune (use --out)"
            if key == "output" or key.startswith("output.")
            else None
        )
        if reason:
            raise SeqrecError(f"{path}:{line}: {key}: not tunable: {reason}")
        if isinstance(value, list):
            value = {"choice": value}  # shorthand
        if not isinstance(value, dict):
            raise SeqrecError(
                f"{path}:{line}: {key}: expected a distribution ({_EXAMPLE}), got {value!r}"
            )
        try:
            dist = Distribution.model_validate(value)
        except ValidationError as exc:
            _raise_validation(exc, where, (key,), Distribution)
            raise  # pragma: no cover
        opath, _ = parse_override(f"{key}=")
        params.append(Param(key, opath, dist, line))
    return Space(path, params)


# ------------------------------------------------------------------ trial recipes


class _TrialWhere(_Where):
    """Error locations of a trial recipe: keys the space sets (and sections it
    adds) point at the space file's line; the rest at the recipe or an -o."""

    def __init__(self, base: _Where, space: Space):
        super().__init__(base.source, base.lines)
        self.overrides = dict(base.overrides)
        self.space = {p.path: space.where(p) for p in space.params}

    def __call__(self, path: Path_) -> str:
        path = tuple(path)
        for key, loc in self.space.items():
            if path[: len(key)] == key:
                return loc
        known = path in self.lines or path in self.overrides
        for key, loc in self.space.items():
            if path and key[: len(path)] == path and not known:
                return loc
        return super().__call__(path)


@dataclass
class TuneSetup:
    """A recipe, its overrides and a space, ready to make trial recipes."""

    recipe_path: Path
    space: Space
    registry: Registry
    base: dict[str, Any]  # the recipe file's data with the -o overrides
    where: _Where
    name: str
    monitor: str
    seed: builtins.int  # the one seed every trial trains
    out: Path
    overrides: list[str] = field(default_factory=list)

    def apply(self, params: dict[str, Any]) -> dict[str, Any]:
        """The base recipe data with ``params`` set (shorter keys first, as sweeps do)."""
        data = copy.deepcopy(self.base)
        for p in sorted(self.space.params, key=lambda p: len(p.path)):
            if p.key in params:
                _apply_override(data, p.path, params[p.key], f"{p.key}={params[p.key]!r}")
        return data

    def trial_recipe(self, params: dict[str, Any], run: str) -> Recipe:
        data = self.apply(params)
        data["name"] = run
        for key, value in (
            ("train.seeds", [self.seed]),
            ("output.runs_dir", str(self.out / "runs")),
            ("output.checkpoints_dir", str(self.out / "checkpoints")),
        ):
            path, _ = parse_override(f"{key}=")
            _apply_override(data, path, value, f"{key}={value}")
        return resolve(data, self.registry, _TrialWhere(self.where, self.space))

    def check(self) -> None:
        """Validate trial recipes before any training: every key at its first
        value, then each other bound or choice of one key at a time. Catches
        unknown keys and values the recipe schema rejects."""
        first = {p.key: p.dist.values_to_check()[0] for p in self.space.params}
        self.trial_recipe(first, "check")
        for p in self.space.params:
            for value in p.dist.values_to_check()[1:]:
                try:
                    self.trial_recipe({**first, p.key: value}, "check")
                except RecipeError as exc:
                    raise RecipeError(f"{exc} (checking the space: {p.key}={value!r})") from None


def prepare_tune(
    recipe_path: str | Path,
    space_path: str | Path,
    registry: Registry,
    overrides: list[str] | tuple[str, ...] = (),
    monitor: str | None = None,
    seed_of_run: builtins.int | None = None,
    out: str | Path | None = None,
) -> TuneSetup:
    """Read the recipe (with ``-o`` overrides, like ``seqrec run``) and the space,
    and validate the trial recipes they make."""
    recipe_path = Path(recipe_path)
    overrides = list(overrides)
    if monitor:
        overrides.append(f"train.monitor={monitor}")
    recipe = load_recipe(recipe_path, registry, overrides)  # the recipe alone must be valid
    data, lines = read_recipe_file(recipe_path)
    where = _Where(str(recipe_path), lines)
    for text in overrides:  # the same steps as load_recipe, keeping data and where
        opath, value = parse_override(text)
        _apply_override(data, opath, value, text)
        where.overrides[opath] = text
    data.setdefault("name", recipe_path.stem)
    setup = TuneSetup(
        recipe_path=recipe_path,
        space=load_space(space_path),
        registry=registry,
        base=data,
        where=where,
        name=recipe.name,
        monitor=recipe.train.monitor,
        seed=recipe.train.seeds[0] if seed_of_run is None else seed_of_run,
        out=Path(out) if out else Path("reports/tune") / reports.slug(recipe.name),
        overrides=overrides,
    )
    setup.check()
    return setup


# ------------------------------------------------------------------ running


@dataclass
class TuneOutcome:
    ran: builtins.int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # the best row
    files: list[Path] = field(default_factory=list)


def _open_study(
    setup: TuneSetup,
    sampler: str,
    seed: builtins.int,
    close_running: bool = True,
    parallel: bool = False,
):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
    from optuna.trial import TrialState

    setup.out.mkdir(parents=True, exist_ok=True)
    path = str(setup.out / STUDY_FILE)
    storage = JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    study = optuna.create_study(
        storage=storage, study_name=setup.name, direction="maximize", load_if_exists=True
    )
    wanted = {
        "space": setup.space.fingerprint(),
        "monitor": setup.monitor,
        "seed_of_run": setup.seed,
    }
    for key, value in wanted.items():
        before = study.user_attrs.get(key)
        if before is None:
            study.set_user_attr(key, value)
        elif before != value:
            what = key.replace("_", "-") + ("" if key == "space" else f" ({before}, now {value})")
            raise SeqrecError(
                f"{path}: this study was run with another {what}; use another --out, "
                f"or delete {setup.out} to start over"
            )
    # A trial still "running" in the file was cut off (Ctrl-C, kill): it is
    # closed as failed without an error, which marks it interrupted (not counted).
    # Not by a --jobs process: the running trials are its siblings'.
    if close_running:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
    # A resumed random sampler with the same seed would draw the same values again
    # (and so would two --jobs processes: they open the study under the ask lock).
    offset = len(study.trials)
    if sampler == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=seed + offset)
    else:
        study.sampler = optuna.samplers.TPESampler(seed=seed + offset, constant_liar=parallel)
    return study


def _state(t: Any) -> str:
    from optuna.trial import TrialState

    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.FAIL:
        return "failed" if "error" in t.user_attrs else "interrupted"
    return t.state.name.lower()


def _counted(t: Any) -> bool:
    return _state(t) in ("complete", "failed")


def trial_rows(study: Any, setup: TuneSetup) -> list[dict[str, Any]]:
    """One row per trial: number, state, validation value, best epoch, time, values."""
    col = f"valid {setup.monitor}"
    rows = []
    for t in study.trials:
        a = t.user_attrs
        rows.append(
            {
                "trial": t.number,
                "state": _state(t),
                col: t.value if _state(t) == "complete" else None,
                "best_epoch": a.get("best_epoch"),
                "epochs": a.get("epochs_run"),
                "time_s": a.get("time_s"),
                "concurrent_runs": a.get("concurrent_runs"),
                **{p.key: t.params.get(p.key) for p in setup.space.params},
                "error": a.get("error", ""),
            }
        )
    return rows


def best_recipe_text(setup: TuneSetup, row: dict[str, Any], n_trials: builtins.int) -> str:
    """The recipe with the best trial's values, as YAML for ``seqrec run``."""
    data = setup.apply({p.key: row[p.key] for p in setup.space.params})
    data = {"name": f"{setup.name}-tuned", **{k: v for k, v in data.items() if k != "name"}}
    value = row[f"valid {setup.monitor}"]
    header = [
        f"# seqrec tune: the best of {n_trials} trials — trial {row['trial']}, "
        f"valid {setup.monitor} {value:.4f} (seed {setup.seed}, best epoch {row['best_epoch']}).",
        f"# Recipe {setup.recipe_path} with the values of {setup.space.source}"
        + (f" and -o {' -o '.join(setup.overrides)}" if setup.overrides else "")
        + ".",
        "# Paths (dataset.path, output.*) are relative to the directory seqrec runs in,",
        "# as in the original recipe: run it from there, e.g.",
        f"#   seqrec run {setup.out / 'best.yaml'}",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False)


def write_outputs(setup: TuneSetup, study: Any, outcome: TuneOutcome) -> None:
    out = setup.out
    rows = trial_rows(study, setup)
    outcome.rows = rows
    col = f"valid {setup.monitor}"
    done = [r for r in rows if r["state"] == "complete"]
    outcome.best = max(done, key=lambda r: r[col]) if done else None
    files = _write_trials(rows, out / "trials") if rows else []
    sections = [
        f"Recipe `{setup.recipe_path}`, space `{setup.space.source}`, one seed "
        f"({setup.seed}) per trial; objective: the best validation {setup.monitor} of "
        "the trial's run (the test split is never evaluated). "
        f"{len(done)} of {len(rows)} trials complete."
    ]
    best_path = out / "best.yaml"
    if outcome.best is not None:
        from seqrec_core.run import atomic_write_text

        atomic_write_text(best_path, best_recipe_text(setup, outcome.best, len(rows)))
        load_recipe(best_path, setup.registry)  # written to run: it must validate
        files.append(best_path)
        values = ", ".join(f"`{p.key}` = {outcome.best[p.key]!r}" for p in setup.space.params)
        sections.append(
            f"Best: trial {outcome.best['trial']}, valid {setup.monitor} "
            f"{outcome.best[col]:.4f}: {values} → `best.yaml` (train all the recipe's seeds "
            "and read the test metrics with `seqrec run best.yaml`)."
        )
    ranked = sorted(rows, key=lambda r: (r[col] is None, -(r[col] or 0.0), r["trial"]))
    sections += ["## Trials, best first", reports.markdown_table(ranked)]
    files.append(out / STUDY_FILE)
    files.append(reports.write_readme(out, f"Tuning {setup.name}", "\n\n".join(sections), files))
    outcome.files = files


def _write_trials(rows: list[dict[str, Any]], stem: Path) -> list[Path]:
    """``trials.csv`` and ``trials.md``. Object columns keep an int parameter an
    int when some trials lack it (pandas would turn the column into floats)."""
    import pandas as pd

    stem.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, dtype=object).to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".md").write_text(reports.markdown_table(rows), encoding="utf-8")
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]


def results_table(setup: TuneSetup, outcome: TuneOutcome) -> Table:
    col = f"valid {setup.monitor}"
    best = outcome.best["trial"] if outcome.best else None
    table = Table(title=f"seqrec tune {setup.name}: {len(outcome.rows)} trials")
    keys = ["trial", "state", col, "best_epoch", "time_s", *(p.key for p in setup.space.params)]
    for k in keys:
        table.add_column(k, justify="right")
    for r in outcome.rows:
        style = "bold green" if r["trial"] == best else None
        table.add_row(*(reports.fmt(r[k]) for k in keys), style=style)
    return table


def run_tune(
    setup: TuneSetup,
    trials: builtins.int,
    sampler: Literal["tpe", "random"] = "tpe",
    seed: builtins.int = 0,
    console: Console | None = None,
    quiet: bool = False,
    keep_checkpoints: bool = False,
) -> TuneOutcome:
    """Run trials until the study has ``trials`` finished ones (complete or
    failed), then write the tables and ``best.yaml``."""

    console = console or Console(stderr=True)
    with _optuna_quiet():  # our own one line per trial
        study = _open_study(setup, sampler, seed)
        outcome = TuneOutcome()
        done = sum(_counted(t) for t in study.trials)
        todo = max(0, trials - done)
        console.print(
            f"[bold]tune[/] {setup.name}: {done} trials done, {todo} to run ({sampler}, "
            f"objective: best valid {setup.monitor}) → {setup.out}/"
        )
        data_cache: dict[str, Any] = {}
        for i in range(todo):
            trial = study.ask()
            try:
                _trial(setup, study, trial, f"{done + i + 1}/{trials}", data_cache, console,
                       quiet, keep_checkpoints)  # fmt: skip
            except BaseException:
                write_outputs(setup, study, outcome)
                raise
            outcome.ran += 1
            write_outputs(setup, study, outcome)
        if not keep_checkpoints:
            _remove_if_empty(setup.out / "checkpoints")
        write_outputs(setup, study, outcome)
        return outcome


def _trial(
    setup: TuneSetup,
    study: Any,
    trial: Any,
    position: str,
    data_cache: dict[str, Any],
    console: Console,
    quiet: bool,
    keep_checkpoints: bool,
) -> None:
    """Sample, train and tell one trial: a :class:`SeqrecError` or CUDA
    out-of-memory is recorded as a failed trial; anything else (Ctrl-C) marks it
    interrupted and is raised."""
    import optuna
    import torch

    params = setup.space.suggest(trial)
    shown = ", ".join(f"{k}={reports.fmt(v)}" for k, v in params.items())
    console.rule(escape(f"trial {trial.number} ({position}): {shown}"))
    try:
        value = _run_trial(setup, trial, params, data_cache, console, quiet)
    except (SeqrecError, torch.cuda.OutOfMemoryError) as exc:
        # Recorded and skipped: one bad corner of the space must not end the tune.
        trial.set_user_attr("error", (str(exc) or repr(exc)).splitlines()[0])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        console.print(f"[red]trial {trial.number} failed:[/] {escape(str(exc))}")
        _free_memory()
    except BaseException:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)  # interrupted
        raise
    else:
        study.tell(trial, value)
        console.print(f"trial {trial.number}: valid {setup.monitor} {value:.4f}")
    finally:
        if not keep_checkpoints:
            shutil.rmtree(setup.out / "checkpoints" / _run_name(trial.number), True)


ASK_LOCK = "ask.lock"
#: The user attribute a ``--jobs`` process sets on its trial: its log's name.
LOG_ATTR = "log"


def run_one_trial(
    setup: TuneSetup,
    trials: builtins.int,
    sampler: Literal["tpe", "random"] = "tpe",
    seed: builtins.int = 0,
    console: Console | None = None,
    quiet: bool = False,
    keep_checkpoints: bool = False,
    log: str = "",
) -> bool:
    """One trial of a ``--jobs`` tune, in this process: under the ask lock, take
    the next trial unless ``trials`` are already finished or running; train it;
    rewrite the tables. Returns whether a trial ran."""
    from filelock import FileLock
    from optuna.trial import TrialState

    console = console or Console(stderr=True)
    setup.out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(setup.out / ASK_LOCK))
    with _optuna_quiet():  # our own one line per trial
        with lock:
            study = _open_study(setup, sampler, seed, close_running=False, parallel=True)
            taken = sum(_counted(t) or t.state == TrialState.RUNNING for t in study.trials)
            if taken >= trials:
                console.print(f"tune {setup.name}: {trials} trials already taken; nothing to do")
                return False
            trial = study.ask()
            if log:
                trial.set_user_attr(LOG_ATTR, log)
        try:
            _trial(setup, study, trial, f"{taken + 1}/{trials}", {}, console, quiet,
                   keep_checkpoints)  # fmt: skip
        finally:
            with lock:
                write_outputs(setup, study, TuneOutcome())
        return True


def run_tune_jobs(
    setup: TuneSetup,
    trials: builtins.int,
    jobs: builtins.int,
    trial_args: list[str],
    sampler: Literal["tpe", "random"] = "tpe",
    seed: builtins.int = 0,
    gpus: list[str] | tuple[str, ...] = (),
    global_args: list[str] | tuple[str, ...] = (),
    console: Console | None = None,
    keep_checkpoints: bool = False,
    poll_s: builtins.float = 0.2,
) -> TuneOutcome:
    """``--jobs``: run the missing trials ``jobs`` at a time, each in its own
    process (``seqrec tune ... trial_args --one-trial``, its output in
    ``<out>/logs/``), spread over ``gpus``; then mark the trials whose process
    died without telling as failed and write the tables."""
    import optuna

    from seqrec_core.research.pool import exit_text, launch_pool, seqrec_command

    console = console or Console(stderr=True)
    with _optuna_quiet():  # our own one line per trial
        study = _open_study(setup, sampler, seed)  # closes trials cut off earlier
        done = sum(_counted(t) for t in study.trials)
        todo = max(0, trials - done)
        log_dir = setup.out / "logs"
        console.print(
            f"[bold]tune[/] {setup.name}: {done} trials done, {todo} to run, {jobs} at a time"
            + (f" on GPUs {', '.join(gpus)}" if gpus else "")
            + f" ({sampler}); their output: {log_dir}/"
        )
        names = [f"process-{done + k:04d}" for k in range(todo)]
        commands = [
            (name, seqrec_command(global_args, "tune", *trial_args, "--one-trial", name))
            for name in names
        ]
        exits: dict[str, int] = {}

        def report(name: str, code: int) -> None:
            exits[name] = code
            how = "done" if code == 0 else f"[red]{exit_text(code)}[/]"
            console.print(f"{name} {how} ({len(exits)}/{todo}): {log_dir}/{name}.log")

        launch_pool(commands, jobs, log_dir, gpus, keep_going=True, poll_s=poll_s,
                    on_exit=report)  # fmt: skip
        outcome = TuneOutcome(ran=sum(code == 0 for code in exits.values()))
        # Every process has ended: a trial still running lost its process.
        study = _open_study(setup, sampler, seed, close_running=False)
        for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            name = t.user_attrs.get(LOG_ATTR, "")
            how = exit_text(exits[name]) if name in exits else "ended"
            # Optuna has no public handle on another process's trial but its id.
            lost = optuna.trial.Trial(study, t._trial_id)
            lost.set_user_attr("error", f"its process {how}: see logs/{name}.log")
            study.tell(lost, state=optuna.trial.TrialState.FAIL)
            if not keep_checkpoints:
                shutil.rmtree(setup.out / "checkpoints" / _run_name(t.number), True)
        if not keep_checkpoints:
            _remove_if_empty(setup.out / "checkpoints")
        write_outputs(setup, study, outcome)
        return outcome


def _run_name(number: builtins.int) -> str:
    return f"trial-{number:04d}"


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


@contextmanager
def _optuna_quiet():
    """Optuna's per-trial log lines off (seqrec prints its own), restored after."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_trial(
    setup: TuneSetup,
    trial: Any,
    params: dict[str, Any],
    data_cache: dict[str, Any],
    console: Console,
    quiet: bool,
) -> builtins.float:
    from seqrec_core.data import load_dataset
    from seqrec_core.run import build_callbacks, resolve_device
    from seqrec_core.train import Trainer

    run = _run_name(trial.number)
    trial.set_user_attr("run", run)
    recipe = setup.trial_recipe(params, run)
    # Trials share the data unless the space changes the dataset or split.
    key = json.dumps([recipe.to_dict()["dataset"], recipe.to_dict()["split"]], sort_keys=True)
    if key not in data_cache:
        data_cache.clear()  # one dataset in memory at a time
        data_cache[key] = load_dataset(recipe, setup.registry, log=console.print)
    t0 = time.perf_counter()  # the trial's fit, without loading the data
    callbacks = build_callbacks(recipe, setup.registry)
    if quiet:
        callbacks = [c for c in callbacks if getattr(c, "name", "") != "console"]
    device = resolve_device(recipe.train.device)
    trainer = Trainer(
        recipe, setup.registry, data_cache[key], setup.seed, run, device, callbacks,
        evaluate_test=False,
    )  # fmt: skip
    try:
        result = trainer.fit()
    finally:
        trial.set_user_attr("time_s", round(time.perf_counter() - t0, 3))
    from seqrec_core.run import run_context

    trial.set_user_attr("concurrent_runs", run_context(trainer.model, device)["concurrent_runs"])
    trial.set_user_attr("best_epoch", result.best_epoch)
    trial.set_user_attr("epochs_run", result.epochs_run)
    trial.set_user_attr("status", result.status)
    if not math.isfinite(result.best_value):
        raise SeqrecError(
            f"no finite validation {setup.monitor} (got {result.best_value}); did any epoch run?"
        )
    return result.best_value
