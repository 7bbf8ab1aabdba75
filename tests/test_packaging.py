"""`pip install .` (a wheel, not only the editable install) carries tasks, configs and sample data
inside the package and no generic top-level `tasks` package."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_tasks_configs_and_sample_data(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = (tmp_path / "dist").glob("s2s_tasks-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("tasks/") or n.startswith("configs/") for n in names)
    for required in (
        "s2s_tasks/tasks/translation/model.py",
        "s2s_tasks/tasks/translation/sample/train.jsonl",
        "s2s_tasks/tasks/summarization/sample/predict.txt",
        "s2s_tasks/tasks/dialogue/sample/validation.jsonl",
        "s2s_tasks/configs/dialogue.yaml",
        "s2s_tasks/configs/translation.yaml",
        "s2s_tasks/configs/model/lstm-bahdanau.yaml",
        "s2s_tasks/nn/crf.py",
        "s2s_tasks/tasks/classification/sample/predict.txt",
        "s2s_tasks/tasks/ner/sample/predict.txt",
        "s2s_tasks/tasks/qa/sample/predict.jsonl",
        "s2s_tasks/tasks/relation_extraction/sample/predict.jsonl",
        "s2s_tasks/configs/qa.yaml",
    ):
        assert required in names, required

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )
    # run outside the checkout so the local s2s_tasks/ (which has no tasks/ inside) is not on the path
    code = (
        "import s2s_tasks, s2s_tasks.registry as r\n"
        "from s2s_tasks.tasks.translation.data import TranslationDataModule as D\n"
        f"assert s2s_tasks.__file__.startswith({str(target)!r}), s2s_tasks.__file__\n"
        "assert all(s.config_file.is_file() for s in r.TASKS.values())\n"
        "assert all(s.classes() for s in r.TASKS.values())\n"
        "assert (D.sample_dir / 'train.jsonl').is_file()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
