"""Training data of the alignment CVAE: (input adapter, task vector, target) per training task.

* ``input`` target (the paper): input = a collected checkpoint, target = the same checkpoint.
* ``checkpoint`` target: input = an adapter the stage-1 generator (trained without the held-out
  task) produces for the task from a batch of its prompts, target = a random real checkpoint.

The task vector is always computed with the input adapter applied, which is what inference
has for an unseen task (its generated adapter). Task-vector prompts are the first
``tv_prompts`` support prompts of the task (``task_vector_prompts``). Task vectors of
checkpoints are cached as safetensors under ``<artifacts>/<preset>/cache/task_vectors`` (keyed
by the checkpoints, prompts and token limit, so every holdout shares them); generated adapters
and their task vectors under ``cache/generated`` (keyed by the generator as well).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import torch

from ..agents.task_vector import TaskVectorizer
from ..backend.io import atomic_save_safetensors, read_safetensors
from ..backend.lora import AdapterLayout
from ..tasks import build_generation_prompt, build_requests
from .artifacts import ArtifactPaths, MissingArtifactError
from .split_manifest import contract_splits

if TYPE_CHECKING:
    from .pretrain_cvae import CVAETrainingConfig

TARGETS = ("input", "checkpoint")


def cvae_path(artifacts: str | Path, preset: str, holdout: str | None = None, target: str = "input") -> Path:
    """Folder of the CVAE trained without ``holdout`` for ``target``:
    ``<root>/<preset>/cvae/<holdout|all>/<target>``."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return ArtifactPaths(artifacts, preset).cvae_dir(holdout) / target


# ----- data -------------------------------------------------------------------------------------
def task_vector_prompts(
    paths: ArtifactPaths,
    task: str,
    tokenizer=None,
    data_dir=None,
    split_seed: int = 0,
    limit: int = 16,
    style: str = "plain",
) -> list[str]:
    """The model-facing prompts of a task's first ``limit`` support examples (the task-vector inputs).

    Multiple choice: the context of the first choice (lm-eval format, or the chat template);
    generative: the decoding prompt. Only inputs are used, never labels. The splits are the
    preset's, checked against the artifacts' split manifest.
    """
    examples = contract_splits(paths, task, data_dir, split_seed, stage="cvae").support[:limit]
    if not examples:
        raise ValueError(f"task {task!r} has an empty support split; no prompts for its task vector")
    return [
        build_requests(ex, style, tokenizer, task=task)[0][0]
        if ex.is_multiple_choice
        else build_generation_prompt(ex, style, tokenizer, task=task)
        for ex in examples
    ]


@dataclass
class CVAETrainingData:
    """Training pairs per task.

    Attributes:
        tasks: training task names.
        inputs: per task, input adapters (n, D).
        task_vectors: per task, task vectors of the inputs (n, H).
        targets: per task, reconstruction targets (m, D); for ``input`` the inputs themselves.
        paired: ``True`` when target i belongs to input i (``input``); else targets are drawn
            independently of the input (``checkpoint``).
    """

    tasks: list[str]
    inputs: dict[str, torch.Tensor]
    task_vectors: dict[str, torch.Tensor]
    targets: dict[str, torch.Tensor]
    paired: bool


def sample_meta_batch(
    data: CVAETrainingData, step: int, batch_size: int, seed: int
) -> tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator]:
    """(task, inputs (B, D), task vectors (B, H), targets (B, D), noise generator) of meta-step ``step``.

    A pure function of (seed, step); the returned generator then draws the step's
    reparameterisation noise.
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
    task = data.tasks[int(torch.randint(len(data.tasks), (1,), generator=gen))]
    inputs, tvs, targets = data.inputs[task], data.task_vectors[task], data.targets[task]
    idx = torch.randint(inputs.shape[0], (batch_size,), generator=gen)
    tidx = idx if data.paired else torch.randint(targets.shape[0], (batch_size,), generator=gen)
    return task, inputs[idx], tvs[idx], targets[tidx], gen


def _settings_key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _load_cached(path: Path, key: str) -> dict[str, torch.Tensor] | None:
    if not path.exists():
        return None
    meta, tensors = read_safetensors(path, "delete it (a cache: the next run computes it again)")
    return tensors if meta.get("key") == key else None


def checkpoint_task_vectors(
    paths: ArtifactPaths,
    task: str,
    config: CVAETrainingConfig,
    vectorizer: TaskVectorizer,
    data_dir=None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(checkpoints (n, D), their task vectors (n, H)) of ``task``; task vectors cached on disk."""
    vectors, meta = paths.load_checkpoints(task, config.phases)
    prompts = task_vector_prompts(
        paths, task, vectorizer.tokenizer, data_dir, config.split_seed, config.tv_prompts, config.style
    )
    key = _settings_key(meta[0]["config_hash"], [m["step"] for m in meta], prompts, config.tv_max_len)
    path = paths.cache_dir / "task_vectors" / f"{task}.{key}.safetensors"
    cached = _load_cached(path, key)
    if cached is None:
        tvs = vectorizer.many(vectors, prompts, progress=progress)
        atomic_save_safetensors(path, {"task_vectors": tvs}, {"key": key, "task": task})
    else:
        tvs = cached["task_vectors"]
    return vectors, tvs


def generated_pairs(
    paths: ArtifactPaths,
    task: str,
    generator,
    config: CVAETrainingConfig,
    vectorizer: TaskVectorizer,
    data_dir=None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(generated adapters (n_generated, D), their task vectors) for a training task; cached under
    ``<artifacts>/<preset>/cache/generated`` (keyed by the generator and the settings).

    Adapter 0 is conditioned on the task's support prompts (what an unseen task gets at
    inference); the others on random draws from its support + train prompts.
    """
    from .pretrain_generator import task_prompts

    prompts = task_vector_prompts(
        paths, task, vectorizer.tokenizer, data_dir, config.split_seed, config.tv_prompts, config.style
    )
    gen_id = generator_id(generator)
    key = _settings_key(gen_id, config.n_generated, config.seed, config.split_seed, prompts, config.tv_max_len)
    path = paths.cache_dir / "generated" / f"{task}.{key}.safetensors"
    cached = _load_cached(path, key)
    if cached is not None:
        return cached["adapters"], cached["task_vectors"]
    support = task_prompts(paths, task, data_dir, config.split_seed, splits=("support",))
    pool = task_prompts(paths, task, data_dir, config.split_seed)
    rng = torch.Generator().manual_seed(config.seed)
    n = generator.config.num_prompts
    batches = [support]
    for _ in range(config.n_generated - 1):
        batches.append([pool[int(i)] for i in torch.randperm(len(pool), generator=rng)[:n]])
    adapters = generator.generate_adapters(batches)
    tvs = vectorizer.many(adapters, prompts, progress=progress)
    atomic_save_safetensors(path, {"adapters": adapters, "task_vectors": tvs}, {"key": key, "task": task})
    return adapters, tvs


def build_vectorizer(paths: ArtifactPaths, task: str, config: CVAETrainingConfig) -> TaskVectorizer:
    """Load the collection's model, attach its LoRA and bind the stored layout."""
    from ..backend.lora import attach_lora
    from ..backend.models import load_model
    from .collect import CollectionConfig

    info = paths.collect_info(task)
    backend = CollectionConfig(**info["collection"]).backend()
    model, tokenizer = load_model(backend.model, backend.dtype, backend.device)
    peft_model = attach_lora(model, backend.lora)
    layout = AdapterLayout.load(paths.layout_dir).bind(peft_model)
    return TaskVectorizer(peft_model, tokenizer, layout, max_len=config.tv_max_len, batch_size=config.tv_batch_size)


def load_cvae_data(
    paths: ArtifactPaths,
    tasks: Sequence[str],
    config: CVAETrainingConfig,
    vectorizer: TaskVectorizer,
    *,
    generator=None,
    data_dir=None,
    progress: bool = True,
) -> CVAETrainingData:
    """Checkpoints, generated adapters (``checkpoint`` target) and task vectors of ``tasks``."""
    inputs, tvs, targets = {}, {}, {}
    for task in tasks:
        ckpts, ckpt_tvs = checkpoint_task_vectors(paths, task, config, vectorizer, data_dir, progress)
        if config.target == "input":
            inputs[task], tvs[task], targets[task] = ckpts, ckpt_tvs, ckpts
        else:
            gen_adapters, gen_tvs = generated_pairs(paths, task, generator, config, vectorizer, data_dir, progress)
            inputs[task], tvs[task], targets[task] = gen_adapters, gen_tvs, ckpts
    return CVAETrainingData(list(tasks), inputs, tvs, targets, paired=config.target == "input")


def generator_id(generator) -> str:
    """What identifies a trained generator (its saved ``extra`` minus wall-clock timings)."""
    extra = {k: v for k, v in generator.extra.items() if not k.startswith("training_seconds")}
    return json.dumps(extra, sort_keys=True, default=str)


def load_generator(paths: ArtifactPaths, holdout: str | None, artifacts):
    from ..agents.generator import Generator

    folder = paths.generator_dir(holdout)
    if not (folder / "model.safetensors").exists():
        flag = f" --holdout {holdout}" if holdout else ""
        raise MissingArtifactError(
            f"target=checkpoint needs the stage-1 generator trained without {holdout or 'nothing'} at {folder}; "
            f"run `coral pretrain-generator --preset {paths.preset} --artifacts {artifacts}{flag}` first"
        )
    return Generator.from_pretrained(folder, encoder=None)


__all__ = [
    "TARGETS",
    "CVAETrainingData",
    "build_vectorizer",
    "checkpoint_task_vectors",
    "cvae_path",
    "generated_pairs",
    "generator_id",
    "load_cvae_data",
    "load_generator",
    "sample_meta_batch",
    "task_vector_prompts",
]
