"""Task name -> its LightningModule, LightningDataModule and default config.

Classes are named by import path so that listing the tasks (``s2s-tasks --help``) imports nothing.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type



@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: str  # "package.module:Class"
    datamodule: str
    description: str

    @property
    def config_file(self) -> Path:
        return config_dir() / f"{self.name}.yaml"

    def preset_file(self, preset: str) -> Path:
        """``configs/presets/PRESET/NAME.yaml``: a partial config layered over the task's default."""
        return config_dir() / "presets" / preset / f"{self.name}.yaml"

    def presets(self) -> List[str]:
        """The presets that have a file for this task."""
        root = config_dir() / "presets"
        return sorted(d.name for d in root.iterdir() if (d / f"{self.name}.yaml").is_file()) if root.is_dir() else []

    def classes(self) -> Tuple[Type, Type]:
        return _load(self.module), _load(self.datamodule)

    def default_config(self, preset: Optional[str] = None) -> Dict[str, Any]:
        """The task's default config (``configs/NAME.yaml``) as plain data; with ``preset``, the
        preset's file merged over it (:func:`merge_configs`): what ``--preset PRESET`` runs with.
        A malformed preset raises ``ValueError`` naming the key."""
        import yaml

        config = yaml.safe_load(self.config_file.read_text(encoding="utf-8")) or {}
        if preset is None:
            return config
        return merge_configs(config, yaml.safe_load(self.preset_file(preset).read_text(encoding="utf-8")) or {})


def merge_configs(base: dict, over: dict, where: str = "") -> dict:
    """``over`` laid over ``base``: mappings merge key by key, anything else is replaced, except that
    a key written ``name+`` appends its list to ``base``'s list ``name`` (jsonargparse's own append
    syntax in config files, ``--trainer.callbacks+=...`` on the command line), so a preset can add
    a callback without repeating the default config's."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(key, str) and key.endswith("+"):
            name = key[:-1]
            if not isinstance(value, list):
                value = [value]
            if name in merged and not isinstance(merged[name], list):
                raise ValueError(f"{where}{key}: appends to a list, but {where}{name} is {merged[name]!r}; "
                                 f"write {name}: (without +) to replace it")
            merged[name] = list(merged.get(name) or []) + value
        elif isinstance(value, dict):
            below = merged.get(key)
            merged[key] = merge_configs(below if isinstance(below, dict) else {}, value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def init_parameters(cls: Type) -> Dict[str, inspect.Parameter]:
    """A class's ``__init__`` parameters by name, following ``**kwargs`` up its base classes
    (a task class passes most of its arguments on to its base)."""
    found: Dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        for p in parameters:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                found.setdefault(p.name, p)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return found


def complete_arguments(cls: Type, arguments: Dict[str, Any]) -> Dict[str, Any]:
    """``arguments`` plus the default of every other ``__init__`` parameter of ``cls``: Lightning's
    ``save_hyperparameters`` records only the arguments a subclass passes on through ``**kwargs``,
    so a task class built from Python (not by the CLI, which passes them all) must get them all."""
    complete = {name: p.default for name, p in init_parameters(cls).items() if p.default is not inspect.Parameter.empty}
    complete.update(arguments)
    return complete


def build(cls: Type, arguments: Dict[str, Any]) -> Any:
    """``cls(**arguments)`` for a task's LightningModule or LightningDataModule built inside another
    one (multi-task), with every ``__init__`` argument recorded by ``save_hyperparameters``.

    Inside LightningCLI's instantiation ``save_hyperparameters`` records the hyperparameters the
    CLI gave the outer object, and elsewhere only what a subclass passes on through ``**kwargs``;
    so the complete arguments are given to it here, the way LightningCLI gives them."""
    from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters

    complete = complete_arguments(cls, arguments)
    token = _given_hyperparameters.set(dict(complete))
    try:
        return cls(**complete)
    finally:
        _given_hyperparameters.reset(token)


def _load(path: str) -> Type:
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def config_dir() -> Path:
    """The installed configs (``s2s_tasks/configs`` in a wheel; the repository's ``configs/`` in a checkout)."""
    import s2s_tasks.configs as configs  # resolved through the package_dir mapping of setup.cfg

    return Path(configs.__file__).resolve().parent


TASKS: Dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "translation",
            "s2s_tasks.tasks.translation.model:TranslationModule",
            "s2s_tasks.tasks.translation.data:TranslationDataModule",
            "text to text in another language; sacreBLEU BLEU and chrF",
        ),
        TaskSpec(
            "summarization",
            "s2s_tasks.tasks.summarization.model:SummarizationModule",
            "s2s_tasks.tasks.summarization.data:SummarizationDataModule",
            "document to short summary; ROUGE-1/2/L/Lsum",
        ),
        TaskSpec(
            "dialogue",
            "s2s_tasks.tasks.dialogue.model:DialogueModule",
            "s2s_tasks.tasks.dialogue.data:DialogueDataModule",
            "multi-turn history to the next turn; BLEU-1/2, Distinct-1/2, perplexity",
        ),
        TaskSpec(
            "classification",
            "s2s_tasks.tasks.classification.model:ClassificationModule",
            "s2s_tasks.tasks.classification.data:ClassificationDataModule",
            "text to one label (encoder head or generated); accuracy, macro-F1",
        ),
        TaskSpec(
            "ner",
            "s2s_tasks.tasks.ner.model:NERModule",
            "s2s_tasks.tasks.ner.data:NERDataModule",
            "named entities as BIO tags (softmax or CRF tagger, or generated); seqeval entity F1",
        ),
        TaskSpec(
            "qa",
            "s2s_tasks.tasks.qa.model:QAModule",
            "s2s_tasks.tasks.qa.data:QADataModule",
            "extractive question answering, SQuAD v1.1 format (span pointers or generated); EM, F1",
        ),
        TaskSpec(
            "relation_extraction",
            "s2s_tasks.tasks.relation_extraction.model:RelationExtractionModule",
            "s2s_tasks.tasks.relation_extraction.data:RelationExtractionDataModule",
            "relation between two marked entities (encoder head or generated); micro-F1, SemEval macro-F1",
        ),
        TaskSpec(
            "multitask",
            "s2s_tasks.multitask_module:MultiTaskModule",
            "s2s_tasks.data.multitask:MultiTaskDataModule",
            "several of the tasks above in one model (shared encoder/decoder, one tokenizer); each task's metrics",
        ),
    )
}

#: the tasks a multi-task model can combine
SINGLE_TASKS = tuple(name for name in TASKS if name != "multitask")


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]
