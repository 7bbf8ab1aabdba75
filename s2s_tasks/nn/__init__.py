"""Plain ``torch.nn`` building blocks (no Lightning): embeddings, attention, encoders, decoders."""

from .attention import AttentionMechanism, BahdanauAttention, LuongAttention, MultiHeadAttention, masked_softmax
from .copy import PointerGenerator, coverage_loss
from .decoders import Decoder, RNNDecoder, TransformerDecoder
from .embedding import Embeddings, LearnedPositionalEmbedding, SinusoidalPositionalEmbedding, TokenEmbedding
from .encoders import Encoder, RNNEncoder, TransformerEncoder
from .seq2seq import Seq2Seq, build_seq2seq
from .types import Cache, EncoderOutput, reorder_cache

__all__ = [
    "AttentionMechanism",
    "BahdanauAttention",
    "Cache",
    "Decoder",
    "EncoderOutput",
    "Embeddings",
    "Encoder",
    "LearnedPositionalEmbedding",
    "LuongAttention",
    "MultiHeadAttention",
    "PointerGenerator",
    "RNNDecoder",
    "RNNEncoder",
    "Seq2Seq",
    "SinusoidalPositionalEmbedding",
    "TokenEmbedding",
    "TransformerDecoder",
    "TransformerEncoder",
    "build_seq2seq",
    "coverage_loss",
    "masked_softmax",
    "reorder_cache",
]
