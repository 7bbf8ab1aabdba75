"""The Hugging Face backend (``--model.pretrained DIR``): tiny random T5, BART and BERT models saved
into tmp_path (tests/tiny_hf_models.py) stand in for real ones, so nothing is downloaded."""

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")

from helpers import quiet_trainer  # noqa: E402
from tiny_hf_models import TASK_DIR, save_tiny_model  # noqa: E402

from s2s_tasks.cli import main  # noqa: E402
from s2s_tasks.data.pretrained_tokenizer import load_hf_tokenizer, pretrained_tokenizer  # noqa: E402
from s2s_tasks.data.tokenizer import SPECIAL_TOKENS  # noqa: E402
from s2s_tasks.generation import GenerationConfig, generate  # noqa: E402
from s2s_tasks.nn.pretrained import PretrainedEncoder, PretrainedSeq2Seq  # noqa: E402

TEXT = "The foxes were slow. A driver has swum"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return {family: save_tiny_model(family, root / family) for family in ("t5", "bart", "bert")}


@pytest.mark.parametrize("family", ["t5", "bart", "bert"])
def test_the_tokenizer_splits_text_as_the_model_does_with_our_special_ids(family, tiny_models):
    hf = load_hf_tokenizer(tiny_models[family])
    ours = pretrained_tokenizer(hf, ["<e1>", "</e1>"])
    assert [ours.id_to_token(i) for i in range(4)] == SPECIAL_TOKENS
    encoded = ours.encode(TEXT, add_special_tokens=False)
    assert encoded.tokens == hf.tokenize(TEXT)
    assert ours.token_to_id("<e1>") is not None and ours.encode("a <e1> b", add_special_tokens=False).tokens.count("<e1>") == 1
    # the network maps our ids back onto the model's own ids
    kind = "encoder" if family == "bert" else "seq2seq"
    network = (PretrainedEncoder if kind == "encoder" else PretrainedSeq2Seq)(tiny_models[family], ours.get_vocab_size())
    assert network.to_model[torch.tensor(encoded.ids)].tolist() == hf(TEXT, add_special_tokens=False)["input_ids"]
    specials = network.to_model[:4].tolist()
    assert specials[0] == hf.pad_token_id and specials[3] == (hf.eos_token_id if kind == "seq2seq" else hf.sep_token_id)
    assert specials[2] == (network.hf.config.decoder_start_token_id if kind == "seq2seq" else hf.cls_token_id)
    # two new rows for the entity markers
    assert network.hf.get_input_embeddings().weight.shape[0] >= int(network.to_model.max()) + 1


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_encoder_decoder_equals_the_model_and_its_cache_equals_teacher_forcing(family, tiny_models):
    torch.manual_seed(0)
    hf_tokenizer = load_hf_tokenizer(tiny_models[family])
    ours = pretrained_tokenizer(hf_tokenizer)
    network = PretrainedSeq2Seq(tiny_models[family], ours.get_vocab_size()).eval()
    rows = [torch.tensor(ours.encode(text, add_special_tokens=False).ids + [3]) for text in (TEXT, "a dog")]
    src = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)  # padded with <pad> = 0
    mask = src != 0
    tgt_in = torch.tensor([[2, 10, 11, 12], [2, 13, 14, 15]])
    with torch.no_grad():
        logits = network(src, mask, tgt_in)
        reference = network.hf(input_ids=network.to_model[src], attention_mask=mask.long(), decoder_input_ids=network.to_model[tgt_in]).logits
        live = ~network.dead
        assert torch.allclose(logits[..., live], reference.index_select(-1, network.to_model)[..., live], atol=1e-5)
        # beam search through the model's key/value cache scores each hypothesis as teacher forcing does
        enc = network.encode(src, mask)
        config = GenerationConfig(strategy="beam", beam_size=3, n_best=3, max_length=6, length_penalty=0.0)
        output = generate(network.decoder, enc, bos_id=2, eos_id=3, config=config)
        for b in range(src.size(0)):
            for hypothesis, score in zip(output.tokens[b], output.scores[b].tolist()):
                sequence = torch.tensor([[2, *hypothesis]])
                target = torch.tensor([[*hypothesis, 3]])
                row = network.decoder(sequence, network.encode(src[b:b + 1], mask[b:b + 1])).log_softmax(-1)
                rescored = row.gather(-1, target.unsqueeze(-1)).sum().item()
                assert rescored == pytest.approx(score, abs=1e-4)


def fit_args(task, directory, tmp_path, *extra):
    return ["fit", "--task", task, "--model.pretrained", directory, "--trainer.default_root_dir", str(tmp_path),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--data.cache_dir", str(tmp_path / "cache"),
            "--trainer.limit_val_batches", "0", "--model.warmup_steps", "2", "--model.learning_rate", "0.003",
            "--model.generation.max_length", "6", "--model.val_generation.max_length", "6", "--data.max_tokens", "1024",
            "--trainer.max_epochs", "100", *extra]


#: every task family on a tiny pretrained model: (task, model family, extra flags)
FAMILIES = [
    ("translation", "t5", ()),
    ("summarization", "bart", ()),
    ("dialogue", "t5", ()),  # its turn and speaker tokens get new embedding rows
    ("classification", "bert", ()),
    ("ner", "bert", ()),
    ("qa", "bert", ()),
    ("relation_extraction", "bert", ()),
    # the structured generate head over the T5 network of the translation case (about 8 s)
    pytest.param("classification", "t5", ("--model.head", "generate"), marks=pytest.mark.slow),
    ("ner", "bart", ()),  # the encoder of an encoder-decoder under an encoder head
]


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("task,family,extra", FAMILIES)
def test_fine_tuning_a_pretrained_model_learns_and_predicts(task, family, extra, tiny_models, tmp_path):
    trainer_steps = 40
    cli = main([*fit_args(task, tiny_models[family], tmp_path, *extra), "--trainer.max_steps", str(trainer_steps)])
    model, data = cli.model, cli.datamodule
    assert model.hparams.pretrained == tiny_models[family] and data.hparams.pretrained == tiny_models[family]
    # the training loss falls: first steps against the last ones, on the same batches the loader gives
    batch = next(iter(data.train_dataloader()))
    fresh = main([*fit_args(task, tiny_models[family], tmp_path / "fresh", *extra), "--trainer.max_steps", "0"]).model
    with torch.no_grad():
        fresh.eval(), model.eval()
        before, after = fresh.training_losses(batch)["loss"].item(), model.training_losses(batch)["loss"].item()
    assert after < 0.9 * before, (before, after)  # measured: 0.77 (t5 translation) to 0.33 (bert/bart NER)
    # the checkpoint records the pretrained model and predicts with nothing else but it
    (ckpt,) = (tmp_path / "checkpoints").glob("last.ckpt")
    stored = torch.load(ckpt, weights_only=False)
    assert stored["hyper_parameters"]["pretrained"] == tiny_models[family]
    out = tmp_path / "predictions.jsonl"
    sample = TASK_DIR / task / "sample"
    inputs = sample / "predict.txt" if (sample / "predict.txt").is_file() else sample / "predict.jsonl"
    predicted = main(["predict", "--ckpt_path", str(ckpt), "--data.predict_file", str(inputs), "--predictions.output_file", str(out),
                      "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert predicted.model.hparams.pretrained == tiny_models[family]
    assert out.read_text().count("\n") >= 3


@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("peft", ["lora", "adapter"])
@pytest.mark.parametrize("task,family", [("classification", "bert"), ("translation", "bart")])
def test_peft_on_a_pretrained_model_changes_only_its_own_weights(task, family, peft, tiny_models, tmp_path):
    cli = main([*fit_args(task, tiny_models[family], tmp_path, "--model.peft", peft, "--model.lora_rank", "2",
                          "--model.adapter_size", "4"), "--trainer.max_steps", "0"])
    model = cli.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n or ".adapter." in n or n.startswith("task_head.")) for n in trainable)
    trainer = quiet_trainer(tmp_path, max_steps=5, limit_val_batches=0)
    trainer.fit(model, datamodule=cli.datamodule)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(("lora_" in k or ".adapter." in k or k.startswith("task_head.")) for k in changed)


def test_trainable_share_of_lora_on_a_base_sized_encoder(tmp_path):
    """At a realistic size (BERT-style, 4 layers of 256) LoRA trains under 5% of the weights."""
    from transformers import BertConfig, BertModel

    from s2s_tasks.nn.peft import add_lora, count_parameters, freeze_base

    directory = tmp_path / "bert-256"
    small = save_tiny_model("bert", directory)
    BertModel(BertConfig(vocab_size=load_hf_tokenizer(small).backend_tokenizer.get_vocab_size() + 8000, hidden_size=256,
                         num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)).save_pretrained(directory)
    encoder = PretrainedEncoder(str(directory), pretrained_tokenizer(load_hf_tokenizer(small)).get_vocab_size())
    assert add_lora(encoder, rank=8, targets=["attention", "ffn"])
    freeze_base(encoder)
    trainable, total = count_parameters(encoder)
    assert 0 < trainable / total < 0.05


def test_a_hub_name_without_network_says_to_pass_a_directory(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "s2s_tasks", "fit", "--task", "translation", "--model.pretrained",
                             "some-org/some-model", "--trainer.default_root_dir", str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert "pass the directory: --model.pretrained DIR" in result.stderr and "some-org/some-model" in result.stderr
    with pytest.raises(FileNotFoundError, match="no such directory"):
        main(fit_args("translation", str(tmp_path / "nowhere"), tmp_path))


@pytest.mark.usefixtures("single_thread")
def test_a_trainable_only_checkpoint_takes_its_base_from_the_pretrained_model(tiny_models, tmp_path):
    main([*fit_args("relation_extraction", tiny_models["bert"], tmp_path, "--model.peft", "lora", "--model.lora_rank", "2",
                    "--model.save_trainable_only", "true"), "--trainer.max_steps", "3"])
    (ckpt,) = (tmp_path / "checkpoints").glob("last.ckpt")
    stored = torch.load(ckpt, weights_only=False)
    assert not any(k.startswith("encoder.hf.") and "lora_" not in k for k in stored["state_dict"])  # the base is left out
    validated = main(["validate", "--ckpt_path", str(ckpt), "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
                      "--trainer.limit_val_batches", "1"])
    assert "val/micro_f1" in validated.trainer.callback_metrics


@pytest.mark.usefixtures("single_thread")
def test_export_of_pretrained_models_computes_what_the_eager_model_does(tiny_models, tmp_path):
    pytest.importorskip("onnxruntime")
    from test_export import eager_greedy, generation_records, run_exported, sample_records

    from s2s_tasks.export import EncoderHeadGraph, OnnxGreedyDecoder, export_checkpoint
    from s2s_tasks.inference import Predictor

    for task, family in (("classification", "bert"), ("translation", "t5")):
        main([*fit_args(task, tiny_models[family], tmp_path / task), "--trainer.max_steps", "2"])
        (ckpt,) = (tmp_path / task / "checkpoints").glob("last.ckpt")
        out = tmp_path / task / "onnx"
        manifest = export_checkpoint(str(ckpt), str(out), "onnx")
        predictor = Predictor.from_checkpoint(str(ckpt))
        if manifest["kind"] == "encoder_head":
            graph = EncoderHeadGraph(predictor.model, task)
            for batch in predictor.encode(sample_records(task)):
                with torch.no_grad():
                    (expected,) = graph(*(batch[n] for n in graph.input_names))
                (got,) = run_exported(out, "model", batch)
                assert torch.allclose(torch.from_numpy(got), expected, atol=1e-4)
        else:
            decoder = OnnxGreedyDecoder(str(out))
            for batch in predictor.encode(generation_records(task)):
                with torch.no_grad():
                    expected = eager_greedy(predictor.model, batch)
                assert decoder.generate(batch["src_ids"].numpy(), batch["src_mask"].numpy()) == expected


@pytest.mark.usefixtures("single_thread")
def test_a_pretrained_model_fine_tunes_on_two_processes(tiny_models, tmp_path):
    """DDP (2 processes, gloo) as for our own models: the run ends, and both ranks' updates reach
    the checkpoint, which validates like any other."""
    from test_distributed import run_cli

    run_cli([*fit_args("classification", tiny_models["bert"], tmp_path), "--trainer.max_steps", "3", "--trainer.accelerator", "cpu",
             "--trainer.devices", "2", "--trainer.strategy", "ddp"], tmp_path)
    (ckpt,) = (tmp_path / "checkpoints").glob("last.ckpt")
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    from transformers import AutoModel

    base = AutoModel.from_pretrained(tiny_models["bert"]).state_dict()
    name = "encoder.hf.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(state[name], base[name.removeprefix("encoder.hf.")]) and torch.isfinite(state[name]).all()
    validated = main(["validate", "--ckpt_path", str(ckpt), "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)])
    assert "val/accuracy" in validated.trainer.callback_metrics
