"""LoRA checkpoint collection (stage 1 data): real fine-tuning trajectories of the base model.

For each task: a fresh LoRA (the same seeded initialisation for every task, so checkpoints of
different tasks live in one coordinate system and can be averaged or regressed), phase 1 at a
higher learning rate, then phase 2 at a lower one with the same optimizer (CORAL App. C.2,
following DnD). The adapter is saved after *every* step of both phases.

Checkpoints are stored in fp32: phase-2 steps move a weight by about the learning rate
(1e-5 to 3e-5), below bf16's resolution at the size of LoRA A entries (~4e-2 -> spacing 2e-4),
so bf16 would make most phase-2 checkpoints identical. At the cpu preset one checkpoint is
3.7 MB (921,600 weights); six tasks x 60 steps ~ 1.3 GB.

Resume: after each step the adapter, AdamW moments and step are written atomically (one
safetensors file); batches are a pure function of (seed, step). Restarting after a kill
continues from the last completed step and writes checkpoints ``torch.equal`` to an
uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..backend.config import BackendConfig
from ..backend.finetune import (
    adamw_state,
    batch_indices,
    build_sequences,
    collate,
    load_adamw_state,
    make_optimizer,
    train_step,
)
from ..backend.io import (
    append_jsonl,
    atomic_save_safetensors,
    atomic_write_json,
    read_safetensors,
    read_state,
    trim_jsonl,
)
from ..backend.lora import AdapterLayout, adapter_hash, attach_lora
from ..config import Presets, check_preset, documented
from .artifacts import ArtifactPaths
from .split_manifest import contract_splits

StepCallback = Callable[[str, int, float], None]
"""(task, step, loss), called after a step's checkpoint and resume state are on disk."""


COLLECTION_PRESETS: dict[str, dict] = {
    # CORAL Table 4 / App. C.6 (GPU).
    "paper": dict(
        phase1_steps=75, phase1_lr=1e-4, phase2_steps=50, phase2_lr=1e-5, batch_size=32, max_samples=5000, max_len=384
    ),
    # Measured on a 2-core CPU (benchmarks/generator.md): ~60 steps per task fit the time goal.
    "cpu": dict(
        phase1_steps=40, phase1_lr=3e-4, phase2_steps=20, phase2_lr=3e-5, batch_size=8, max_samples=2000, max_len=128
    ),
    "tiny": dict(
        phase1_steps=4, phase1_lr=1e-3, phase2_steps=3, phase2_lr=1e-4, batch_size=4, max_samples=64, max_len=48
    ),
}


@documented
@dataclass
class CollectionConfig(Presets):
    """Checkpoint-collection schedule (one per preset; serialised next to every collection)."""

    PRESET_FIELD = "preset_name"
    PRESET_VALUES = COLLECTION_PRESETS

    preset_name: str = field(
        default="cpu", metadata={"help": ("scale preset whose backend (model, LoRA, token size) is trained.")}
    )
    phase1_steps: int = field(default=40, metadata={"help": "optimizer steps of phase 1 (higher learning rate)."})
    phase1_lr: float = field(default=3e-4, metadata={"help": "phase-1 learning rate."})
    phase2_steps: int = field(
        default=20, metadata={"help": ("optimizer steps of phase 2 (lower learning rate, same optimizer state).")}
    )
    phase2_lr: float = field(default=3e-5, metadata={"help": "phase-2 learning rate."})
    batch_size: int = field(default=8, metadata={"help": "sequences per step."})
    max_samples: int = field(
        default=2000,
        metadata={
            "help": (
                "at most this many training examples per task (the first ones of the task's deterministic train split)."
            )
        },
    )
    max_len: int = field(default=128, metadata={"help": "tokens per training sequence (prompt cut from the left)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "gradient-norm clip (``None``: no clipping)."})
    seed: int = field(default=0, metadata={"help": "data-order seed (batch t is a function of (seed, t))."})
    init_seed: int = field(default=0, metadata={"help": "seed of the LoRA initialisation shared by every task."})
    split_seed: int = field(
        default=0,
        metadata={
            "help": (
                "seed of the task splits (the sizes are the preset's; recorded in the artifacts' split manifest, "
                "which every later stage checks)."
            )
        },
    )
    style: str = field(default="plain", metadata={"help": "prompt style, ``plain`` (lm-eval format) or ``chat``."})
    model: str | None = field(
        default=None, metadata={"help": ("override the preset's model (``None``: the preset's).")}
    )

    def __post_init__(self) -> None:
        check_preset(self.preset_name)
        for name in ("phase1_steps", "phase2_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.total_steps < 1:
            raise ValueError("collection needs at least one step")
        for name in ("batch_size", "max_samples", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.style not in ("plain", "chat"):
            raise ValueError(f"style must be plain or chat, got {self.style!r}")

    @property
    def total_steps(self) -> int:
        return self.phase1_steps + self.phase2_steps

    def schedule(self, step: int) -> tuple[int, int, float]:
        """(phase, step within phase, learning rate) of global step ``step`` (1-based)."""
        if not 1 <= step <= self.total_steps:
            raise ValueError(f"step {step} outside 1..{self.total_steps}")
        if step <= self.phase1_steps:
            return 1, step, self.phase1_lr
        return 2, step - self.phase1_steps, self.phase2_lr

    def backend(self) -> BackendConfig:
        return BackendConfig.preset(self.preset_name, model=self.model)

    def config_hash(self) -> str:
        """Hash of everything that determines the checkpoints (schedule + backend)."""
        backend = self.backend()
        payload = {
            "collection": dataclasses.asdict(self),
            "backend": {
                "model": backend.model,
                "dtype": backend.dtype,
                "lora": dataclasses.asdict(backend.lora),
                "token_dim": backend.token_dim,
            },
        }
        return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class CollectionResult:
    """Outcome of one task's collection."""

    task: str
    steps: int
    final_loss: float
    seconds: float
    resumed_from: int = 0
    skipped: bool = False


def collect(
    config: CollectionConfig,
    tasks: Sequence[str],
    artifacts: str | Path,
    *,
    data_dir: str | Path | None = None,
    model=None,
    tokenizer=None,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> list[CollectionResult]:
    """Collect checkpoints of every task in ``tasks`` under ``ArtifactPaths(artifacts, preset)``.

    Args:
        model, tokenizer: an already loaded *plain* (not LoRA-wrapped) model to reuse; by default
            the preset's model is loaded. The LoRA is attached here, in place (the model object
            carries LoRA layers afterwards).
        callback: called after each persisted step; an exception from it stops the run (the
            next call resumes).
    Finished tasks are skipped; interrupted ones resume from their last completed step.
    """
    from ..backend.models import load_model

    paths = ArtifactPaths(artifacts, config.preset_name)
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        raise ValueError("no tasks to collect")
    examples = {
        t: contract_splits(paths, t, data_dir, config.split_seed, stage="collect").train[: config.max_samples]
        for t in tasks
    }
    empty = [t for t, ex in examples.items() if not ex]
    if empty:
        raise ValueError(f"task(s) {', '.join(empty)} have an empty train split; nothing to collect")
    backend = config.backend()
    if model is None:
        model, tokenizer = load_model(backend.model, backend.dtype, backend.device)
    elif tokenizer is None:
        raise ValueError("pass the tokenizer together with the model")
    elif hasattr(model, "peft_config"):
        raise ValueError("collect() attaches its own LoRA; pass the plain base model, not a PeftModel")
    peft_model = attach_lora(model, backend.lora, seed=config.init_seed)
    layout = AdapterLayout.from_model(peft_model, backend.token_dim)
    init = layout.get_flat()
    _save_layout(paths, layout, init, config)
    results = []
    for task in tasks:
        results.append(
            collect_task(
                peft_model,
                tokenizer,
                layout,
                init,
                task,
                examples[task],
                config,
                paths,
                callback=callback,
                progress=progress,
            )
        )
    return results


def _save_layout(paths: ArtifactPaths, layout: AdapterLayout, init: torch.Tensor, config: CollectionConfig) -> None:
    if paths.init_adapter.exists():
        fix = f"delete {paths.base} and collect again"
        saved = read_safetensors(paths.init_adapter, fix)[1].get("adapter")
        if saved is None:
            raise ValueError(f"{paths.init_adapter} has no 'adapter' tensor; {fix}")
        if saved.shape != init.shape or not torch.equal(saved, init):
            raise ValueError(
                f"{paths.base} was collected with a different model, LoRA or init_seed "
                f"(its init_adapter differs); use another --artifacts folder or delete {paths.base}"
            )
        return
    layout.save(paths.layout_dir)
    atomic_save_safetensors(
        paths.init_adapter, {"adapter": init}, {"init_seed": config.init_seed, "adapter_hash": adapter_hash(init)}
    )


def collect_task(
    model,
    tokenizer,
    layout: AdapterLayout,
    init: torch.Tensor,
    task: str,
    examples,
    config: CollectionConfig,
    paths: ArtifactPaths,
    *,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> CollectionResult:
    """Run (or resume, or skip) one task's two-phase collection on a LoRA-wrapped ``model``."""
    from tqdm.auto import tqdm

    chash = config.config_hash()
    info = {
        "task": task,
        "config_hash": chash,
        "collection": config.to_dict(),
        "backend": dataclasses.asdict(config.backend()),
        "n_train": len(examples),
        "total_steps": config.total_steps,
        "adapter_size": layout.size,
    }
    cfg_path = paths.collect_config(task)
    if cfg_path.exists():
        old = paths.collect_info(task)
        if old.get("config_hash") != chash:
            raise ValueError(
                f"{paths.collect_dir(task)} holds a collection made with another config "
                f"(hash {old.get('config_hash')}, now {chash}); use another --artifacts folder or "
                f"delete that folder to recollect"
            )
        if old.get("complete"):
            paths.checked_checkpoints(task)  # a deleted checkpoint is an error, not a smaller collection
            return CollectionResult(
                task,
                config.total_steps,
                _final_loss(paths, task, config.total_steps),
                0.0,
                config.total_steps,
                skipped=True,
            )

    params = layout._bound()
    optimizer = make_optimizer(params, config.phase1_lr, config.weight_decay)
    start = 0
    state_path = paths.collect_state(task)
    if state_path.exists():
        meta, tensors = read_state(
            state_path, chash, f"{state_path} belongs to another config; delete {paths.collect_dir(task)}"
        )
        start = int(meta["step"])
        trim_jsonl(paths.collect_log(task), start)  # rows a killed run wrote past its saved state
        layout.set_flat(tensors["adapter"])
        load_adamw_state(optimizer, params, tensors)
    else:
        layout.set_flat(init)
        paths.collect_log(task).unlink(missing_ok=True)  # a run killed before its first saved step
        atomic_write_json(cfg_path, info | {"complete": False})

    sequences = build_sequences(examples, tokenizer, style=config.style, max_len=config.max_len)
    loss, begun = float("nan"), time.perf_counter()
    bar = tqdm(
        range(start + 1, config.total_steps + 1),
        desc=f"collect {task}",
        disable=not progress,
        initial=start,
        total=config.total_steps,
    )
    for step in bar:
        t0 = time.perf_counter()
        phase, phase_step, lr = config.schedule(step)
        idx = batch_indices(len(sequences), config.batch_size, step - 1, config.seed)
        batch = collate([sequences[i] for i in idx], tokenizer.pad_token_id)
        loss = train_step(model, batch, optimizer, lr=lr, max_grad_norm=config.max_grad_norm)
        vector = layout.get_flat()
        meta = {
            "task": task,
            "step": step,
            "phase": phase,
            "phase_step": phase_step,
            "loss": repr(loss),
            "lr": repr(lr),
            "config_hash": chash,
        }
        atomic_save_safetensors(paths.checkpoint_file(task, step), {"adapter": vector}, meta)
        append_jsonl(
            paths.collect_log(task),
            {"step": step, "phase": phase, "lr": lr, "loss": loss, "seconds": round(time.perf_counter() - t0, 3)},
        )
        atomic_save_safetensors(
            state_path,
            {"adapter": vector, **adamw_state(optimizer, params)},
            {"step": step, "config_hash": chash, "task": task},
        )
        bar.set_postfix(loss=f"{loss:.3f}", phase=phase)
        if callback is not None:
            callback(task, step, loss)
    bar.close()
    seconds = time.perf_counter() - begun
    paths.checked_checkpoints(task)
    loss = _final_loss(paths, task, config.total_steps)  # from disk: also right when no step ran now
    atomic_write_json(cfg_path, info | {"complete": True, "final_loss": loss})
    return CollectionResult(task, config.total_steps, loss, seconds, resumed_from=start)


def _final_loss(paths: ArtifactPaths, task: str, total_steps: int) -> float:
    """The training loss recorded in the last checkpoint's metadata (exact: written with repr)."""
    path = paths.checkpoint_file(task, total_steps)
    meta, _ = read_safetensors(path, paths.recollect_fix(task), keys=False)
    return float(meta["loss"])


__all__ = ["CollectionConfig", "CollectionResult", "COLLECTION_PRESETS", "collect", "collect_task"]
