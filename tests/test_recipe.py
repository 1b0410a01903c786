"""Recipe loading: every error is one line that says file:line, key path, what
was expected and — for a misspelling — the closest valid spelling.

The registry holds the in-test plugin from conftest (dataset ``inline``, model
``toy`` with options dim/max_len/dropout, callback ``noop`` with option every)
plus the real ``seqrec_metrics`` and ``seqrec_pop`` plugins.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

import seqrec_core.cli
import seqrec_metrics
from seqrec_core import hookimpl
from seqrec_core.errors import RecipeError
from seqrec_core.plugins import load_plugins
from seqrec_core.recipe import load_recipe, parse_override

# Every recipe below says `callbacks: []`: the default callback list names a
# plugin ('console') that the test registry does not have.
HEAD = "name: t\ndataset:\n  name: inline\nmodel:\n  name: toy\n  dim: 16\ncallbacks: []\n"
# line:   1          2            3             4           5          6         7


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, registry, overrides=()) -> str:
    with pytest.raises(RecipeError) as info:
        load_recipe(path, registry, list(overrides))
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


# (id, recipe text, expected "file:LINE: key.path" prefix line, key path, substrings)
CASES = [
    (
        "malformed-yaml",
        "name: t\ndataset:\n  name: inline: x\nmodel: {name: toy}\n",
        3,
        None,
        ["malformed YAML"],
    ),
    (
        "unknown-section",
        HEAD + "trian:\n  epochs: 3\n",
        8,
        "trian",
        ["unknown key 'trian'", "did you mean 'train'?"],
    ),
    (
        "unknown-train-key",
        HEAD + "train:\n  epochs: 3\n  lrr: 0.1\n",
        10,
        "train.lrr",
        ["unknown key 'lrr'", "did you mean 'lr'?", "allowed:", "epochs"],
    ),
    (
        "unknown-nested-key",
        HEAD + "train:\n  scheduler:\n    nmae: step\n",
        10,
        "train.scheduler.nmae",
        ["did you mean 'name'?"],
    ),
    (
        "wrong-type",
        HEAD + "train:\n  lr: fast\n",
        9,
        "train.lr",
        ["number", "'fast'"],
    ),
    (
        "bad-literal",
        HEAD + "train:\n  optimizer: adamm\n",
        9,
        "train.optimizer",
        ["'adam'", "'adamw'", "did you mean 'adam'?", "got 'adamm'"],
    ),
    (
        "bad-nested-literal",
        HEAD + "train:\n  scheduler:\n    name: cosin\n",
        10,
        "train.scheduler.name",
        ["did you mean 'cosine'?"],
    ),
    (
        "out-of-range",
        HEAD + "train:\n  batch_size: 0\n",
        9,
        "train.batch_size",
        ["greater than or equal to 1", "got 0"],
    ),
    (
        "unknown-model",
        "dataset: {name: inline}\nmodel:\n  name: toyy\ncallbacks: []\n",
        3,
        "model.name",
        ["unknown model 'toyy'", "did you mean 'toy'?", "available: pop, toy"],
    ),
    (
        "unknown-model-key",
        "dataset: {name: inline}\nmodel:\n  name: toy\n  dimm: 3\ncallbacks: []\n",
        4,
        "model.dimm",
        ["unknown key 'dimm' for model 'toy'", "did you mean 'dim'?", "max_len"],
    ),
    (
        "model-option-type",
        "dataset: {name: inline}\nmodel:\n  name: toy\n  max_len: long\ncallbacks: []\n",
        4,
        "model.max_len",
        ["integer", "'long'"],
    ),
    (
        "pop-takes-no-options",
        "dataset: {name: inline}\nmodel:\n  name: pop\n  dim: 3\ncallbacks: []\n",
        4,
        "model.dim",
        ["unknown key 'dim' for model 'pop'"],
    ),
    (
        "unknown-dataset",
        "dataset:\n  name: inlin\nmodel: {name: toy}\ncallbacks: []\n",
        2,
        "dataset.name",
        ["unknown dataset 'inlin'", "did you mean 'inline'?"],
    ),
    (
        "dataset-core-key",
        "dataset:\n  name: inline\n  user_cor: 5\nmodel: {name: toy}\ncallbacks: []\n",
        3,
        "dataset.user_cor",
        ["did you mean 'user_core'?"],
    ),
    (
        "dataset-negative-core",
        "dataset:\n  name: inline\n  item_core: -1\nmodel: {name: toy}\ncallbacks: []\n",
        3,
        "dataset.item_core",
        ["greater than or equal to 0", "got -1"],
    ),
    (
        "missing-dataset",
        "name: t\nmodel:\n  name: toy\n",
        1,
        None,
        ["missing section 'dataset:'", "inline"],
    ),
    (
        "missing-model",
        "dataset: {name: inline}\ncallbacks: []\n",
        1,
        None,
        ["missing section 'model:'", "pop", "toy"],
    ),
    (
        "unknown-metric",
        HEAD + "eval:\n  metrics:\n    - hr\n    - ndcgg\n",
        11,
        "eval.metrics[1]",
        ["unknown metric 'ndcgg'", "did you mean 'ndcg'?", "available:", "coverage"],
    ),
    (
        "unknown-callback",
        "dataset: {name: inline}\nmodel: {name: toy}\ncallbacks:\n  - noop\n  - nop\n",
        5,
        "callbacks[1].name",
        ["unknown callback 'nop'", "did you mean 'noop'?"],
    ),
    (
        "unknown-callback-key",
        "dataset: {name: inline}\nmodel: {name: toy}\ncallbacks:\n  - name: noop\n    evry: 2\n",
        5,
        "callbacks[0].evry",
        ["did you mean 'every'?"],
    ),
    (
        "not-a-mapping",
        "- dataset\n- model\n",
        1,
        None,
        ["must be a mapping"],
    ),
]


@pytest.mark.parametrize(
    "text, line, key, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_recipe_errors_name_file_line_and_key(tmp_path, core_registry, text, line, key, needles):
    path = write(tmp_path, text)
    message = error_of(path, core_registry)
    prefix = f"{path}:{line}: " + (f"{key}: " if key else "")
    assert message.startswith(prefix), message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_misspelt_required_section_suggests_the_spelling(tmp_path, core_registry):
    # `datset:` is both an unknown section and the reason 'dataset' is missing;
    # the message must point at the typo, not only say the section is missing.
    path = write(tmp_path, "datset:\n  name: inline\nmodel: {name: toy}\ncallbacks: []\n")
    message = error_of(path, core_registry)
    assert "did you mean 'dataset'?" in message, message
    assert message.startswith(f"{path}:1:"), message


def test_bad_k_names_eval_ks_and_its_line(tmp_path, core_registry):
    path = write(tmp_path, HEAD + "eval:\n  filter_seen: true\n  ks: [5, 0]\n")
    message = error_of(path, core_registry)
    assert message.startswith(f"{path}:10: eval.ks"), message


def test_monitor_must_be_a_validation_metric(tmp_path, core_registry):
    # The default monitor Recall@10 does not exist when eval.ks has no 10. That
    # must fail when the recipe is read, not after the first training epoch.
    path = write(tmp_path, HEAD + "eval:\n  ks: [5, 20]\n")
    message = error_of(path, core_registry)
    assert "train.monitor" in message and "Recall@10" in message, message
    assert "Recall@5" in message, message  # lists what would be valid


def test_monitor_with_a_protocol_suffix_says_how_to_early_stop_on_it(tmp_path, core_registry):
    # Metrics are reported as NDCG@10/U and /F, but epochs are validated under the
    # recipe's protocol only: the error says which key to write instead.
    path = write(tmp_path, HEAD + "train:\n  monitor: NDCG@10/F\n")
    message = error_of(path, core_registry)
    assert message.startswith(f"{path}:9: train.monitor"), message
    assert "write train.monitor: NDCG@10 and set eval.filter_seen: true" in message, message
    filtered = HEAD + "train:\n  monitor: NDCG@10/F\neval:\n  filter_seen: true\n"
    message = error_of(write(tmp_path, filtered), core_registry)
    assert message.endswith("write train.monitor: NDCG@10"), message
    load_recipe(write(tmp_path, HEAD + "train:\n  monitor: NDCG@10\n"), core_registry)


def test_plugin_options_reject_unknown_keys_even_without_extra_forbid(tmp_path):
    # A plugin author who forgets `extra="forbid"` must not make typos silent.
    class LaxOptions(BaseModel):
        dim: int = 8

    class Lax:
        name = "lax"
        Options = LaxOptions

    class LaxPlugin:
        name = "lax_plugin"

        @hookimpl
        def register_models(self, register):
            register(Lax)

        @hookimpl
        def register_datasets(self, register):
            register(Lax, name="laxdata")

    registry = load_plugins(extra=[LaxPlugin(), seqrec_metrics], use_entry_points=False)
    path = write(
        tmp_path, "dataset: {name: laxdata}\nmodel:\n  name: lax\n  dimm: 3\ncallbacks: []\n"
    )
    message = error_of(path, registry)
    assert message.startswith(f"{path}:4: model.dimm"), message
    assert "did you mean 'dim'?" in message


def test_missing_file(tmp_path, core_registry):
    message = error_of(tmp_path / "nope.yaml", core_registry)
    assert message.startswith(str(tmp_path / "nope.yaml")) and "not found" in message


# ------------------------------------------------------------------ valid recipes


def test_valid_recipe_resolves_plugin_options_and_defaults(tmp_path, core_registry):
    path = write(tmp_path, HEAD + "train:\n  lr: 0.01\ncallbacks:\n  - noop\n")
    recipe = load_recipe(path, core_registry)
    assert recipe.name == "t"
    assert recipe.model_options.dim == 16 and recipe.model_options.max_len == 20
    assert recipe.train.lr == 0.01 and recipe.train.optimizer == "adam"
    assert [c.name for c in recipe.callbacks] == ["noop"]
    assert recipe.callback_options[0].every == 1
    assert recipe.dataset_options.rows  # the plugin's default rows
    assert recipe.eval.filter_seen is False


def test_name_defaults_to_the_file_stem(tmp_path, core_registry):
    path = write(tmp_path, HEAD.replace("name: t\n", "", 1), name="ml_toy.yaml")
    assert load_recipe(path, core_registry).name == "ml_toy"


def test_yaml_float_without_a_dot_is_a_number(tmp_path, core_registry):
    path = write(tmp_path, HEAD + "train:\n  lr: 3e-4\n  weight_decay: 1e-2\n")
    recipe = load_recipe(path, core_registry)
    assert recipe.train.lr == pytest.approx(3e-4)
    assert recipe.train.weight_decay == pytest.approx(1e-2)


# ------------------------------------------------------------------ overrides


def test_override_values_are_parsed(tmp_path, core_registry):
    path = write(tmp_path, HEAD)
    recipe = load_recipe(
        path,
        core_registry,
        [
            "train.lr=3e-4",
            "eval.ks=[1, 3]",
            "train.monitor=HR@3",
            "eval.filter_seen=true",
            "model.dim=64",
            "name=x",
        ],
    )
    assert isinstance(recipe.train.lr, float) and recipe.train.lr == pytest.approx(3e-4)
    assert recipe.eval.ks == [1, 3] and recipe.eval.filter_seen is True
    assert recipe.model_options.dim == 64
    assert recipe.name == "x"


def test_parse_override_returns_yaml_values():
    assert parse_override("eval.ks=[5, 10]") == (("eval", "ks"), [5, 10])
    assert parse_override("callbacks.0.every=2") == (("callbacks", 0, "every"), 2)
    assert parse_override("train.grad_clip=") == (("train", "grad_clip"), None)
    # The documented example: 3e-4 is a number, not the string '3e-4'.
    path, value = parse_override("train.lr=3e-4")
    assert path == ("train", "lr")
    assert isinstance(value, float) and value == pytest.approx(3e-4)


def test_overriding_the_model_name_drops_the_files_model_options(tmp_path, core_registry):
    path = write(tmp_path, HEAD)  # model: toy with dim: 16
    recipe = load_recipe(path, core_registry, ["model.name=pop"])
    assert recipe.model.name == "pop"
    assert recipe.to_dict()["model"] == {"name": "pop"}
    # Naming the same model keeps its options.
    recipe = load_recipe(path, core_registry, ["model.name=toy"])
    assert recipe.model_options.dim == 16


@pytest.mark.parametrize("bad", ["train", "=3", " =3"])
def test_bad_override_syntax(tmp_path, core_registry, bad):
    message = error_of(write(tmp_path, HEAD), core_registry, [bad])
    assert message.startswith(f"override -o {bad}:"), message
    assert "KEY.PATH=VALUE" in message


def test_override_with_malformed_yaml_value_is_one_line(tmp_path, core_registry):
    message = error_of(write(tmp_path, HEAD), core_registry, ["eval.ks=[1"])
    assert message.startswith("override -o eval.ks=[1:"), message


@pytest.mark.parametrize(
    "override, needles",
    [
        ("train.lr=fast", ["train.lr", "'fast'"]),
        ("train.lrr=0.1", ["train.lrr", "did you mean 'lr'?"]),
        ("model.dimm=3", ["model.dimm", "did you mean 'dim'?"]),
        ("model.name=toyy", ["model.name", "did you mean 'toy'?"]),
        ("eval.metrics=[hr, ndcgg]", ["eval.metrics[1]", "did you mean 'ndcg'?"]),
    ],
)
def test_errors_from_overrides_point_at_the_override(tmp_path, core_registry, override, needles):
    message = error_of(write(tmp_path, HEAD), core_registry, [override])
    assert message.startswith(f"override -o {override}: "), message
    assert str(tmp_path) not in message
    for needle in needles:
        assert needle in message


def test_override_through_a_scalar_is_rejected_with_the_override(tmp_path, core_registry):
    message = error_of(write(tmp_path, HEAD), core_registry, ["model.dim.x=1"])
    assert message.startswith("override -o model.dim.x=1"), message


# ------------------------------------------------------------------ round trip


def test_resolved_recipe_round_trips_through_yaml(tmp_path, core_registry):
    path = write(
        tmp_path,
        HEAD
        + "train:\n  lr: 3e-4\n  betas: [0.8, 0.9]\n  scheduler: {name: cosine}\n  monitor: NDCG@7\n"
        + "eval: {ks: [1, 7], filter_seen: true}\ncallbacks: [{name: noop, every: 3}]\n",
    )
    recipe = load_recipe(path, core_registry, ["model.max_len=9"])
    resolved = recipe.to_dict()
    # Everything is plain data with defaults filled in.
    assert resolved["model"] == {"name": "toy", "dim": 16, "max_len": 9, "dropout": 0.1}
    assert resolved["callbacks"] == [{"name": "noop", "every": 3}]
    assert resolved["dataset"]["user_core"] == 0
    assert yaml.safe_load(recipe.to_yaml()) == resolved
    again = load_recipe(write(tmp_path, recipe.to_yaml(), "resolved.yaml"), core_registry)
    assert again.to_dict() == resolved


def test_dict_recipe_is_resolved_like_a_file(core_registry):
    recipe = load_recipe(
        None,
        core_registry,
        ["train.epochs=2"],
        data={"dataset": {"name": "inline"}, "model": {"name": "pop"}, "callbacks": []},
    )
    assert recipe.name == "recipe" and recipe.train.epochs == 2


# ------------------------------------------------------------------ CLI


@pytest.mark.parametrize(
    "text, args, needle",
    [
        (HEAD + "train:\n  optimizer: adamm\n", [], ":9: train.optimizer"),
        ("name: t\ndataset:\n  name: inline: x\n", [], ":3: malformed YAML"),
        (HEAD, ["-o", "train.lr=fast"], "override -o train.lr=fast: train.lr"),
        (HEAD, ["-o", "train"], "override -o train: expected KEY.PATH=VALUE"),
    ],
)
def test_cli_prints_one_error_line_without_traceback(
    tmp_path, capsys, cli_registry, text, args, needle
):
    path = write(tmp_path, text)
    rc = seqrec_core.cli.main(["run", str(path), *args])
    out, err = capsys.readouterr()
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("seqrec: error: ")
    assert needle in lines[0]
    assert "Traceback" not in err + out


def test_cli_debug_shows_the_exception(tmp_path, cli_registry):
    path = write(tmp_path, HEAD + "train:\n  lr: fast\n")
    with pytest.raises(RecipeError):
        seqrec_core.cli.main(["--debug", "run", str(path)])


def test_callbacks_default_to_plugins_marked_default_and_data_is_not_mutated(
    monkeypatch, inline_plugin
):
    import seqrec_console
    import seqrec_metrics
    import seqrec_pop
    import seqrec_tensorboard
    from seqrec_core.plugins import load_plugins
    from seqrec_core.recipe import load_recipe

    monkeypatch.delenv("SEQREC_DISABLE_PLUGINS", raising=False)
    registry = load_plugins(
        extra=[inline_plugin, seqrec_metrics, seqrec_pop, seqrec_console, seqrec_tensorboard],
        use_entry_points=False,
    )
    data = {"dataset": {"name": "inline"}, "model": {"name": "pop"}}
    recipe = load_recipe(None, registry, data=data, overrides=["train.lr=0.5"])
    assert [c.name for c in recipe.callbacks] == ["console"]  # tensorboard is opt-in
    assert data == {"dataset": {"name": "inline"}, "model": {"name": "pop"}}
    explicit = load_recipe(None, registry, data={**data, "callbacks": []})
    assert explicit.callbacks == []


def test_cuda_out_of_memory_outside_a_step_is_one_line_with_the_fix(
    tmp_path, capsys, cli_registry, monkeypatch
):
    """An OOM the trainer does not catch itself (loading, evaluation, another
    process filling the GPU) is an error line naming the knobs, not an internal error."""
    import torch

    def full(*_a, **_k):
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB.\nmore detail"
        )

    import seqrec_core.run

    monkeypatch.setattr(seqrec_core.run, "run_recipe", full)
    rc = seqrec_core.cli.main(["run", str(write(tmp_path, HEAD))])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1 and err.startswith("seqrec: error: CUDA out of memory")
    assert "Tried to allocate 2.00 GiB" in err and "train.batch_size" in err
    assert "internal error" not in err
