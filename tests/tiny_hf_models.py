"""Tiny random Hugging Face models saved to a directory, as ``--model.pretrained DIR`` takes them:
built from ``transformers`` config classes and a tokenizer trained on the embedded sample data,
so that no test downloads anything. One per tokenizer family:

* ``t5``: encoder-decoder, Unigram tokenizer with a Metaspace pre-tokenizer, ``<pad> </s> <unk>``
  and no ``<s>`` (the decoder starts from ``<pad>``);
* ``bart``: encoder-decoder, byte-level BPE, ``<s> <pad> </s> <unk>`` (the decoder starts from ``</s>``);
* ``bert``: encoder only, WordPiece, ``[PAD] [UNK] [CLS] [SEP] [MASK]``.
"""

import json
from pathlib import Path
from typing import List

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

TASK_DIR = Path(__file__).resolve().parent.parent / "tasks"
FAMILIES = ("t5", "bart", "bert")


def sample_texts() -> List[str]:
    texts = []
    for path in sorted(TASK_DIR.glob("*/sample/train.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            for value in json.loads(line).values():
                if isinstance(value, str):
                    texts.append(value)
                elif isinstance(value, list):
                    texts.extend(v for v in value if isinstance(v, str))
    return texts


def _tokenizer(family: str) -> Tokenizer:
    texts = sample_texts()
    if family == "t5":
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
                                          show_progress=False)
    elif family == "bart":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    else:
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                                            show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def save_tiny_model(family: str, directory) -> str:
    """Save a tiny random ``family`` model and its tokenizer into ``directory``; returns its path."""
    import torch
    from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertModel, PreTrainedTokenizerFast,
                              T5Config, T5ForConditionalGeneration)

    torch.manual_seed(0)
    backend = _tokenizer(family)
    size = backend.get_vocab_size()
    ids = backend.get_vocab()
    if family == "t5":
        hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
        config = T5Config(vocab_size=size + 8, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=2,
                          pad_token_id=ids["<pad>"], eos_token_id=ids["</s>"], decoder_start_token_id=ids["<pad>"])
        model = T5ForConditionalGeneration(config)
    elif family == "bart":
        hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                               unk_token="<unk>", mask_token="<mask>")
        config = BartConfig(vocab_size=size, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=512,
                            pad_token_id=ids["<pad>"], bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                            decoder_start_token_id=ids["</s>"], forced_eos_token_id=None)
        model = BartForConditionalGeneration(config)
    else:
        hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                               sep_token="[SEP]", mask_token="[MASK]")
        config = BertConfig(vocab_size=size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=512, pad_token_id=ids["[PAD]"])
        model = BertModel(config)
    path = Path(directory)
    model.save_pretrained(path)
    hf_tokenizer.save_pretrained(path)
    return str(path)
