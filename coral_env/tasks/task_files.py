"""User tasks named by the path of their config file, and ``$CORAL_TASKS``.

Wherever a task name is accepted, ``path/to/task.json`` (or ``.yaml``/``.yml``) works too:
``resolve_task`` registers the file's task (once; again only if the file changed) and returns
its name. ``$CORAL_TASKS`` names a folder of such files that is registered when
``coral_env.tasks`` is imported, so subprocesses and Ray workers see the same tasks.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from coral_env.tasks.errors import UserTaskConfigError

ENV_VAR = "CORAL_TASKS"
SUFFIXES = (".json", ".yaml", ".yml")

# task name -> (resolved config path, config) of the tasks registered from files
_FROM_FILES: dict[str, tuple[str, object]] = {}


def is_task_path(name: object) -> bool:
    """Whether a task argument names a config file (task names never contain a dot)."""
    return isinstance(name, (str, os.PathLike)) and str(name).lower().endswith(SUFFIXES)


def register_task_file(path: str | os.PathLike[str]) -> str:
    """Register the user task a config file describes; returns its name.

    Registering the same unchanged file again is a no-op (the converter, and with it the
    example cache, stays the same). Two different files may not claim one name.
    """
    from coral_env.tasks.user import UserTaskConfig, register_user_task

    file = Path(path).expanduser()
    resolved = str(file.resolve())
    config = UserTaskConfig.from_file(file)
    previous = _FROM_FILES.get(config.name)
    if previous is not None and previous[0] == resolved and previous[1] == config:
        return config.name
    if previous is not None and previous[0] != resolved:
        raise UserTaskConfigError(
            f"{file}: name {config.name!r} is already registered from {previous[0]}; give one of "
            "the two configs another 'name'"
        )
    register_user_task(config, overwrite=previous is not None, source=str(file))
    _FROM_FILES[config.name] = (resolved, config)
    return config.name


def resolve_task(task: str | os.PathLike[str]) -> str:
    """A task name as is (lower-cased), or the name of the task a config file registers."""
    if is_task_path(task):
        return register_task_file(task)
    return str(task).strip().lower()


def resolve_tasks(tasks: Iterable[str | os.PathLike[str]]) -> list[str]:
    """``resolve_task`` over a list (a name or path each)."""
    return [resolve_task(t) for t in tasks]


def registered_task_files() -> dict[str, str]:
    """``{task name: config path}`` of the tasks registered from files in this process (hand
    it to a worker process, which calls ``register_task_files``)."""
    return {name: path for name, (path, _) in _FROM_FILES.items()}


def register_task_files(files: dict[str, str] | Iterable[str]) -> list[str]:
    """Register config files (a ``registered_task_files()`` mapping or a list of paths); returns the names."""
    paths = files.values() if isinstance(files, dict) else files
    return [register_task_file(p) for p in paths]


def register_task_folder(folder: str | os.PathLike[str]) -> list[str]:
    """Register every ``*.json``/``*.yaml``/``*.yml`` config in ``folder`` (sorted by name)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise UserTaskConfigError(
            f"${ENV_VAR} = {str(folder)!r} is not a folder; point it at a folder of task "
            "configs (*.json, *.yaml) or unset it"
        )
    return [register_task_file(f) for f in sorted(path.iterdir()) if is_task_path(f.name) and f.is_file()]


def register_env_tasks() -> list[str]:
    """Register the folder named by ``$CORAL_TASKS`` (nothing when unset)."""
    folder = os.environ.get(ENV_VAR)
    return register_task_folder(folder) if folder else []
