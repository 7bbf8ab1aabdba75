"""Encoder + decoder, with tied / shared embeddings, and a builder from flat hyperparameters."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Tuple, Union

from torch import Tensor, nn

from .decoders import RNN_ATTENTIONS, Decoder, RNNDecoder, TransformerDecoder
from .embedding import POSITIONAL_CHOICES
from .encoders import RNN_CELLS, Encoder, RNNEncoder, TransformerEncoder
from .types import EncoderOutput

ARCHITECTURES = ("transformer", "rnn")


class Seq2Seq(nn.Module):
    """An :class:`Encoder` and a :class:`Decoder`.

    Args:
        tie_output_embeddings: the decoder's output projection reuses the target embedding matrix
            (Press & Wolf, 2017; Vaswani et al., 2017, §3.4).
        share_embeddings: the encoder uses the decoder's token embedding (one joint vocabulary).
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        tie_output_embeddings: bool = True,
        share_embeddings: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        if share_embeddings:
            src, tgt = encoder.embed.token.weight, decoder.embed.token.weight
            if src.shape != tgt.shape:
                raise ValueError(
                    f"`model.share_embeddings` needs encoder and decoder embeddings of the same shape, got "
                    f"{tuple(src.shape)} and {tuple(tgt.shape)}; set it to false or use one embedding size"
                )
            encoder.embed.token = decoder.embed.token
        if tie_output_embeddings:
            out, emb = decoder.output_projection.weight, decoder.embed.token.weight
            if out.shape != emb.shape:
                raise ValueError(
                    f"`model.tie_embeddings` needs the output projection {tuple(out.shape)} and the target embedding "
                    f"{tuple(emb.shape)} to have the same shape (for an RNN: embedding_dim == d_model); set it to false "
                    "or make the sizes equal"
                )
            decoder.output_projection.weight = decoder.embed.token.weight

    def encode(self, src_ids: Tensor, src_mask: Tensor) -> EncoderOutput:
        """``src_ids (B, S)``, ``src_mask (B, S)`` -> :class:`EncoderOutput` (with ``src_ids`` set)."""
        enc_out = self.encoder(src_ids, src_mask)
        return enc_out if enc_out.src_ids is not None else replace(enc_out, src_ids=src_ids)

    def forward(
        self, src_ids: Tensor, src_mask: Tensor, tgt_in: Tensor, return_attention: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Teacher forcing: logits ``(B, T, V)`` (log-probabilities with copy attention), plus the
        decoder's attention over the source ``(B, T, S)`` when ``return_attention``."""
        return self.decoder(tgt_in, self.encode(src_ids, src_mask), return_attention=return_attention)


def _check_choice(key: str, value: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"`{key}` must be one of {list(choices)}, got {value!r}")


def build_encoder(
    *,
    vocab_size: int,
    pad_id: int,
    architecture: str = "transformer",
    d_model: int = 256,
    num_encoder_layers: int = 3,
    num_heads: int = 4,
    ffn_dim: int = 1024,
    dropout: float = 0.1,
    positional: str = "sinusoidal",
    max_positions: int = 1024,
    rnn_cell: str = "lstm",
    bidirectional: bool = True,
    embedding_dim: Optional[int] = None,
) -> Encoder:
    """The encoder alone, from the same flat hyperparameters as :func:`build_seq2seq` (encoder
    heads of classification, tagging, QA and relation extraction read its states)."""
    _check_choice("model.architecture", architecture, ARCHITECTURES)
    if architecture == "transformer":
        _check_choice("model.positional", positional, POSITIONAL_CHOICES)
        if d_model % num_heads != 0:
            raise ValueError(f"`model.d_model` ({d_model}) must be divisible by `model.num_heads` ({num_heads})")
        return TransformerEncoder(
            vocab_size, d_model, num_heads, ffn_dim, num_encoder_layers,
            dropout=dropout, pad_id=pad_id, positional=positional, max_positions=max_positions,
        )
    _check_choice("model.rnn_cell", rnn_cell, tuple(RNN_CELLS))
    return RNNEncoder(
        vocab_size, embedding_dim or d_model, d_model, num_layers=num_encoder_layers, cell=rnn_cell,
        bidirectional=bidirectional, dropout=dropout, pad_id=pad_id,
    )


def build_seq2seq(
    *,
    vocab_size: int,
    pad_id: int,
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
) -> Seq2Seq:
    """A :class:`Seq2Seq` from flat hyperparameters (the ``model.*`` config keys).

    ``architecture="transformer"`` uses ``d_model``, ``num_heads``, ``ffn_dim``, ``positional``,
    ``max_positions``; ``"rnn"`` uses ``hidden_size = d_model``, ``embedding_dim`` (default
    ``d_model``), ``rnn_cell``, ``bidirectional``, ``attention``, ``input_feeding``.

    ``copy_attention`` makes the decoder a pointer-generator (See et al., 2017; see
    :mod:`s2s_tasks.nn.copy`) that returns log-probabilities in place of logits; for the
    Transformer, ``copy_attention_head`` picks the cross-attention head that copies (default:
    the mean of all heads of the last layer). Copying puts target probability on the source
    token ids, so it needs one vocabulary for source and target (the shared tokenizer).
    ``coverage_attention`` (RNN only) feeds the coverage vector into the attention scores
    (See et al., 2017, eq. 11).

    Initialisation: Xavier-uniform for every linear layer with zero biases, embeddings from
    ``N(0, dim**-0.5)`` with the padding row at zero, PyTorch defaults for recurrent weights.
    """
    _check_choice("model.architecture", architecture, ARCHITECTURES)
    if architecture == "transformer" and coverage_attention:
        raise ValueError(
            "`model.coverage_attention` feeds coverage into RNN attention scores and needs `model.architecture: rnn`; "
            "for a Transformer use the coverage loss alone (`model.coverage_loss_weight`)"
        )
    if architecture == "rnn":
        if copy_attention_head is not None:
            raise ValueError(
                "`model.copy_attention_head` applies to `model.architecture: transformer` only "
                "(an RNN decoder has one attention); leave it unset"
            )
        _check_choice("model.attention", attention, RNN_ATTENTIONS)
    encoder = build_encoder(
        vocab_size=vocab_size, pad_id=pad_id, architecture=architecture, d_model=d_model,
        num_encoder_layers=num_encoder_layers, num_heads=num_heads, ffn_dim=ffn_dim, dropout=dropout,
        positional=positional, max_positions=max_positions, rnn_cell=rnn_cell, bidirectional=bidirectional,
        embedding_dim=embedding_dim,
    )
    if architecture == "transformer":
        decoder: Decoder = TransformerDecoder(
            vocab_size, d_model, num_heads, ffn_dim, num_decoder_layers,
            dropout=dropout, pad_id=pad_id, positional=positional, max_positions=max_positions,
            copy_attention=copy_attention, copy_attention_head=copy_attention_head,
        )
    else:
        decoder = RNNDecoder(
            vocab_size, embedding_dim or d_model, d_model, encoder.output_size, num_layers=num_decoder_layers,
            cell=rnn_cell, attention=attention, input_feeding=input_feeding, dropout=dropout, pad_id=pad_id,
            copy_attention=copy_attention, coverage_attention=coverage_attention,
        )
    # Transformer layers already initialise themselves this way; this covers the RNN decoder and the output projection.
    for module in decoder.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return Seq2Seq(encoder, decoder, tie_output_embeddings=tie_embeddings, share_embeddings=share_embeddings)
