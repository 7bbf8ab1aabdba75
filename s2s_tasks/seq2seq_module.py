"""LightningModule for tasks that generate text: an encoder-decoder trained with teacher forcing
and evaluated by decoding (one decoding path for validate, test and predict)."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import warnings
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from s2s_tasks.data.tokenizer import BOS_ID, EOS_ID, decode_batch
from s2s_tasks.generation import GenerationConfig, generate
from s2s_tasks.module import BaseModule
from s2s_tasks.nn.copy import coverage_loss
from s2s_tasks.nn.linear_cross_entropy import decoder_losses
from s2s_tasks.nn.packed_linear import packed_projections
from s2s_tasks.nn.peft import LORA_TARGETS, add_adapters, add_lora, count_parameters, freeze_base
from s2s_tasks.nn.seq2seq import build_seq2seq
from s2s_tasks.nn.types import EncoderOutput

log = logging.getLogger(__name__)

PEFT_METHODS = ("lora", "adapter")
#: the PEFT settings (recorded in the hyperparameters only when model.peft is set)
PEFT_KEYS = ("peft", "lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "adapter_size",
             "peft_train_norms", "save_trainable_only")

# evaluation metrics are computed from all ranks' rows gathered on every rank (_finish_eval), so
# they are logged with sync_dist=False: Lightning's advice to sync them does not apply
warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)/", category=UserWarning)


def _as_generation_config(value: Union[GenerationConfig, Dict[str, Any], None], default: GenerationConfig) -> GenerationConfig:
    if value is None:
        return default
    if isinstance(value, GenerationConfig):
        return value
    return GenerationConfig(**dict(value))


class Seq2SeqModule(BaseModule):
    """Encoder-decoder for text-to-text tasks; subclasses define :meth:`compute_metrics`.

    Model args (see :func:`s2s_tasks.nn.seq2seq.build_seq2seq`): ``architecture`` (``transformer``
    or ``rnn``), ``d_model``, layers, heads, ``ffn_dim``, ``dropout``, ``positional``, and for RNNs
    ``rnn_cell``, ``bidirectional``, ``attention`` (``bahdanau``, ``luong_dot``, ``luong_general``,
    ``luong_concat``), ``input_feeding``, ``embedding_dim``.

    Args:
        vocab_size, pad_id: set by the data module (linked by the CLI).
        copy_attention: pointer-generator decoder (See et al., 2017): the output mixes generating
            from the vocabulary with copying source tokens (see :mod:`s2s_tasks.nn.copy`).
        copy_attention_head: Transformer only: the last-layer cross-attention head whose
            weights are the copy distribution (default: the mean over heads).
        coverage_attention: RNN only: the attention scores also see the coverage vector, the
            sum of the previous steps' attention (See et al., 2017, eq. 11).
        coverage_loss_weight: weight ``lambda`` of the coverage loss ``sum_t sum_i min(a_t,i, c_t,i)``
            per target token (See et al., 2017, eq. 12-13) added to the training loss and logged
            as ``train/coverage_loss``; it penalises the decoder's attention over the source (the
            copy distribution when ``copy_attention``). 0 disables it.
        label_smoothing: label smoothing of the training loss (Szegedy et al. 2016).
        generation: decoding used by test and predict (and validation every
            ``beam_validation_every_n_epochs``).
        val_generation: decoding used for the validation metric every epoch (greedy by default: cheap).
        beam_validation_every_n_epochs: if > 0, also decode the first ``beam_validation_examples``
            validation examples with ``generation`` every that many epochs (logged as ``val/beam_*``).
        log_examples: how many validation predictions to print after each validation.
        init_from: a checkpoint whose weights initialise this model before training (fine-tuning;
            the optimizer starts afresh, unlike ``--ckpt_path``): one of this task, of another task
            (the tensors that fit are taken), or of a multi-task model (this task's weights, or
            only the shared ones when it was not one of its tasks); see
            :meth:`~s2s_tasks.module.BaseModule.initialise_from`. Its tokenizer is then used too.
        peft: parameter-efficient fine-tuning (usually with ``init_from``): ``lora`` (Hu et al.,
            2021) or ``adapter`` (bottleneck adapters, Houlsby et al., 2019; Transformer only), see
            :mod:`s2s_tasks.nn.peft`. The network (the encoder-decoder, or the encoder under an
            encoder head) is frozen except the LoRA / adapter weights; a task head beside it (a
            new label set) is trained in full. ``None``: every weight is trained.
        lora_rank, lora_alpha, lora_dropout: LoRA's rank ``r``, scale ``alpha / r`` and the dropout
            on the input of its low-rank path.
        lora_targets: the layers LoRA adapts: ``attention`` (Q/K/V and output projections;
            attention layers of RNN decoders) and/or ``ffn`` (feed-forward linears).
        adapter_size: the adapters' bottleneck size ``m``.
        peft_train_norms: the LayerNorms of the network are trained too.
        save_trainable_only: checkpoints hold only the trained weights (the frozen ones come from
            ``init_from``, which ``validate``/``test``/``predict``/resuming then need too).
        pretrained: a Hugging Face model (local directory written by ``save_pretrained``, or a hub
            name when online) to fine-tune instead of our own network: an encoder-decoder (T5, BART,
            Marian, mBART ...) for generation, any encoder (BERT-style) under an encoder head. Its
            tokenizer replaces a trained one (``data.pretrained`` follows this key); the architecture
            settings are then unused. Needs ``pip install 's2s-tasks[hf]'``; see :mod:`s2s_tasks.nn.pretrained`.
    """

    def __init__(
        self,
        vocab_size: int = 0,
        pad_id: int = 0,
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
        coverage_loss_weight: float = 0.0,
        label_smoothing: float = 0.1,
        learning_rate: float = 5e-4,
        weight_decay: float = 0.0,
        adam_betas: Tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 1000,
        lr_schedule: str = "inverse_sqrt",
        min_lr_ratio: float = 0.0,
        generation: Optional[GenerationConfig] = None,
        val_generation: Optional[GenerationConfig] = None,
        beam_validation_every_n_epochs: int = 0,
        beam_validation_examples: int = 200,
        log_examples: int = 2,
        init_from: Optional[str] = None,
        peft: Optional[str] = None,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        lora_targets: Tuple[str, ...] = LORA_TARGETS,
        adapter_size: int = 64,
        peft_train_norms: bool = False,
        save_trainable_only: bool = False,
        pretrained: Optional[str] = None,
    ) -> None:
        super().__init__(learning_rate, weight_decay, adam_betas, warmup_steps, lr_schedule, min_lr_ratio)
        if vocab_size <= 0:
            raise ValueError(
                "model.vocab_size must be positive; it is normally linked from the data module's tokenizer "
                "(run through the s2s-tasks CLI, or pass vocab_size)"
            )
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}")
        if pretrained is not None:
            for key, value in (("copy_attention", copy_attention), ("coverage_attention", coverage_attention),
                               ("coverage_loss_weight", coverage_loss_weight > 0)):
                if value:
                    raise ValueError(f"model.{key} is a setting of our own networks; a model.pretrained network has no "
                                     f"such layer: drop --model.{key}")
        if not coverage_loss_weight >= 0:
            raise ValueError(f"model.coverage_loss_weight must be >= 0 (0 disables coverage), got {coverage_loss_weight}")
        self.generation = _as_generation_config(generation, GenerationConfig(strategy="beam", beam_size=4))
        self.val_generation = _as_generation_config(val_generation, GenerationConfig(strategy="greedy"))
        # a model without PEFT records no PEFT settings, so that fine-tuning it with model.init_from
        # (which takes the checkpoint's weight-shaping settings, model.peft among them) keeps the run's own
        self.save_hyperparameters(ignore=["generation", "val_generation", *(PEFT_KEYS if peft is None else ())])
        # plain dicts keep the checkpoint loadable with weights_only=True
        self.hparams["generation"] = dataclasses.asdict(self.generation)
        self.hparams["val_generation"] = dataclasses.asdict(self.val_generation)
        # the network arguments are the ones build_seq2seq takes, all hyperparameters of this module
        self.build_network({name: self.hparams[name] for name in inspect.signature(build_seq2seq).parameters})
        if peft is not None:
            self.apply_peft()
        elif save_trainable_only:
            raise ValueError("model.save_trainable_only needs model.peft (lora or adapter): without it every weight is trained")
        self._eval_outputs: Dict[str, List[Tuple[int, str, List[str]]]] = {}
        #: per evaluated batch: (batch key, summed token loss, token count); keyed so that the
        #: batches DDP repeats to even out the ranks are counted once (see :meth:`_finish_eval`)
        self._eval_nll: Dict[str, List[Tuple[Any, float, float]]] = {}
        self._reported_signatures: Dict[str, str] = {}

    def build_network(self, network_args: Dict[str, Any]) -> None:
        """Create the weights from the ``model.*`` network arguments (``self.model``, a :class:`Seq2Seq`),
        or load the ``model.pretrained`` encoder-decoder (the architecture arguments are then unused)."""
        if self.hparams.get("pretrained"):
            from s2s_tasks.nn.pretrained import PretrainedSeq2Seq

            self.model = PretrainedSeq2Seq(self.hparams.pretrained, self.hparams.vocab_size)
            return
        self.model = build_seq2seq(**network_args)

    def peft_network(self) -> nn.Module:
        """The network that ``model.peft`` adapts and freezes: the encoder-decoder (``self.model``),
        or the encoder of an encoder head (``self.encoder``); a task head is outside it."""
        return self.model if "model" in self._modules else self.encoder

    def apply_peft(self) -> None:
        """Add LoRA or adapters (``model.peft``) to :meth:`peft_network` and freeze the rest of it.

        The network's own weights keep their names (:mod:`s2s_tasks.nn.peft`), so ``init_from`` and
        checkpoints load into the adapted network as they are, before or after this.
        """
        hp = self.hparams
        if hp.peft not in PEFT_METHODS:
            raise ValueError(f"model.peft must be one of {list(PEFT_METHODS)} (or null for none), got {hp.peft!r}")
        network = self.peft_network()
        if hp.peft == "lora":
            if hp.lora_rank < 1:
                raise ValueError(f"model.lora_rank must be at least 1, got {hp.lora_rank}")
            targets = list(hp.lora_targets)
            unknown = [t for t in targets if t not in LORA_TARGETS]
            if unknown or not targets:
                raise ValueError(f"model.lora_targets must name some of {list(LORA_TARGETS)}, got {targets}")
            if not add_lora(network, hp.lora_rank, hp.lora_alpha, hp.lora_dropout, targets):
                raise ValueError(
                    f"model.peft lora: this network has no layer that model.lora_targets {targets} selects (an RNN "
                    "encoder has only recurrent weights, which LoRA does not adapt); use model.architecture transformer"
                )
        else:
            if hp.adapter_size < 1:
                raise ValueError(f"model.adapter_size must be at least 1, got {hp.adapter_size}")
            if hp.architecture != "transformer":
                raise ValueError(
                    f"model.peft adapter puts bottleneck adapters into Transformer layers, and model.architecture is "
                    f"{hp.architecture!r}; use --model.peft lora for RNN models"
                )
            add_adapters(network, hp.adapter_size)
        freeze_base(network, train_norms=hp.peft_train_norms)
        trainable, total = count_parameters(self)
        log.info("model.peft %s: %d of %d parameters are trained (%.2f%%)", hp.peft, trainable, total, 100.0 * trainable / total)

    # ----------------------------------------------------------------------------- loss
    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V)``."""
        return self.model(src_ids, src_mask, tgt_in)

    def _token_losses(self, batch: Dict[str, Any], label_smoothing: float) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """(smoothed loss sum, NLL sum, target token count) of a batch."""
        return self._decoder_losses(self.model.encode(batch["src_ids"], batch["src_mask"]), batch, label_smoothing)

    def _decoder_losses(
        self, enc_out: EncoderOutput, batch: Dict[str, Any], label_smoothing: float
    ) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """The losses of :meth:`_losses_from_logits`, through the fused projection + loss
        (:func:`~s2s_tasks.nn.linear_cross_entropy.linear_cross_entropy`: no ``(N, V)`` logits in
        memory) where the decoder's output is exactly its projection, else from the logits."""
        decoder = self.model.decoder
        fused = None
        if getattr(self.model, "dead", None) is None:  # a pretrained vocabulary masks some ids: from the logits
            fused = decoder_losses(
                decoder, enc_out, batch["tgt_in"], batch["tgt_out"], pad_id=self.hparams.pad_id, label_smoothing=label_smoothing
            )
        if fused is None:
            return self._losses_from_logits(decoder(batch["tgt_in"], enc_out), batch, label_smoothing)
        return fused

    def _losses_from_logits(
        self, logits: torch.Tensor, batch: Dict[str, Any], label_smoothing: float
    ) -> Tuple[torch.Tensor, torch.Tensor, int]:
        # With copy attention the "logits" are log-probabilities; cross_entropy's log_softmax
        # leaves them unchanged, so NLL and label smoothing need no special case.
        logits = logits.float()
        target = batch["tgt_out"]
        flat_target = target.reshape(-1)
        pad = self.hparams.pad_id
        # One log-softmax for both losses (two F.cross_entropy calls would compute it twice).
        # Label smoothing as F.cross_entropy defines it (Szegedy et al. 2016, §7):
        # (1 - eps) * NLL + eps * mean over the vocabulary of -log p.
        log_probs = F.log_softmax(logits.reshape(-1, logits.size(-1)), dim=-1)
        nll = F.nll_loss(log_probs, flat_target, ignore_index=pad, reduction="sum")
        loss = nll
        if label_smoothing > 0:
            dead = getattr(self.model, "dead", None) if "model" in self._modules else None
            if dead is None:
                per_token = -log_probs.mean(dim=-1)
            else:  # a pretrained network's ids that are never a next token (-inf) are outside the support
                per_token = -log_probs.masked_fill(dead, 0.0).sum(dim=-1) / (~dead).sum()
            uniform = per_token.masked_fill(flat_target == pad, 0.0).sum()
            loss = (1.0 - label_smoothing) * nll + label_smoothing * uniform
        return loss, nll, int((target != pad).sum())

    def training_losses(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Per-token training losses of a batch: ``loss`` (what is optimised), ``nll`` and, when
        ``coverage_loss_weight > 0``, ``coverage_loss`` (unweighted; ``loss`` includes
        ``coverage_loss_weight * coverage_loss``, See et al., 2017, eq. 13)."""
        weight = self.hparams.get("coverage_loss_weight", 0.0)
        tokens_mask = batch["tgt_out"] != self.hparams.pad_id
        attention = None
        if weight > 0:
            logits, attention = self.model(batch["src_ids"], batch["src_mask"], batch["tgt_in"], return_attention=True)
            loss_sum, nll_sum, tokens = self._losses_from_logits(logits, batch, self.hparams.label_smoothing)
        else:
            loss_sum, nll_sum, tokens = self._token_losses(batch, self.hparams.label_smoothing)
        denominator = max(tokens, 1)
        out = {"loss": loss_sum / denominator, "nll": nll_sum.detach() / denominator, "tokens": torch.tensor(tokens)}
        if attention is not None:
            coverage = coverage_loss(attention, tokens_mask) / denominator
            out["coverage_loss"] = coverage
            out["loss"] = out["loss"] + weight * coverage
        return out

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.training_losses(batch)
        tokens = int(losses["tokens"])
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=tokens)
        self.log("train/nll", losses["nll"], batch_size=tokens)
        if "coverage_loss" in losses:
            self.log("train/coverage_loss", losses["coverage_loss"].detach(), batch_size=tokens)
        return losses["loss"]

    # ----------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def decode(
        self, batch: Dict[str, Any], config: GenerationConfig, enc_out: Optional[EncoderOutput] = None
    ) -> Tuple[List[List[str]], torch.Tensor]:
        """Generate for a batch: (n-best texts per example, scores ``(B, n_best)``); pass ``enc_out``
        when the batch is already encoded."""
        with packed_projections():  # the encoder's products too (see packed_linear)
            if enc_out is None:
                enc_out = self.model.encode(batch["src_ids"], batch["src_mask"])
            generator = None
            if config.strategy == "sample" and config.seed is not None:
                generator = torch.Generator(device=batch["src_ids"].device).manual_seed(config.seed)
            output = generate(self.model.decoder, enc_out, bos_id=BOS_ID, eos_id=EOS_ID, config=config, generator=generator)
        texts = [decode_batch(self.tokenizer, hyps) for hyps in output.tokens]
        return texts, output.scores

    def compute_metrics(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> Tuple[Dict[str, float], Dict[str, str]]:
        """Task metrics on detokenized text: ``({name: score}, {name: signature})``."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- evaluation
    def _eval_step(self, batch: Dict[str, Any], stage: str) -> None:
        with packed_projections():  # one scope: the weights are checked and packed once per batch
            self._eval_batch(batch, stage)

    def _eval_batch(self, batch: Dict[str, Any], stage: str) -> None:
        # one encoder pass serves the loss and every decoding of the batch
        enc_out = self.model.encode(batch["src_ids"], batch["src_mask"])
        _, nll_sum, tokens = self._decoder_losses(enc_out, batch, 0.0)
        self._eval_nll.setdefault(stage, []).append((self.batch_key(batch), float(nll_sum), float(tokens)))
        config = self.val_generation if stage == "val" else self.generation
        texts, _ = self.decode(batch, config, enc_out)
        self._eval_outputs.setdefault(stage, []).extend(self.eval_rows(batch, texts))
        if stage == "val" and self._beam_validation_due():
            seen = len(self._eval_outputs.get("val_beam", []))
            # each rank decodes its share, so that all ranks together decode about as many as one process
            share = -(-self.hparams.beam_validation_examples // max(self.trainer.world_size, 1))
            if seen < share:
                beam_texts, _ = self.decode(batch, self.generation, enc_out)
                self._eval_outputs.setdefault("val_beam", []).extend(self.eval_rows(batch, beam_texts))

    def row_keys(self, batch: Dict[str, Any]) -> List[Any]:
        """Keys that identify batch rows across ranks: the record number."""
        return batch["index"].tolist()

    def batch_key(self, batch: Dict[str, Any]) -> Tuple[Any, ...]:
        """What identifies an evaluation batch across ranks: its rows' keys. DDP pads the ranks'
        batch lists by repeating whole batches (:class:`~s2s_tasks.data.sampler.TokenBudgetBatchSampler`),
        so a repeated batch has the same key as the original and is counted once."""
        return tuple(self.row_keys(batch))

    def eval_rows(self, batch: Dict[str, Any], texts: List[List[str]]) -> List[Tuple[Any, Any, Any]]:
        """``(key, prediction, reference)`` per example of a decoded batch; the key (the record
        number) identifies duplicates that DDP adds by padding the last batches."""
        return list(zip(batch["index"].tolist(), [t[0] for t in texts], batch["references"]))

    def merge_eval_rows(self, rows: List[Tuple[Any, Any, Any]]) -> List[Tuple[Any, Any, Any]]:
        """All ranks' rows -> one row per example in input order (duplicates dropped)."""
        return sorted({key: (key, hyp, ref) for key, hyp, ref in rows}.values(), key=lambda row: row[0])

    def format_example(self, row: Tuple[Any, Any, Any]) -> str:
        """How a validation example is printed after each validation."""
        key, hyp, refs = row
        return f"  #{key} hyp: {hyp}\n  #{key} ref: {refs[0]}"

    #: whether ``val/ppl`` (exp of the per-token loss) is meaningful for this model
    reports_perplexity: bool = True
    #: the metric (a key of :meth:`compute_metrics`, 0-100) that selects checkpoints; multi-task
    #: training averages it over tasks (:class:`s2s_tasks.multitask_module.MultiTaskModule`)
    primary_metric: ClassVar[str] = ""

    def _beam_validation_due(self) -> bool:
        every = self.hparams.beam_validation_every_n_epochs
        return every > 0 and not self.trainer.sanity_checking and (self.current_epoch + 1) % every == 0

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def eval_results(self, stage: str) -> Tuple[Dict[str, float], List[Tuple[Any, Any, Any]], Dict[str, str]]:
        """What ``stage`` (``val`` or ``test``) evaluated, gathered from all ranks and consumed:
        ``({"loss": ..., "ppl": ..., "<metric>": ..., "beam_<metric>": ...}, rows, signatures)``,
        with one row ``(key, prediction, gold)`` per example in input order; ``({}, [], {})``
        when nothing was evaluated. Called on every rank (the gathering is collective)."""
        # all ranks' batches, each counted once (DDP's padding repeats whole batches), summed in
        # key order: the same number whatever the world size
        batches = {key: (loss_sum, count) for key, loss_sum, count in self.gather_objects(self._eval_nll.pop(stage, []))}
        if not batches:
            self.gather_objects(self._eval_outputs.pop(stage, []))  # keep the ranks' collectives in step
            self.gather_objects(self._eval_outputs.pop(f"{stage}_beam", []))
            return {}, [], {}
        totals = [batches[key] for key in sorted(batches)]
        loss_sum, count = math.fsum(t[0] for t in totals), math.fsum(t[1] for t in totals)
        loss = loss_sum / max(count, 1.0)
        metrics: Dict[str, float] = {"loss": loss}
        if self.reports_perplexity:
            metrics["ppl"] = float(torch.tensor(loss).exp())
        examples: List[Tuple[Any, Any, Any]] = []
        reported: Dict[str, str] = {}
        for key, prefix in ((stage, ""), (f"{stage}_beam", "beam_")):
            rows = self.gather_objects(self._eval_outputs.pop(key, []))
            if not rows:
                continue
            rows = self.merge_eval_rows(rows)  # drops DDP padding duplicates
            scores, signatures = self.compute_metrics([r[1] for r in rows], [r[2] for r in rows])
            metrics.update({prefix + name: value for name, value in scores.items()})
            if key == stage:
                examples, reported = rows, signatures
        return metrics, examples, reported

    def _finish_eval(self, stage: str) -> None:
        results, examples, signatures = self.eval_results(stage)
        self._report_signatures(signatures)
        metrics = {f"{stage}/{name}": value for name, value in results.items()}
        # every rank holds the gathered values already, so no further sync is needed
        self.log_dict(metrics, prog_bar=True, sync_dist=False)
        if not self.trainer.sanity_checking:
            summary = " | ".join(f"{k} {v:.3f}" for k, v in metrics.items())
            self.print(f"[{stage} epoch {self.current_epoch} step {self.global_step}] {summary}")
            for row in examples[: self.hparams.log_examples]:
                self.print(self.format_example(row))

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def _report_signatures(self, signatures: Dict[str, str]) -> None:
        """Print metric signatures (e.g. sacreBLEU's) once and store them with the logger's
        hyperparameters, so every reported score can be reproduced exactly."""
        if not signatures or signatures == self._reported_signatures:
            return
        self._reported_signatures = dict(signatures)
        self.print("  " + " | ".join(f"{name} signature: {value}" for name, value in signatures.items()))
        if self.logger is not None:
            self.logger.log_hyperparams({f"signature/{name}": value for name, value in signatures.items()})

    # ----------------------------------------------------------------------------- predict
    def predict_step(self, batch: Dict[str, Any], batch_idx: int) -> List[Dict[str, Any]]:
        texts, scores = self.decode(batch, self.generation)
        records = []
        for i, (index, source) in enumerate(zip(batch["index"].tolist(), batch["source"])):
            record: Dict[str, Any] = {"index": index, "source": source, "prediction": texts[i][0], "score": float(scores[i, 0])}
            if len(texts[i]) > 1:
                record["n_best"] = [{"text": t, "score": float(s)} for t, s in zip(texts[i], scores[i].tolist())]
            records.append(record)
        return records
