"""Data parallelism on CPU with the gloo backend: the batch sampler's shards, and real
multi-process runs of the CLI (Lightning's own launcher, and torchrun simulating two nodes).

The multi-process runs start the CLI in subprocesses (each process imports Lightning: several
seconds), with one intra-op thread per process and a timeout after which the whole process
group is killed, so a hanging collective fails the test instead of the suite.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from s2s_tasks.cli import main
from s2s_tasks.data.sampler import TokenBudgetBatchSampler
from s2s_tasks.registry import config_dir
from test_structured_cli import TINY as STRUCTURED_TINY

TASK_DIR = Path(__file__).resolve().parent.parent / "tasks"
#: the structured tests' tiny model, quieter and with smaller batches (a later flag wins)
TINY = [*STRUCTURED_TINY, "--model.log_examples", "0", "--data.max_tokens", "1024"]
#: 45 evaluation records in batches of at most 7: 7 batches, so with 2 ranks the sampler repeats
#: one batch to even out the ranks (its rows must be counted once)
EVAL_RECORDS, EVAL_BATCH = 45, 7
EVAL_BATCHING = ["--data.max_batch_size", str(EVAL_BATCH), "--data.eval_max_tokens", "100000"]
TIMEOUT = 240
#: what a run in a subprocess starts with (Lightning re-executes it for the other ranks)
PREDICT_WRAPPER = """\
import sys
import s2s_tasks.data.streaming as streaming
streaming.CHUNK_RECORDS = 8  # several chunks from a small file: every rank gets some
from s2s_tasks.cli import main
main()
"""


# ------------------------------------------------------------------------------------ the sampler
@pytest.mark.parametrize("n, replicas", [(101, 2), (101, 3), (7, 4), (64, 2)])
def test_sampler_shards_are_disjoint_equal_and_reshuffled_per_epoch(n, replicas):
    """Each rank gets the same number of batches; apart from the batches repeated to even out
    the ranks (the first ones of the list, fewer than ``replicas``), no example is on two ranks
    or twice on one; every epoch reshuffles the same way on every rank (from the seed)."""
    lengths = [1 + (i * 37) % 29 for i in range(n)]
    full = list(TokenBudgetBatchSampler(lengths, max_tokens=60, seed=5))
    epochs = []
    for epoch in range(2):
        samplers = [TokenBudgetBatchSampler(lengths, max_tokens=60, seed=5, num_replicas=replicas, rank=r) for r in range(replicas)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        shards = [list(s) for s in samplers]
        assert len({len(s) for s in shards}) == 1 and all(len(s) == len(samplers[0]) for s in shards)
        # rank r holds batches r, r + replicas, ... of one list padded with its own first batches
        interleaved = [shards[i % replicas][i // replicas] for i in range(len(shards[0]) * replicas)]
        padding = len(interleaved) - len({tuple(b) for b in interleaved})
        assert 0 <= padding < replicas
        unique = interleaved[: len(interleaved) - padding]
        assert interleaved[len(unique):] == unique[:padding]
        assert sorted(i for b in unique for i in b) == list(range(n))  # disjoint and complete
        single = TokenBudgetBatchSampler(lengths, max_tokens=60, seed=5)
        single.set_epoch(epoch)
        assert unique == list(single)  # the ranks share out the one-process batch list
        epochs.append(unique)
    assert epochs[0] == full
    if len(full) > 2:
        assert epochs[0] != epochs[1]


# ------------------------------------------------------------------------------------ helpers
def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        env.pop(name, None)  # a run inside a distributed job must not join it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
    return env


def _start(command, cwd):
    # a session of its own: on timeout the launcher and every rank it started are killed together
    return subprocess.Popen(command, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(process, timeout=TIMEOUT):
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"distributed run timed out after {timeout} s:\n{output[-3000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, output[-4000:]
    return output


def run_cli(args, cwd, script=None):
    """The CLI in a subprocess: ``python -m s2s_tasks.cli`` (or a script file) with ``args``."""
    command = [sys.executable, str(script)] if script else [sys.executable, "-m", "s2s_tasks.cli"]
    return _finish(_start([*command, *args], cwd))


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def csv_metrics(log_dir: Path):
    """The last logged value of every metric in a CSVLogger's metrics.csv."""
    (path,) = log_dir.rglob("metrics.csv")
    values = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def head(path: Path, lines: int, out: Path) -> Path:
    out.write_text("".join(path.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]), encoding="utf-8")
    return out


def common(task, root: Path):
    return ["--task", task, "--trainer.default_root_dir", str(root), "--trainer.logger.init_args.save_dir", str(root / "logs"),
            "--data.cache_dir", str(root.parent / "cache"), "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny checkpoint per task (trained in this process, a few steps)."""
    made = {}

    def get(task):
        if task not in made:
            root = tmp_path_factory.mktemp(f"{task}-ckpt") / "run"
            main(["fit", *common(task, root), *TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "6",
                  "--trainer.limit_val_batches", "0"])
            made[task] = next((root / "logs").rglob("last.ckpt"))
        return made[task]

    return get


# ------------------------------------------------------------------------------------ evaluation
@pytest.mark.usefixtures("single_thread")
@pytest.mark.parametrize("task, metrics", [
    ("translation", ("val/loss", "val/ppl", "val/bleu", "val/chrf")),
    # the structured head's evaluation step; gathering and de-duplication are shared with the above
    pytest.param("ner", ("val/loss", "val/f1", "val/precision", "val/recall"), marks=pytest.mark.slow),
])
def test_validate_on_two_processes_gives_the_one_process_metrics(task, metrics, trained, tmp_path):
    """The same checkpoint validated by 1 and by 2 processes (ddp, gloo): the metrics over the
    whole split agree to 1e-6, although the 2 ranks' batch lists are padded with a repeated batch."""
    ckpt = trained(task)
    validation = head(TASK_DIR / task / "sample" / "validation.jsonl", EVAL_RECORDS, tmp_path / "validation.jsonl")
    args = ["validate", "--ckpt_path", str(ckpt), "--data.validation_file", str(validation), *EVAL_BATCHING]
    one = main([*args, *common(task, tmp_path / "one")]).trainer.callback_metrics
    run_cli([*args, *common(task, tmp_path / "two"), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
             "--trainer.strategy", "ddp"], tmp_path)
    two = csv_metrics(tmp_path / "two" / "logs")
    for name in metrics:
        assert two[name] == pytest.approx(float(one[name]), rel=1e-6, abs=1e-6), name


# ------------------------------------------------------------------------------------ predict
@pytest.mark.usefixtures("single_thread")
def test_predict_on_two_processes_writes_every_input_once_in_order(trained, tmp_path, monkeypatch):
    ckpt = trained("translation")
    sources = [json.loads(line)["source"] for line in (TASK_DIR / "translation" / "sample" / "validation.jsonl").read_text(encoding="utf-8").splitlines()[:45]]
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("\n".join(sources) + "\n", encoding="utf-8")
    args = ["predict", "--ckpt_path", str(ckpt), "--data.predict_file", str(inputs), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path), "--data.cache_dir", str(tmp_path / "cache"),
            "--trainer.enable_progress_bar", "false", "--model.generation.strategy", "greedy"]
    import s2s_tasks.data.streaming as streaming

    monkeypatch.setattr(streaming, "CHUNK_RECORDS", 8)
    main([*args, "--predictions.output_file", str(tmp_path / "one.jsonl")])
    script = tmp_path / "predict_wrapper.py"
    script.write_text(PREDICT_WRAPPER)
    run_cli([*args, "--predictions.output_file", str(tmp_path / "two.jsonl"), "--trainer.accelerator", "cpu",
             "--trainer.devices", "2", "--trainer.strategy", "ddp"], tmp_path, script=script)
    one = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text(encoding="utf-8").splitlines()]
    two = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in two] == list(range(1, len(sources) + 1))
    assert [r["source"] for r in two] == sources
    assert [r["prediction"] for r in two] == [r["prediction"] for r in one]
    assert [r["score"] for r in two] == pytest.approx([r["score"] for r in one], abs=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir() if ".part" in p.name or p.suffix == ".tmp") == []


# ------------------------------------------------------------------------------------ training
@pytest.mark.slow  # DDP fit itself also runs in the two-node test; this one checks the numbers (about 40 s)
@pytest.mark.usefixtures("single_thread")
def test_two_processes_train_like_one_process_with_gradient_accumulation(trained, tmp_path):
    """2 ranks x 4 batches (gradients averaged by DDP) take the same optimizer steps as 1
    process x 8 batches accumulating 2: rank r gets batches r, r + 2, ... of the one batch list.
    Dropout off; the validation loss after training agrees to 1e-4 (float reduction order)."""
    task = "translation"
    ckpt = trained(task)
    validation = head(TASK_DIR / task / "sample" / "validation.jsonl", EVAL_RECORDS, tmp_path / "validation.jsonl")
    args = ["fit", *TINY, "--data.tokenizer_file", str(ckpt), "--data.validation_file", str(validation),
            "--data.train_file", str(TASK_DIR / task / "sample" / "train.jsonl"), *EVAL_BATCHING,
            "--model.dropout", "0.0", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu"]
    one = main([*args, *common(task, tmp_path / "one"), "--trainer.limit_train_batches", "8",
                "--trainer.accumulate_grad_batches", "2"])
    assert one.trainer.global_step == 4
    run_cli([*args, *common(task, tmp_path / "two"), "--trainer.limit_train_batches", "4", "--trainer.devices", "2",
             "--trainer.strategy", "ddp"], tmp_path)
    two = csv_metrics(tmp_path / "two" / "logs")
    assert two["step"] == 3  # the last logged step (0-based): 4 optimizer steps
    assert two["val/loss"] == pytest.approx(float(one.trainer.callback_metrics["val/loss"]), rel=1e-4)


# ------------------------------------------------------------------------------------ two nodes
@pytest.mark.slow  # four processes started twice (about 70 s); the ddp runs above cover the same strategy code
def test_two_node_launch_with_torchrun_fits_and_tests(trained, tmp_path):
    """Two torchrun launches on this machine act as two nodes of one process each (gloo over
    127.0.0.1): ``fit`` a few steps, then ``test`` the checkpoint, both complete on both nodes."""
    task = "ner"
    ckpt = trained(task)  # its tokenizer: no tokenizer training on every rank
    test_file = head(TASK_DIR / task / "sample" / "test.jsonl", EVAL_RECORDS, tmp_path / "test.jsonl")
    cluster = ["--trainer.accelerator", "cpu", "--trainer.num_nodes", "2", "--trainer.devices", "1",
               "--trainer.strategy", "ddp", "--data.test_file", str(test_file)]

    def on_two_nodes(args):
        port = free_port()
        launches = [_start([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                            "--node_rank", str(rank), "--master_addr", "127.0.0.1", "--master_port", str(port),
                            "-m", "s2s_tasks.cli", *args], tmp_path) for rank in (0, 1)]
        try:
            return [_finish(p) for p in launches]
        finally:
            for p in launches:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)

    run = common(task, tmp_path / "run")
    on_two_nodes(["fit", *run, *TINY, *cluster, "--data.tokenizer_file", str(ckpt),
                  "--data.train_file", str(TASK_DIR / task / "sample" / "train.jsonl"),
                  "--data.validation_file", str(test_file), "--trainer.max_epochs", "1",
                  "--trainer.limit_train_batches", "3"])
    (last,) = (tmp_path / "run" / "logs").rglob("last.ckpt")
    outputs = on_two_nodes(["test", *run, *cluster, "--ckpt_path", str(last), *EVAL_BATCHING])
    assert "test/f1" in outputs[0]  # node 0 prints the results table
    tested = csv_metrics(sorted((tmp_path / "run" / "logs").glob("*/version_*"))[-1])
    assert 0.0 <= tested["test/f1"] <= 100.0


def test_trainer_presets_compose_with_the_task_config(capsys):
    for preset, nodes in (("ddp", 1), ("multinode", 2)):
        with pytest.raises(SystemExit):
            main(["fit", "--task", "qa", "--config", str(config_dir() / "trainer" / f"{preset}.yaml"),
                  "--trainer.devices", "2", "--print_config"])
        import yaml

        config = yaml.safe_load(capsys.readouterr().out)
        trainer = config["trainer"]
        assert trainer["strategy"] == "ddp" and trainer["num_nodes"] == nodes and str(trainer["devices"]) == "2"
        # the task's own trainer settings stay: the preset only adds to them
        assert trainer["use_distributed_sampler"] is False and trainer["callbacks"]
        assert config["task"] == "qa"
