"""Task name -> its LightningModule, LightningDataModule and default config.

Classes are named by import path so that listing the tasks (``s2s-tasks --help``) imports nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple, Type



@dataclass(frozen=True)
class TaskSpec:
    name: str
    module: str  # "package.module:Class"
    datamodule: str
    description: str

    @property
    def config_file(self) -> Path:
        return config_dir() / f"{self.name}.yaml"

    def classes(self) -> Tuple[Type, Type]:
        return _load(self.module), _load(self.datamodule)


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
    )
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]
