"""The base LightningModule: optimizer, learning-rate schedule, tokenizer hand-over, checkpoint extras.

Task modules subclass it (directly or through :class:`s2s_tasks.seq2seq_module.Seq2SeqModule`)
and add their head, steps and metrics.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any, ClassVar, Dict, List, Optional, Tuple

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from pytorch_lightning.utilities import GradClipAlgorithmType

from s2s_tasks import __version__
from s2s_tasks.checkpoint import EXTRAS_KEY
from s2s_tasks.data.tokenizer import tokenizer_from_json
from s2s_tasks.nn.peft import peft_parameters
from s2s_tasks.optim import adamw, lr_multiplier

log = logging.getLogger(__name__)

# pytorch-lightning 2.6 builds torch's LeafSpec, which torch 2.13 deprecates: the message comes
# once in every run and there is nothing for a user to do about it
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")

#: the checkpoint extras' record that the frozen weights were left out (``model.save_trainable_only``)
TRAINABLE_ONLY_KEY = "trainable_only"


def warn_if_slow_bf16(precision: str, device: torch.device) -> bool:
    """Warn (and return True) when bf16 is asked for on a CPU without bf16 instructions
    (AVX512-BF16 or AMX), where PyTorch's bf16 matrix products run without hardware support:
    7 to 80 times slower than float32 by shape on a 2-core AVX2 machine, a training step 21 times
    (``benchmarks/speed.py``)."""
    if not precision.startswith("bf16") or device.type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    log.warning(
        "`trainer.precision: %s` on a CPU without bf16 instructions (%s, no AVX512-BF16 or AMX): bf16 matrix "
        "products run without hardware support and are many times slower than float32 here; set "
        "`--trainer.precision 32-true` on this machine", precision, torch.backends.cpu.get_cpu_capability(),
    )
    return True


class BaseModule(pl.LightningModule):
    """Shared training machinery.

    Args:
        learning_rate: peak learning rate of AdamW (Loshchilov & Hutter 2019).
        weight_decay: decoupled weight decay, not applied to biases, norms and embeddings.
        adam_betas: AdamW betas.
        warmup_steps: linear warmup length in optimizer steps.
        lr_schedule: ``inverse_sqrt``, ``linear``, ``cosine`` or ``constant`` after warmup.
        min_lr_ratio: final rate of ``linear``/``cosine`` as a fraction of the peak.
    """

    #: registry name of the task; stored in checkpoints and checked on load
    task_name: ClassVar[str] = ""

    def __init__(
        self,
        learning_rate: float = 5e-4,
        weight_decay: float = 0.0,
        adam_betas: Tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 1000,
        lr_schedule: str = "inverse_sqrt",
        min_lr_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        lr_multiplier(lr_schedule, warmup_steps, warmup_steps + 1, min_lr_ratio)  # validates early
        self.tokenizer = None

    def configure_callbacks(self) -> List[pl.Callback]:
        """Callbacks every run needs whatever ``trainer.callbacks`` lists: exact resume (data
        position and random states in the checkpoint) and the stop on a NaN/inf training loss."""
        from s2s_tasks.callbacks import NonFiniteLossCheck, ResumeState

        return [ResumeState(), NonFiniteLossCheck()]

    # ----------------------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            is_embedding_or_norm = param.ndim < 2 or "embed" in name or "norm" in name
            (no_decay if is_embedding_or_norm else decay).append(param)
        optimizer = adamw(
            [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=hp.learning_rate,
            betas=tuple(hp.adam_betas),
            # a fused optimizer unscales fp16 gradients inside its step, after Lightning would clip them
            fused=False if self._gradient_scaler() is not None else None,
        )
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else hp.warmup_steps + 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_multiplier(hp.lr_schedule, hp.warmup_steps, total, hp.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _gradient_scaler(self) -> Optional[Any]:
        """The trainer's fp16 gradient scaler (``16-mixed``), or None."""
        return getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: Optional[float] = None,
        gradient_clip_algorithm: Optional[str] = None,
    ) -> None:
        """Lightning's clipping, also for the fused AdamW under ``bf16-mixed``: Lightning's
        mixed-precision plugin refuses to clip for optimizers that unscale gradients in their
        step, which only matters with an fp16 gradient scaler (then the optimizer is not fused)."""
        plugin = self.trainer.precision_plugin
        fused = getattr(optimizer, "_step_supports_amp_scaling", False)
        if gradient_clip_val and fused and isinstance(plugin, MixedPrecision) and self._gradient_scaler() is None:
            # the gradients are not scaled: the base plugin's clipping is exact
            Precision.clip_gradients(plugin, optimizer, gradient_clip_val, GradClipAlgorithmType(gradient_clip_algorithm or "norm"))
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ----------------------------------------------------------------------------- tokenizer and checkpoints
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and getattr(datamodule, "tokenizer", None) is not None:
            self.tokenizer = datamodule.tokenizer
        if self._trainer is not None:
            warn_if_slow_bf16(str(self.trainer.precision), self.trainer.strategy.root_device)
        init_from = self.hparams.get("init_from")
        if init_from and not getattr(self, "_initialised", False):
            # before Lightning restores a --ckpt_path checkpoint (which then wins) and before the optimizer exists
            self.initialise_from(init_from)
            self._initialised = True

    def initialise_from(self, path: str) -> None:
        """Copy the weights of checkpoint ``path`` into this model (``model.init_from``).

        From a multi-task checkpoint the weights of this task's module are taken (prefix
        ``task_modules.<task>.``), or, when the task was not one of its tasks, the shared network
        (``shared.``). Every tensor whose name and shape match is copied; the others keep their
        fresh initialisation and are reported (e.g. a classifier over a different label set).
        """
        from s2s_tasks.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(path)
        extras = checkpoint.get(EXTRAS_KEY) or {}
        if extras.get(TRAINABLE_ONLY_KEY):
            raise ValueError(
                f"model.init_from {path} holds only the weights trained by parameter-efficient fine-tuning "
                "(model.save_trainable_only), not the frozen base; pass a full checkpoint, e.g. the base it was "
                f"fine-tuned from ({extras[TRAINABLE_ONLY_KEY].get('base')}), and this one with --ckpt_path"
            )
        state: Dict[str, torch.Tensor] = dict(checkpoint.get("state_dict") or {})
        own = self.state_dict()
        if extras.get("task") == "multitask" and self.task_name != "multitask":
            prefix = f"task_modules.{self.task_name}."
            if not any(key.startswith(prefix) for key in state):
                # a task the multi-task model did not learn: its shared network only
                target = "model." if any(key.startswith("model.") for key in own) else ""
                if not target and any(key.startswith("shared.encoder.") for key in state):
                    prefix = "shared.encoder."
                else:
                    prefix = "shared."
                state = {target + key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
                if not target:
                    state = {"encoder." + key: value for key, value in state.items()}
            else:
                state = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        matching = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
        if not matching:
            raise ValueError(
                f"model.init_from {path}: none of its weights fit this model (task {extras.get('task')!r}, "
                f"{len(state)} tensors); check the architecture settings (model.d_model, layers ...) or pass another checkpoint"
            )
        self.load_state_dict(matching, strict=False)
        misfits = sorted(key for key in state if key in own and key not in matching)
        added = {name for name, _ in peft_parameters(self)}  # LoRA / adapters: they start as the identity
        fresh = sorted(key for key in own if key not in matching and key not in added)
        log.info("model.init_from %s: %d of this model's %d tensors initialised from the checkpoint (task %s)%s",
                 path, len(matching), len(own), extras.get("task"),
                 f"; {len(added - set(matching))} LoRA / adapter tensors start as the identity" if added - set(matching) else "")
        if fresh:
            log.warning("model.init_from: %d tensors start from scratch%s: %s", len(fresh),
                        f" ({len(misfits)} of a different shape in the checkpoint)" if misfits else "",
                        ", ".join(fresh[:8]) + (" ..." if len(fresh) > 8 else ""))

    def label_maps(self) -> Dict[str, List[str]]:
        """Label inventories (e.g. ``{"labels": [...]}``) saved in checkpoints; none for text generation."""
        return {}

    def checkpoint_extras(self) -> Dict[str, Any]:
        """What a checkpoint needs besides weights so that ``predict`` needs no other file."""
        if self.tokenizer is None:
            raise RuntimeError("the module has no tokenizer to save; it is set from the datamodule in setup()")
        extras: Dict[str, Any] = {
            "task": self.task_name,
            "version": __version__,
            "tokenizer": self.tokenizer.to_str(),
            "label_maps": self.label_maps(),
        }
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            extras["data_config"] = {k: v for k, v in dict(datamodule.hparams).items() if isinstance(v, (str, int, float, bool, type(None)))}
        return extras

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint[EXTRAS_KEY] = self.checkpoint_extras()
        if self.hparams.get("save_trainable_only"):
            # every name of a frozen tensor, tied ones too (named_parameters() would name them once)
            frozen = {name for name, param in self.named_parameters(remove_duplicate=False) if not param.requires_grad}
            state = checkpoint["state_dict"]
            for name in frozen:
                state.pop(name, None)
            checkpoint[EXTRAS_KEY][TRAINABLE_ONLY_KEY] = {
                "base": self.hparams.get("init_from") or self.hparams.get("pretrained"), "left_out": len(frozen), "base_fingerprint": self.frozen_fingerprint(),
            }

    def frozen_fingerprint(self) -> float:
        """A number that identifies the frozen weights (the sum of their squares, in float64): a
        checkpoint without them records it, so that loading it on another base is caught."""
        return math.fsum(float(p.detach().double().square().sum()) for p in self.parameters() if not p.requires_grad)

    def _complete_from_base(self, checkpoint: Dict[str, Any]) -> None:
        """Fill the frozen weights that a ``save_trainable_only`` checkpoint left out from
        ``model.init_from`` (loaded in :meth:`setup`, or here when the module was built outside a
        Trainer), so that Lightning's strict loading sees every tensor."""
        partial = checkpoint[EXTRAS_KEY][TRAINABLE_ONLY_KEY]
        if not getattr(self, "_initialised", False) and (self.hparams.get("init_from") or not self.hparams.get("pretrained")):
            # (a model.pretrained network has its frozen base from the pretrained model already)
            init_from = self.hparams.get("init_from")
            if not init_from:
                raise ValueError(
                    f"this checkpoint holds only the weights trained by parameter-efficient fine-tuning "
                    f"(model.save_trainable_only; {partial.get('left_out')} frozen tensors were left out); the frozen "
                    f"base comes from model.init_from: add --model.init_from {partial.get('base') or 'BASE.ckpt'} "
                    "(the checkpoint it was fine-tuned from)"
                )
            self.initialise_from(init_from)
            self._initialised = True
        expected, found = partial.get("base_fingerprint"), self.frozen_fingerprint()
        if expected is not None and not math.isclose(expected, found, rel_tol=1e-6):
            raise ValueError(
                f"model.init_from {self.hparams.get('init_from')} is not the base this checkpoint was fine-tuned from "
                f"({partial.get('base')}): its frozen weights differ (fingerprint {found:.6g}, expected {expected:.6g}); "
                "pass the checkpoint it was fine-tuned from with --model.init_from"
            )
        state = checkpoint["state_dict"]
        for name, value in self.state_dict().items():
            state.setdefault(name, value)

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        extras = checkpoint.get(EXTRAS_KEY)
        if not isinstance(extras, dict):
            raise ValueError("this is not an s2s-tasks checkpoint: it has no 's2s_tasks' section")
        if extras.get("task") != self.task_name:
            raise ValueError(
                f"the checkpoint was trained for task {extras.get('task')!r}, not {self.task_name!r}; "
                f"run with --task {extras.get('task')}"
            )
        stored_peft = (checkpoint.get("hyper_parameters") or {}).get("peft")
        if stored_peft != self.hparams.get("peft"):
            raise ValueError(
                f"the checkpoint was trained with model.peft {stored_peft!r} and this model has {self.hparams.get('peft')!r}; "
                "--ckpt_path continues or evaluates a run as it was trained: to fine-tune a checkpoint with PEFT, "
                "pass it with --model.init_from instead"
            )
        if extras.get(TRAINABLE_ONLY_KEY):
            self._complete_from_base(checkpoint)
        stored = tokenizer_from_json(extras["tokenizer"], "the checkpoint's tokenizer")
        if self.tokenizer is not None and self.tokenizer.get_vocab() != stored.get_vocab():
            raise ValueError(
                "the checkpoint's tokenizer differs from the data module's (data.tokenizer_file); "
                "leave data.tokenizer_file unset to use the checkpoint's own"
            )
        self.tokenizer = stored

    # ----------------------------------------------------------------------------- distributed helpers
    def gather_objects(self, items: List[Any]) -> List[Any]:
        """All ranks' python objects concatenated (identity on a single process)."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return items
        gathered: List[Optional[List[Any]]] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, items)
        return [item for part in gathered for item in (part or [])]
