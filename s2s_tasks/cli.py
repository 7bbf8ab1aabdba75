"""The ``s2s-tasks`` command: a LightningCLI whose ``--task NAME`` picks the task's classes and
loads ``configs/NAME.yaml`` as the default config (so ``--config`` files and flags override it).

``s2s-tasks --help`` is answered without importing Lightning (about 3 s); everything else builds
the full LightningCLI parser of the chosen task.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Sequence

from s2s_tasks.config_errors import ConfigError, ErrorContext, config_files, is_file, load_yaml, option_values
from s2s_tasks.registry import TASKS, get_task, init_parameters, merge_configs

SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: commands that use a trained checkpoint outside the Trainer: name -> module with ``main(argv)``
TOOLS = {"export": "s2s_tasks.export", "serve": "s2s_tasks.serve"}

OVERVIEW = """usage: s2s-tasks {{fit,validate,test,predict}} --task TASK [options]
       s2s-tasks {{export,serve}} --ckpt_path X.ckpt [options]

Train and run sequence-to-sequence models (LightningCLI).

subcommands:
  fit        train a model (validation every epoch, checkpoints under the log dir)
  validate   evaluate on the validation split
  test       evaluate on the test split (decoding with model.generation)
  predict    decode data.predict_file (txt: one input per line, or jsonl/csv/...) to a jsonl file
  export     write a checkpoint's model as ONNX or TorchScript (s2s-tasks export --help)
  serve      answer a checkpoint's task over HTTP with a JSON API (s2s-tasks serve --help)

tasks (--task):
{tasks}

Every key of configs/TASK.yaml can be overridden with --config FILE or a flag such as
--model.d_model 512, --data.train_file my.jsonl, --trainer.max_epochs 5.
--preset real layers configs/presets/real/TASK.yaml over it: model sizes, schedule and batches
chosen for real data sets (the defaults are sized for the small embedded samples).
Errors are printed as one paragraph; --verbose (or S2S_TASKS_VERBOSE=1) adds the traceback.
Options of one task and subcommand: s2s-tasks fit --task translation --help
"""


def _task_from_config_files(argv: Sequence[str]) -> Optional[str]:
    import yaml

    for path in config_files(argv):
        try:
            data = load_yaml(path)
        except yaml.YAMLError:
            continue  # the CLI reports the broken file itself
        if isinstance(data, dict) and isinstance(data.get("task"), str):
            return data["task"]
    return None


def _ckpt_path_arg(argv: Sequence[str]) -> Optional[str]:
    values = option_values(argv, "--ckpt_path")
    return values[-1] if values else None


def _task_from_checkpoint(argv: Sequence[str]) -> Optional[str]:
    path = _ckpt_path_arg(argv)
    if path and Path(path).is_file():
        from s2s_tasks.checkpoint import read_checkpoint_extras

        try:
            return read_checkpoint_extras(path).get("task")
        except ValueError:
            return None  # reported by main()
    return None


def find_task(argv: Sequence[str]) -> Optional[str]:
    """The task named by ``--task NAME`` / ``--task=NAME``, else by a ``task:`` key of a ``--config``
    file, else by the checkpoint given with ``--ckpt_path``."""
    flags = option_values(argv, "--task")
    if flags:
        return flags[0]
    return _task_from_config_files(argv) or _task_from_checkpoint(argv)


def _task_origin(argv: Sequence[str]) -> str:
    """Where :func:`find_task` found the task, for messages."""
    if option_values(argv, "--task"):
        return "--task"
    import yaml

    for path in config_files(argv):
        try:
            data = load_yaml(path)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and isinstance(data.get("task"), str):
            return f"the task: key of config file {path}"
    return f"checkpoint {_ckpt_path_arg(argv)}"


def _default_config_files(argv: Sequence[str], spec) -> List[str]:
    """The task's default config file; with ``--preset NAME``, that file with the preset's
    (``configs/presets/NAME/TASK.yaml``) merged over it, written once to a temporary file.

    The merge is done here rather than by giving jsonargparse both files as default config files:
    its ``get_defaults()`` (which the checkpoint handling reads) cannot layer the second file's
    value of a dataclass-typed key such as ``model.generation`` over the first's."""
    names = option_values(argv, "--preset")
    if not names:
        return [str(spec.config_file)]
    name = names[-1]
    path = spec.preset_file(name)
    if not path.is_file():
        available = spec.presets()
        _fail(f"--preset {name}: there is no {name} preset for task {spec.name} (no file {path}); "
              + (f"presets of {spec.name}: {', '.join(available)}" if available else f"task {spec.name} has no presets"))
    import hashlib
    import os
    import tempfile

    import yaml

    base_text, preset_text = spec.config_file.read_text(encoding="utf-8"), path.read_text(encoding="utf-8")
    digest = hashlib.sha256((base_text + "\0" + preset_text).encode()).hexdigest()[:16]
    merged_file = Path(tempfile.gettempdir()) / "s2s-tasks-presets" / f"{spec.name}.{name}.{digest}.yaml"
    if not merged_file.is_file():
        try:
            merged = merge_configs(yaml.safe_load(base_text) or {}, yaml.safe_load(preset_text) or {})
        except ValueError as error:
            _fail(f"--preset {name}: {path}: {error}")
        merged_file.parent.mkdir(parents=True, exist_ok=True)
        partial = merged_file.with_suffix(f".{os.getpid()}.part")
        partial.write_text(f"# {spec.config_file} with {path} merged over it (s2s-tasks --preset {name})\n"
                           + yaml.safe_dump(merged, sort_keys=False), encoding="utf-8")
        os.replace(partial, merged_file)
    return [str(merged_file)]


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
    "head", "pooling", "crf", "hidden_size", "char_cnn", "reader", "reader_layers", "word_states",
    "inverse_count",
    # parameter-efficient fine-tuning (recorded only by models that use it)
    "peft", "lora_rank", "lora_targets", "adapter_size",
    # a Hugging Face network in place of ours
    "pretrained",
})
#: filled in by the data module (link_arguments), or about how a run starts: never taken from
#: the checkpoint's hyperparameters
LINKED_KEYS = frozenset({"vocab_size", "pad_id", "num_labels", "task_setup", "init_from", "ensemble"})


#: data settings that say where the data is (not how text is encoded): never taken from a checkpoint
DATA_SOURCE_KEYS = frozenset({
    "train_file", "validation_file", "test_file", "predict_file", "dataset", "dataset_config",
    "train_split", "validation_split", "test_split", "tokenizer_file", "cache_dir", "num_workers",
})
#: ... and those about how it is batched (the run's own, at the command line)
DATA_LOCATION_KEYS = DATA_SOURCE_KEYS | {"max_tokens", "eval_max_tokens", "max_batch_size", "seed", "head"}


#: the sections of a run's configuration whose keys a checkpoint can supply (see _parse_ckpt_path)
CHECKPOINT_SECTIONS = ("model", "data")


def explicit_keys(argv: Sequence[str]) -> frozenset:
    """The dotted keys of ``model`` and ``data`` (``model.generation.beam_size``) that a command
    line sets: its flags, the keys of its ``--config`` files, and those of a file or mapping given
    to a group (``--model configs/model/lstm-bahdanau.yaml``, ``--model.generation '{beam_size: 8}'``).

    These win over a checkpoint's hyperparameters even where they equal the config's default; the
    task's config and ``--preset`` file are defaults, not settings the user chose for this run.
    ``init_args`` levels are dropped (``--model.init_args.dropout`` sets ``model.dropout``)."""
    import yaml

    keys = set()

    def add(path: str, value) -> None:
        path = ".".join(part for part in path.split(".") if part and part != "init_args")
        if isinstance(value, dict) and value and "class_path" not in value:
            for name, below in value.items():
                add(f"{path}.{name}", below)
        elif path:
            keys.add(path)

    def parsed(text: str):
        if is_file(text):
            try:
                return load_yaml(text)
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                return None  # the parser reports the broken file itself
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return None

    for index, arg in enumerate(argv):
        if not arg.startswith("--") and arg != "-c":
            continue
        name, has_value, value = arg.lstrip("-").partition("=")
        name = name.rstrip("+")
        if not has_value:
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following is None or following.startswith("--"):
                continue
            value = following
        if name in ("config", "c"):
            data = parsed(value)
            if isinstance(data, dict):
                for section, below in data.items():
                    if section in SUBCOMMANDS and isinstance(below, dict):  # s2s-tasks --config x.yaml fit
                        for inner, deeper in below.items():
                            if inner in CHECKPOINT_SECTIONS:
                                add(inner, deeper)
                    elif section in CHECKPOINT_SECTIONS:
                        add(section, below)
        elif name.split(".", 1)[0] in CHECKPOINT_SECTIONS:
            # a group's value may be a mapping or a yaml file of one; a data file path is just a value
            whole = "." not in name or value.lstrip().startswith("{") or value.endswith((".yaml", ".yml"))
            data = parsed(value) if whole else None
            add(name, data if isinstance(data, dict) else value)
    return frozenset(keys)


def _is_explicit(path: str, explicit: frozenset) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:end]) in explicit for end in range(1, len(parts) + 1))


def _merge_checkpoint_hparams(current, defaults, stored: dict, skip: frozenset = LINKED_KEYS, section: str = "model",
                              explicit: frozenset = frozenset()) -> None:
    """Update a parsed namespace (``model`` or ``data``) in place with a checkpoint's hyperparameters.

    A key keeps the run's value where the command line set it (``explicit``: :func:`explicit_keys`)
    or where it differs from the config's default, except the keys that shape the weights, which
    always come from the checkpoint (a value set otherwise is reported)."""
    import logging

    log = logging.getLogger("s2s_tasks.cli")
    for key, value in stored.items():
        if key in skip or key.startswith("_") or key not in current:
            continue
        given, default = current[key], defaults.get(key) if defaults is not None else None
        if isinstance(value, dict) and hasattr(given, "items"):
            if hasattr(default, "get") and default.get("init_args") is not None and "init_args" not in given:
                default = default.get("init_args")  # a dataclass default is given as class_path + init_args
            # nested options such as generation
            _merge_checkpoint_hparams(given, default, value, skip, f"{section}.{key}", explicit)
            continue
        if isinstance(value, (list, tuple)) and isinstance(given, (list, tuple)):
            value = type(given)(value)
        if given == value:
            continue
        user_set = given != default or _is_explicit(f"{section}.{key}", explicit)
        if key in WEIGHT_SHAPING_KEYS:
            if user_set:
                log.warning("%s.%s=%r ignored: the checkpoint was trained with %r", section, key, given, value)
            current[key] = value
        elif not user_set:
            current[key] = value


def with_predating_defaults(stored: dict, model_class) -> dict:
    """A checkpoint's model hyperparameters plus, for each key that shapes the weights and that it
    does not record, ``model_class``'s default: the setting did not exist when the checkpoint was
    trained, and a new setting's default keeps the old behaviour. So a QA checkpoint from before
    ``model.char_cnn`` loads as one without character features even where the preset now sets
    them (it failed with missing ``encoder.embed.features`` weights). For ``--ckpt_path`` only,
    whose weights must all fit: ``model.init_from`` starts what does not fit from scratch, so a
    new setting (``model.peft``, ``model.char_cnn``) may be added there."""
    import inspect

    if not stored:
        return stored
    parameters = init_parameters(model_class)
    missing = {
        key: parameters[key].default for key in WEIGHT_SHAPING_KEYS
        if key not in stored and key in parameters and parameters[key].default is not inspect.Parameter.empty
    }
    return {**missing, **stored}


def _apply_init_from(config, defaults, task: str, explicit: frozenset = frozenset()) -> None:
    """``model.init_from``: the run takes the checkpoint's tokenizer, its label set for this task
    and the settings that shape the weights (architecture, sizes, head), so that the weights fit."""
    from s2s_tasks.checkpoint import EXTRAS_KEY, load_checkpoint

    path = config.model.init_from
    checkpoint = load_checkpoint(path)
    extras = checkpoint.get(EXTRAS_KEY) or {}
    if not extras.get("tokenizer"):
        raise ValueError(f"model.init_from {path} is not an s2s-tasks checkpoint (it holds no tokenizer); pass one written by s2s-tasks fit")
    if config.data.get("tokenizer_file") is None:
        config.data.tokenizer_file = path
    stored = dict(checkpoint.get("hyper_parameters") or {})
    labels = extras.get("label_maps") or {}
    if extras.get("task") == "multitask" and task != "multitask":
        task_settings = dict((stored.get("task_options") or {}).get(task) or {})
        setup = dict((stored.get("task_setup") or {}).get(task) or {})
        stored = {**{k: v for k, v in stored.items() if k not in ("task_options", "task_setup")}, **task_settings}
        if "head" in setup:
            stored["head"] = setup["head"]
        labels = {"labels": labels[task]} if labels.get(task) else {}
    shaping = {k: v for k, v in stored.items() if k in WEIGHT_SHAPING_KEYS}
    _merge_checkpoint_hparams(config.model, defaults.model, shaping, explicit=explicit)
    if labels.get("labels") and "labels" in config.data and config.data.get("labels") is None:
        config.data.labels = list(labels["labels"])
    for key in ("head", "pretrained"):
        if key in config.model and key in config.data:
            config.data[key] = config.model[key]


def _class_path(node) -> str:
    value = node.get("class_path") if hasattr(node, "get") else None
    return value if isinstance(value, str) else ""


def _where_task_is_named(argv: Sequence[str], task: str) -> str:
    if task in option_values(argv, "--task"):
        return f"--task {task}"
    import yaml

    for path in config_files(argv):
        try:
            data = load_yaml(path)
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and data.get("task") == task:
            return f"the task: key of config file {path}"
    return "the configuration"


def _checkpoint_dirs(config) -> List[Path]:
    """The directories (glob patterns) where the runs configured by ``config`` write checkpoints."""
    trainer = config.trainer
    root = Path(trainer.get("default_root_dir") or ".")
    dirs = []
    for callback in trainer.get("callbacks") or []:
        init_args = callback.get("init_args") if hasattr(callback, "get") else None
        if _class_path(callback).endswith("ModelCheckpoint") and init_args is not None and init_args.get("dirpath"):
            dirs.append(Path(init_args.get("dirpath")))
    logger = trainer.get("logger")
    if isinstance(logger, (list, tuple)):
        logger = logger[0] if logger else False
    if logger is False:
        dirs.append(root / "checkpoints")
    elif logger is None or logger is True:
        dirs.append(root / "lightning_logs" / "*" / "checkpoints")
    elif hasattr(logger, "get"):
        init_args = logger.get("init_args") or {}
        save_dir = init_args.get("save_dir") or init_args.get("root_dir")
        if save_dir:
            dirs.append(Path(save_dir) / (init_args.get("name") or "") / "*" / "checkpoints")
    return dirs


def _resolve_last_checkpoint(config, subcommand: str, task: str) -> Optional[str]:
    """``--ckpt_path last``: the newest ``last*.ckpt`` of this configuration's runs (every run of a
    versioned logger writes to a new directory, where Lightning's own lookup finds nothing)."""
    import glob
    import logging

    log = logging.getLogger("s2s_tasks.cli")
    dirs = _checkpoint_dirs(config)
    found = [Path(p) for d in dirs for p in glob.glob(str(d / "last*.ckpt"))]
    found = sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime)
    where = ", ".join(str(d) for d in dirs) or "the log directory"
    from s2s_tasks.checkpoint import _not_readable

    for path in reversed(found):
        problem = _not_readable(str(path), path)
        if problem:
            # e.g. a run killed while writing it: the previous checkpoint is the one to continue from
            log.warning("--ckpt_path last: skipping %s and taking the checkpoint before it: %s", path,
                        problem.split(" Pass ")[0].split("; pass ")[0])
            continue
        log.info("--ckpt_path last: %s", path)
        config.ckpt_path = str(path)
        return str(path)
    if found:
        raise ValueError(
            f"--ckpt_path last: every last*.ckpt under {where} is unreadable (truncated or damaged; see the warnings "
            "above); pass a checkpoint file with --ckpt_path PATH.ckpt"
        )
    if subcommand == "fit":
        log.warning("--ckpt_path last: no last*.ckpt under %s, so training starts from scratch", where)
        config.ckpt_path = None
        return None
    raise FileNotFoundError(
        f"--ckpt_path last: there is no checkpoint to {subcommand} (no last*.ckpt under {where}). "
        f"Train one first (s2s-tasks fit --task {task}), or pass a checkpoint file with --ckpt_path PATH.ckpt."
    )


def _build_cli_class():
    """The LightningCLI subclass (defined lazily: importing Lightning takes seconds)."""
    from pytorch_lightning.cli import LightningCLI

    from s2s_tasks.callbacks import PredictionWriter
    from s2s_tasks.data.multitask import MultiTaskDataModule
    from s2s_tasks.data.structured import StructuredDataModule

    class S2STasksCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--task", choices=list(TASKS), required=False, help="the task: " + ", ".join(TASKS))
            task = getattr(self.model_class, "task_name", "")
            parser.add_argument("--preset", choices=get_task(task).presets() if task in TASKS else None, default=None,
                                help="a preset config layered over the task's default (configs/presets/PRESET/TASK.yaml), "
                                     "before --config files and flags; real: sizes and schedule chosen for real data sets")
            parser.add_lightning_class_args(PredictionWriter, "predictions")
            parser.add_argument("--save_attention", action="store_true",
                                help="predict only: short for --predictions.save_attention true (attention maps of each prediction)")
            parser.add_argument("--quantize", choices=["int8"], default=None,
                                help="predict only: int8 = dynamic int8 quantisation of the linear layers (CPU inference)")
            parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
            parser.link_arguments("data.pad_id", "model.pad_id", apply_on="instantiate")
            if issubclass(self.datamodule_class, MultiTaskDataModule):
                parser.link_arguments("model.mode", "data.mode")  # the data encodes by the model's mode
                parser.link_arguments("data.task_setup", "model.task_setup", apply_on="instantiate")
            if "pretrained" in init_parameters(self.datamodule_class) and "pretrained" in init_parameters(self.model_class):
                parser.link_arguments("model.pretrained", "data.pretrained")  # the data uses the model's tokenizer
            if issubclass(self.datamodule_class, StructuredDataModule):
                parser.link_arguments("data.num_labels", "model.num_labels", apply_on="instantiate")
                # the model's head decides how the data is encoded (features or text pairs)
                parser.link_arguments("model.head", "data.head")
                for name in self.datamodule_class.model_links:  # settings the data decides for the model
                    parser.link_arguments(f"data.{name}", f"model.{name}")

        def parse_arguments(self, parser, args) -> None:
            """Parse as LightningCLI does, with every parse error raised as one :class:`ConfigError`
            paragraph (the parsers are made with ``exit_on_error=False``) and the task checked."""
            from argparse import ArgumentError

            argv = list(sys.argv[1:] if args is None else args)
            self._explicit_keys = explicit_keys(argv)  # they win over a --ckpt_path's hyperparameters
            subcommand = next((a for a in argv if a in SUBCOMMANDS), "fit")
            task = getattr(self.model_class, "task_name", "") or "TASK"
            try:
                super().parse_arguments(parser, args)
            except ArgumentError as err:
                context = ErrorContext(argv, task, subcommand, self._subcommand_parsers[subcommand], str(get_task(task).config_file) if task in TASKS else "")
                raise ConfigError(context.describe(str(err))) from err
            named = self.config[self.config.subcommand].get("task")
            if named and task in TASKS and named != task:
                raise ConfigError(
                    f"two tasks are named: {task!r} (from {_task_origin(argv)}) and {named!r} (from "
                    f"{_where_task_is_named(argv, named)}); a run has one task: remove one of them "
                    "(without --task, the task: key of the config file is used)"
                )

        def _parse_ckpt_path(self) -> None:
            """Take the model's (and the data encoding's) hyperparameters from ``--ckpt_path`` as defaults.

            Lightning's own version lets the checkpoint override every flag, so e.g.
            ``--model.generation.beam_size 8`` at predict time would be ignored. Here a value the
            command line sets (a flag or a ``--config`` file: :func:`explicit_keys`, even one equal
            to the config's default) or one that differs from the config defaults wins, except for
            the keys that shape the weights, which must match the checkpoint (a differing value is
            reported).

            Before that, the checkpoint is checked against the run (:func:`check_checkpoint`: its
            task, data.tokenizer_file, data.labels), and ``--ckpt_path last`` is resolved to the
            newest ``last*.ckpt`` of this task's runs.
            """
            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if not ckpt_path or ckpt_path in ("best", "hpc") or "://" in str(ckpt_path):
                return  # Lightning resolves these itself
            config = self.config[subcommand]
            if ckpt_path == "last":
                ckpt_path = _resolve_last_checkpoint(config, subcommand, getattr(self.model_class, "task_name", "TASK"))
                if ckpt_path is None:
                    return
            from s2s_tasks.checkpoint import check_checkpoint, load_checkpoint

            checkpoint = load_checkpoint(ckpt_path)
            check_checkpoint(
                checkpoint, ckpt_path, task=getattr(self.model_class, "task_name", None) or None,
                tokenizer_file=config.data.get("tokenizer_file"), labels=config.data.get("labels"),
            )
            defaults = self._subcommand_parsers[subcommand].get_defaults()
            explicit = getattr(self, "_explicit_keys", frozenset())
            stored = with_predating_defaults(dict(checkpoint.get("hyper_parameters") or {}), self.model_class)
            _merge_checkpoint_hparams(config.model, defaults.model, stored, explicit=explicit)
            # how text was encoded (columns, lengths, lowercasing, task options) also defaults to the checkpoint's
            data_hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
            if "tasks" in data_hparams and config.data.get("tasks") == defaults.data.get("tasks"):
                # a multi-task checkpoint: its own task list (where each task's data was is not kept)
                config.data.tasks = {name: {k: v for k, v in (settings or {}).items() if k not in DATA_LOCATION_KEYS}
                                     for name, settings in data_hparams["tasks"].items()}
                config.model.task_options = dict((checkpoint.get("hyper_parameters") or {}).get("task_options") or {})
            _merge_checkpoint_hparams(config.data, defaults.data, data_hparams, DATA_LOCATION_KEYS, "data", explicit)
            # the links ran before the checkpoint was read: apply them again
            for key in ("head", "pretrained"):
                if key in config.model and key in config.data:
                    config.data[key] = config.model[key]
            for name in getattr(self.datamodule_class, "model_links", ()):
                config.model[name] = config.data[name]

        def before_instantiate_classes(self) -> None:
            import logging

            config = self.config[self.subcommand]
            ckpt_path = config.get("ckpt_path")
            if ckpt_path and ckpt_path not in ("last", "best", "hpc") and config.data.get("tokenizer_file") is None:
                # the checkpoint carries its tokenizer: the vocabulary must be the one it was trained with
                config.data.tokenizer_file = ckpt_path
            if config.model.get("init_from"):
                _apply_init_from(config, self._subcommand_parsers[self.subcommand].get_defaults(),
                                 getattr(self.model_class, "task_name", ""), getattr(self, "_explicit_keys", frozenset()))
            if self.subcommand == "predict" and config.get("return_predictions") is None:
                # the PredictionWriter streams predictions to the output file; keeping them all in
                # memory as well would make predict's memory grow with the input file
                config.return_predictions = False
            if config.get("save_attention"):
                if self.subcommand != "predict":
                    raise ValueError(f"--save_attention applies to s2s-tasks predict only; drop it from {self.subcommand} "
                                     "(during fit the AttentionMaps callback draws the maps)")
                config.predictions.save_attention = True
            if self.subcommand == "fit" and config.model.get("ensemble"):
                from s2s_tasks.structured_module import ENSEMBLE_IN_FIT

                raise ValueError(ENSEMBLE_IN_FIT)
            if config.get("quantize") is not None:
                if self.subcommand != "predict":
                    raise ValueError(f"--quantize applies to s2s-tasks predict only; drop it from {self.subcommand}")
                from jsonargparse import Namespace

                quantizer = Namespace(class_path="s2s_tasks.quantize.Int8Quantization", init_args=Namespace(method=config.quantize))
                config.trainer.callbacks = [*(config.trainer.get("callbacks") or []), quantizer]
            callbacks = config.trainer.get("callbacks")
            if config.trainer.get("logger") is False and isinstance(callbacks, list):
                # LearningRateMonitor refuses to run without a logger (it only logs the rate to it)
                kept = [cb for cb in callbacks if not _class_path(cb).endswith("LearningRateMonitor")]
                if len(kept) != len(callbacks):
                    logging.getLogger("s2s_tasks.cli").info("trainer.logger is false: the LearningRateMonitor callback is left out")
                    config.trainer.callbacks = kept
            callbacks = config.trainer.get("callbacks")
            if self.subcommand != "fit" and isinstance(callbacks, list):
                # weight averaging acts in fit only: a checkpoint's state_dict already holds the
                # averaged weights, and outside fit Lightning's callback only warns on loading one
                kept = [cb for cb in callbacks if not _class_path(cb).endswith("WeightAveraging")]
                if len(kept) != len(callbacks):
                    logging.getLogger("s2s_tasks.cli").info(
                        "%s: the weight-averaging callback is left out (it averages during fit; the "
                        "checkpoint's weights are already the averaged ones)", self.subcommand)
                    config.trainer.callbacks = kept

    return S2STasksCLI


#: errors that describe bad input or configuration: the console script prints them as one
#: paragraph (no traceback unless ``--verbose`` or ``S2S_TASKS_VERBOSE=1``); Lightning's
#: MisconfigurationException (an impossible Trainer setting) is treated the same way
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)


def _is_user_error(err: BaseException) -> bool:
    if isinstance(err, USER_ERRORS):
        return True
    exceptions = sys.modules.get("lightning_fabric.utilities.exceptions")
    return exceptions is not None and isinstance(err, exceptions.MisconfigurationException)


def _run(argv: List[str], args: Optional[List[str]]):
    task = find_task(argv)
    has_subcommand = any(a in SUBCOMMANDS for a in argv)
    if task is None:
        wants_help = not argv or any(a in ("-h", "--help") for a in argv)
        if wants_help or not has_subcommand:
            width = max(len(n) for n in TASKS)
            listing = "\n".join(f"  {name.ljust(width)}  {spec.description}" for name, spec in TASKS.items())
            sys.stdout.write(OVERVIEW.format(tasks=listing))
            raise SystemExit(0 if wants_help else 2)
        ckpt_path = _ckpt_path_arg(argv)
        if ckpt_path and ckpt_path not in ("last", "best", "hpc"):
            from s2s_tasks.checkpoint import read_checkpoint_extras

            read_checkpoint_extras(ckpt_path)  # raises when it is missing or unreadable, which is the real problem
        _fail(f"choose a task with --task NAME; valid tasks: {', '.join(TASKS)}")
    try:
        spec = get_task(task)
    except KeyError as err:
        origin = _task_origin(argv)
        message = err.args[0]
        _fail(message if origin == "--task" else message.replace(";", f" (from {origin});", 1))
    _configure_logging()
    module_class, datamodule_class = spec.classes()
    cli_class = _build_cli_class()
    # exit_on_error=False: parse errors are raised (as ConfigError) instead of printing the usage
    defaults = {"default_config_files": _default_config_files(argv, spec), "exit_on_error": False}
    return cli_class(
        module_class,
        datamodule_class,
        parser_kwargs={"exit_on_error": False, **{name: dict(defaults) for name in SUBCOMMANDS}},
        save_config_kwargs={"overwrite": True},
        args=None if args is None else argv,
    )


def main(args: Optional[List[str]] = None):
    """Entry point of the ``s2s-tasks`` console script; returns the LightningCLI (its ``trainer``,
    ``model`` and ``datamodule``) when called from Python with ``args``, and None when it reads
    ``sys.argv`` (the console script passes the return value to ``sys.exit``, which would turn
    any object into exit status 1).

    From the console, an error in the input or the configuration ends the run with a one-paragraph
    message and exit status 2; ``--verbose`` (or ``S2S_TASKS_VERBOSE=1``) shows the traceback
    too. Python callers (``args`` given) get the exception itself (a bad command line or config
    file: :class:`ConfigError`, a ``ValueError``).
    """
    import os

    argv = list(sys.argv[1:] if args is None else args)
    verbose = "--verbose" in argv or os.environ.get("S2S_TASKS_VERBOSE", "") not in ("", "0")
    argv = [a for a in argv if a != "--verbose"]
    if args is None:
        sys.argv[1:] = argv  # LightningCLI reads sys.argv itself (and warns if also given args)
    try:
        if argv and argv[0] in TOOLS:
            import importlib

            return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
        cli = _run(argv, args)
    except Exception as err:
        if args is not None or verbose or not _is_user_error(err):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        if "No supported gpu backend" in message:
            message += " --trainer.accelerator gpu needs a CUDA GPU and there is none here: use --trainer.accelerator auto (or cpu)."
        _fail(message if isinstance(err, ConfigError) else f"{message} (run with --verbose for the traceback)")
    return None if args is None else cli


if __name__ == "__main__":
    main()
