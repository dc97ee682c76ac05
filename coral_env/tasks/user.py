"""User-defined tasks: a JSONL file plus a few lines of configuration (``UserTaskConfig``).

Fields are dotted paths into the row (``choices.text``), so a Hub-schema file (ARC's nested
``choices: {text, label}``) is read as it is. Files and templates are treated as data:
templates name row fields or dotted paths only (no attribute access), nothing is imported or
evaluated. A config may be a JSON or (with PyYAML) YAML file; ``coral_env.tasks.task_files``
registers one from its path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from coral_env.tasks.answers import normalize_number
from coral_env.tasks.base import Example
from coral_env.tasks.converters import Converter, Row, generative, multiple_choice, parse_label
from coral_env.tasks.errors import RowError, UnknownTaskError, UserTaskConfigError
from coral_env.tasks.fields import lookup, render, template_fields, valid_path
from coral_env.tasks.registry import TaskSpec, get_task, register_task

DEFAULT_TEMPLATE = "Question: {question}\nAnswer:"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class UserTaskConfig:
    """How to read one user task from a JSON Lines file.

    Attributes:
        name: registry name, lower case letters, digits and "_" (e.g. "my_quiz").
        path: the JSONL file (relative paths in a config file resolve against its folder).
        kind: "multiple_choice" or "generative".
        question_field: row field with the question text. Every ``*_field`` may be a dotted
            path into nested values: ``choices.text``, ``choices.label``, ``options.0``.
        choices_field: multiple choice: row field holding a list of option texts...
        choice_fields: ...or a list of row fields, one option each (set exactly one of the two).
        choice_labels_field: multiple choice, optional: row field holding the options' labels
            (e.g. ARC's ``choices.label``: ["A", "B", ...] or ["1", "2", ...]); the gold
            label is then looked up among them.
        label_field: multiple choice: gold option as an index, a letter, the option text, or
            (with ``choice_labels_field``) one of the labels.
        label_base: 0 if integer labels count from 0, 1 if they count from 1.
        answer_field: generative: row field with the gold answer.
        answer_type: generative: "number" (GSM8K-style extraction) or "text" (exact match).
        template: plain prompt over row fields and dotted paths plus ``{question}``, e.g.
            ``"{passage}\\nQuestion: {question}?\\nAnswer:"`` (lists render one item a line).
        test_path: optional separate JSONL file used as the test split.
        description: one line for listings.
    """

    name: str
    path: str
    kind: str = "multiple_choice"
    question_field: str = "question"
    choices_field: str | None = None
    choice_fields: tuple[str, ...] | None = None
    choice_labels_field: str | None = None
    label_field: str = "label"
    label_base: int = 0
    answer_field: str = "answer"
    answer_type: str = "text"
    template: str = DEFAULT_TEMPLATE
    test_path: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.choice_fields is not None and not isinstance(self.choice_fields, tuple):
            object.__setattr__(self, "choice_fields", tuple(self.choice_fields))
        validate_config(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | os.PathLike[str] | None = None) -> UserTaskConfig:
        """Build from a mapping; unknown keys are an error; relative paths join ``base_dir``."""
        if not isinstance(data, Mapping):
            raise UserTaskConfigError(f"a user task config must be a JSON object, got {type(data).__name__}")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise UserTaskConfigError(f"unknown config field(s) {unknown}; allowed fields: {', '.join(allowed)}")
        for required in ("name", "path"):
            if required not in data:
                raise UserTaskConfigError(f"missing required field {required!r}; add it to the config")
        values = dict(data)
        if base_dir is not None:
            for key in ("path", "test_path"):
                if isinstance(values.get(key), str) and not Path(values[key]).is_absolute():
                    values[key] = str(Path(base_dir) / values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> UserTaskConfig:
        """Read a config from a small JSON (or, by suffix, YAML) file; see ``from_file``."""
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> UserTaskConfig:
        """Read a config from a ``.json`` or ``.yaml``/``.yml`` file; every error names the file."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserTaskConfigError(f"task config file {file} does not exist; check the path") from None
        except (IsADirectoryError, UnicodeDecodeError) as exc:
            raise UserTaskConfigError(f"{file}: cannot read the task config ({exc})") from None
        if file.suffix.lower() in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise UserTaskConfigError(
                    f"{file}: YAML task configs need PyYAML (pip install pyyaml), or write it as JSON"
                ) from None
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UserTaskConfigError(f"{file}: not valid YAML ({exc})") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                problem = f"{file}: not valid JSON ({exc.msg}, line {exc.lineno})"
                raise UserTaskConfigError(problem) from None
        try:
            return cls.from_dict(data, base_dir=file.parent)
        except UserTaskConfigError as exc:
            raise UserTaskConfigError(f"{file}: {exc}") from None
        except TypeError as exc:  # a field of the wrong type, e.g. choice_fields: 3
            raise UserTaskConfigError(f"{file}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (``from_dict(to_dict())`` round-trips)."""
        data = asdict(self)
        if self.choice_fields is not None:
            data["choice_fields"] = list(self.choice_fields)
        return data

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write the config as JSON (paths are written as given)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


def _template_fields(template: str) -> list[str]:
    try:
        return template_fields(template)
    except ValueError as exc:
        raise UserTaskConfigError(f"template: {exc}") from None


_FIELD_KEYS = ("question_field", "choices_field", "choice_labels_field", "label_field", "answer_field")


def validate_config(config: UserTaskConfig) -> None:
    """Raise ``UserTaskConfigError`` naming the offending field and the fix."""
    if not isinstance(config.name, str) or not _NAME_RE.match(config.name):
        raise UserTaskConfigError(
            f"name {config.name!r} is invalid; use lower case letters, digits and '_', "
            "starting with a letter (e.g. 'my_quiz')"
        )
    if config.kind not in ("multiple_choice", "generative"):
        raise UserTaskConfigError(f"kind {config.kind!r} is invalid; set kind to 'multiple_choice' or 'generative'")
    if not isinstance(config.path, str) or not config.path:
        raise UserTaskConfigError("path must be the JSONL file's path")
    for key in _FIELD_KEYS:
        value = getattr(config, key)
        if value is not None and not valid_path(value):
            raise UserTaskConfigError(
                f"{key} {value!r} is not a field name; use a row field or a dotted path like "
                "'choices.text' (letters, digits, '_', '-', separated by '.')"
            )
    for value in config.choice_fields or ():
        if not valid_path(value):
            raise UserTaskConfigError(f"choice_fields entry {value!r} is not a field name or dotted path")
    if config.kind == "multiple_choice":
        if (config.choices_field is None) == (config.choice_fields is None):
            raise UserTaskConfigError(
                "a multiple_choice task needs exactly one of choices_field (a row field holding a "
                "list of options) or choice_fields (a list of row fields, one option each)"
            )
        if config.choice_fields is not None and len(config.choice_fields) < 2:
            raise UserTaskConfigError("choice_fields must name at least two row fields")
        if config.label_base not in (0, 1):
            raise UserTaskConfigError(f"label_base must be 0 or 1, got {config.label_base!r}")
    elif config.answer_type not in ("number", "text"):
        raise UserTaskConfigError(f"answer_type {config.answer_type!r} is invalid; use 'number' or 'text'")
    _template_fields(config.template)


def _converter(config: UserTaskConfig) -> Converter:
    """The row -> Example converter a config describes."""
    _template_fields(config.template)

    def convert(row: Row, uid: str) -> Example:
        question = str(lookup(row, config.question_field))
        context = render(config.template, row, {"question": question})
        uid = str(row.get("id", uid))
        if config.kind == "generative":
            gold = str(lookup(row, config.answer_field)).strip()
            if config.answer_type == "number":
                gold = normalize_number(gold)
            return generative(uid, question, context, gold)
        if config.choices_field is not None:
            choices = lookup(row, config.choices_field)
            if not isinstance(choices, list) or not choices:
                raise RowError(f"field {config.choices_field!r} must be a non-empty list of options")
        else:
            choices = [lookup(row, name) for name in config.choice_fields or ()]
        choices = [str(c) for c in choices]
        gold = lookup(row, config.label_field)
        if config.choice_labels_field is not None:
            labels = lookup(row, config.choice_labels_field)
            if not isinstance(labels, list) or len(labels) != len(choices):
                raise RowError(
                    f"field {config.choice_labels_field!r} must be a list with one label per option ({len(choices)})"
                )
            labels = [str(x) for x in labels]
            if str(gold) not in labels:
                raise RowError(
                    f"label {gold!r} ({config.label_field}) is not one of the labels "
                    f"{labels} ({config.choice_labels_field})"
                )
            label = labels.index(str(gold))
        else:
            label = parse_label(gold, len(choices), choices, base=config.label_base)
        return multiple_choice(uid, question, context, choices, label)

    return convert


def check_first_row(config: UserTaskConfig, source: str | None = None) -> None:
    """Read the data file's first row with the config, so a field the data lacks fails at
    registration naming the config field to fix (not later, deep inside an evaluation)."""
    from coral_env.tasks.loading import read_jsonl_lines

    where = f"{source}: " if source else ""
    rows = read_jsonl_lines(config.path)
    if not rows:
        raise UserTaskConfigError(f"{where}path {config.path!r} holds no rows; point 'path' at the task's JSONL")
    line, row = rows[0]
    present = ", ".join(sorted(map(str, row)))
    used = ["question_field"] + (
        ["answer_field"] if config.kind == "generative" else ["choices_field", "choice_labels_field", "label_field"]
    )
    for key in used:
        value = getattr(config, key)
        if value is None:
            continue
        try:
            lookup(row, value)
        except RowError as exc:
            raise UserTaskConfigError(
                f"{where}{key} {value!r} does not match the data ({exc}; line {line} of "
                f"{config.path}); set {key} to one of the row's fields or a dotted path into them "
                f"(row fields: {present})"
            ) from None
    try:
        _converter(config)(row, "probe")
    except RowError as exc:
        raise UserTaskConfigError(
            f"{where}line {line} of {config.path} does not fit the config ({exc}); fix the "
            f"template or the *_field settings (row fields: {present})"
        ) from None


def register_user_task(
    config: UserTaskConfig | str | os.PathLike[str],
    *,
    overwrite: bool = False,
    source: str | None = None,
) -> TaskSpec:
    """Register a user task (a config, or the path of its JSON/YAML file); returns its spec.

    Built-in task names cannot be replaced; re-registering a user task needs ``overwrite``.
    The data file's first row is converted now, so a field the data lacks is reported here.
    ``source`` (the config file, if any) prefixes error messages.
    """
    if not isinstance(config, UserTaskConfig):
        source = source or str(config)
        config = UserTaskConfig.from_file(config)
    where = f"{source}: " if source else ""
    try:
        existing = get_task(config.name)
    except UnknownTaskError:
        existing = None
    if existing is not None and existing.domain != "user":
        raise UserTaskConfigError(f"{where}name {config.name!r} is a built-in task; choose another name")
    if existing is not None and not overwrite:
        raise UserTaskConfigError(
            f"{where}user task {config.name!r} is already registered; pass overwrite=True to replace it"
        )
    for key in ("path", "test_path"):
        value = getattr(config, key)
        if value is not None and not Path(value).is_file():
            raise UserTaskConfigError(f"{where}{key} {value!r} is not a file; fix {key!r} in the config")
    check_first_row(config, source)
    files = [("train", str(Path(config.path)))]
    if config.test_path:
        files.append(("test", str(Path(config.test_path))))
    answer_type = "choice" if config.kind == "multiple_choice" else config.answer_type
    spec = TaskSpec(
        name=config.name,
        kind=config.kind,  # type: ignore[arg-type]  # validated above
        domain="user",
        convert=_converter(config),
        description=config.description or f"User task from {config.path}",
        files=tuple(files),
        answer_type=answer_type,  # type: ignore[arg-type]  # validated above
        stop=("Question:", "\n\n") if config.kind == "generative" else (),
        schema=f"the fields named in the config of {config.name!r}",
    )
    return register_task(spec, overwrite=True)
