"""Pretrained Hugging Face networks behind our network interfaces (``--model.pretrained``).

* :class:`PretrainedSeq2Seq` -- an ``AutoModelForSeq2SeqLM`` (T5, BART, Marian, mBART ...) as a
  :class:`~s2s_tasks.nn.seq2seq.Seq2Seq`: ``encode``, teacher-forced ``forward`` and a decoder
  with the incremental ``step`` / ``reorder_cache`` interface, so our greedy, beam and sampling
  search (:mod:`s2s_tasks.generation`) and every ``model.generation`` option work unchanged; the
  decoder's step uses the model's own key/value cache (``past_key_values``).
* :class:`PretrainedEncoder` -- an ``AutoModel`` encoder (BERT-style, or the encoder of an
  encoder-decoder) as an encoder for the task heads: ``(src_ids, src_mask) -> EncoderOutput``.

Ids: the data side lays the model's tokenizer out with our special tokens at ids 0-3
(:mod:`s2s_tasks.data.pretrained_tokenizer`). ``to_model`` (a buffer, saved with the weights) maps
each of our ids to the model's embedding row: ``<pad>`` to the model's pad, ``<s>`` to the decoder
start token (encoder-decoders) or ``[CLS]`` / ``<s>`` (encoders), ``</s>`` to its EOS / ``[SEP]``,
tokens the model lacks (a task's entity markers) to new rows added to its embeddings. Output
logits are read back through the same map; ids that are never a next token (``<pad>``, ``<s>``,
layout gaps, a second id of one row) get ``-inf``.

``transformers`` is imported only here, only when a pretrained model is used (``pip install
's2s-tasks[hf]'``).
"""

from __future__ import annotations

import inspect
import json
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from s2s_tasks.data.pretrained_tokenizer import (
    UNUSED, PretrainedUnavailable, _hf_vocabulary, check_pretrained_name, load_hf_tokenizer, offline_message,
    vocabulary_layout,
)
from s2s_tasks.data.tokenizer import SPECIAL_TOKENS

from .types import EncoderOutput

log = logging.getLogger(__name__)

#: names of the linear layers LoRA adapts in Hugging Face models, by target (last name component);
#: T5 (q k v o, wi wo), BART / Marian / mBART (q_proj ... out_proj, fc1 fc2), BERT / RoBERTa
#: (query key value, attention.output.dense; intermediate.dense, output.dense)
HF_ATTENTION_LINEARS = frozenset({"q", "k", "v", "o", "q_proj", "k_proj", "v_proj", "out_proj", "query", "key", "value"})
HF_FFN_LINEARS = frozenset({"wi", "wi_0", "wi_1", "wo", "fc1", "fc2"})
#: the sublayers whose outputs get bottleneck adapters (Houlsby placement: self-attention and FFN outputs)
HF_CROSS_ATTENTION = ("EncDecAttention", "encoder_attn", "crossattention")


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError("model.pretrained needs the Hugging Face backend: pip install 's2s-tasks[hf]' (transformers)") from err
    return transformers


def load_hf_model(name: str, kind: str) -> nn.Module:
    """``kind`` ``"seq2seq"`` (``AutoModelForSeq2SeqLM``) or ``"encoder"`` (``AutoModel``; the
    encoder of an encoder-decoder) from a local directory or hub name; errors name the fix."""
    transformers = _transformers()
    local = check_pretrained_name(name)
    auto = transformers.AutoModelForSeq2SeqLM if kind == "seq2seq" else transformers.AutoModel
    try:
        config = transformers.AutoConfig.from_pretrained(name, local_files_only=local)
    except (OSError, ValueError) as err:
        if local:
            raise ValueError(f"model.pretrained {name}: no usable config.json there ({err}); pass a directory written "
                             "by save_pretrained") from err
        raise PretrainedUnavailable(offline_message(name, err)) from err
    if kind == "seq2seq" and not getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"model.pretrained {name} is a {config.model_type} model without a decoder; text generation needs an "
            "encoder-decoder (T5, BART, Marian, mBART ...). For classification, NER, QA and relation extraction an "
            "encoder works with --model.head encoder"
        )
    try:
        model = auto.from_pretrained(name, local_files_only=local)
    except (OSError, ValueError) as err:
        raise ValueError(f"model.pretrained {name}: the weights could not be loaded ({err})") from err
    if kind == "encoder" and getattr(config, "is_encoder_decoder", False):
        model = model.get_encoder()
    if kind == "encoder" and getattr(model, "pooler", None) is not None:
        model.pooler = None  # BERT's [CLS] pooler: the task heads read the token states (and DDP wants no unused weights)
    return model.train()  # from_pretrained returns it in eval mode; Lightning switches modes itself


def _special_rows(hf_tokenizer, config, kind: str) -> Dict[str, int]:
    """The model's row for each of our special tokens."""
    def first(*values: Optional[int]) -> Optional[int]:
        return next((v for v in values if v is not None), None)

    pad = first(hf_tokenizer.pad_token_id, getattr(config, "pad_token_id", None), 0)
    eos = first(hf_tokenizer.eos_token_id, hf_tokenizer.sep_token_id, getattr(config, "eos_token_id", None), pad)
    if kind == "seq2seq":
        start = first(getattr(config, "decoder_start_token_id", None), hf_tokenizer.bos_token_id, pad)
    else:
        start = first(hf_tokenizer.cls_token_id, hf_tokenizer.bos_token_id, pad)
    unk = first(hf_tokenizer.unk_token_id, pad)
    return {"<pad>": pad, "<unk>": unk, "<s>": start, "</s>": eos}


def vocabulary_map(hf_tokenizer, config, kind: str, vocab_size: int, embedding_rows: int) -> Tuple[Tensor, Tensor, int]:
    """``(to_model (V,), dead (V,) bool, rows needed)``: each of our ``V`` ids' model row, which ids
    are never a next token, and how many embedding rows the model then needs."""
    hf_vocab = _hf_vocabulary(json.loads(hf_tokenizer.backend_tokenizer.to_str()))
    base = vocabulary_layout(hf_vocab, ())
    extra = vocab_size - len(base)
    if extra < 0:
        raise ValueError(f"model.vocab_size {vocab_size} is smaller than the pretrained tokenizer laid out ({len(base)}); "
                         "the tokenizer must come from the same model.pretrained (leave data.tokenizer_file unset)")
    tokens = base + [f"\0new{j}" for j in range(extra)]  # the task's new tokens: only their number matters here
    special = _special_rows(hf_tokenizer, config, kind)
    to_model: List[int] = []
    new = 0
    for token in tokens:
        if token in special:
            to_model.append(special[token])
        elif token in hf_vocab:
            to_model.append(hf_vocab[token])
        else:
            to_model.append(max(embedding_rows, len(base)) + new if token.startswith("\0new") else special["<unk>"])
            new += token.startswith("\0new")
    dead = [False] * len(tokens)
    owner: Dict[int, int] = {}
    for i, token in enumerate(tokens):
        if token in ("<pad>", "<s>") or token.startswith(UNUSED.split("{")[0]):
            dead[i] = True
            continue
        row = to_model[i]
        if row in owner and not tokens[i] == "</s>":
            dead[i] = True  # a second id of one row: one id per row keeps the softmax a distribution
        else:
            if row in owner:
                dead[owner[row]] = True  # </s> owns its row (BART: the model's </s> is also the decoder start)
            owner[row] = i
    rows = max(max(to_model) + 1, embedding_rows)
    return torch.tensor(to_model, dtype=torch.long), torch.tensor(dead, dtype=torch.bool), rows


class _Mapped(nn.Module):
    """Shared by both wrappers: the id map (buffers) and reading logits back through it."""

    def _init_map(self, name: str, kind: str, model: nn.Module, vocab_size: int) -> None:
        self.pretrained = name
        hf_tokenizer = load_hf_tokenizer(name)
        rows = model.get_input_embeddings().weight.shape[0]
        to_model, dead, needed = vocabulary_map(hf_tokenizer, model.config, kind, vocab_size, rows)
        if needed > rows:
            model.resize_token_embeddings(needed)
            with torch.no_grad():  # the new rows start at the mean embedding: the same on every load (frozen under PEFT)
                weight = model.get_input_embeddings().weight
                weight[rows:] = weight[:rows].mean(0)
                output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
                if output is not None and output.weight is not weight:
                    output.weight[rows:] = output.weight[:rows].mean(0)
            log.info("model.pretrained %s: %d embedding rows added for the task's special tokens", name, needed - rows)
        self.register_buffer("to_model", to_model)
        self.register_buffer("dead", dead)

    def model_ids(self, ids: Tensor) -> Tensor:
        return self.to_model[ids]

    def our_logits(self, logits: Tensor, mask_dead: bool = True) -> Tensor:
        """``(..., model rows)`` -> ``(..., V)`` logits over our ids (never-next ids ``-inf``)."""
        out = logits.index_select(-1, self.to_model)
        return out.masked_fill(self.dead, float("-inf")) if mask_dead else out


class PretrainedDecoder(nn.Module):
    """The decoder of a :class:`PretrainedSeq2Seq` with our :class:`~s2s_tasks.nn.decoders.Decoder`
    interface. The step cache is the model's own ``past_key_values`` (self- and cross-attention
    keys/values), under ``{"past": ...}``."""

    copy_attention = False
    shares_source_rows = False

    def __init__(self, network: "PretrainedSeq2Seq") -> None:
        super().__init__()
        self._network = [network]  # not a submodule: the weights belong to the network

    @property
    def network(self) -> "PretrainedSeq2Seq":
        return self._network[0]

    def forward(self, tgt_in: Tensor, enc_out: EncoderOutput, return_attention: Any = False) -> Tensor:
        """Teacher forcing: ``tgt_in (B, T)`` -> logits ``(B, T, V)``."""
        if return_attention:
            raise ValueError("attention maps and coverage are not available for model.pretrained networks")
        net = self.network
        out = net.hf(encoder_outputs=(enc_out.states,), attention_mask=enc_out.mask.long(),
                     decoder_input_ids=net.model_ids(tgt_in), decoder_attention_mask=None, use_cache=False)
        return net.our_logits(out.logits)

    def step(self, last_tokens: Tensor, enc_out: EncoderOutput, cache: Optional[Dict[str, Any]]) -> Tuple[Tensor, Dict[str, Any]]:
        """``last_tokens (N,)`` -> logits ``(N, V)`` and the new cache."""
        net = self.network
        out = net.hf(encoder_outputs=(enc_out.states,), attention_mask=enc_out.mask.long(),
                     decoder_input_ids=net.model_ids(last_tokens).unsqueeze(1),
                     **{net.cache_argument: None if cache is None else cache["past"]}, use_cache=True)
        past = getattr(out, "cache", None) if net.cache_argument == "cache" else out.past_key_values
        return net.our_logits(out.logits[:, -1], mask_dead=True), {"past": past}

    def reorder_cache(self, cache: Dict[str, Any], index: Tensor, source_index: Optional[Tensor] = None,
                      keep_source: bool = False) -> Dict[str, Any]:
        """Rows ``index`` of the cache (``shares_source_rows`` is false, so the cross-attention
        entries have one row per running row and follow ``index`` too)."""
        past = cache["past"]
        past.reorder_cache(index)
        return {"past": past}


class PretrainedSeq2Seq(_Mapped):
    """A pretrained encoder-decoder as our :class:`~s2s_tasks.nn.seq2seq.Seq2Seq` (module docstring).

    Args:
        name: a local directory (``save_pretrained``) or a hub name.
        vocab_size: our vocabulary size (the laid-out tokenizer's, task tokens included).
    """

    def __init__(self, name: str, vocab_size: int) -> None:
        super().__init__()
        self.hf = load_hf_model(name, "seq2seq")
        self._init_map(name, "seq2seq", self.hf, vocab_size)
        self.decoder = PretrainedDecoder(self)
        # transformers 5 calls the key/value cache `cache`; 4.x `past_key_values`
        self.cache_argument = "cache" if "cache" in inspect.signature(self.hf.forward).parameters else "past_key_values"

    def encode(self, src_ids: Tensor, src_mask: Tensor) -> EncoderOutput:
        """``src_ids (B, S)``, ``src_mask (B, S)`` -> states ``(B, S, D)``."""
        states = self.hf.get_encoder()(input_ids=self.model_ids(src_ids), attention_mask=src_mask.long()).last_hidden_state
        return EncoderOutput(states=states, mask=src_mask, final_state=None, src_ids=src_ids)

    def forward(self, src_ids: Tensor, src_mask: Tensor, tgt_in: Tensor, return_attention: Any = False) -> Tensor:
        """Teacher-forced logits ``(B, T, V)``."""
        return self.decoder(tgt_in, self.encode(src_ids, src_mask), return_attention)


class PretrainedEncoder(_Mapped):
    """A pretrained encoder for the task heads: ``(src_ids (B, S), src_mask (B, S))`` ->
    :class:`EncoderOutput` with states ``(B, S, output_size)``."""

    def __init__(self, name: str, vocab_size: int) -> None:
        super().__init__()
        self.hf = load_hf_model(name, "encoder")
        self._init_map(name, "encoder", self.hf, vocab_size)
        config = self.hf.config
        self.output_size = int(getattr(config, "hidden_size", None) or getattr(config, "d_model"))

    def forward(self, src_ids: Tensor, src_mask: Tensor) -> EncoderOutput:
        states = self.hf(input_ids=self.model_ids(src_ids), attention_mask=src_mask.long()).last_hidden_state
        return EncoderOutput(states=states, mask=src_mask, final_state=None, src_ids=src_ids)


# --------------------------------------------------------------------------------------------- PEFT sites
def _linears(network: nn.Module):
    """``(qualified name, parent, attribute)`` of every ``nn.Linear`` in ``network``."""
    for name, parent in network.named_modules():
        for attribute, child in parent.named_children():
            if isinstance(child, nn.Linear):
                yield f"{name}.{attribute}", parent, attribute


def hf_lora_sites(network: nn.Module, targets: Sequence[str]) -> List[Tuple[nn.Module, str]]:
    """``(parent, attribute)`` of the linear layers of a pretrained network that LoRA ``targets``
    select (:data:`HF_ATTENTION_LINEARS`, :data:`HF_FFN_LINEARS` and BERT's dense layers)."""
    sites = []
    for full, parent, attribute in _linears(network):
        attention = attribute in HF_ATTENTION_LINEARS or full.endswith("attention.output.dense")
        ffn = attribute in HF_FFN_LINEARS or full.endswith("intermediate.dense") or (
            full.endswith("output.dense") and not full.endswith("attention.output.dense"))
        if ("attention" in targets and attention) or ("ffn" in targets and ffn):
            sites.append((parent, attribute))
    return sites


def hf_adapter_sites(network: nn.Module) -> List[Tuple[nn.Module, str]]:
    """``(parent, attribute)`` of the output projections of the self-attention and feed-forward
    sublayers (Houlsby placement; cross-attention gets none), whose outputs get adapters."""
    return [(parent, attribute) for full, parent, attribute in _linears(network)
            if not any(part in full for part in HF_CROSS_ATTENTION)
            and (attribute in ("o", "out_proj", "wo", "fc2") or full.endswith("output.dense"))]


def is_pretrained_network(module: nn.Module) -> bool:
    return isinstance(module, _Mapped)


__all__ = ["PretrainedSeq2Seq", "PretrainedEncoder", "PretrainedDecoder", "hf_lora_sites", "hf_adapter_sites",
           "is_pretrained_network", "load_hf_model", "vocabulary_map", "SPECIAL_TOKENS"]
