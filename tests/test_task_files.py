"""User tasks by path: Hub-schema files with dotted fields, JSON/YAML configs, ``$CORAL_TASKS``,
``--task path`` on the command line, and the errors a bad config gets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coral_env.tasks import (
    UserTaskConfigError,
    get_task,
    load_examples,
    registered_task_files,
    resolve_task,
    unregister_task,
)
from coral_env.tasks import task_files as task_files_module
from coral_env.tasks.converters import convert_arc
from coral_env.tasks.fields import lookup, render

REPO = Path(__file__).resolve().parents[1]


def arc_rows(n: int = 24) -> list[dict]:
    """Rows in allenai/ai2_arc's Hub schema; every third uses ARC's numeric labels."""
    rows = []
    for i in range(n):
        labels = ["1", "2", "3", "4"] if i % 3 == 0 else ["A", "B", "C", "D"]
        texts = [str(i + k) for k in range(4)]
        rows.append(
            {
                "id": f"arc-{i}",
                "question": f"Which number is {i} plus {i % 4}?",
                "choices": {"text": texts, "label": labels},
                "answerKey": labels[i % 4],
            }
        )
    return rows


ARC_CONFIG = {
    "name": "my_arc",
    "path": "data.jsonl",
    "choices_field": "choices.text",
    "choice_labels_field": "choices.label",
    "label_field": "answerKey",
    "description": "ARC-style rows read as they are",
}


@pytest.fixture()
def arc_dir(tmp_path: Path):
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in arc_rows()) + "\n")
    yield tmp_path
    for name in ("my_arc", "my_arc_yaml", "passage_task", "env_task_a"):
        unregister_task(name)
        task_files_module._FROM_FILES.pop(name, None)


def write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_dotted_lookup_and_templates() -> None:
    row = {"q": "Why?", "meta": {"passage": "Because.", "tags": ["a", "b"]}, "a.b": 7}
    assert lookup(row, "meta.passage") == "Because."
    assert lookup(row, "meta.tags.1") == "b"
    assert lookup(row, "a.b") == 7  # a literal dotted key wins
    assert render("{meta.passage}\nQ: {q} ({meta.tags.0})", row) == "Because.\nQ: Why? (a)"
    assert render("{question}|{meta.tags}", row, {"question": "X"}) == "X|a\nb"
    with pytest.raises(ValueError, match="meta has no 'passage2'"):
        lookup(row, "meta.passage2")


def test_hub_schema_arc_file_with_dotted_fields_reads_as_the_builtin_converter(arc_dir: Path) -> None:
    config = write(arc_dir / "my_arc.json", ARC_CONFIG)
    assert resolve_task(config) == "my_arc"
    examples = load_examples(str(config))["train"]
    expected = [convert_arc(row, f"train-{i}") for i, row in enumerate(arc_rows())]
    assert examples == expected  # the same Examples as the built-in ARC converter
    assert [ex.label for ex in examples[:4]] == [0, 1, 2, 3]  # numeric ("1".."4") and letter labels
    # a path works wherever a name does, and registering the unchanged file again is a no-op
    assert get_task(str(config)).name == "my_arc" and registered_task_files()["my_arc"] == str(config.resolve())
    spec = get_task("my_arc")
    assert get_task(str(config)) is spec


def test_yaml_config_and_templates_combining_fields(arc_dir: Path) -> None:
    rows = [
        {"id": str(i), "meta": {"passage": f"P{i}.", "q": f"is {i} even"}, "gold": {"yes": i % 2 == 0}}
        for i in range(12)
    ]
    (arc_dir / "passages.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (arc_dir / "passage.yaml").write_text(
        "name: passage_task\npath: passages.jsonl\nkind: generative\nquestion_field: meta.q\n"
        'answer_field: gold.yes\ntemplate: "{meta.passage}\\nQuestion: {question}?\\nAnswer:"\n'
    )
    ex = load_examples(str(arc_dir / "passage.yaml"))["train"][3]
    assert ex.contexts == ("P3.\nQuestion: is 3 even?\nAnswer:",) and ex.answer == "False"


@pytest.mark.parametrize(
    "changes, fragments",
    [
        (
            {"choices_field": "choices.txt"},
            ["choices_field 'choices.txt'", "choices has no 'txt'", "set choices_field"],
        ),
        ({"label_field": "answer"}, ["label_field 'answer'", "row fields: answerKey, choices, id, question"]),
        ({"colour": "red"}, ["unknown config field", "allowed fields"]),
        ({"choices_field": "choices[0]"}, ["choices_field 'choices[0]' is not a field name", "dotted path"]),
        ({"template": "{choices.__class__}"}, ["template", "not allowed"]),
        ({"path": "missing.jsonl"}, ["path", "is not a file", "fix 'path'"]),
        ({"choice_labels_field": "question"}, ["does not fit the config", "one label per option"]),
    ],
)
def test_bad_config_names_file_field_and_fix(arc_dir: Path, changes: dict, fragments: list[str]) -> None:
    config = write(arc_dir / "bad.json", ARC_CONFIG | changes)
    with pytest.raises(UserTaskConfigError) as caught:
        resolve_task(config)
    message = str(caught.value)
    assert message.startswith(f"{config}: "), message  # the file first
    for fragment in fragments:
        assert fragment in message, message


def test_bad_config_files(arc_dir: Path, monkeypatch) -> None:
    (arc_dir / "broken.json").write_text('{"name": "x",')
    with pytest.raises(UserTaskConfigError, match="broken.json: not valid JSON"):
        resolve_task(arc_dir / "broken.json")
    (arc_dir / "broken.yaml").write_text("name: [x\n")
    with pytest.raises(UserTaskConfigError, match="broken.yaml: not valid YAML"):
        resolve_task(arc_dir / "broken.yaml")
    with pytest.raises(UserTaskConfigError, match="nope.json does not exist; check the path"):
        resolve_task(arc_dir / "nope.json")
    write(arc_dir / "a.json", ARC_CONFIG)
    write(arc_dir / "b.json", ARC_CONFIG)
    resolve_task(arc_dir / "a.json")
    with pytest.raises(UserTaskConfigError, match="b.json: name 'my_arc' is already registered from .*a.json"):
        resolve_task(arc_dir / "b.json")
    monkeypatch.setenv("CORAL_TASKS", str(arc_dir / "nofolder"))
    with pytest.raises(UserTaskConfigError, match=r"\$CORAL_TASKS = .*nofolder.* is not a folder"):
        task_files_module.register_env_tasks()


def test_coral_tasks_folder_is_registered_at_import_in_a_subprocess(arc_dir: Path) -> None:
    folder = arc_dir / "tasks"
    folder.mkdir()
    write(folder / "env_task_a.json", ARC_CONFIG | {"name": "env_task_a", "path": str(arc_dir / "data.jsonl")})
    code = (
        "from coral_env.tasks import get_task, load_examples; "
        "print(get_task('env_task_a').domain, len(load_examples('env_task_a')['train']))"
    )
    env = os.environ | {"CORAL_TASKS": str(folder), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["user", "24"]


def test_coral_eval_takes_a_task_path(arc_dir: Path) -> None:
    from coral_env.cli import main

    (arc_dir / "data.jsonl").write_text("\n".join(json.dumps(r) for r in arc_rows(200)) + "\n")
    config = write(arc_dir / "my_arc.json", ARC_CONFIG)
    code = main(
        [
            "eval",
            "--model",
            "tiny",
            "--dtype",
            "fp32",
            "--task",
            str(config),
            "--limit",
            "3",
            "--preset",
            "tiny",
            "--json",
        ]
    )
    assert code == 0
    bad = write(arc_dir / "bad.json", ARC_CONFIG | {"choices_field": "choices.txt"})
    assert main(["eval", "--model", "tiny", "--task", str(bad), "--limit", "3"]) == 2


def test_env_takes_a_task_path(arc_dir: Path, tiny_artifacts) -> None:
    import gymnasium as gym

    import coral_env  # noqa: F401  (registers Coral-v0)

    (arc_dir / "data.jsonl").write_text("\n".join(json.dumps(r) for r in arc_rows(80)) + "\n")
    config = write(arc_dir / "my_arc.json", ARC_CONFIG)
    env = gym.make("Coral-v0", task=str(config), preset="tiny", artifacts=str(tiny_artifacts))
    assert env.unwrapped.tasks == ["my_arc"]
    obs, info = env.reset(seed=0, options={"task": str(config)})
    assert info["task"] == "my_arc" and env.observation_space.contains(obs)
    _, reward, terminated, _, info = env.step('{"family": "LORA", "lambda": 0.5}')
    assert terminated and "error" not in info and info["metric_after"] >= 0.0
