"""YAML recipe → validated :class:`Recipe`.

A recipe has the sections ``dataset``, ``split``, ``model``, ``loss``, ``train``,
``eval``, ``callbacks`` and ``output``. Core sections are pydantic models
defined here; the options under ``dataset:``, ``split:``, ``model:`` and each
callback are validated against the schema that the named plugin declares (its
``Options``).

Every error names the file, the line, the key path, what was expected and —
for misspelt keys or names — the closest valid spelling.

CLI overrides (``-o train.lr=3e-4``) are applied on top of the file; the value
is parsed as YAML. Overriding ``<section>.name`` (e.g. ``-o model.name=pop``)
discards that section's options from the file, because they belong to the
previous component.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqrec_core.errors import RecipeError, SeqrecError
from seqrec_core.plugins import Registry, did_you_mean, options_schema

Path_ = tuple[Any, ...]

DEFAULT_SPLIT = "leave_one_out"  # = seqrec_core.data.splits.DEFAULT_SPLIT (not imported: numpy)


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``3e-4`` (no dot) as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_yaml(text: str) -> Any:
    """Parse YAML with :class:`_Loader` (a ``SafeLoader``: plain data only)."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _PluginSection(BaseModel):
    """A section whose extra keys are the named plugin's options."""

    model_config = ConfigDict(extra="allow")
    name: str


class DatasetSection(_PluginSection):
    min_rating: float | None = Field(
        None, description="keep interactions with rating >= this (None keeps all)"
    )
    user_core: int = Field(0, ge=0, description="iterative k-core: min interactions per user")
    item_core: int = Field(0, ge=0, description="iterative k-core: min interactions per item")
    user_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="keep a seeded random share of the users (data-size sweeps)",
    )
    user_sample_seed: int = Field(
        0, description="seed of the user subsample (nested across fractions)"
    )
    cache: bool = Field(True, description="cache processed data on disk")


class SplitSection(_PluginSection):
    """How sequences are split into training, validation and test
    (docs/protocol.md, section 5); the other keys are the split plugin's options."""

    name: str = Field(
        DEFAULT_SPLIT,
        description="a split plugin: leave_one_out (the last item is the test target, the one "
        "before it the validation target) or temporal (global time cutoffs), …",
    )


class ModelSection(_PluginSection):
    pass


class LossSection(_Section):
    name: Literal["ce", "sampled_softmax", "bce", "gbce"] = "ce"
    negatives: int = Field(256, ge=1, description="negatives for sampled_softmax / bce / gbce")
    gbce_t: float = Field(0.75, ge=0.0, le=1.0, description="gSASRec calibration parameter t")
    fused: bool = Field(
        True,
        description="ce: fused output layer + softmax (Triton on CUDA) that never materialises "
        "the [N, items] logits; false: plain PyTorch (same loss within bf16 rounding)",
    )
    chunked: bool | None = Field(
        None, description="deprecated spelling of fused (kept so old recipes load)"
    )

    def model_post_init(self, _ctx) -> None:
        if self.chunked is not None:
            self.fused = self.chunked


class SchedulerSection(_Section):
    name: Literal["none", "step", "plateau", "cosine", "onecycle"] = "none"
    step_size: int = Field(10, ge=1, description="StepLR: epochs between decays")
    gamma: float = Field(0.5, gt=0.0, description="StepLR / plateau decay factor")
    plateau_patience: int = Field(2, ge=0)
    min_lr: float = Field(0.0, ge=0.0)
    warmup_epochs: float = Field(0.0, ge=0.0, description="linear warm-up length in epochs")


class TrainSection(_Section):
    epochs: int = Field(50, ge=0)
    batch_size: int = Field(128, ge=1)
    grad_accum: int = Field(
        1,
        ge=1,
        description="micro-batches per optimizer step; effective batch = "
        "batch_size × processes × grad_accum (docs/distributed.md)",
    )
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.98)
    scheduler: SchedulerSection = SchedulerSection()
    grad_clip: float | None = Field(1.0, description="max grad norm; null disables")
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16 autocast on CUDA (always fp32 on CPU)")
    compile: bool = False
    async_checkpoints: bool = Field(
        True,
        description="write checkpoints in a background thread (a snapshot is taken at the "
        "epoch's end; the checkpoint_saved event follows once the file is in place); false: "
        "training waits for each write",
    )
    cuda_graphs: bool = Field(
        True,
        description="on one CUDA GPU with the ce loss: replay each training step's forward and "
        "backward from a CUDA graph (same kernels, far fewer launches); false: eager",
    )
    length_buckets: int = Field(
        1,
        ge=1,
        description="one process: batches of windows of similar length, cut at their bucket's "
        "width (N evenly spaced widths) so padding is not computed; each step's loss is "
        "weighted by its positions over the average step's, so every position weighs the "
        "same as in random batches; 1 = off (random batches). With train.cuda_graphs: one "
        "graph per width, sharing the gradient tensors",
    )
    log_every: int | None = Field(
        None,
        ge=1,
        description="read the loss (one host sync), check it and emit batch_end every N "
        "steps; null: every step on CPU, every 20 on CUDA",
    )
    windows: Literal["last", "sliding"] = Field(
        "last", description="training windows: last max_len items, or sliding over long histories"
    )
    monitor: str = Field("Recall@10", description="validation metric for early stopping")
    patience: int = Field(3, ge=1)
    eval_every: int = Field(1, ge=1)


class EvalSection(_Section):
    ks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [5, 10, 20], min_length=1)
    metrics: list[str] = Field(
        default_factory=lambda: ["hr", "recall", "ndcg", "mrr", "precision", "coverage"],
        min_length=1,
    )
    filter_seen: bool = Field(False, description="remove history items before ranking")
    both_protocols: bool = Field(
        True,
        description="final valid/test metrics also under both protocols, as <metric>/U "
        "(all items ranked) and <metric>/F (history filtered)",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="users scored per forward pass; null: as many as fit score_budget "
        "(at most 16384 on CUDA, 1024 on CPU)",
    )
    score_budget: int = Field(
        2**28,
        ge=1,
        description="elements of one batch's users x items fp32 score block (and of one "
        "[max_len, dim] activation per user) when batch_size is null",
    )
    fast: bool = Field(
        True,
        description="histories gathered, ranks and top-K kept on the device, one transfer per "
        "split; false: numpy padding and a transfer per batch (same results)",
    )
    amp: bool = Field(
        False,
        description="bf16 autocast for the encoder on CUDA (scores stay fp32); not exact: "
        "metrics move with the bf16 rounding of the hidden states",
    )

    def speed(self) -> dict[str, Any]:
        """The keyword arguments of :func:`seqrec_core.evaluate.evaluate` that
        change how fast ranking runs (``amp`` also its rounding), not the protocol."""
        return {"fast": self.fast, "score_budget": self.score_budget, "amp": self.amp}


class CallbackEntry(_PluginSection):
    pass


class OutputSection(_Section):
    runs_dir: str = "runs"
    checkpoints_dir: str = "checkpoints"


class Recipe(_Section):
    """A validated recipe. ``*_options`` hold the plugins' validated options."""

    name: str
    dataset: DatasetSection
    split: SplitSection = SplitSection()
    model: ModelSection
    loss: LossSection = LossSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    callbacks: list[CallbackEntry] = Field(
        default_factory=list,
        description="training callbacks by name; without this key, the callbacks whose "
        "plugin marks them `default = True` (e.g. console progress)",
    )
    output: OutputSection = OutputSection()

    # Filled by resolve(): the plugin-declared option models.
    dataset_options: Any = Field(None, exclude=True)
    split_options: Any = Field(None, exclude=True)
    model_options: Any = Field(None, exclude=True)
    callback_options: list[Any] = Field(default_factory=list, exclude=True)
    source: str = Field("<recipe>", exclude=True)

    def to_dict(self) -> dict[str, Any]:
        """The fully resolved recipe (defaults filled in) as plain data."""
        data = self.model_dump(mode="json")
        data["dataset"] = {**_core_fields(self.dataset), **_dump(self.dataset_options)}
        data["split"] = {"name": self.split.name, **_dump(self.split_options)}
        data["model"] = {"name": self.model.name, **_dump(self.model_options)}
        data["callbacks"] = [
            {"name": c.name, **_dump(o)}
            for c, o in zip(self.callbacks, self.callback_options, strict=True)
        ]
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _dump(opts: Any) -> dict[str, Any]:
    return opts.model_dump(mode="json") if isinstance(opts, BaseModel) else {}


def _core_fields(section: BaseModel) -> dict[str, Any]:
    return section.model_dump(mode="json", exclude=set(section.model_extra or {}))


# --------------------------------------------------------------------------- locations


class _Where:
    """Maps key paths to the line they came from (file or override)."""

    def __init__(self, source: str, lines: dict[Path_, int]):
        self.source = source
        self.lines = lines
        self.overrides: dict[Path_, str] = {}

    def __call__(self, path: Path_) -> str:
        for n in range(len(path), -1, -1):
            prefix = tuple(path[:n])
            if prefix in self.overrides:
                return f"override -o {self.overrides[prefix]}"
            if prefix in self.lines:
                return f"{self.source}:{self.lines[prefix]}"
        return self.source


def _line_map(node: yaml.Node | None, path: Path_ = ()) -> dict[Path_, int]:
    lines: dict[Path_, int] = {}
    if node is None:
        return lines
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, key.value)
            lines[sub] = key.start_mark.line + 1
            for p, ln in _line_map(value, sub).items():
                lines.setdefault(p, ln)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines.update(_line_map(item, (*path, i)))
    return lines


def _dotted(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[Path_, Any]:
    """``"train.lr=3e-4"`` → ``(("train", "lr"), 0.0003)``; the value is YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override -o {text}: expected KEY.PATH=VALUE, e.g. -o train.lr=3e-4")
    try:
        value = safe_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"override -o {text}: value is not valid YAML ({problem})") from None
    path = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
    return path, value


def _apply_override(data: dict, path: Path_, value: Any, text: str) -> None:
    node: Any = data
    for i, part in enumerate(path[:-1]):
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise RecipeError(f"override -o {text}: '{_dotted(path[:i])}' is not a mapping")
        child = node.get(part)
        if child is None:
            node[part] = child = {}
        elif not isinstance(child, dict | list):
            raise RecipeError(
                f"override -o {text}: '{_dotted(path[: i + 1])}' is {child!r}, not a mapping"
            )
        node = child
    last = path[-1]
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    elif isinstance(node, dict):
        if last == "name" and len(path) == 2 and node.get("name") not in (None, value):
            # A different component: its options from the file no longer apply.
            node.clear()
        node[last] = value
    else:
        raise RecipeError(f"override -o {text}: '{_dotted(path[:-1])}' is not a mapping")


def read_recipe_file(path: str | Path) -> tuple[dict, dict[Path_, int]]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = safe_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise RecipeError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(
            f"{path}:1: a recipe must be a mapping of sections, got {type(data).__name__}"
        )
    return data, _line_map(node)


def load_recipe(
    path: str | Path | None,
    registry: Registry,
    overrides: list[str] | tuple[str, ...] = (),
    data: dict | None = None,
) -> Recipe:
    """Read, override and validate a recipe. Raises :class:`RecipeError`."""
    if data is None:
        if path is None:
            raise RecipeError("no recipe given")
        data, lines = read_recipe_file(path)
        source = str(path)
    else:
        data = copy.deepcopy(data)  # never change the caller's dict
        lines, source = {}, str(path or "<recipe>")
    where = _Where(source, lines)
    for text in overrides:
        opath, value = parse_override(text)
        _apply_override(data, opath, value, text)
        where.overrides[opath] = text
    data.setdefault("name", Path(source).stem if path else "recipe")
    return resolve(data, registry, where)


def _validation_message(err: dict, section_desc: str | None, fields: list[str]) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden":
        key = loc[-1]
        return (
            f"unknown key '{key}'{section_desc or ''}{did_you_mean(key, fields)}; "
            f"allowed: {', '.join(fields) or 'none'}"
        )
    if kind == "missing":
        return "required key is missing"
    got = err.get("input")
    msg = err["msg"].removeprefix("Value error, ")  # a ValueError from a validator
    if not loc:
        # A check across the section's keys (a model validator): the message
        # names the keys; the whole section as "got" would only add noise.
        return msg
    if kind == "literal_error":
        msg = msg.replace("Input should be", "expected one of")
        if isinstance(got, str):
            opts = [
                o.strip(" '") for o in msg.split("one of", 1)[-1].replace(" or ", ",").split(",")
            ]
            msg += did_you_mean(got, opts)
    else:
        msg = msg.replace("Input should be", "expected")
    return f"{msg}, got {got!r}"


def _raise_validation(
    exc: ValidationError,
    where: _Where,
    prefix: Path_,
    model_cls: type[BaseModel],
    section_desc: str | None = None,
) -> None:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    # Allowed keys at the failing level, for "did you mean".
    sub: Any = model_cls
    for part in loc[:-1]:
        field = getattr(sub, "model_fields", {}).get(part) if isinstance(part, str) else None
        ann = getattr(field, "annotation", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sub = ann
    fields = [f for f in getattr(sub, "model_fields", {}) if not _is_internal(sub, f)]
    full = (*prefix, *loc)
    raise RecipeError(
        f"{where(full)}: {_dotted(full)}: {_validation_message(err, section_desc, fields)}"
    ) from None


def _is_internal(model_cls: type, field: str) -> bool:
    info = getattr(model_cls, "model_fields", {}).get(field)
    return bool(info is not None and info.exclude)


class _Unknown(Exception):
    def __init__(self, key: str):
        self.key = key


def _plugin_options(
    registry: Registry, kind: str, section: _PluginSection, where: _Where, prefix: Path_
) -> BaseModel:
    try:
        component = registry.get(kind, section.name)
    except SeqrecError as exc:
        raise RecipeError(
            f"{where((*prefix, 'name'))}: {_dotted((*prefix, 'name'))}: {exc}"
        ) from None
    schema = options_schema(component)
    extra = dict(section.model_extra or {})
    core = [f for f in type(section).model_fields]
    unknown = [k for k in extra if k not in schema.model_fields]
    try:
        if unknown:
            raise _Unknown(unknown[0])
        return schema.model_validate(extra)
    except (ValidationError, _Unknown) as exc:
        err = (
            {"type": "extra_forbidden", "loc": (exc.key,)}
            if isinstance(exc, _Unknown)
            else exc.errors()[0]
        )
        if err["type"] == "extra_forbidden":
            key = err["loc"][-1]
            owners = [
                n
                for n in registry.names(kind)
                if n != section.name and key in options_schema(registry.get(kind, n)).model_fields
            ]
            if owners:  # an option of another component, e.g. left over after a name change
                raise RecipeError(
                    f"{where((*prefix, key))}: {_dotted((*prefix, key))}: only for "
                    f"{_dotted((*prefix, 'name'))}: {' or '.join(owners)} (unknown key '{key}' "
                    f"for {kind[:-1]} '{section.name}'); remove it or change the name"
                ) from None
            allowed = [*core, *schema.model_fields]
            raise RecipeError(
                f"{where((*prefix, key))}: {_dotted((*prefix, key))}: unknown key '{key}' for "
                f"{kind[:-1]} '{section.name}'{did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            ) from None
        _raise_validation(exc, where, prefix, schema, f" for {kind[:-1]} '{section.name}'")
        raise  # pragma: no cover


def resolve(data: dict, registry: Registry, where: _Where | None = None) -> Recipe:
    where = where or _Where("<recipe>", {})
    allowed = [f for f in Recipe.model_fields if not _is_internal(Recipe, f)]
    for key in data:
        if key not in allowed:
            raise RecipeError(
                f"{where((key,))}: {key}: unknown key '{key}'{did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )
    for section in ("dataset", "model"):
        if section not in data:
            raise RecipeError(
                f"{where(())}: missing section '{section}:' (e.g. '{section}: {{name: ...}}'); "
                f"available {section}s: {', '.join(registry.names(section + 's'))}"
            )
    if "callbacks" not in data:
        data["callbacks"] = [
            name
            for name in registry.names("callbacks")
            if getattr(registry.get("callbacks", name), "default", False)
        ]
    if isinstance(data.get("callbacks"), list):
        # `callbacks: [tensorboard]` is shorthand for `[{name: tensorboard}]`.
        data["callbacks"] = [{"name": c} if isinstance(c, str) else c for c in data["callbacks"]]
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        _raise_validation(exc, where, (), Recipe)
        raise  # pragma: no cover
    recipe.source = where.source
    recipe.dataset_options = _plugin_options(
        registry, "datasets", recipe.dataset, where, ("dataset",)
    )
    recipe.split_options = _plugin_options(registry, "splits", recipe.split, where, ("split",))
    recipe.model_options = _plugin_options(registry, "models", recipe.model, where, ("model",))
    recipe.callback_options = [
        _plugin_options(registry, "callbacks", cb, where, ("callbacks", i))
        for i, cb in enumerate(recipe.callbacks)
    ]
    for i, metric in enumerate(recipe.eval.metrics):
        if metric not in registry.names("metrics"):
            p = ("eval", "metrics", i)
            raise RecipeError(
                f"{where(p)}: {_dotted(p)}: unknown metric '{metric}'"
                f"{did_you_mean(metric, registry.names('metrics'))}; "
                f"available: {', '.join(registry.names('metrics'))}"
            )
    labels = metric_labels(
        [registry.get("metrics", m) for m in recipe.eval.metrics], recipe.eval.ks
    )
    base, slash, protocol = recipe.train.monitor.rpartition("/")
    if slash and base in labels and protocol in ("U", "F"):
        p = ("train", "monitor")
        own = "F" if recipe.eval.filter_seen else "U"
        raise RecipeError(
            f"{where(p)}: {_dotted(p)}: '{recipe.train.monitor}': every epoch is validated "
            f"under the recipe's own protocol only ({own}, eval.filter_seen: "
            f"{str(recipe.eval.filter_seen).lower()}); write train.monitor: {base}"
            + (
                ""
                if protocol == own
                else f" and set eval.filter_seen: {str(protocol == 'F').lower()} to "
                f"early-stop on protocol {protocol}"
            )
        )
    if recipe.train.monitor not in labels:
        p = ("train", "monitor")
        raise RecipeError(
            f"{where(p)}: {_dotted(p)}: '{recipe.train.monitor}' is not a validation metric of "
            f"this recipe{did_you_mean(recipe.train.monitor, labels)}; choose one of: "
            f"{', '.join(labels)}"
        )
    return recipe


def metric_labels(metrics: list[Any], ks: list[int]) -> list[str]:
    """The names compute_metrics reports: ``HR@10`` for at-K metrics, else ``MRR``."""
    out = []
    for m in metrics:
        label = getattr(m, "label", m.name)
        out += [f"{label}@{k}" for k in ks] if m.at_k else [label]
    return out


def load_data_sections(
    dataset: dict, registry: Registry, overrides: list[str] | tuple[str, ...] = (), source: str = ""
) -> Any:
    """Only the ``dataset`` and ``split`` sections (what ``load_dataset`` needs),
    validated like a full recipe; ``overrides`` may set ``dataset.*`` and ``split.*``.
    Used by ``seqrec data info`` for a dataset given by name."""
    from types import SimpleNamespace

    data: dict[str, Any] = {"dataset": copy.deepcopy(dataset), "split": {}}
    where = _Where(f"<{source or dataset.get('name')}>", {})
    for text in overrides:
        path, value = parse_override(text)
        if path[0] not in ("dataset", "split") or len(path) < 2:
            raise RecipeError(
                f"override -o {text}: seqrec data info takes only dataset.* and split.* "
                "overrides (give a recipe file for the rest)"
            )
        _apply_override(data, path, value, text)
        where.overrides[path] = text
    try:
        section = DatasetSection.model_validate(data["dataset"])
    except ValidationError as exc:
        _raise_validation(exc, where, ("dataset",), DatasetSection)
    try:
        split = SplitSection.model_validate(data["split"])
    except ValidationError as exc:
        _raise_validation(exc, where, ("split",), SplitSection)
    return SimpleNamespace(
        name=source or section.name,
        dataset=section,
        dataset_options=_plugin_options(registry, "datasets", section, where, ("dataset",)),
        split=split,
        split_options=_plugin_options(registry, "splits", split, where, ("split",)),
    )
