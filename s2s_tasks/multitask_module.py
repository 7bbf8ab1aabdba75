"""One model trained on several tasks at once: a shared encoder (and decoder, when a task
generates) under each task's own module.

Every task keeps its single-task LightningModule (:class:`~s2s_tasks.seq2seq_module.Seq2SeqModule`
or :class:`~s2s_tasks.structured_module.StructuredModule` subclass) for its head, loss, decoding,
metrics and prediction records; this module builds the network once and hands the same weights to
all of them (``task.model`` for generating tasks, ``task.encoder`` for encoder heads), then routes
each single-task batch (``batch["task"]``) to its task. Multi-task learning with hard parameter
sharing (Caruana 1997); with ``mode: text_to_text`` every task is text-to-text behind a task
token, as in T5 (Raffel et al. 2020).

Validation and test log every task's metrics under its own name (``val/ner/f1``,
``val/translation/bleu`` ...) and ``val/score``: the weighted mean of each task's primary metric
(its ``primary_metric``, every metric being on a 0-100 scale), which selects checkpoints.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from s2s_tasks.module import BaseModule
from s2s_tasks.nn.seq2seq import build_encoder, build_seq2seq
from s2s_tasks.registry import build, get_task, init_parameters
from s2s_tasks.seq2seq_module import PEFT_KEYS
from s2s_tasks.structured_module import StructuredModule

#: the network settings every task shares (the arguments of ``build_seq2seq``)
NETWORK_KEYS = tuple(name for name in inspect.signature(build_seq2seq).parameters if name not in ("vocab_size", "pad_id"))
#: one optimizer and schedule for the whole model
OPTIMIZER_KEYS = ("learning_rate", "weight_decay", "adam_betas", "warmup_steps", "lr_schedule", "min_lr_ratio")
MODES = ("heads", "text_to_text")
#: options of the single-task models that a multi-task model's tasks do not take, with the fix
SINGLE_TASK_KEYS = {
    "ensemble": "ensembles average single-task checkpoints: `s2s-tasks validate --task {name} --ckpt_path A.ckpt "
                "--model.ensemble '[B.ckpt]'`",
    "word_dropout": "word dropout is a single-task option (`s2s-tasks fit --task {name} --model.word_dropout P`)",
    "char_cnn": "character features are a single-task option (`s2s-tasks fit --task {name} --model.char_cnn N`)",
}


class MultiTaskModule(BaseModule):
    """Several tasks over one shared network.

    Args:
        vocab_size, pad_id: set by the data module (one tokenizer for every task).
        mode: ``heads`` (each structured task keeps its encoder head unless its data settings say
            ``head: generate``) or ``text_to_text`` (every task generates; set on the data too).
        task_options: task name -> its model settings: ``loss_weight`` (default 1; the task's loss is
            multiplied by it) and any setting of the task's own module that is not shared, e.g.
            ``crf``, ``pooling``, ``head_dropout``, ``label_smoothing``, ``generation``,
            ``val_generation``; defaults come from the ``model`` section of ``configs/NAME.yaml``.
            The network, optimizer and schedule settings below are shared and set once.
        task_setup: per task what the data decides (head, ``num_labels`` ...); linked from the data module.
        aggregate_weights: task name -> weight of its primary metric in ``val/score`` (default: equal).
        architecture ... coverage_attention: the shared network, as for one task (see
            :func:`s2s_tasks.nn.seq2seq.build_seq2seq`); a decoder is built when some task generates.
        learning_rate ... min_lr_ratio: the optimizer and schedule (see :class:`~s2s_tasks.module.BaseModule`).
        log_examples: validation predictions printed per task after each validation.
    """

    task_name = "multitask"

    def __init__(
        self,
        vocab_size: int = 0,
        pad_id: int = 0,
        mode: str = "heads",
        task_options: Optional[Dict[str, Dict[str, Any]]] = None,
        task_setup: Optional[Dict[str, Dict[str, Any]]] = None,
        aggregate_weights: Optional[Dict[str, float]] = None,
        architecture: str = "transformer",
        d_model: int = 256,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        num_heads: int = 4,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        positional: str = "sinusoidal",
        max_positions: int = 1024,
        rnn_cell: str = "lstm",
        bidirectional: bool = True,
        attention: str = "bahdanau",
        input_feeding: bool = True,
        embedding_dim: Optional[int] = None,
        tie_embeddings: bool = True,
        share_embeddings: bool = True,
        copy_attention: bool = False,
        copy_attention_head: Optional[int] = None,
        coverage_attention: bool = False,
        learning_rate: float = 5e-4,
        weight_decay: float = 0.0,
        adam_betas: Tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 1000,
        lr_schedule: str = "inverse_sqrt",
        min_lr_ratio: float = 0.0,
        log_examples: int = 2,
    ) -> None:
        super().__init__(learning_rate, weight_decay, adam_betas, warmup_steps, lr_schedule, min_lr_ratio)
        self.save_hyperparameters()
        if vocab_size <= 0:
            raise ValueError("model.vocab_size must be positive; it is linked from the data module's tokenizer "
                             "(run through the s2s-tasks CLI, or pass vocab_size)")
        if mode not in MODES:
            raise ValueError(f"model.mode must be one of {list(MODES)}, got {mode!r}")
        if not task_setup:
            raise ValueError("model.task_setup is empty: it is linked from data.tasks (run through the s2s-tasks CLI "
                             "with --task multitask, or pass the data module's task_setup)")
        task_options = dict(task_options or {})
        for name in task_options:
            if name not in task_setup:
                raise ValueError(f"model.task_options.{name}: {name!r} is not one of data.tasks ({', '.join(task_setup)}); "
                                 f"add data.tasks.{name} or remove model.task_options.{name}")
        for name in aggregate_weights or {}:
            if name not in task_setup:
                raise ValueError(f"model.aggregate_weights.{name}: {name!r} is not one of data.tasks ({', '.join(task_setup)})")
        network = {key: self.hparams[key] for key in NETWORK_KEYS}
        generating = [name for name, setup in task_setup.items() if setup.get("head", "generate") == "generate"]
        if generating:
            self.shared = build_seq2seq(vocab_size=vocab_size, pad_id=pad_id, **network)
            shared_encoder = self.shared.encoder
        else:
            encoder_keys = inspect.signature(build_encoder).parameters
            self.shared = build_encoder(vocab_size=vocab_size, pad_id=pad_id, **{k: v for k, v in network.items() if k in encoder_keys})
            shared_encoder = self.shared
        self.loss_weights: Dict[str, float] = {}
        modules = {}
        for name, setup in task_setup.items():
            settings = dict(task_options.get(name) or {})
            weight = float(settings.pop("loss_weight", 1.0))
            if not weight >= 0:
                raise ValueError(f"model.task_options.{name}.loss_weight must be >= 0, got {weight}")
            self.loss_weights[name] = weight
            module = self._task_module(name, settings, setup, network)
            # hard parameter sharing: the task's own network is replaced by the shared one
            if isinstance(module, StructuredModule) and not module.generates:
                module.encoder = shared_encoder
            else:
                module.model = self.shared
            modules[name] = module
        self.task_modules = nn.ModuleDict(modules)

    def _task_module(self, name: str, settings: Dict[str, Any], setup: Dict[str, Any], network: Dict[str, Any]):
        module_class, _ = get_task(name).classes()
        allowed = (set(init_parameters(module_class)) - set(NETWORK_KEYS) - set(OPTIMIZER_KEYS) - set(PEFT_KEYS)
                   - {"vocab_size", "pad_id", "init_from"} - set(SINGLE_TASK_KEYS) - set(setup))
        for key in settings:
            if key in allowed:
                continue
            if key in PEFT_KEYS or key == "init_from":
                fix = ("a multi-task model is trained whole; fine-tune one of its tasks with parameter-efficient tuning "
                       f"by `s2s-tasks fit --task {name} --model.init_from MULTITASK.ckpt --model.peft lora`")
            elif key in NETWORK_KEYS or key in OPTIMIZER_KEYS:
                fix = f"set model.{key} once: the network and the optimizer are shared by every task"
            elif key in SINGLE_TASK_KEYS:
                fix = SINGLE_TASK_KEYS[key].format(name=name)
            elif key == "head":
                fix = f"the data decides it: set data.tasks.{name}.head (or model.mode)"
            elif key in setup:
                fix = f"it is linked from the data (data.tasks.{name})"
            else:
                fix = f"the settings of {name} are: loss_weight, {', '.join(sorted(allowed))}"
            raise ValueError(f"model.task_options.{name}.{key} cannot be set per task: {fix}")
        defaults = {k: v for k, v in (get_task(name).default_config().get("model") or {}).items() if k in allowed}
        arguments = {**defaults, **settings, **setup, **network, "vocab_size": self.hparams.vocab_size, "pad_id": self.hparams.pad_id}
        return build(module_class, arguments)

    # ----------------------------------------------------------------------------- setup and checkpoints
    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        labels = getattr(datamodule, "label_names", None) or {}
        for name, module in self.task_modules.items():
            module.trainer = self.trainer  # for its decoding settings and printing
            module.tokenizer = self.tokenizer
            if name in labels:
                module.label_names = list(labels[name])

    def label_maps(self) -> Dict[str, List[str]]:
        """Each labelled task's label inventory, under the task's name."""
        return {name: list(module.label_names) for name, module in self.task_modules.items()
                if isinstance(module, StructuredModule) and module.label_names}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        from s2s_tasks.checkpoint import EXTRAS_KEY

        stored = checkpoint[EXTRAS_KEY].get("label_maps") or {}
        for name, module in self.task_modules.items():
            module.tokenizer = self.tokenizer
            if stored.get(name):
                if module.label_names and module.label_names != stored[name]:
                    raise ValueError(f"the checkpoint's {name} labels {stored[name]} differ from the data's {module.label_names}; "
                                     f"leave data.tasks.{name}.labels unset to use the checkpoint's")
                module.label_names = list(stored[name])

    # ----------------------------------------------------------------------------- training
    def forward(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """The batch's task's training losses (see its ``training_losses``)."""
        return self.task_modules[batch["task"]].training_losses(batch)

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        name = batch["task"]
        losses = self(batch)
        count = int(losses["tokens"])
        loss = self.loss_weights[name] * losses["loss"]
        self.log(f"train/{name}/loss", losses["loss"].detach(), batch_size=count)
        self.log("train/loss", loss, prog_bar=True, batch_size=count)
        return loss

    # ----------------------------------------------------------------------------- evaluation
    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self.task_modules[batch["task"]]._eval_step(batch, "val")

    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self.task_modules[batch["task"]]._eval_step(batch, "test")

    def _finish_eval(self, stage: str) -> None:
        metrics: Dict[str, float] = {}
        primary: Dict[str, float] = {}
        printed: List[str] = []
        for name, module in self.task_modules.items():
            results, examples, signatures = module.eval_results(stage)  # collective: every rank, every task
            if not results:
                continue
            metrics.update({f"{stage}/{name}/{key}": value for key, value in results.items()})
            if module.primary_metric in results:
                primary[name] = results[module.primary_metric]
            if signatures and not self.trainer.sanity_checking:
                printed.append(f"  {name}: " + " | ".join(f"{k} signature: {v}" for k, v in signatures.items()))
            printed += [f"  [{name}]\n" + module.format_example(row) for row in examples[: self.hparams.log_examples]]
        if primary:
            weights = {name: float((self.hparams.aggregate_weights or {}).get(name, 1.0)) for name in primary}
            total = math.fsum(weights.values())
            metrics[f"{stage}/score"] = math.fsum(weights[n] * primary[n] for n in primary) / total if total > 0 else 0.0
        score = metrics.pop(f"{stage}/score", None)
        self.log_dict(metrics, sync_dist=False)  # gathered from every rank already
        if score is not None:
            self.log(f"{stage}/score", score, prog_bar=True, sync_dist=False)
            metrics[f"{stage}/score"] = score
        if not self.trainer.sanity_checking:
            summary = " | ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            self.print(f"[{stage} epoch {self.current_epoch} step {self.global_step}] {summary}")
            for line in printed:
                self.print(line)

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    # ----------------------------------------------------------------------------- predict
    def predict_step(self, batch: Dict[str, Any], batch_idx: int) -> List[Dict[str, Any]]:
        name = batch["task"]
        return [{"task": name, **record} for record in self.task_modules[name].predict_step(batch, batch_idx)]

    def merge_prediction_records(self, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Records of all tasks -> one per input in input order (each task merges its own, e.g. QA windows)."""
        merged: List[Dict[str, Any]] = []
        for name, module in self.task_modules.items():
            own = [r for r in records if r["task"] == name]
            merge = getattr(module, "merge_prediction_records", None)
            merged += merge(own) if merge is not None else list({r["index"]: r for r in own}.values())
        return sorted(merged, key=lambda record: record["index"])

