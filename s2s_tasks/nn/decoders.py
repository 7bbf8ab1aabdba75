"""Decoders with one incremental interface.

* :class:`RNNDecoder` -- LSTM/GRU with Bahdanau or Luong attention and input feeding.
* :class:`TransformerDecoder` -- pre-LN Transformer decoder with a KV cache.

Every decoder offers teacher forcing, ``forward(tgt_in, enc_out) -> logits``, and incremental
decoding, ``step(last_tokens, enc_out, cache) -> (logits, cache)``; search code sees nothing else.
Shapes: ``B`` batch, ``T`` target length, ``S`` source length, ``V`` vocabulary size.

With ``copy_attention=True`` both decoders become pointer-generators (See et al., 2017; see
:mod:`s2s_tasks.nn.copy`): ``forward`` and ``step`` then return the log-probabilities of the
mixture of generating and copying, in the same shapes, in place of logits. Their
``log_softmax`` is the identity, so search code and losses need no change. This needs
``enc_out.src_ids`` (filled by :meth:`Seq2Seq.encode`).
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .attention import AttentionMechanism, BahdanauAttention, LuongAttention, MultiHeadAttention
from .copy import PointerGenerator
from .dropout import Dropout
from .embedding import Embeddings
from .encoders import FeedForward, rnn_class
from .onednn_linear import apply_linear
from .types import Cache, EncoderOutput
from .types import reorder_cache as _reorder_cache

RNN_ATTENTIONS = ("bahdanau", "luong_dot", "luong_general", "luong_concat")


class Decoder(nn.Module):
    """Base class of every decoder.

    Attributes:
        embed: target :class:`~s2s_tasks.nn.embedding.Embeddings` (``embed.token.weight`` for tying).
        output_projection: ``nn.Linear(out_dim, vocab_size)`` producing the logits.
        copy_attention: the decoder is a pointer-generator and returns log-probabilities
            (float32) in place of logits.
    """

    embed: Embeddings
    output_projection: nn.Linear
    copy_attention: bool = False

    @property
    def shares_source_rows(self) -> bool:
        """:meth:`step` accepts an ``enc_out`` of ``B`` rows with ``last_tokens`` of ``B * k``
        rows: each group of ``k`` consecutive rows (the beams of one input) shares one source row,
        and the source-only cache entries then have ``B`` rows. Beam search uses this to keep
        one copy of the encoder states and cross-attention keys/values per input."""
        return False

    def forward(
        self, tgt_in: Tensor, enc_out: EncoderOutput, return_attention: Union[bool, str] = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Teacher forcing: ``tgt_in (B, T)`` -> logits ``(B, T, V)``, plus the attention over the
        source when ``return_attention`` is

        * ``True``: ``(B, T, S)``, the attention the decoder uses as one distribution (with copy
          attention: the copy distribution, which is also what the coverage loss penalises);
        * ``"all"``: ``(B, L, H, T, S)``, every layer's cross-attention per head, for attention
          maps (``L = H = 1`` for an RNN decoder, which has one attention).
        """
        raise NotImplementedError

    def output_features(self, tgt_in: Tensor, enc_out: EncoderOutput) -> Optional[Tensor]:
        """Teacher forcing up to the output projection: ``(B, T, D_out)`` states whose
        ``output_projection`` are the logits of :meth:`forward`, so that a loss can fuse the
        projection with the softmax (:func:`~s2s_tasks.nn.linear_cross_entropy.linear_cross_entropy`).
        ``None`` when the output is more than that projection (copy attention)."""
        return None

    def init_cache(self, enc_out: EncoderOutput) -> Cache:
        """The cache before the first step."""
        raise NotImplementedError

    def step(self, last_tokens: Tensor, enc_out: EncoderOutput, cache: Optional[Cache]) -> Tuple[Tensor, Cache]:
        """One incremental step: ``last_tokens (B,)`` -> logits ``(B, V)`` and the new cache.

        ``cache=None`` means the first step; the decoder then builds its cache from ``enc_out``.
        """
        raise NotImplementedError

    def reorder_cache(
        self, cache: Cache, index: Tensor, source_index: Optional[Tensor] = None, keep_source: bool = False
    ) -> Cache:
        """Rows ``index (B',)`` of the cache, e.g. the surviving beams; source-only state is
        selected with ``source_index`` instead, or kept with ``keep_source`` (see
        :func:`~s2s_tasks.nn.types.reorder_cache`)."""
        return _reorder_cache(cache, index, source_index, keep_source)


def check_return_attention(value: Union[bool, str]) -> None:
    """``return_attention`` is ``False``, ``True`` or ``"all"``."""
    if value not in (False, True, "all"):
        raise ValueError(f"return_attention must be False, True or 'all', got {value!r}")


def build_rnn_attention(attention: str, query_size: int, key_size: int, coverage: bool = False) -> AttentionMechanism:
    """``"bahdanau" | "luong_dot" | "luong_general" | "luong_concat"`` -> attention module
    (``coverage``: the score also sees the coverage vector, See et al., 2017, eq. 11)."""
    if attention == "bahdanau":
        return BahdanauAttention(query_size, key_size, hidden_size=query_size, coverage=coverage)
    if attention in RNN_ATTENTIONS:
        return LuongAttention(query_size, key_size, score=attention[len("luong_") :], coverage=coverage)
    raise ValueError(f"`model.attention` must be one of {list(RNN_ATTENTIONS)}, got {attention!r}")


class RNNDecoder(Decoder):
    """Recurrent decoder with attention, after joeynmt's ``RecurrentDecoder``.

    One step ``t`` with previous top-layer state ``s_{t-1}``, previous attentional vector
    ``~h_{t-1}`` and previous token ``y_{t-1}``:

    * ``bahdanau``: the query is ``s_{t-1}`` and the context enters the recurrence,
      ``c_t = attn(s_{t-1}, H)``, ``s_t = RNN([E y_{t-1}; c_t; ~h_{t-1}], s_{t-1})``
      (Bahdanau et al., 2015, eq. 4 and 6);
    * ``luong_*``: the query is the new state, ``s_t = RNN([E y_{t-1}; ~h_{t-1}], s_{t-1})``,
      ``c_t = attn(s_t, H)`` (Luong et al., 2015, §3);

    then for both the attentional vector ``~h_t = tanh(W_c [s_t; c_t])`` (Luong et al., 2015,
    eq. 5) gives the logits ``W_o ~h_t + b``. ``~h_{t-1}`` is fed only when ``input_feeding``
    (Luong et al., 2015, §3.3). The initial state is ``tanh(W_b final_state)`` for every layer
    (and the LSTM cell), or zeros when the encoder has no ``final_state``.

    Cache keys (batch first): ``hidden (B, layers, H)``, ``cell (B, layers, H)`` (LSTM only),
    ``att_vector (B, H)``, ``source: {"projected_keys": (B, S, *)}``, and ``coverage (B, S)``
    with ``coverage_attention``.

    ``copy_attention``: pointer-generator (See et al., 2017, eq. 8-9) with the step's attention
    ``a_t`` as the copy distribution, gate inputs ``h*_t = c_t`` (context), ``s_t`` (top-layer
    state) and ``x_t = E y_{t-1}``; the output is then ``log P(w)``.

    ``coverage_attention``: the attention score also sees the coverage vector
    ``c_t = sum_{t' < t} a_t'`` (See et al., 2017, eq. 10-11), kept in the cache. The coverage
    loss (eq. 12) is computed by the caller from the returned attention
    (:func:`s2s_tasks.nn.copy.coverage_loss`); it works with or without this flag.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        encoder_output_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        attention: str = "bahdanau",
        input_feeding: bool = True,
        dropout: float = 0.0,
        pad_id: int = 0,
        copy_attention: bool = False,
        coverage_attention: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.copy_attention = copy_attention
        self.coverage_attention = coverage_attention
        self.num_layers = num_layers
        self.is_lstm = cell == "lstm"
        self.input_feeding = input_feeding
        self.attention_type = attention
        self.context_in_rnn = attention == "bahdanau"
        self.embed = Embeddings(vocab_size, embedding_dim, pad_id, positional="none", dropout=dropout, scale=False)
        self.attention = build_rnn_attention(attention, hidden_size, encoder_output_size, coverage=coverage_attention)
        rnn_input_size = embedding_dim
        if self.context_in_rnn:
            rnn_input_size += encoder_output_size
        if input_feeding:
            rnn_input_size += hidden_size
        self.rnn = rnn_class(cell)(
            rnn_input_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.bridge = nn.Linear(encoder_output_size, hidden_size)
        self.att_vector_layer = nn.Linear(hidden_size + encoder_output_size, hidden_size)
        self.hidden_dropout = Dropout(dropout)
        self.output_projection = nn.Linear(hidden_size, vocab_size)
        self.pointer_generator = PointerGenerator(encoder_output_size, hidden_size, embedding_dim) if copy_attention else None

    def init_cache(self, enc_out: EncoderOutput) -> Cache:
        states = enc_out.states
        batch_size = states.size(0)
        if enc_out.final_state is None:
            hidden = states.new_zeros(batch_size, self.num_layers, self.hidden_size)
        else:
            bridged = torch.tanh(self.bridge(enc_out.final_state))
            hidden = bridged.unsqueeze(1).expand(batch_size, self.num_layers, self.hidden_size).contiguous()
        cache: Cache = {
            "hidden": hidden,
            "att_vector": states.new_zeros(batch_size, self.hidden_size),
            "source": {"projected_keys": self.attention.project_keys(states)},
        }
        if self.is_lstm:
            cache["cell"] = hidden
        if self.coverage_attention:
            cache["coverage"] = states.new_zeros(batch_size, states.size(1))  # c_0 = 0 (eq. 10)
        return cache

    def _step(self, embedded: Tensor, enc_out: EncoderOutput, cache: Cache) -> Tuple[Tensor, Tensor, Tensor, Tensor, Cache]:
        """``embedded (B, E)`` -> attentional vector ``(B, H)``, attention ``(B, S)``, context
        ``(B, K)``, top-layer state ``(B, H)`` and the new cache."""
        hidden = cache["hidden"]
        inputs: List[Tensor] = [embedded]
        coverage = cache.get("coverage")
        if self.context_in_rnn:
            context, weights = self.attention(hidden[:, -1], enc_out.states, enc_out.mask, cache["source"]["projected_keys"], coverage)
            inputs.append(context)
        if self.input_feeding:
            inputs.append(cache["att_vector"])
        rnn_input = torch.cat(inputs, dim=-1).unsqueeze(1)
        # nn.LSTM/GRU want (layers, B, H); the cache keeps batch first for reorder_cache.
        h0 = hidden.transpose(0, 1).contiguous()
        state = (h0, cache["cell"].transpose(0, 1).contiguous()) if self.is_lstm else h0
        _, new_state = self.rnn(rnn_input, state)
        new_hidden = new_state[0] if self.is_lstm else new_state
        top = new_hidden[-1]
        if not self.context_in_rnn:
            context, weights = self.attention(top, enc_out.states, enc_out.mask, cache["source"]["projected_keys"], coverage)
        att_vector = torch.tanh(self.att_vector_layer(self.hidden_dropout(torch.cat([top, context], dim=-1))))
        new_cache = {**cache, "hidden": new_hidden.transpose(0, 1), "att_vector": att_vector}
        if self.is_lstm:
            new_cache["cell"] = new_state[1].transpose(0, 1)
        if coverage is not None:
            new_cache["coverage"] = coverage + weights  # c_{t+1} = c_t + a_t
        return att_vector, weights, context, top, new_cache

    def _teacher_forced(self, tgt_in: Tensor, enc_out: EncoderOutput) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Every step at once: embedded inputs ``(B, T, E)``, attentional vectors ``(B, T, H)``,
        attention ``(B, T, S)``, contexts ``(B, T, K)`` and top-layer states ``(B, T, H)``."""
        cache = self.init_cache(enc_out)
        embedded = self.embed(tgt_in)
        att_vectors, attentions, contexts, tops = [], [], [], []
        for t in range(tgt_in.size(1)):
            att_vector, weights, context, top, cache = self._step(embedded[:, t], enc_out, cache)
            att_vectors.append(att_vector)
            attentions.append(weights)
            contexts.append(context)
            tops.append(top)
        return (
            embedded, torch.stack(att_vectors, dim=1), torch.stack(attentions, dim=1),
            torch.stack(contexts, dim=1), torch.stack(tops, dim=1),
        )

    def output_features(self, tgt_in: Tensor, enc_out: EncoderOutput) -> Optional[Tensor]:
        if self.pointer_generator is not None:
            return None
        return self._teacher_forced(tgt_in, enc_out)[1]

    def forward(
        self, tgt_in: Tensor, enc_out: EncoderOutput, return_attention: Union[bool, str] = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        check_return_attention(return_attention)
        embedded, att_vectors, attention, contexts, tops = self._teacher_forced(tgt_in, enc_out)
        logits = apply_linear(self.output_projection, att_vectors)
        if self.pointer_generator is not None:
            logits = self.pointer_generator(logits, attention, contexts, tops, embedded, enc_out.src_ids)
        if return_attention == "all":
            return logits, attention[:, None, None]  # one layer, one head
        if return_attention:
            return logits, attention
        return logits

    def step(self, last_tokens: Tensor, enc_out: EncoderOutput, cache: Optional[Cache]) -> Tuple[Tensor, Cache]:
        if cache is None:
            cache = self.init_cache(enc_out)
        embedded = self.embed(last_tokens.unsqueeze(1)).squeeze(1)
        att_vector, weights, context, top, cache = self._step(embedded, enc_out, cache)
        logits = apply_linear(self.output_projection, att_vector)
        if self.pointer_generator is not None:
            logits = self.pointer_generator(logits, weights, context, top, embedded, enc_out.src_ids)
        return logits, cache


class TransformerDecoderLayer(nn.Module):
    """Pre-LayerNorm decoder layer (Vaswani et al., 2017, §3.1; Xiong et al., 2020):

    ``x = x + Dropout(CausalSelfAttn(LN(x)))``; ``x = x + Dropout(CrossAttn(LN(x), memory))``;
    ``x = x + Dropout(FFN(LN(x)))``.

    ``self_attn_adapter`` and ``ffn_adapter`` act on the self-attention and FFN outputs before the
    residual sums: the identity unless :func:`~s2s_tasks.nn.peft.add_adapters` puts bottleneck
    adapters there (Houlsby et al., 2019).

    Its cache is ``{"self": {...}, "source": {...}}``, one :class:`MultiHeadAttention` cache each
    (``"source"``: the cross-attention keys/values, which depend on the source only).
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.cross_attn_norm = nn.LayerNorm(d_model)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_dim, dropout=dropout, activation=activation)
        self.dropout = Dropout(dropout)
        self.self_attn_adapter: nn.Module = nn.Identity()
        self.ffn_adapter: nn.Module = nn.Identity()

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        cache: Optional[Cache] = None,
        need_weights: bool = False,
    ) -> Tuple[Tensor, Optional[Tensor], Optional[Cache]]:
        """``x (B, T, D)``, ``memory (B, S, D)``, ``memory_mask (B, S)`` -> ``(B, T, D)``,
        cross-attention weights ``(B, heads, T, S)`` or ``None``, new cache or ``None``.

        ``memory`` may also have ``B / k`` rows, each shared by ``k`` consecutive rows of ``x``
        (beams): their queries then attend together, as ``k * T`` queries of one row
        (``need_weights`` must be false)."""
        h = self.self_attn_norm(x)
        h, _, self_cache = self.self_attn(h, h, h, causal=True, cache=None if cache is None else cache["self"])
        x = x + self.self_attn_adapter(self.dropout(h))
        h = self.cross_attn_norm(x)
        group = x.size(0) // memory.size(0)
        if group > 1:
            if need_weights:
                raise ValueError("cross-attention weights need one memory row per query row")
            h = h.reshape(memory.size(0), group * x.size(1), x.size(2))
        h, weights, cross_cache = self.cross_attn(
            h,
            memory,
            memory,
            key_mask=memory_mask,
            cache=None if cache is None else cache["source"],
            static_kv=True,
            need_weights=need_weights,
        )
        x = x + self.dropout(h.view(x.shape))
        x = x + self.ffn_adapter(self.dropout(self.ffn(self.ffn_norm(x))))
        new_cache = None if cache is None else {"self": self_cache, "source": cross_cache}
        return x, weights, new_cache


class TransformerDecoder(Decoder):
    """Stack of pre-LN decoder layers, a final LayerNorm and the output projection.

    Teacher forcing runs all positions at once under a causal mask; :meth:`step` runs one position
    and keeps per-layer keys/values in the cache: ``{"length": int, "layers": [{"self": {"k", "v"},
    "source": {"k", "v", "mask", "empty_rows", "bias"}}, ...]}`` where ``length`` is the number of positions
    decoded so far (see :class:`~s2s_tasks.nn.attention.MultiHeadAttention` for the buffers).

    ``copy_attention``: pointer-generator (See et al., 2017, eq. 8-9) whose copy distribution
    ``a_t`` is the last layer's cross-attention, averaged over heads or, with
    ``copy_attention_head=h``, head ``h`` alone (a head then specialises in copying). The gate
    inputs are ``h*_t = sum_i a_t,i m_i`` over the encoder states ``m``, the final decoder state
    (after the last LayerNorm) and the embedded input token (with its position); the output is
    then ``log P(w)``. The cache needs nothing more: the step recomputes the copy attention from
    the cached cross-attention keys. Coverage is used as a loss only
    (:func:`s2s_tasks.nn.copy.coverage_loss` on the returned attention).
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        ffn_dim: int,
        num_layers: int,
        dropout: float = 0.1,
        pad_id: int = 0,
        positional: str = "sinusoidal",
        max_positions: int = 1024,
        activation: str = "relu",
        copy_attention: bool = False,
        copy_attention_head: Optional[int] = None,
    ) -> None:
        super().__init__()
        if copy_attention_head is not None:
            if not copy_attention:
                raise ValueError("`model.copy_attention_head` is set but `model.copy_attention` is false; set both or neither")
            if not 0 <= copy_attention_head < num_heads:
                raise ValueError(
                    f"`model.copy_attention_head` must be in [0, model.num_heads) = [0, {num_heads}), got {copy_attention_head}"
                )
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.copy_attention = copy_attention
        self.copy_attention_head = copy_attention_head
        self.embed = Embeddings(vocab_size, d_model, pad_id, positional=positional, max_positions=max_positions, dropout=dropout, scale=True)
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(d_model, num_heads, ffn_dim, dropout=dropout, activation=activation) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.output_projection = nn.Linear(d_model, vocab_size)
        self.pointer_generator = PointerGenerator(d_model, d_model, d_model) if copy_attention else None

    def _source_attention(self, weights: Tensor) -> Tensor:
        """Last layer's cross-attention ``(B, heads, T, S)`` -> ``(B, T, S)``: the chosen copy head, or the head mean."""
        if self.copy_attention_head is not None:
            return weights[:, self.copy_attention_head]
        return weights.mean(dim=1)

    def _output(self, inputs: Tensor, x: Tensor, attention: Optional[Tensor], enc_out: EncoderOutput) -> Tensor:
        """Logits (or, with copy attention, log-probabilities) ``(B, T, V)`` from the embedded
        inputs ``(B, T, D)``, the last layer's output ``(B, T, D)`` and its source attention ``(B, T, S)``."""
        state = self.final_norm(x)
        logits = apply_linear(self.output_projection, state)
        if self.pointer_generator is None:
            return logits
        assert attention is not None
        context = torch.bmm(attention.to(enc_out.states.dtype), enc_out.states)  # h*_t = sum_i a_t,i m_i
        return self.pointer_generator(logits, attention, context, state, inputs, enc_out.src_ids)

    def _layers(
        self, tgt_in: Tensor, enc_out: EncoderOutput, every_layer: bool, need_weights: bool
    ) -> Tuple[Tensor, Tensor, Optional[Tensor], List[Tensor]]:
        """Embedded inputs ``(B, T, D)``, the last layer's output ``(B, T, D)``, its cross-attention
        weights ``(B, heads, T, S)`` (when ``need_weights``) and, with ``every_layer``, each layer's."""
        x = inputs = self.embed(tgt_in)
        weights: Optional[Tensor] = None
        last = len(self.layers) - 1
        per_layer: List[Tensor] = []
        for i, layer in enumerate(self.layers):
            x, weights, _ = layer(x, enc_out.states, enc_out.mask, need_weights=every_layer or (need_weights and i == last))
            if every_layer:
                assert weights is not None
                per_layer.append(weights)
        return inputs, x, weights, per_layer

    def output_features(self, tgt_in: Tensor, enc_out: EncoderOutput) -> Optional[Tensor]:
        if self.pointer_generator is not None:
            return None
        return self.final_norm(self._layers(tgt_in, enc_out, every_layer=False, need_weights=False)[1])

    def forward(
        self, tgt_in: Tensor, enc_out: EncoderOutput, return_attention: Union[bool, str] = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        check_return_attention(return_attention)
        every_layer = return_attention == "all"
        inputs, x, weights, per_layer = self._layers(tgt_in, enc_out, every_layer, bool(return_attention) or self.copy_attention)
        attention = None if weights is None else self._source_attention(weights)
        logits = self._output(inputs, x, attention, enc_out)
        if every_layer:
            return logits, torch.stack(per_layer, dim=1)  # (B, L, heads, T, S)
        if return_attention:
            assert attention is not None
            return logits, attention
        return logits

    @property
    def shares_source_rows(self) -> bool:
        # copy attention scatters per-row attention onto per-row source ids: one source row per row
        return not self.copy_attention

    def init_cache(self, enc_out: EncoderOutput) -> Cache:
        return {"length": 0, "layers": [{"self": {}, "source": {}} for _ in self.layers]}

    def step(self, last_tokens: Tensor, enc_out: EncoderOutput, cache: Optional[Cache]) -> Tuple[Tensor, Cache]:
        if cache is None:
            cache = self.init_cache(enc_out)
        x = inputs = self.embed(last_tokens.unsqueeze(1), offset=cache["length"])
        layer_caches = []
        weights: Optional[Tensor] = None
        last = len(self.layers) - 1
        for i, (layer, layer_cache) in enumerate(zip(self.layers, cache["layers"])):
            x, weights, layer_cache = layer(
                x, enc_out.states, enc_out.mask, cache=layer_cache, need_weights=self.copy_attention and i == last
            )
            layer_caches.append(layer_cache)
        attention = None if weights is None else self._source_attention(weights)
        logits = self._output(inputs, x, attention, enc_out).squeeze(1)
        return logits, {**cache, "length": cache["length"] + 1, "layers": layer_caches}
