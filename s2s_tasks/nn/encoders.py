"""Encoders: token ids -> :class:`~s2s_tasks.nn.types.EncoderOutput`.

* :class:`RNNEncoder` -- (bidirectional) LSTM/GRU that never reads padding.
* :class:`TransformerEncoder` -- pre-LayerNorm Transformer (Vaswani et al., 2017; Xiong et al., 2020).

Shapes: ``B`` batch, ``S`` source length, ``D`` output size. Masks are bool, ``True`` = real token.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

from torch import Tensor, nn

from .attention import MultiHeadAttention
from .dropout import Dropout
from .embedding import Embeddings
from .masked_rnn import run_masked
from .onednn_linear import apply_linear
from .types import EncoderOutput

RNN_CELLS: Dict[str, Type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}
ACTIVATIONS: Dict[str, Type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


def rnn_class(cell: str) -> Type[nn.RNNBase]:
    """``"lstm"`` / ``"gru"`` -> the ``torch.nn`` class."""
    if cell not in RNN_CELLS:
        raise ValueError(f"`model.rnn_cell` must be one of {list(RNN_CELLS)}, got {cell!r}")
    return RNN_CELLS[cell]


def _embed(embed: Embeddings, src_ids: Tensor, extra_embeddings: Optional[Tensor]) -> Tensor:
    x = embed(src_ids)
    return x if extra_embeddings is None else x + extra_embeddings.to(x.dtype)


class Encoder(nn.Module):
    """Base class of every encoder.

    ``forward(src_ids (B, S) long, src_mask (B, S) bool, extra_embeddings=None) -> EncoderOutput``
    with ``states (B, S, output_size)``. ``extra_embeddings``, ``None`` or ``(B, S, E)`` with ``E``
    the embedding size, is added to the token embeddings: per-token input features a task
    computes (e.g. QA's question-match features, :class:`~s2s_tasks.tasks.qa.model.QAModule`).
    """

    @property
    def output_size(self) -> int:
        """Size ``D`` of the encoder states."""
        raise NotImplementedError

    def forward(self, src_ids: Tensor, src_mask: Tensor, extra_embeddings: Optional[Tensor] = None) -> EncoderOutput:
        raise NotImplementedError


class RNNEncoder(Encoder):
    """Recurrent encoder (Bahdanau et al., 2015, §3.2: bidirectional annotations
    ``h_j = [h_j^forward; h_j^backward]``).

    When bidirectional each direction has ``hidden_size // 2`` units, so states are
    ``(B, S, hidden_size)`` either way. Padding never enters the recurrence (:func:`~s2s_tasks.nn.masked_rnn.run_masked`),
    so an example's states do not depend on how far it was padded.
    ``final_state`` is the last layer's final hidden state of both directions, concatenated
    (``h`` for an LSTM, not ``c``): ``(B, hidden_size)``.
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if bidirectional and hidden_size % 2 != 0:
            raise ValueError(f"a bidirectional encoder needs an even hidden size (`model.d_model`), got {hidden_size}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.embed = Embeddings(vocab_size, embedding_dim, pad_id, positional="none", dropout=dropout, scale=False)
        self.rnn = rnn_class(cell)(
            embedding_dim,
            hidden_size // self.num_directions,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = Dropout(dropout)

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def forward(self, src_ids: Tensor, src_mask: Tensor, extra_embeddings: Optional[Tensor] = None) -> EncoderOutput:
        """``src_ids (B, S)``, ``src_mask (B, S)`` (and ``extra_embeddings (B, S, embedding_dim)``,
        added to the embeddings) -> states ``(B, S, hidden_size)``, final ``(B, hidden_size)``."""
        batch_size = src_ids.size(0)
        states, hidden = run_masked(self.rnn, _embed(self.embed, src_ids, extra_embeddings), src_mask)
        # (layers * directions, B, H/dirs) -> last layer -> (B, directions * H/dirs)
        last = hidden.view(self.num_layers, self.num_directions, batch_size, -1)[-1]
        final_state = last.transpose(0, 1).reshape(batch_size, self.hidden_size)
        return EncoderOutput(states=self.dropout(states), mask=src_mask, final_state=final_state)


class FeedForward(nn.Module):
    """Position-wise feed-forward network (Vaswani et al., 2017, eq. 2):
    ``FFN(x) = W_2 act(W_1 x + b_1) + b_2``, ``(B, T, D) -> (B, T, D)``."""

    def __init__(self, d_model: int, ffn_dim: int, dropout: float = 0.0, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"`model.activation` must be one of {list(ACTIVATIONS)}, got {activation!r}")
        self.net = nn.Sequential(
            nn.Linear(d_model, ffn_dim),
            ACTIVATIONS[activation](),
            Dropout(dropout),
            nn.Linear(ffn_dim, d_model),
        )
        for layer in (self.net[0], self.net[3]):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        first, activation, dropout, second = self.net
        if type(activation) is nn.ReLU and not (activation._forward_hooks or activation._forward_pre_hooks):
            # inside a search, oneDNN applies the ReLU as the product's last step
            hidden = apply_linear(first, x, activation="relu")
        else:
            hidden = activation(apply_linear(first, x))
        return apply_linear(second, dropout(hidden))


class TransformerEncoderLayer(nn.Module):
    """Pre-LayerNorm encoder layer (Xiong et al., 2020, fig. 1b):

    ``x = x + Dropout(SelfAttn(LN(x)))``; ``x = x + Dropout(FFN(LN(x)))``.

    ``self_attn_adapter`` and ``ffn_adapter`` act on the self-attention and FFN outputs before the
    residual sums: the identity unless :func:`~s2s_tasks.nn.peft.add_adapters` puts bottleneck
    adapters there (Houlsby et al., 2019).
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float = 0.1, activation: str = "relu") -> None:
        super().__init__()
        self.self_attn_norm = nn.LayerNorm(d_model)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout=dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, ffn_dim, dropout=dropout, activation=activation)
        self.dropout = Dropout(dropout)
        self.self_attn_adapter: nn.Module = nn.Identity()
        self.ffn_adapter: nn.Module = nn.Identity()

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x (B, S, D)``, ``mask (B, S)`` -> ``(B, S, D)``."""
        h = self.self_attn_norm(x)
        h, _, _ = self.self_attn(h, h, h, key_mask=mask)
        x = x + self.self_attn_adapter(self.dropout(h))
        return x + self.ffn_adapter(self.dropout(self.ffn(self.ffn_norm(x))))


class TransformerEncoder(Encoder):
    """Stack of pre-LN Transformer encoder layers with a final LayerNorm (Xiong et al., 2020).

    Token embeddings are scaled by ``sqrt(d_model)`` and summed with positions (Vaswani et al.,
    2017, §3.4-3.5). ``final_state`` is ``None``.
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
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.embed = Embeddings(vocab_size, d_model, pad_id, positional=positional, max_positions=max_positions, dropout=dropout, scale=True)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, num_heads, ffn_dim, dropout=dropout, activation=activation) for _ in range(num_layers)
        )
        self.final_norm = nn.LayerNorm(d_model)

    @property
    def output_size(self) -> int:
        return self.d_model

    def forward(self, src_ids: Tensor, src_mask: Tensor, extra_embeddings: Optional[Tensor] = None) -> EncoderOutput:
        """``src_ids (B, S)``, ``src_mask (B, S)`` (and ``extra_embeddings (B, S, d_model)``, added to
        the scaled token and position embeddings) -> states ``(B, S, d_model)``."""
        x = _embed(self.embed, src_ids, extra_embeddings)
        for layer in self.layers:
            x = layer(x, src_mask)
        return EncoderOutput(states=self.final_norm(x), mask=src_mask, final_state=None)
