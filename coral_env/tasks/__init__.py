"""Tasks layer: the task registry, data loading, deterministic splits, prompt formats and
answer extraction. Imports nothing else of ``coral_env`` and no model code (it is the bottom layer).

>>> from coral_env.tasks import load_task, build_requests
>>> splits = load_task("syn_parity", seed=0)
>>> build_requests(splits.test[0])[0][0].startswith("Question: Is ")
True
"""

from coral_env.tasks import controls as _controls  # noqa: F401  (registers the ctl_* control tasks)
from coral_env.tasks import policy_controls as _policy_controls  # noqa: F401  (registers ctl_most_*, ctl_key_*)
from coral_env.tasks import synthetic as _synthetic  # noqa: F401  (registers the syn_* tasks)
from coral_env.tasks.answers import (
    answers_match,
    extract_boxed,
    extract_gsm8k_answer,
    extract_math_answer,
    normalize_math_answer,
    normalize_number,
)
from coral_env.tasks.base import Example, PromptStyle, SplitSizes, TaskKind, TaskSplits
from coral_env.tasks.controls import (
    CONTROL_TASKS,
    GENERATOR_CONTROL,
    GENERATOR_CONTROL_HELDOUT,
    GENERATOR_CONTROL_TRAIN,
)
from coral_env.tasks.errors import (
    DataDirNotFoundError,
    MalformedRowError,
    SplitTooSmallError,
    TaskDataNotFoundError,
    UnknownTaskError,
    UserTaskConfigError,
)
from coral_env.tasks.loading import clear_caches, load_examples, read_jsonl, resolve_data_dir
from coral_env.tasks.policy_controls import (
    POLICY_CONTROL,
    POLICY_CONTROL_HELDOUT,
    POLICY_CONTROL_TRAIN,
)
from coral_env.tasks.prompts import (
    build_generation_prompt,
    build_requests,
    chat_content,
    input_prompts,
    stop_sequences,
)
from coral_env.tasks.registry import (
    IN_DOMAIN,
    OUT_OF_DOMAIN,
    Domain,
    TaskSpec,
    get_task,
    list_tasks,
    register_task,
    unregister_task,
)
from coral_env.tasks.splits import (
    PRESET_SPLIT_SIZES,
    load_task,
    normalize_text,
    preset_split_sizes,
    split_examples,
    split_fingerprint,
)
from coral_env.tasks.synthetic import SYNTHETIC_TASKS
from coral_env.tasks.task_files import (
    is_task_path,
    register_env_tasks,
    register_task_file,
    register_task_files,
    register_task_folder,
    registered_task_files,
    resolve_task,
    resolve_tasks,
)
from coral_env.tasks.user import UserTaskConfig, register_user_task

register_env_tasks()  # $CORAL_TASKS: user task configs every process (and worker) sees

__all__ = [
    "CONTROL_TASKS",
    "GENERATOR_CONTROL",
    "GENERATOR_CONTROL_HELDOUT",
    "GENERATOR_CONTROL_TRAIN",
    "POLICY_CONTROL",
    "POLICY_CONTROL_HELDOUT",
    "POLICY_CONTROL_TRAIN",
    "DataDirNotFoundError",
    "Domain",
    "Example",
    "IN_DOMAIN",
    "MalformedRowError",
    "OUT_OF_DOMAIN",
    "PRESET_SPLIT_SIZES",
    "PromptStyle",
    "SYNTHETIC_TASKS",
    "SplitSizes",
    "SplitTooSmallError",
    "TaskDataNotFoundError",
    "TaskKind",
    "TaskSpec",
    "TaskSplits",
    "UnknownTaskError",
    "UserTaskConfig",
    "UserTaskConfigError",
    "answers_match",
    "build_generation_prompt",
    "build_requests",
    "chat_content",
    "clear_caches",
    "extract_boxed",
    "extract_gsm8k_answer",
    "extract_math_answer",
    "get_task",
    "input_prompts",
    "is_task_path",
    "list_tasks",
    "load_examples",
    "load_task",
    "normalize_math_answer",
    "normalize_number",
    "normalize_text",
    "preset_split_sizes",
    "read_jsonl",
    "register_env_tasks",
    "register_task",
    "register_task_file",
    "register_task_files",
    "register_task_folder",
    "register_user_task",
    "resolve_data_dir",
    "resolve_task",
    "resolve_tasks",
    "split_examples",
    "split_fingerprint",
    "stop_sequences",
    "registered_task_files",
    "unregister_task",
]
