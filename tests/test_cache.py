"""The disk cache of tokenized data is keyed by content: the same data and tokenizer are read
back exactly; a changed file, tokenizer or setting is never served a stale entry; a broken
entry is rebuilt."""

import json
import logging
import os

import pytest

from helpers import write_jsonl

import s2s_tasks.data.cache as cache
from s2s_tasks.tasks.qa.data import QADataModule
from s2s_tasks.tasks.translation.data import TranslationDataModule

WORDS = ["house", "tree", "river", "small", "green", "old", "the", "a", "near", "big"]


@pytest.fixture(autouse=True)
def cache_everything(monkeypatch):
    monkeypatch.setattr(cache, "MIN_RECORDS", 1)


def pairs(n=60, shift=0):
    return [{"source": " ".join(WORDS[(i + k + shift) % 10] for k in range(4)), "target": " ".join(WORDS[(i * 3 + k) % 10] for k in range(3))}
            for i in range(n)]


def encoded(tmp_path, train, **kwargs):
    data = TranslationDataModule(train_file=str(train), cache_dir=str(tmp_path / "cache"), tokenizer_vocab_size=120, **kwargs)
    return data, data.encode_split("train")


def entries(tmp_path, suffix):
    return sorted((tmp_path / "cache").rglob(f"*{suffix}"))


def test_the_same_data_is_read_back_from_the_cache(tmp_path, caplog):
    train = write_jsonl(tmp_path / "train.jsonl", pairs())
    first_data, first = encoded(tmp_path, train)
    assert len(entries(tmp_path, ".npz")) == 1 and len(entries(tmp_path, ".json")) == 1  # token ids and tokenizer
    with caplog.at_level(logging.INFO, logger="s2s_tasks"):
        second_data, second = encoded(tmp_path, train, max_tokens=999)  # batching settings do not matter
    assert "token ids read from the cache" in caplog.text and "Tokenizer trained on" in caplog.text
    assert second_data.tokenizer.to_str() == first_data.tokenizer.to_str()
    assert (second.src_ids, second.tgt_ids, second.sources, second.references, second.record_numbers) == (
        first.src_ids, first.tgt_ids, first.sources, first.references, first.record_numbers)


def test_a_changed_file_with_the_same_name_and_time_is_not_served_stale(tmp_path):
    path = tmp_path / "train.jsonl"
    write_jsonl(path, pairs())
    stat = os.stat(path)
    _, before = encoded(tmp_path, path)
    changed = pairs()
    changed[5]["source"] = "a completely new river"
    write_jsonl(path, changed)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size is not needed, same mtime is
    data, after = encoded(tmp_path, path)
    assert after.sources[5] == "a completely new river"
    assert data.tokenizer.decode(after.src_ids[5]) == "a completely new river"
    assert after.src_ids[5] != before.src_ids[5]
    assert len(entries(tmp_path, ".npz")) == 2


def test_another_tokenizer_or_setting_gets_its_own_entry(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", pairs())
    _, plain = encoded(tmp_path, train)
    data, other = encoded(tmp_path, train, lowercase=True, tokenizer_kind="unigram")
    assert len(entries(tmp_path, ".npz")) == 2 and len(entries(tmp_path, ".json")) == 2
    tokenizer_file = tmp_path / "tokenizer.json"
    data.tokenizer.save(str(tokenizer_file))
    _, shorter = encoded(tmp_path, train, tokenizer_file=str(tokenizer_file), max_source_tokens=3)
    assert len(entries(tmp_path, ".npz")) == 3
    assert all(len(ids) <= 3 for ids in shorter.src_ids)


def test_a_truncated_entry_is_reported_and_rebuilt(tmp_path, caplog):
    train = write_jsonl(tmp_path / "train.jsonl", pairs())
    _, first = encoded(tmp_path, train)
    (entry,) = entries(tmp_path, ".npz")
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    (tokenizer_entry,) = entries(tmp_path, ".json")
    tokenizer_entry.write_text('{"version": "1.0", "trunc')
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        _, again = encoded(tmp_path, train)
    assert "could not be read" in caplog.text and "rebuilding it" in caplog.text
    assert "training the tokenizer again" in caplog.text
    assert again.src_ids == first.src_ids
    _, third = encoded(tmp_path, train)  # the rebuilt entry is whole
    assert third.src_ids == first.src_ids


def test_notes_made_while_tokenizing_are_replayed_from_the_cache(tmp_path, caplog):
    train = write_jsonl(tmp_path / "train.jsonl", pairs())
    encoded(tmp_path, train, max_source_tokens=3)
    with caplog.at_level(logging.WARNING, logger="s2s_tasks"):
        data, _ = encoded(tmp_path, train, max_source_tokens=3)
    assert "60 of 60 records truncated to data.max_source_tokens=3 tokens" in caplog.text
    assert any("truncated" in note for note in data.notes)


def test_structured_features_round_trip_exactly(tmp_path):
    context = " ".join(f"fact {i} is about person {i} ." for i in range(12))
    records = [{"context": context, "question": f"who is fact {i} about ?",
                "answers": {"text": [f"person {i}"], "answer_start": [context.index(f"person {i} ")]}} for i in range(10)]
    train = write_jsonl(tmp_path / "train.jsonl", records)

    def qa():
        data = QADataModule(train_file=train, cache_dir=str(tmp_path / "cache"), tokenizer_vocab_size=100,
                            max_source_tokens=24, doc_stride=6, max_question_tokens=10)
        return data.encode_split("train")

    fresh, cached = qa(), qa()
    assert entries(tmp_path, ".npz")
    assert cached.src_ids == fresh.src_ids and cached.record_numbers == fresh.record_numbers
    assert cached.fields.keys() == fresh.fields.keys()
    for name in fresh.fields:
        assert cached.fields[name] == fresh.fields[name], name
    assert isinstance(cached.fields["offsets"][0][0], tuple)
    json.dumps(cached.fields["start_position"])  # plain ints
