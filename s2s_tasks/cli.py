"""The ``s2s-tasks`` command: a LightningCLI whose ``--task NAME`` picks the task's classes and
loads ``configs/NAME.yaml`` as the default config (so ``--config`` files and flags override it).

``s2s-tasks --help`` is answered without importing Lightning (about 3 s); everything else builds
the full LightningCLI parser of the chosen task.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

from s2s_tasks.registry import TASKS, get_task

SUBCOMMANDS = ("fit", "validate", "test", "predict")

OVERVIEW = """usage: s2s-tasks {{fit,validate,test,predict}} --task TASK [options]

Train and run sequence-to-sequence models (LightningCLI).

subcommands:
  fit        train a model (validation every epoch, checkpoints under the log dir)
  validate   evaluate on the validation split
  test       evaluate on the test split (decoding with model.generation)
  predict    decode data.predict_file (txt: one input per line, or jsonl/csv/...) to a jsonl file

tasks (--task):
{tasks}

Every key of configs/TASK.yaml can be overridden with --config FILE or a flag such as
--model.d_model 512, --data.train_file my.jsonl, --trainer.max_epochs 5.
Errors are printed as one paragraph; --verbose (or S2S_TASKS_VERBOSE=1) adds the traceback.
Options of one task and subcommand: s2s-tasks fit --task translation --help
"""


def _task_from_config_files(argv: Sequence[str]) -> Optional[str]:
    import yaml

    for i, arg in enumerate(argv):
        path = None
        if arg in ("--config", "-c") and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        if path and Path(path).is_file():
            try:
                data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
            except yaml.YAMLError:
                continue  # the CLI reports the broken file itself
            if isinstance(data, dict) and isinstance(data.get("task"), str):
                return data["task"]
    return None


def _task_from_checkpoint(argv: Sequence[str]) -> Optional[str]:
    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--ckpt_path" and i + 1 < len(argv) else (arg.split("=", 1)[1] if arg.startswith("--ckpt_path=") else None)
        if path and Path(path).is_file():
            from s2s_tasks.checkpoint import read_checkpoint_extras

            try:
                return read_checkpoint_extras(path).get("task")
            except ValueError:
                return None  # reported properly when the checkpoint is loaded
    return None


def find_task(argv: Sequence[str]) -> Optional[str]:
    """The task named by ``--task NAME`` / ``--task=NAME``, else by a ``task:`` key of a ``--config``
    file, else by the checkpoint given with ``--ckpt_path``."""
    for i, arg in enumerate(argv):
        if arg == "--task" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--task="):
            return arg.split("=", 1)[1]
    return _task_from_config_files(argv) or _task_from_checkpoint(argv)


def _configure_logging() -> None:
    """Show the project's INFO messages (data found, records skipped or truncated, files written)."""
    import logging

    logger = logging.getLogger("s2s_tasks")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _fail(message: str) -> None:
    sys.stderr.write(f"s2s-tasks: error: {message}\n")
    raise SystemExit(2)


#: model hyperparameters that determine the weights' shapes: always taken from a checkpoint
WEIGHT_SHAPING_KEYS = frozenset({
    "architecture", "d_model", "num_encoder_layers", "num_decoder_layers", "num_heads", "ffn_dim",
    "positional", "max_positions", "rnn_cell", "bidirectional", "attention", "input_feeding",
    "embedding_dim", "tie_embeddings", "share_embeddings", "copy_attention", "copy_attention_head",
    "coverage_attention",
    # structured-prediction heads
    "head", "pooling", "crf", "hidden_size",
})
#: filled in by the data module (link_arguments), never from the checkpoint's hyperparameters
LINKED_KEYS = frozenset({"vocab_size", "pad_id", "num_labels"})


#: data settings that describe where data is and how it is batched, not how text is encoded:
#: never taken from a checkpoint
DATA_LOCATION_KEYS = frozenset({
    "train_file", "validation_file", "test_file", "predict_file", "dataset", "dataset_config",
    "train_split", "validation_split", "test_split", "tokenizer_file", "cache_dir", "num_workers",
    "max_tokens", "eval_max_tokens", "max_batch_size", "seed", "head",
})


def _merge_checkpoint_hparams(current, defaults, stored: dict, skip: frozenset = LINKED_KEYS, section: str = "model") -> None:
    """Update a parsed namespace (``model`` or ``data``) in place with a checkpoint's hyperparameters."""
    import logging

    log = logging.getLogger("s2s_tasks.cli")
    for key, value in stored.items():
        if key in skip or key.startswith("_") or key not in current:
            continue
        given, default = current[key], defaults.get(key) if defaults is not None else None
        if isinstance(value, dict) and hasattr(given, "items"):
            _merge_checkpoint_hparams(given, default, value, skip, section)  # nested options such as generation
            continue
        if isinstance(value, (list, tuple)) and isinstance(given, (list, tuple)):
            value = type(given)(value)
        if given == value:
            continue
        if key in WEIGHT_SHAPING_KEYS:
            if given != default:
                log.warning("%s.%s=%r ignored: the checkpoint was trained with %r", section, key, given, value)
            current[key] = value
        elif given == default:
            current[key] = value


def _build_cli_class():
    """The LightningCLI subclass (defined lazily: importing Lightning takes seconds)."""
    from pytorch_lightning.cli import LightningCLI

    from s2s_tasks.callbacks import PredictionWriter
    from s2s_tasks.data.structured import StructuredDataModule

    class S2STasksCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--task", choices=list(TASKS), required=False, help="the task: " + ", ".join(TASKS))
            parser.add_lightning_class_args(PredictionWriter, "predictions")
            parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
            parser.link_arguments("data.pad_id", "model.pad_id", apply_on="instantiate")
            if issubclass(self.datamodule_class, StructuredDataModule):
                parser.link_arguments("data.num_labels", "model.num_labels", apply_on="instantiate")
                # the model's head decides how the data is encoded (features or text pairs)
                parser.link_arguments("model.head", "data.head")
                for name in self.datamodule_class.model_links:  # settings the data decides for the model
                    parser.link_arguments(f"data.{name}", f"model.{name}")

        def _parse_ckpt_path(self) -> None:
            """Take the model's (and the data encoding's) hyperparameters from ``--ckpt_path`` as defaults.

            Lightning's own version lets the checkpoint override every flag, so e.g.
            ``--model.generation.beam_size 8`` at predict time would be ignored. Here a value the
            user set (one that differs from the config defaults) wins, except for the keys that
            shape the weights, which must match the checkpoint (a differing value is reported).
            """
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if not ckpt_path or not Path(ckpt_path).is_file():
                return
            from s2s_tasks.checkpoint import load_checkpoint

            checkpoint = load_checkpoint(ckpt_path)
            defaults = self._subcommand_parsers[subcommand].get_defaults()
            config = self.config[subcommand]
            _merge_checkpoint_hparams(config.model, defaults.model, dict(checkpoint.get("hyper_parameters") or {}))
            # how text was encoded (columns, lengths, lowercasing, task options) also defaults to the checkpoint's
            data_hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
            _merge_checkpoint_hparams(config.data, defaults.data, data_hparams, DATA_LOCATION_KEYS, "data")
            # the links ran before the checkpoint was read: apply them again
            if "head" in config.model and "head" in config.data:
                config.data.head = config.model.head
            for name in getattr(self.datamodule_class, "model_links", ()):
                config.model[name] = config.data[name]

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand]
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and ckpt_path not in ("last", "best", "hpc") and config.data.get("tokenizer_file") is None:
                # the checkpoint carries its tokenizer: the vocabulary must be the one it was trained with
                config.data.tokenizer_file = ckpt_path

    return S2STasksCLI


#: errors that describe bad input or configuration: the console script prints them as one
#: paragraph (no traceback unless ``--verbose`` or ``S2S_TASKS_VERBOSE=1``)
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(args: Optional[List[str]] = None):
    """Entry point of the ``s2s-tasks`` console script; returns the LightningCLI (its ``trainer``,
    ``model`` and ``datamodule``) when called from Python with ``args``, and None when it reads
    ``sys.argv`` (the console script passes the return value to ``sys.exit``, which would turn
    any object into exit status 1).

    From the console, an error in the input or the configuration ends the run with a one-paragraph
    message and exit status 2; ``--verbose`` (or ``S2S_TASKS_VERBOSE=1``) shows the traceback
    too. Python callers (``args`` given) get the exception itself.
    """
    import os

    argv = list(sys.argv[1:] if args is None else args)
    verbose = "--verbose" in argv or os.environ.get("S2S_TASKS_VERBOSE", "") not in ("", "0")
    argv = [a for a in argv if a != "--verbose"]
    if args is None:
        sys.argv[1:] = argv  # LightningCLI reads sys.argv itself (and warns if also given args)
    task = find_task(argv)
    has_subcommand = any(a in SUBCOMMANDS for a in argv)
    if task is None:
        wants_help = not argv or any(a in ("-h", "--help") for a in argv)
        if wants_help or not has_subcommand:
            width = max(len(n) for n in TASKS)
            listing = "\n".join(f"  {name.ljust(width)}  {spec.description}" for name, spec in TASKS.items())
            sys.stdout.write(OVERVIEW.format(tasks=listing))
            raise SystemExit(0 if wants_help else 2)
        _fail(f"choose a task with --task NAME; valid tasks: {', '.join(TASKS)}")
    try:
        spec = get_task(task)
    except KeyError as err:
        _fail(err.args[0])
    _configure_logging()
    module_class, datamodule_class = spec.classes()
    cli_class = _build_cli_class()
    defaults = {"default_config_files": [str(spec.config_file)]}
    try:
        cli = cli_class(
            module_class,
            datamodule_class,
            parser_kwargs={name: dict(defaults) for name in SUBCOMMANDS},
            save_config_kwargs={"overwrite": True},
            args=None if args is None else argv,
        )
    except USER_ERRORS as err:
        if args is not None or verbose:
            raise
        _fail(f"{err} (run with --verbose for the traceback)")
    return None if args is None else cli


if __name__ == "__main__":
    main()
