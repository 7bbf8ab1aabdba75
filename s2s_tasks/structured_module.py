"""LightningModule of the tasks that predict structure from text (classification, NER, extractive
QA, relation extraction), with two interchangeable heads:

* ``head: encoder`` -- the shared encoder (``model.architecture``: Transformer or RNN) and a task
  head over its states;
* ``head: generate`` -- the shared encoder-decoder, text-to-text: the data module renders the gold
  structure as target text and :meth:`StructuredModule.parse_generated` reads generated text back
  into the same structure, so both heads are scored by the same :meth:`compute_metrics`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from s2s_tasks.checkpoint import EXTRAS_KEY
from s2s_tasks.data.structured import HEADS
from s2s_tasks.data.tokenizer import SPECIAL_TOKENS, UNK_ID
from s2s_tasks.nn.character import SubwordCharacterCNN
from s2s_tasks.nn.seq2seq import build_encoder
from s2s_tasks.nn.types import EncoderOutput
from s2s_tasks.nn.word_dropout import special_token_mask, word_dropout
from s2s_tasks.seq2seq_module import Seq2SeqModule

Row = Tuple[Any, Any, Any]  # (key, prediction, gold)

#: the error for ``model.ensemble`` with a task whose head outputs are not averaged
NOT_AVERAGED = ("model.ensemble is not available for task {task}: {outputs} are not per-class scores to average; "
                "drop model.ensemble")
#: the error for ``model.ensemble`` in fit (the CLI says it before the data are prepared, setup() for Python callers)
ENSEMBLE_IN_FIT = ("model.ensemble averages trained models in validate, test and predict; "
                   "drop it from fit (train each member with its own fit)")


def mean_probability_logits(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """``logits``: one ``(..., C)`` tensor per model -> ``log(mean_m softmax(logits_m))``, float32.

    Log-sum-exp over the models keeps positions masked with the dtype's lowest value finite."""
    log_probs = torch.stack([x.float().log_softmax(-1) for x in logits])
    return torch.logsumexp(log_probs, dim=0) - math.log(len(logits))


class StructuredModule(Seq2SeqModule):
    """Base of the structured-prediction tasks; subclasses implement the head hooks
    (:meth:`build_head`, :meth:`head_forward`, :meth:`head_loss`, :meth:`head_predict`),
    :meth:`parse_generated` and :meth:`compute_metrics`.

    Args:
        head: ``encoder`` (encoder + task head; the decoder options are unused) or ``generate``
            (encoder-decoder, text-to-text; decoding follows ``model.generation`` /
            ``model.val_generation``).
        num_labels: size of the label inventory, linked from the data module.
        head_dropout: dropout on the features the head's output layer reads.
        word_dropout: the probability with which ``head: encoder`` training replaces each input
            token by ``<unk>`` (:mod:`s2s_tasks.nn.word_dropout`; special tokens are kept); 0 off.
        char_cnn: with ``head: encoder``, the number of filters of a character CNN over each
            token's spelling (:class:`~s2s_tasks.nn.character.SubwordCharacterCNN`, Ma & Hovy
            2016), whose features are added to the token embeddings; 0 off. Its character
            embeddings take ``model.dropout``. Measured (README, Results): it helps the NER and QA
            presets; the SST-2 classification preset does not learn with it (the features start
            several times larger than the token embeddings), and relation extraction gains nothing.
        ensemble: checkpoints of other models of the task (e.g. the same config trained with other
            seeds) whose predictions are averaged with this model's in ``validate``, ``test`` and
            ``predict`` (``head: encoder``): the members' probabilities are averaged, as in
            Hansen and Salamon (1990) and Lakshminarayanan et al. (2017). Each member must
            share the run's tokenizer, labels and data settings (checked when they load).
            Tasks whose head outputs cannot be averaged set :attr:`averages_ensembles` false.
        **kwargs: network, optimisation and decoding arguments of
            :class:`~s2s_tasks.seq2seq_module.Seq2SeqModule`.
    """

    #: whether :meth:`ensemble_outputs` averages this task's head outputs (``model.ensemble``);
    #: read by ``benchmarks/quality.py --seeds`` too
    averages_ensembles: ClassVar[bool] = True

    def __init__(self, head: str = "encoder", num_labels: int = 0, head_dropout: float = 0.1, word_dropout: float = 0.0,
                 char_cnn: int = 0, ensemble: Optional[List[str]] = None, **kwargs: Any) -> None:
        if head not in HEADS:
            raise ValueError(f"model.head must be one of {list(HEADS)}, got {head!r}")
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"model.word_dropout must be in [0, 1), got {word_dropout}")
        if word_dropout > 0 and head != "encoder":
            raise ValueError("model.word_dropout applies to model.head encoder; set it to 0 with model.head generate")
        if char_cnn < 0:
            raise ValueError(f"model.char_cnn must be >= 0 (0: no character features), got {char_cnn}")
        if char_cnn > 0 and (head != "encoder" or kwargs.get("pretrained")):
            raise ValueError("model.char_cnn adds character features to the embeddings of a model trained from scratch "
                             "with model.head encoder; set it to 0 with model.head generate or model.pretrained")
        if ensemble and not self.averages_ensembles:
            raise ValueError(NOT_AVERAGED.format(task=self.task_name, outputs="its head's outputs"))
        if ensemble and head != "encoder":
            raise ValueError("model.ensemble averages the task heads' probabilities: it needs model.head encoder "
                             f"(this run has model.head {head}); drop model.ensemble")
        if head == "encoder":
            for key in ("copy_attention", "coverage_attention"):
                if kwargs.get(key):
                    raise ValueError(f"model.{key} needs a decoder; it applies with model.head: generate only "
                                     f"(set --model.head generate, or drop --model.{key})")
            if kwargs.get("coverage_loss_weight", 0.0) > 0:
                raise ValueError("model.coverage_loss_weight needs a decoder; it applies with model.head: generate only "
                                 "(set --model.head generate, or set --model.coverage_loss_weight 0)")
        super().__init__(**kwargs)  # save_hyperparameters there records head, num_labels, head_dropout, ensemble too
        self.label_names: List[str] = []
        self._ensemble_members: List["StructuredModule"] = []  # a plain list: not saved with this model's weights
        self._word_keep: Optional[torch.Tensor] = None  # ids word dropout never replaces (the special tokens)
        self._spelled_with: Any = None  # the tokenizer the character CNN's spellings come from

    @property
    def generates(self) -> bool:
        return self.hparams.head == "generate"

    @property
    def reports_perplexity(self) -> bool:  # type: ignore[override]
        return self.generates

    def build_network(self, network_args: Dict[str, Any]) -> None:
        if self.generates:
            super().build_network(network_args)
            return
        if self.hparams.get("pretrained"):
            from s2s_tasks.nn.pretrained import PretrainedEncoder

            self.encoder = PretrainedEncoder(self.hparams.pretrained, self.hparams.vocab_size)
        else:
            encoder_keys = inspect.signature(build_encoder).parameters
            self.encoder = build_encoder(**{k: v for k, v in network_args.items() if k in encoder_keys})
            filters = self.hparams.get("char_cnn", 0)
            if filters:
                embed = self.encoder.embed
                embed.features = SubwordCharacterCNN(embed.dim, filters=filters, dropout=self.hparams.dropout)
        self.task_head = self.build_head(self.encoder.output_size)

    # ----------------------------------------------------------------------------- task hooks
    def build_head(self, input_size: int) -> nn.Module:
        """The head over encoder states of size ``input_size``."""
        raise NotImplementedError

    def head_forward(self, batch: Dict[str, Any], enc_out: EncoderOutput) -> Any:
        """Head outputs (e.g. logits) for a batch."""
        raise NotImplementedError

    def head_loss(self, outputs: Any, batch: Dict[str, Any]) -> Tuple[torch.Tensor, int]:
        """(summed loss, number of items it sums over) for a labelled batch."""
        raise NotImplementedError

    def head_predict(self, outputs: Any, batch: Dict[str, Any]) -> List[Any]:
        """One prediction per batch row, in the same form as the data module's ``gold``."""
        raise NotImplementedError

    def parse_generated(self, texts: List[str], batch: Dict[str, Any]) -> List[Any]:
        """Generated texts -> predictions in the form of ``gold`` (unparseable text -> an empty/invalid prediction)."""
        raise NotImplementedError

    def compute_metrics(self, predictions: Sequence[Any], golds: Sequence[Any]) -> Tuple[Dict[str, float], Dict[str, str]]:
        raise NotImplementedError

    def prediction_record(self, prediction: Any, batch: Dict[str, Any], i: int, outputs: Any = None) -> Dict[str, Any]:
        """The fields written to the predictions file for row ``i`` (besides index and source);
        ``outputs`` are the head's outputs for the batch (``None`` in generate mode)."""
        return {"prediction": prediction}

    def ensemble_outputs(self, outputs: List[Any]) -> Any:
        """Several models' :meth:`head_forward` outputs for one batch -> one output of the same form,
        which :meth:`head_loss`, :meth:`head_predict` and :meth:`prediction_record` read as usual.

        The default takes a tensor of logits over the last dimension, or a tuple of them (QA's
        start and end logits), and returns the log of the members' mean softmax probabilities:
        read as logits, their argmax, span scores and cross-entropy are the averaged model's.
        Heads whose outputs are not such scores override this (or cannot be averaged)."""
        first = outputs[0]
        if isinstance(first, torch.Tensor) and first.is_floating_point():
            return mean_probability_logits(outputs)
        if type(first) is tuple and all(isinstance(x, torch.Tensor) and x.is_floating_point() for x in first):
            return tuple(mean_probability_logits([o[k] for o in outputs]) for k in range(len(first)))
        raise ValueError(NOT_AVERAGED.format(task=self.task_name, outputs=f"its head's outputs ({type(first).__name__})"))

    # ----------------------------------------------------------------------------- training and evaluation
    def encode(self, batch: Dict[str, Any]) -> EncoderOutput:
        ids = batch["src_ids"]
        p = self.hparams.get("word_dropout", 0.0)
        if self.training and p > 0:
            if self._word_keep is None or self._word_keep.device != ids.device:
                self._word_keep = self._special_token_ids().to(ids.device)
            ids = word_dropout(ids, p, self._word_keep, UNK_ID)
        self._spell_tokens()
        extra = self.input_features(batch)
        if extra is None:
            return self.encoder(ids, batch["src_mask"])
        return self.encoder(ids, batch["src_mask"], extra_embeddings=extra)

    def input_features(self, batch: Dict[str, Any]) -> Optional[torch.Tensor]:
        """``None``, or ``(B, S, E)`` added to the encoder's token embeddings (``E`` its embedding
        size): per-token input features a task computes from the batch. Default ``None``."""
        return None

    def _spell_tokens(self) -> None:
        """Give the character CNN (``model.char_cnn``) the spelling of each id, from the run's
        tokenizer (the data module's, or the one a checkpoint stores) when it changes."""
        characters = getattr(getattr(self.encoder, "embed", None), "features", None)
        if not isinstance(characters, SubwordCharacterCNN):
            return
        if characters.has_vocabulary and self._spelled_with is self.tokenizer:
            return
        if self.tokenizer is None:
            raise ValueError("model.char_cnn reads the spelling of each token from the tokenizer, and this model has "
                             "none: run it through s2s-tasks (or a Trainer with the task's data module), or load a checkpoint")
        characters.set_vocabulary([self.tokenizer.id_to_token(i) or "" for i in range(self.hparams.vocab_size)])
        self._spelled_with = self.tokenizer

    def _special_token_ids(self) -> torch.Tensor:
        if self.tokenizer is not None and hasattr(self.tokenizer, "get_added_tokens_decoder"):
            return special_token_mask(self.tokenizer, self.hparams.vocab_size)
        keep = torch.zeros(self.hparams.vocab_size, dtype=torch.bool)
        keep[: len(SPECIAL_TOKENS)] = True  # <pad> <unk> <s> </s>: ids 0-3 in every s2s-tasks tokenizer
        return keep

    def training_losses(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """``loss`` (mean over the items the head scores) and ``tokens`` (how many items);
        with ``head: generate`` the per-token losses of :class:`Seq2SeqModule`."""
        if self.generates:
            return super().training_losses(batch)
        loss_sum, count = self.head_loss(self.head_forward(batch, self.encode(batch)), batch)
        return {"loss": loss_sum / max(count, 1), "tokens": torch.tensor(max(count, 1))}

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        if self.generates:
            return super().training_step(batch, batch_idx)
        losses = self.training_losses(batch)
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=int(losses["tokens"]))
        return losses["loss"]

    def head_outputs(self, batch: Dict[str, Any]) -> Any:
        """:meth:`head_forward` of this model, averaged with the ``model.ensemble`` members' if any."""
        outputs = self.head_forward(batch, self.encode(batch))
        if not self._ensemble_members:
            return outputs
        for member in self._ensemble_members:
            if member.device != self.device:
                member.to(self.device)
        return self.ensemble_outputs([outputs, *(m.head_forward(batch, m.encode(batch)) for m in self._ensemble_members)])

    def _eval_step(self, batch: Dict[str, Any], stage: str) -> None:
        if self.generates:
            super()._eval_step(batch, stage)
            return
        outputs = self.head_outputs(batch)
        loss_sum, count = self.head_loss(outputs, batch)
        self._eval_nll.setdefault(stage, []).append((self.batch_key(batch), float(loss_sum), float(count)))
        rows = zip(self.row_keys(batch), self.head_predict(outputs, batch), batch["gold"])
        self._eval_outputs.setdefault(stage, []).extend(rows)

    def eval_rows(self, batch: Dict[str, Any], texts: List[List[str]]) -> List[Row]:
        predictions = self.parse_generated([t[0] for t in texts], batch)
        return list(zip(self.row_keys(batch), predictions, batch["gold"]))

    def format_example(self, row: Row) -> str:
        key, prediction, gold = row
        return f"  #{key} pred: {prediction!r}\n  #{key} gold: {gold!r}"

    @torch.no_grad()
    def predict_step(self, batch: Dict[str, Any], batch_idx: int) -> List[Dict[str, Any]]:
        outputs = None
        if self.generates:
            texts, _ = self.decode(batch, self.generation)
            predictions = self.parse_generated([t[0] for t in texts], batch)
        else:
            outputs = self.head_outputs(batch)
            predictions = self.head_predict(outputs, batch)
        records = []
        for i, (index, source) in enumerate(zip(batch["index"].tolist(), batch["source"])):
            record = {"index": index, "source": source}
            record.update(self.prediction_record(predictions[i], batch, i, outputs))
            if self.generates:
                record["generated"] = texts[i][0]
            records.append(record)
        return records

    def merge_prediction_records(self, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """All ranks' predict records -> one per input in input order (DDP duplicates dropped)."""
        return [record for _, record in sorted({r["index"]: r for r in records}.items())]

    # ----------------------------------------------------------------------------- labels
    def argmax_labels(self, logits: torch.Tensor) -> List[str]:
        """``logits (B, num_labels)`` -> the most likely label name of each row."""
        return [self.label_names[i] for i in logits.argmax(-1).tolist()]

    def parse_labels(self, texts: List[str]) -> List[Optional[str]]:
        """Generated texts -> the label each names exactly (spaces around ignored), else ``None``."""
        known = set(self.label_names)
        return [t.strip() if t.strip() in known else None for t in texts]

    def label_probabilities(self, logits: torch.Tensor) -> Dict[str, float]:
        """``logits (num_labels,)`` -> ``{label: softmax probability}`` (6 decimals)."""
        return {label: round(p, 6) for label, p in zip(self.label_names, logits.float().softmax(-1).tolist())}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "label_names"):
            self.label_names = list(datamodule.label_names)
        if self.hparams.get("ensemble"):
            if stage == "fit":
                raise ValueError(ENSEMBLE_IN_FIT)
            if not self._ensemble_members:
                self._ensemble_members = [self._load_ensemble_member(path, datamodule) for path in self.hparams.ensemble]

    def _load_ensemble_member(self, path: str, datamodule: Any) -> "StructuredModule":
        """One ``model.ensemble`` checkpoint as a frozen model, checked against this run."""
        from s2s_tasks.checkpoint import load_checkpoint
        from s2s_tasks.cli import DATA_LOCATION_KEYS

        checkpoint = load_checkpoint(path)
        extras = checkpoint.get(EXTRAS_KEY) or {}
        where = f"model.ensemble member {path}"
        if extras.get("task") != self.task_name:
            raise ValueError(f"{where} is a {extras.get('task') or 'non-s2s-tasks'} checkpoint, not a {self.task_name} one; "
                             f"list {self.task_name} checkpoints in model.ensemble")
        if (checkpoint.get("hyper_parameters") or {}).get("head", "encoder") != "encoder":
            raise ValueError(f"{where} has a generate head; model.ensemble averages encoder heads only")
        stored = {k: v for k, v in (checkpoint.get("datamodule_hyper_parameters") or {}).items()
                  if k not in DATA_LOCATION_KEYS and not k.startswith("_")}
        current = dict(getattr(datamodule, "hparams", {}) or {})
        differ = sorted(k for k, v in stored.items() if k in current and current[k] != v)
        if differ:
            raise ValueError(f"{where} encodes its data differently from this run ("
                             + ", ".join(f"data.{k}: {stored[k]!r} there, {current[k]!r} here" for k in differ)
                             + "); ensemble models trained with the same data settings")
        del checkpoint
        member = type(self).load_from_checkpoint(path, map_location="cpu")
        if self.tokenizer is not None and member.tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(f"{where} has another tokenizer than this run's (the --ckpt_path checkpoint's or "
                             "data.tokenizer_file); ensemble models trained on the same data with the same data.tokenizer_* settings")
        if member.label_names != self.label_names:
            raise ValueError(f"{where} has the labels {member.label_names}, this run {self.label_names}; "
                             "ensemble models trained with the same label set")
        member.eval().requires_grad_(False)
        return member

    def label_maps(self) -> Dict[str, List[str]]:
        return {"labels": list(self.label_names)}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        stored = list((checkpoint[EXTRAS_KEY].get("label_maps") or {}).get("labels") or [])
        if self.label_names and stored and self.label_names != stored:
            raise ValueError(
                f"the checkpoint's labels {stored} differ from the data module's {self.label_names}; "
                "leave data.labels unset to use the checkpoint's"
            )
        self.label_names = stored
