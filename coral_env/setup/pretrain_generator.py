"""Train the generator (stage 1) on collected checkpoints: masked MSE between generated and real
adapter tokens over random (prompt batch, checkpoint) pairs of the same task.

Each step draws, for every batch row, a training task, one of its collected checkpoints and N
of its prompts (support + train questions), all from a generator seeded by (seed, step), so a
resumed run sees the same pairs. Layout scales (per-token mean/std) are fitted on the training
checkpoints only: the held-out task contributes nothing (leave-one-out). State (decoder,
AdamW moments, step) is written atomically every ``save_every`` steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..agents.encoder import PromptEncoder
from ..agents.generator import Generator, GeneratorConfig, HyperConvDecoder
from ..backend.io import (
    append_jsonl,
    atomic_save_safetensors,
    atomic_write_json,
    read_json,
    read_safetensors,
    read_state,
    trim_jsonl,
)
from ..backend.lora import AdapterLayout
from ..config import Presets, check_preset, documented
from ..tasks import get_task
from .artifacts import ArtifactPaths, MissingArtifactError
from .split_manifest import contract_splits

StepCallback = Callable[[int, float], None]
"""(step, loss), called after each step (after the state is saved, on save steps)."""

TOKEN_WEIGHTINGS = ("uniform", "task_variance")
ANCHORS = ("none", "init", "mean")


TRAINING_PRESETS: dict[str, dict] = {
    "paper": dict(
        generator="paper",
        steps=5000,
        batch_size=32,
        lr=1e-4,
        warmup_steps=200,
        noise_std=0.01,
        save_every=250,
        anchor="none",
    ),
    "cpu": dict(generator="cpu", steps=300, batch_size=8, lr=1e-3, warmup_steps=20, save_every=50),
    "tiny": dict(generator="tiny", steps=40, batch_size=4, lr=3e-3, warmup_steps=4, prompt_pool=32, save_every=10),
}


@documented
@dataclass
class GeneratorTrainingConfig(Presets):
    """Generator pretraining run (one per preset; serialised next to the trained generator)."""

    PRESET_FIELD = "preset_name"
    PRESET_VALUES = TRAINING_PRESETS

    preset_name: str = field(default="cpu", metadata={"help": "scale preset (artifacts folder, backend layout)."})
    generator: str = field(
        default="cpu", metadata={"help": ("generator preset (decoder stages) name: tiny, cpu or paper.")}
    )
    steps: int = field(default=300, metadata={"help": "optimizer steps."})
    batch_size: int = field(default=8, metadata={"help": "(prompt batch, checkpoint) pairs per step."})
    lr: float = field(
        default=1e-3,
        metadata={"help": ("peak AdamW learning rate (linear warmup, cosine decay to ``lr * min_lr_ratio``).")},
    )
    warmup_steps: int = field(default=20, metadata={"help": "warmup length."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "final learning rate as a fraction of ``lr``."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "gradient clip (``None``: off)."})
    noise_std: float = field(
        default=0.0, metadata={"help": ("std of Gaussian noise added to the condition (augmentation; 0 disables).")}
    )
    token_weighting: str = field(
        default="uniform",
        metadata={
            "help": (
                "``uniform`` or ``task_variance`` (weight tokens by how much the training tasks' mean "
                "checkpoints differ there, normalised to mean 1, floor 0.1)."
            )
        },
    )
    phases: tuple[int, ...] = field(
        default=(2,), metadata={"help": ("collection phases whose checkpoints are targets (paper: phase 2 only).")}
    )
    anchor: str = field(
        default="mean",
        metadata={
            "help": (
                "what the decoder's tokens are relative to. ``none`` (the papers): tokens are the checkpoint."
                " ``mean``: the residual from the mean of the training tasks' checkpoints (each task weighted"
                " equally), so the decoder spends no capacity on the part every task shares (above all the "
                "common LoRA-A initialisation) and a zero output is the mean adapter. ``init``: the residual "
                "from the shared LoRA initialisation."
            )
        },
    )
    prompt_pool: int = field(
        default=256, metadata={"help": ("prompts per training task to draw conditions from (support, then train).")}
    )
    save_every: int = field(default=50, metadata={"help": "steps between resume states."})
    seed: int = field(default=0, metadata={"help": "decoder init and pair sampling seed."})
    split_seed: int = field(default=0, metadata={"help": "task split seed (must match collection's)."})
    autocast_bf16: bool = field(
        default=False, metadata={"help": ("run the decoder under bf16 autocast (faster on CPUs with AVX-512 BF16).")}
    )

    def __post_init__(self) -> None:
        check_preset(self.preset_name)
        self.phases = tuple(int(p) for p in self.phases)
        if self.steps < 1 or self.batch_size < 1 or self.save_every < 1 or self.prompt_pool < 1:
            raise ValueError("steps, batch_size, save_every and prompt_pool must be >= 1")
        if self.token_weighting not in TOKEN_WEIGHTINGS:
            raise ValueError(f"token_weighting must be one of {TOKEN_WEIGHTINGS}, got {self.token_weighting!r}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {self.anchor!r}")
        if not set(self.phases) <= {1, 2} or not self.phases:
            raise ValueError(f"phases must be a non-empty subset of (1, 2), got {self.phases}")

    def lr_at(self, step: int) -> float:
        """Learning rate of 0-based ``step``: linear warmup then cosine decay."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainingData:
    """Everything a generator trains on, for a set of tasks.

    Attributes:
        tasks: training task names.
        layout: layout with scales fitted on these tasks' (anchored) checkpoints.
        targets: per task, normalised tokens of checkpoint - anchor (n_ckpt, n_layers, tokens_per_layer, token_dim).
        conditions: per task, prompt token embeddings (P, L, C).
        collection_hash: the collection config hash of the checkpoints.
        anchor: the vector subtracted before tokenising (``None`` for ``anchor="none"``).
    """

    tasks: list[str]
    layout: AdapterLayout
    targets: dict[str, torch.Tensor]
    conditions: dict[str, torch.Tensor]
    collection_hash: str
    anchor: torch.Tensor | None = None


def task_prompts(
    paths: ArtifactPaths,
    task: str,
    data_dir=None,
    split_seed: int = 0,
    limit: int | None = None,
    splits: Sequence[str] = ("support", "train"),
) -> list[str]:
    """Question texts of a task's splits, in order (the generator's conditioning prompts);
    the splits are the preset's, checked against the artifacts' split manifest."""
    loaded = contract_splits(paths, task, data_dir, split_seed, stage="generator")
    texts = [ex.question for name in splits for ex in loaded.split(name)]
    texts = list(dict.fromkeys(t for t in texts if t.strip()))
    return texts[:limit] if limit else texts


def load_training_data(
    paths: ArtifactPaths, tasks: Sequence[str], config: GeneratorTrainingConfig, encoder: PromptEncoder, data_dir=None
) -> TrainingData:
    """Load checkpoints, fit layout scales on them, tokenise, and encode each task's prompt pool."""
    paths.require_collected(list(tasks))
    if not (paths.layout_dir / "layout.json").exists():
        raise MissingArtifactError(
            f"no adapter layout under {paths.layout_dir}; run `{paths.collect_command(list(tasks))}`"
        )
    layout = AdapterLayout.load(paths.layout_dir)
    raw, hashes = {}, set()
    for task in tasks:
        vectors, meta = paths.load_checkpoints(task, config.phases)
        raw[task] = vectors
        hashes |= {m["config_hash"] for m in meta}
    if len(hashes) > 1:
        raise ValueError(f"training tasks were collected with different configs ({sorted(hashes)}); recollect")
    anchor = _anchor(paths, config.anchor, raw)
    if anchor is not None:
        raw = {t: v - anchor for t, v in raw.items()}
    layout.fit_scales(torch.cat(list(raw.values())))
    targets = {t: layout.tokenize(v) for t, v in raw.items()}
    del raw
    conditions = {}
    for task in tasks:
        prompts = task_prompts(paths, task, data_dir, config.split_seed, config.prompt_pool)
        if not prompts:
            raise ValueError(f"task {task!r} has no prompts to condition on")
        conditions[task] = encoder.token_embeddings(prompts)
    encoder.save_cache()
    return TrainingData(list(tasks), layout, targets, conditions, hashes.pop(), anchor)


def _anchor(paths: ArtifactPaths, kind: str, raw: dict[str, torch.Tensor]) -> torch.Tensor | None:
    if kind == "none":
        return None
    if kind == "mean":
        return torch.stack([v.mean(0) for v in raw.values()]).mean(0)
    if not paths.init_adapter.exists():
        raise MissingArtifactError(f"{paths.init_adapter} is missing; collect again into this folder")
    _, tensors = read_safetensors(paths.init_adapter, f"delete {paths.base} and collect again")
    return tensors["adapter"].float()


def token_weights(data: TrainingData, mode: str) -> torch.Tensor:
    """(n_layers, tokens_per_layer, 1) loss weights with mean 1 over tokens."""
    grid = data.layout.mask().shape[:2]
    if mode == "uniform" or len(data.tasks) < 2:
        return torch.ones(*grid, 1)
    means = torch.stack([data.targets[t].mean(0) for t in data.tasks])  # (tasks, layers, tokens, dim)
    spread = means.var(0).mean(-1)
    weights = (spread / spread.mean().clamp(min=1e-12)).clamp(min=0.1)
    return (weights / weights.mean())[..., None]


def sample_batch(
    data: TrainingData, step: int, batch_size: int, num_prompts: int, seed: int, noise_std: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(conditions (B, N, L, C), targets (B, layers, tokens, dim), task names) of step ``step``.

    A pure function of (seed, step): a resumed run draws the same pairs.
    """
    gen = torch.Generator().manual_seed((seed * 1_000_003 + step) % (2**63))
    conds, targets, names = [], [], []
    for _ in range(batch_size):
        task = data.tasks[int(torch.randint(len(data.tasks), (1,), generator=gen))]
        pool, tokens = data.conditions[task], data.targets[task]
        ckpt = int(torch.randint(tokens.shape[0], (1,), generator=gen))
        if pool.shape[0] >= num_prompts:
            idx = torch.randperm(pool.shape[0], generator=gen)[:num_prompts]
        else:
            idx = torch.randint(pool.shape[0], (num_prompts,), generator=gen)
        conds.append(pool[idx])
        targets.append(tokens[ckpt])
        names.append(task)
    cond = torch.stack(conds)
    if noise_std > 0:
        cond = cond + noise_std * torch.randn(cond.shape, generator=gen)
    return cond, torch.stack(targets), names


def masked_mse(
    output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean squared error over real (unpadded) token entries, optionally weighted per token."""
    w = mask.float() if weights is None else mask.float() * weights
    w = w.expand_as(target)
    return ((output.float() - target) ** 2 * w).sum() / w.sum()


def config_hash(
    config: GeneratorTrainingConfig,
    gen_config: GeneratorConfig,
    tasks: Sequence[str],
    holdout: str | None,
    collection_hash: str,
) -> str:
    payload = {
        "training": config.to_dict(),
        "generator": gen_config.to_dict(),
        "tasks": sorted(tasks),
        "holdout": holdout,
        "collection": collection_hash,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _save_state(
    path: Path, decoder: HyperConvDecoder, optimizer: torch.optim.Optimizer, step: int, chash: str, loss: float
) -> None:
    tensors = {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        state = optimizer.state.get(p)
        if state:
            tensors[f"opt.{i}.exp_avg"], tensors[f"opt.{i}.exp_avg_sq"] = state["exp_avg"], state["exp_avg_sq"]
            tensors[f"opt.{i}.step"] = state["step"].reshape(1).float()
    atomic_save_safetensors(path, tensors, {"step": step, "config_hash": chash, "loss": repr(loss)})


def _load_state(
    path: Path, decoder: HyperConvDecoder, optimizer: torch.optim.Optimizer, chash: str
) -> tuple[int, float]:
    """Load the resume state into ``decoder`` and ``optimizer``; (its step, the loss of that step)."""
    meta, tensors = read_state(
        path, chash, f"{path} belongs to another training config; delete {path.parent} to retrain"
    )
    decoder.load_state_dict({k.removeprefix("decoder."): v for k, v in tensors.items() if k.startswith("decoder.")})
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        if f"opt.{i}.exp_avg" in tensors:
            optimizer.state[p] = {
                "step": tensors[f"opt.{i}.step"].reshape(()).clone(),
                "exp_avg": tensors[f"opt.{i}.exp_avg"].clone(),
                "exp_avg_sq": tensors[f"opt.{i}.exp_avg_sq"].clone(),
            }
    return int(meta["step"]), float(meta.get("loss", "nan"))


def pretrain_generator(
    config: GeneratorTrainingConfig,
    artifacts: str | Path,
    tasks: Sequence[str],
    *,
    holdout: str | None = None,
    data_dir=None,
    encoder: PromptEncoder | None = None,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> Generator:
    """Train (or resume, or load if finished) the generator for ``tasks`` minus ``holdout``.

    Writes ``ArtifactPaths(artifacts, preset).generator_dir(holdout)``: the final generator
    (``Generator.from_pretrained`` loads it), ``train_state.safetensors`` (resume point),
    ``train_config.json`` and ``log.jsonl``.
    """
    from tqdm.auto import tqdm

    paths = ArtifactPaths(artifacts, config.preset_name)
    tasks = [get_task(t).name for t in dict.fromkeys(tasks)]
    if holdout is not None:
        holdout = get_task(holdout).name
    # A set of tasks: sorted, so the training draws and the config hash do not depend on its order.
    train_tasks = sorted(t for t in tasks if t != holdout)
    if not train_tasks:
        raise ValueError(f"no training tasks left after holding out {holdout!r}")
    layout_probe = _probe_layout(paths, train_tasks)
    gen_config = GeneratorConfig.preset(config.generator, layout_probe)
    encoder = encoder or PromptEncoder(gen_config.encoder, gen_config.prompt_length, cache_dir=paths.cache_dir)
    if encoder.max_length != gen_config.prompt_length or encoder.dim != gen_config.embed_dim:
        raise ValueError(
            f"encoder gives (L={encoder.max_length}, C={encoder.dim}), the generator expects "
            f"(L={gen_config.prompt_length}, C={gen_config.embed_dim})"
        )
    data = load_training_data(paths, train_tasks, config, encoder, data_dir)
    chash = config_hash(config, gen_config, train_tasks, holdout, data.collection_hash)

    out = paths.generator_dir(holdout)
    info_path = out / "train_config.json"
    if info_path.exists():
        info = read_json(info_path, f"delete {out} and re-run `coral pretrain-generator` (or `coral setup`)")
        if info.get("config_hash") == chash and info.get("complete"):
            return Generator.from_pretrained(out, encoder=encoder)
        if info.get("config_hash") != chash:
            raise ValueError(
                f"{out} holds a generator trained with another config (hash "
                f"{info.get('config_hash')}, now {chash}); delete it or use another --artifacts"
            )
    info = {
        "config_hash": chash,
        "training": config.to_dict(),
        "generator": gen_config.to_dict(),
        "tasks": train_tasks,
        "holdout": holdout,
        "collection_hash": data.collection_hash,
        "complete": False,
    }
    atomic_write_json(info_path, info)

    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        decoder = HyperConvDecoder(gen_config, data.layout)
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay, foreach=False)
    state_path = out / "train_state.safetensors"
    start, loss_value = _load_state(state_path, decoder, optimizer, chash) if state_path.exists() else (0, float("nan"))
    trim_jsonl(out / "log.jsonl", start)  # rows a killed run wrote after its last saved state
    mask = data.layout.mask()
    weights = token_weights(data, config.token_weighting)
    decoder.train()
    begun = time.perf_counter()
    bar = tqdm(
        range(start, config.steps),
        desc=f"generator[{holdout or 'all'}]",
        disable=not progress,
        initial=start,
        total=config.steps,
    )
    for step in bar:
        t0 = time.perf_counter()
        cond, target, _ = sample_batch(
            data, step, config.batch_size, gen_config.num_prompts, config.seed, config.noise_std
        )
        for group in optimizer.param_groups:
            group["lr"] = config.lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.autocast_bf16):
            output = decoder(cond)
        loss = masked_mse(output, target, mask, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(decoder.parameters(), config.max_grad_norm)
        optimizer.step()
        loss_value = float(loss.detach())
        done = step + 1
        # The log row first: a kill after the state save must not lose it (resume trims past the state).
        append_jsonl(
            out / "log.jsonl",
            {"step": done, "loss": loss_value, "lr": config.lr_at(step), "seconds": round(time.perf_counter() - t0, 3)},
        )
        if done % config.save_every == 0 or done == config.steps:
            _save_state(state_path, decoder, optimizer, done, chash, loss_value)
        bar.set_postfix(loss=f"{loss_value:.4f}")
        if callback is not None:
            callback(done, loss_value)
    bar.close()
    decoder.eval()
    generator = Generator(gen_config, data.layout, decoder, encoder, anchor=data.anchor)
    generator.save_pretrained(
        out,
        extra={
            "tasks": train_tasks,
            "holdout": holdout,
            "preset": config.preset_name,
            "collection_hash": data.collection_hash,
            "final_loss": loss_value,
            "training_seconds_this_run": round(time.perf_counter() - begun, 1),
        },
    )
    atomic_write_json(info_path, info | {"complete": True, "final_loss": loss_value})
    return generator


def _probe_layout(paths: ArtifactPaths, tasks: list[str]) -> AdapterLayout:
    paths.require_collected(tasks)
    if not (paths.layout_dir / "layout.json").exists():
        raise MissingArtifactError(f"no adapter layout under {paths.layout_dir}; run `{paths.collect_command(tasks)}`")
    return AdapterLayout.load(paths.layout_dir)


__all__ = [
    "GeneratorTrainingConfig",
    "TRAINING_PRESETS",
    "TrainingData",
    "load_training_data",
    "masked_mse",
    "pretrain_generator",
    "sample_batch",
    "task_prompts",
    "token_weights",
]
