"""Generated adapters out of Coral: PEFT adapter folders the rest of the ecosystem loads.

``coral generate (--task T | --prompts FILE) --out DIR [--align]`` writes the adapter the
generator makes for a task's support prompts (the env's starting adapter) or for your own
prompts; ``CoralEnv.save_adapter(DIR)`` writes the current episode's adapter. Either folder
holds ``adapter_config.json`` + ``adapter_model.safetensors``, so
``peft.PeftModel.from_pretrained(base_model, DIR)`` gives the same logits as the env's
in-place adapter (``coral_adapter.json`` beside them records where it came from).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..backend.lora import save_adapter


def save_runtime_adapter(runtime, vector: torch.Tensor, directory: str | Path, extra: dict | None = None) -> Path:
    """Write ``vector`` (a flat adapter of ``runtime``'s layout) as a PEFT adapter folder."""
    info = {"base_model": runtime.backend.model, "preset": runtime.config.preset} | (extra or {})
    return save_adapter(directory, runtime.layout, vector, runtime.backend.lora, runtime.backend.model, info)


def generate_adapter(
    runtime, task: str | None = None, prompts: list[str] | None = None, align: bool = False
) -> tuple[torch.Tensor, dict]:
    """The generator's adapter for a task's support prompts, or for ``prompts``; aligned by the
    CVAE with ``align``. Returns (flat adapter, provenance)."""
    if (task is None) == (prompts is None):
        raise ValueError("give exactly one of a task (--task) or prompts (--prompts FILE)")
    if align and runtime.cvae_for(task) is None:
        raise ValueError(
            f"--align needs a trained CVAE under {runtime.paths.base}; run "
            f"`{runtime.setup_command()}` first, or leave out --align"
        )
    if task is not None:
        # exactly the env's starting adapter for this task (runtime.task without the context)
        questions = [ex.question for ex in runtime.splits(task).support]
        vector, _, source = runtime.adapter_for_prompts(task, questions)
        return vector, {"task": task, "source": source, "prompts": len(questions)}
    generated = runtime.generator_for(None).generate_adapter(prompts)
    if not align:
        return generated, {"source": "generated", "prompts": len(prompts)}
    from ..agents.task_vector import TaskVectorizer

    # the task vector is measured as the CVAE was trained (its prompt count and length), on
    # the given prompts as the model sees them
    cvae = runtime.cvae_for(None)
    n_prompts, max_len = int(cvae.extra.get("tv_prompts", 16)), int(cvae.extra.get("tv_max_len", 128))
    with runtime.lock:  # the runtime's model is shared with its envs
        vector = TaskVectorizer(runtime.model, runtime.tokenizer, runtime.layout, max_len=max_len)(
            generated, prompts[:n_prompts]
        )
    return cvae.align(generated, vector), {"source": "generated+aligned", "prompts": len(prompts)}


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per non-empty line of a text file."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--prompts {file} is not a file; give a text file with one prompt a line")
    prompts = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {file} holds no prompts; write one prompt a line")
    return prompts
