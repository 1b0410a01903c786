"""Every hook a seqrec plugin can implement — the plugin author's contract.

A plugin is any module or object with functions decorated by
``@seqrec_core.hookimpl`` whose names match the specs below. Installed
distributions expose plugins through the ``seqrec`` entry-point group::

    [project.entry-points.seqrec]
    mymodel = "my_package.plugin_module"

Registration hooks follow the ``register_*(register)`` style: seqrec hands the
plugin a ``register`` callable, and the plugin calls it once per component it
provides. A component is a class (or object) with

* ``name`` — the unique name recipes refer to (``model: {name: sasrec}``);
* ``Options`` — a pydantic model of the component's recipe options (optional;
  defaults to "no options"). Unknown keys are rejected against it, so users get
  "did you mean" help for typos.

Two plugins registering the same name in one kind is an error that names both.

Training callbacks use a second set of hooks, :class:`CallbackSpec`, named after
the training lifecycle (tox style)::

    on_fit_start
      ├─ on_epoch_start
      │    ├─ on_batch_end            (every train.log_every batches, and the last)
      ├─ on_validation_end            (after each full-ranking validation)
      ├─ on_checkpoint_saved          (best/last written; with train.async_checkpoints
      │                                 an epoch's come once its files are in place,
      │                                 from a later epoch or before on_fit_end)
      ├─ on_epoch_end
      ├─ on_early_stop                (only when patience runs out)
    on_fit_end                        (always, with final test metrics)

A registered callback class is instantiated per run with its validated options
and registered into that run's own plugin manager; it implements any subset of
the ``CallbackSpec`` hooks with ``@seqrec_core.hookimpl``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("seqrec")

Register = Callable[..., None]


class RegistrationSpec:
    """Hooks through which plugins contribute components."""

    @hookspec
    def register_datasets(self, register: Register) -> None:
        """Register dataset loaders.

        Call ``register(DatasetClass)`` for each. A dataset class has ``name``,
        ``Options`` (pydantic) and implements :class:`seqrec_core.data.DatasetSource`:
        ``load(options) -> RawData`` returning an interaction table in file order
        plus optional item/user metadata, and ``fingerprint(options) -> str`` that
        changes whenever the underlying files change (used as the processed-data
        cache key). A class may also declare ``downloads = {name: Download}``
        (:mod:`seqrec_core.data.download`): ``seqrec data download|add|list|info``
        use it, and ``load`` can call ``ensure(download)`` for ``path: auto``.
        """

    @hookspec
    def register_splits(self, register: Register) -> None:
        """Register splits: which part of each user's sequence is training,
        validation target and test target (``docs/protocol.md``, section 5).

        Call ``register(SplitClass)`` for each. A split class has ``name``,
        ``Options`` (pydantic, ``extra="forbid"``; the keys under ``split:``
        besides ``name``), is built as ``SplitClass()`` and implements
        ``split(offsets, timestamps, options) -> SplitArrays``: ``offsets``
        (``[n_users + 1]``) delimit each user's chronological sequence in the
        flat item array, ``timestamps`` are the matching times (``None`` when
        the dataset has none), ``options`` the validated ``Options``. The
        :class:`seqrec_core.data.splits.SplitArrays` holds three ``[n_users]``
        arrays of absolute positions — ``train_end`` (end, exclusive, of the
        training part), ``valid_pos`` and ``test_pos`` (the targets, ``-1`` for
        none); every input history is the prefix before its target — plus
        ``info``, JSON-able details to show and keep (e.g. resolved cutoffs).
        The core fills in ``spec`` (name + options) and caches the arrays with
        the processed data. ``leave_one_out``, the protocol default, is always
        available, even without a plugin registering it.
        """

    @hookspec
    def register_models(self, register: Register) -> None:
        """Register recommendation models.

        Call ``register(ModelClass)`` for each. A model class subclasses
        :class:`seqrec_core.model.Recommender`, has ``name`` and ``Options`` and is
        built as ``ModelClass(options, n_items)``.
        """

    @hookspec
    def register_metrics(self, register: Register) -> None:
        """Register ranking metrics.

        Call ``register(metric)`` for each. A metric has ``name`` (e.g. ``"ndcg"``),
        ``at_k`` (whether it is reported per cut-off ``@K``) and
        ``compute(result: RankingResult, k: int | None) -> float``.
        """

    @hookspec
    def register_callbacks(self, register: Register) -> None:
        """Register training callbacks (TensorBoard, console, GPU monitor, …).

        Call ``register(CallbackClass)`` for each. Recipes enable callbacks by
        name under ``callbacks:``; the class is built as ``CallbackClass(options)``
        and implements hooks of :class:`CallbackSpec`. A class with
        ``default = True`` is enabled for recipes that have no ``callbacks:`` key.
        """


class CallbackSpec:
    """Lifecycle hooks of one training run. ``event`` is a dict that is also
    written, one JSON line per event, to the run's ``events.jsonl``; the keys
    are documented per hook. A callback may add keys to ``event`` (e.g. the GPU
    monitor adds ``gpu``); mark its hook ``@hookimpl(tryfirst=True)`` so the
    other callbacks see them — the log is written after all callbacks ran.
    Non-finite numbers (no best value yet) are logged as ``null``. A callback
    that raises is reported once and skipped; training goes on."""

    @hookspec
    def on_fit_start(self, run: Any, event: dict) -> None:
        """Training is about to start. ``event``: run, model, dataset, stats,
        params, epochs, batches (per epoch), seed, device, monitor, patience,
        start_epoch (> 1 when resumed)."""

    @hookspec
    def on_epoch_start(self, run: Any, event: dict) -> None:
        """An epoch starts. ``event``: epoch (1-based), batches."""

    @hookspec
    def on_batch_end(self, run: Any, event: dict) -> None:
        """Training batches (optimizer steps) finished: called every
        ``train.log_every`` steps (default: every step on CPU, every 20 on CUDA,
        where reading the loss makes the host wait for the GPU) and after an
        epoch's last step. ``event``: epoch, batch (the last one), batches, loss
        (mean over the steps since the previous call), lr, tokens (predicted
        positions in those steps; under torchrun or with ``train.grad_accum``
        summed over all ranks and micro-batches), tokens_per_s (running rate of
        the epoch so far)."""

    @hookspec
    def on_validation_end(self, run: Any, event: dict) -> None:
        """Validation finished. ``event``: epoch, metrics (name → value)."""

    @hookspec
    def on_epoch_end(self, run: Any, event: dict) -> None:
        """An epoch finished. ``event``: epoch, train_loss, metrics (validation;
        empty when not evaluated this epoch), monitor, value, best_value,
        best_epoch, bad_epochs, patience, epoch_time, train_time, tokens_per_s,
        lr."""

    @hookspec
    def on_checkpoint_saved(self, run: Any, event: dict) -> None:
        """A checkpoint file was written atomically (it is in place when this
        runs). ``event``: kind (``best``/``last``), path, epoch — the epoch whose
        weights it holds: with ``train.async_checkpoints`` (the default) the file
        is written in the background, so this hook may run during a later epoch
        (always before ``on_fit_end``)."""

    @hookspec
    def on_early_stop(self, run: Any, event: dict) -> None:
        """Patience ran out. ``event``: epoch, best_epoch, best_value, monitor."""

    @hookspec
    def on_fit_end(self, run: Any, event: dict) -> None:
        """Training ended (normally, early or with an error). ``event``: status
        (``completed``/``early_stopped``/``failed``/``interrupted``), best_epoch,
        best_value, valid and test (metrics of the best checkpoint; empty when
        failed), total_time, params."""
