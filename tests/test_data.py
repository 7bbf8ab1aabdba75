"""Tokenizer, token-budget sampler and the base data module."""

import random

import torch

import pytest

from helpers import write_jsonl

from s2s_tasks.data.datamodule import Seq2SeqCollator, Seq2SeqDataModule
from s2s_tasks.data.sampler import TokenBudgetBatchSampler, spread_order
from s2s_tasks.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    decode_batch,
    encode_batch,
    load_tokenizer,
    train_tokenizer,
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Zwei junge Männer sind im Freien, nahe vieler Büsche!",
    "Meeting with Dana moved to Friday (room 4.21).",
] * 30


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_tokenizer_round_trip_restores_text(kind, tmp_path):
    tokenizer = train_tokenizer(TEXTS, vocab_size=200, kind=kind)
    assert [tokenizer.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    texts = ["The lazy fox meets Dana.", "Männer im Freien, nahe Büsche!"]
    assert decode_batch(tokenizer, encode_batch(tokenizer, texts)) == texts
    path = tmp_path / "tok.json"
    tokenizer.save(str(path))
    loaded = load_tokenizer(str(path))
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert encode_batch(loaded, texts) == encode_batch(tokenizer, texts)


def test_tokenizer_rejects_unknown_kind_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match="data.tokenizer_kind"):
        train_tokenizer(TEXTS, kind="nonsense")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="data.tokenizer_file"):
        load_tokenizer(str(bad))


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_yields_every_example_once_within_budget(shuffle):
    rng = random.Random(0)
    lengths = [rng.randint(1, 60) for _ in range(500)]
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=256, shuffle=shuffle, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    seen = sorted(i for batch in batches for i in batch)
    assert seen == list(range(500))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 256


def test_sampler_oversized_example_gets_own_batch_and_max_batch_size():
    sampler = TokenBudgetBatchSampler([5, 300, 5, 5, 5], max_tokens=100, max_batch_size=2, shuffle=False)
    batches = list(sampler)
    assert [1] in batches
    assert all(len(b) <= 2 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(5))


def test_spread_order_is_a_permutation_whose_prefixes_spread_out():
    assert spread_order(8) == [0, 4, 2, 6, 1, 5, 3, 7]
    assert spread_order(0) == [] and spread_order(1) == [0]
    for count in (2, 3, 5, 13, 100):
        assert sorted(spread_order(count)) == list(range(count))
    assert spread_order(5) == [0, 4, 2, 1, 3]


def test_unshuffled_batches_are_spread_over_lengths_so_a_fraction_is_a_fair_sample():
    """Evaluation batches: --trainer.limit_val_batches keeps the first ones, which must not be
    only the shortest examples; and the order is the same every epoch."""
    lengths = [1 + (i * 37) % 400 for i in range(2000)]  # 1..400, shuffled
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=800, shuffle=False)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(2000))
    quarter = [lengths[i] for b in batches[: len(batches) // 4] for i in b]
    assert min(quarter) <= 20 and max(quarter) >= 380  # short and long alike
    assert abs(sum(quarter) / len(quarter) - sum(lengths) / len(lengths)) < 40
    sampler.set_epoch(3)
    assert list(sampler) == batches


def test_sampler_reshuffles_per_epoch_and_is_reproducible():
    lengths = list(range(1, 200))
    a = TokenBudgetBatchSampler(lengths, max_tokens=64, seed=1)
    b = TokenBudgetBatchSampler(lengths, max_tokens=64, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_sampler_shards_disjointly_with_equal_counts():
    lengths = [random.Random(i).randint(1, 30) for i in range(101)]
    shards = [list(TokenBudgetBatchSampler(lengths, max_tokens=90, seed=0, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    covered = {i for shard in shards for batch in shard for i in batch}
    assert covered == set(range(101))


def test_datamodule_encodes_batches_and_reports_skips(tmp_path, caplog):
    records = [{"src": f"hello number {i} world", "tgt": f"hallo nummer {i} welt"} for i in range(40)]
    records[5]["tgt"] = "   "
    write_jsonl(tmp_path / "train.jsonl", records)
    write_jsonl(tmp_path / "valid.jsonl", records[:10])
    dm = Seq2SeqDataModule(
        train_file=str(tmp_path / "train.jsonl"),
        validation_file=str(tmp_path / "valid.jsonl"),
        source_column="src",
        target_column="tgt",
        tokenizer_vocab_size=100,
        max_tokens=64,
        max_target_tokens=4,
        cache_dir=str(tmp_path / "cache"),
    )
    with caplog.at_level("WARNING"):
        dm.setup("fit")
    assert "skipped 1 of 40 records" in caplog.text
    assert "truncated to data.max_target_tokens=4" in caplog.text
    split = dm.encode_split("train")
    assert len(split) == 39 and 6 not in split.record_numbers
    batch = Seq2SeqCollator(split, PAD_ID)([0, 1, 2])
    assert batch["src_ids"].shape[0] == 3 and batch["src_mask"].dtype.is_floating_point is False
    assert (batch["tgt_in"][:, 0] == BOS_ID).all()
    assert all(EOS_ID in row.tolist() for row in batch["tgt_out"])
    assert batch["tgt_in"].shape[1] <= 4  # BOS + at most max_target_tokens - 1 tokens


def test_datamodule_names_missing_column_and_existing_ones(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"en": "a b", "de": "c d"}] * 3)
    dm = Seq2SeqDataModule(train_file=str(tmp_path / "train.jsonl"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError) as info:
        dm.tokenizer
    message = str(info.value)
    assert "'source' not found" in message and "['en', 'de']" in message and "data.source_column" in message


def test_datamodule_rejects_unknown_extension(tmp_path):
    (tmp_path / "train.xml").write_text("<a/>")
    dm = Seq2SeqDataModule(train_file=str(tmp_path / "train.xml"))
    with pytest.raises(ValueError, match="unknown extension '.xml'"):
        dm.tokenizer


def test_datamodule_reads_jsonl_csv_tsv_parquet_alike(tmp_path):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"en": f"sentence {i}, with a comma", "de": f"satz {i}"} for i in range(12)]
    write_jsonl(tmp_path / "d.jsonl", records)
    for suffix, delimiter in ((".csv", ","), (".tsv", "\t")):
        with open(tmp_path / f"d{suffix}", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["en", "de"], delimiter=delimiter)
            writer.writeheader()
            writer.writerows(records)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "d.parquet")
    tokenizer_file = tmp_path / "tok.json"
    train_tokenizer([r["en"] for r in records] + [r["de"] for r in records], vocab_size=80).save(str(tokenizer_file))
    encoded = {}
    for suffix in (".jsonl", ".csv", ".tsv", ".parquet"):
        dm = Seq2SeqDataModule(
            train_file=str(tmp_path / f"d{suffix}"), source_column="en", target_column="de",
            tokenizer_file=str(tokenizer_file), cache_dir=str(tmp_path / "cache"),
        )
        split = dm.encode_split("train")
        encoded[suffix] = (split.src_ids, split.tgt_ids, split.sources)
    assert all(value == encoded[".jsonl"] for value in encoded.values())
    assert encoded[".jsonl"][2][3] == "sentence 3, with a comma"


def test_predict_txt_file_gives_one_record_per_line(tmp_path):
    (tmp_path / "in.txt").write_text("first line\nsecond line\n", encoding="utf-8")
    tokenizer_file = tmp_path / "tok.json"
    train_tokenizer(TEXTS, vocab_size=120).save(str(tokenizer_file))
    dm = Seq2SeqDataModule(predict_file=str(tmp_path / "in.txt"), tokenizer_file=str(tokenizer_file), cache_dir=str(tmp_path / "c"))
    split = dm.encode_split("predict")
    assert split.sources == ["first line", "second line"] and split.tgt_ids is None
    batch = next(iter(dm.predict_dataloader()))
    assert sorted(batch["index"].tolist()) == [1, 2] and "tgt_in" not in batch


def test_dataset_name_path_loads_splits_by_name(tmp_path):
    # a local folder is a valid `datasets.load_dataset` name: exercises data.dataset offline
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    for split, n in (("train", 20), ("validation", 5)):
        write_jsonl(folder / f"{split}.jsonl", [{"source": f"{split} text {i}", "target": f"ziel {i}"} for i in range(n)])
    dm = Seq2SeqDataModule(dataset=str(folder), tokenizer_vocab_size=80, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert len(dm.encode_split("train")) == 20 and len(dm.encode_split("validation")) == 5
    assert dm.encode_split("validation").sources[0] == "validation text 0"


def test_predict_jsonl_uses_the_source_column(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "en": "first line"}, {"id": 2, "en": "second line"}])
    tokenizer_file = tmp_path / "tok.json"
    train_tokenizer(TEXTS, vocab_size=120).save(str(tokenizer_file))
    dm = Seq2SeqDataModule(
        predict_file=str(tmp_path / "in.jsonl"), source_column="en", tokenizer_file=str(tokenizer_file),
        cache_dir=str(tmp_path / "c"),
    )
    split = dm.encode_split("predict")
    assert split.sources == ["first line", "second line"] and split.tgt_ids is None and split.references is None


def test_sampler_tie_lengths_cut_padding_and_keep_the_budget():
    g = torch.Generator().manual_seed(0)
    src = torch.randint(1, 30, (2000,), generator=g).tolist()
    tgt = torch.randint(1, 30, (2000,), generator=g).tolist()
    cost = [max(s, t) for s, t in zip(src, tgt)]

    def padding(batches):
        real = sum(src[i] + tgt[i] for b in batches for i in b)
        padded = sum(len(b) * (max(src[i] for i in b) + max(tgt[i] for i in b)) for b in batches)
        return 1 - real / padded

    plain = list(TokenBudgetBatchSampler(cost, max_tokens=300, seed=2))
    tied = list(TokenBudgetBatchSampler(cost, max_tokens=300, seed=2, tie_lengths=list(zip(src, tgt))))
    assert sorted(i for b in tied for i in b) == list(range(2000))
    assert all(len(b) * max(cost[i] for i in b) <= 300 for b in tied)
    assert padding(tied) < 0.8 * padding(plain)
    with pytest.raises(ValueError, match="tie_lengths"):
        TokenBudgetBatchSampler(cost, max_tokens=300, tie_lengths=[(1, 2)] * 5)
