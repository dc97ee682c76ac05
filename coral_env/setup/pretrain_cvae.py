"""Train the alignment agent (stage 2): a conditional VAE over (adapter, task vector) pairs of the
training tasks, meta-trained with Reptile (CORAL App. D).

Training pairs per training task (the held-out task contributes nothing) come from
``cvae_data``: target ``input`` (the paper) reconstructs a collected checkpoint from itself and
its task vector; target ``checkpoint`` maps a generated adapter (and its task vector) to the
task's real checkpoints.

Loss (normalised adapter space): ``mean((recon - target)^2) + w(step) * KL``, KL summed over
latent dims and averaged over the batch, ``w`` rising linearly from 0 to ``kl_max`` (0.005).

Reptile meta-step ``s`` (one inner step, as in the paper):

    T ~ uniform(training tasks); batch = ``batch_size`` pairs of T      (seeded by (seed, s))
    theta' = theta - inner_lr * InnerOpt(grad L_T(theta))             (copy of theta, 1 step)
    adam:        theta <- MetaAdam(theta, g = theta - theta', lr = meta_lr)
    interpolate: theta <- theta + meta_lr * (theta' - theta)           (classic Reptile)

Both optimizers keep their moments across meta-steps (the inner one sees the fast copy,
re-loaded from theta every step). ``theta - theta'`` is Reptile's pseudo-gradient; with the
``adam`` meta-optimizer ``meta_lr`` is the step size in weight space (paper: inner 1e-3,
meta 1e-4, Adam). Adam on an Adam step moves every weight by about ``meta_lr`` per meta-step
whatever its gradient's signal-to-noise: at meta_lr 1e-3 the KL term diverged (1e9 by step 100
on real checkpoints); at the paper's 1e-4 it stays small. ``inner_optimizer="sgd"`` makes the
meta step plain Adam on the task-batch gradient.

Resume: every ``save_every`` meta-steps the weights, both optimizers' moments and the step are
written atomically to ``train_state.safetensors``. Every random draw of step ``s`` (task,
pairs, reparameterisation noise) comes from a generator seeded by (seed, s), so that state is
the whole RNG state: a killed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..agents.cvae import ConditionalVAE, CVAEConfig, kl_divergence
from ..agents.task_vector import TaskVectorizer
from ..backend.io import append_jsonl, atomic_save_safetensors, atomic_write_json, read_json, read_state, trim_jsonl
from ..backend.lora import AdapterLayout
from ..config import Presets, check_preset, documented
from ..tasks import get_task
from .artifacts import ArtifactPaths, MissingArtifactError
from .cvae_data import (
    TARGETS,
    CVAETrainingData,
    build_vectorizer,
    cvae_path,
    generator_id,
    load_cvae_data,
    load_generator,
    sample_meta_batch,
    task_vector_prompts,
)

StepCallback = Callable[[int, float], None]
"""(meta-step, loss), called after each meta-step (after the state is saved, on save steps)."""

CVAE_TRAINING_PRESETS: dict[str, dict] = {
    # CORAL App. D.3: 4000 meta-epochs, inner 1e-3, meta 1e-4, Adam, KL 0 -> 0.005.
    "paper": dict(
        cvae="paper",
        meta_steps=4000,
        batch_size=16,
        tv_prompts=128,
        tv_max_len=384,
        tv_batch_size=16,
        n_generated=16,
        save_every=200,
    ),
    # Measured on 2 shared cores (benchmarks/alignment.md): ~1-3 s per meta-step, ~1.5 s per task vector.
    "cpu": dict(cvae="cpu", meta_steps=100, batch_size=4, tv_prompts=8, tv_max_len=96, n_generated=4, save_every=25),
    "tiny": dict(
        cvae="tiny", meta_steps=20, batch_size=4, meta_lr=1e-3, tv_prompts=8, tv_max_len=32, n_generated=4, save_every=5
    ),
}


@documented
@dataclass
class CVAETrainingConfig(Presets):
    """CVAE meta-training run (one per preset; serialised next to the trained CVAE)."""

    PRESET_FIELD = "preset_name"
    PRESET_VALUES = CVAE_TRAINING_PRESETS

    preset_name: str = field(default="cpu", metadata={"help": "scale preset (artifacts folder, backend)."})
    cvae: str = field(default="cpu", metadata={"help": "CVAE architecture preset: tiny, cpu or paper."})
    target: str = field(
        default="input",
        metadata={
            "help": (
                "``input`` (reconstruct the input checkpoint, the paper) or ``checkpoint`` (map generated "
                "adapters to the task's real checkpoints)."
            )
        },
    )
    meta_steps: int = field(default=100, metadata={"help": "Reptile meta-steps."})
    batch_size: int = field(default=4, metadata={"help": "pairs of the sampled task per inner step."})
    inner_lr: float = field(default=1e-3, metadata={"help": "inner-step learning rate."})
    meta_lr: float = field(default=1e-4, metadata={"help": "meta (outer) learning rate."})
    inner_optimizer: str = field(default="adam", metadata={"help": "``adam`` or ``sgd``."})
    meta_optimizer: str = field(
        default="adam",
        metadata={
            "help": (
                "``adam`` (Adam on the pseudo-gradient theta - theta') or ``interpolate`` (theta += meta_lr *"
                " (theta' - theta))."
            )
        },
    )
    kl_max: float = field(default=0.005, metadata={"help": "final KL weight."})
    kl_anneal_fraction: float = field(
        default=1.0, metadata={"help": ("fraction of the meta-steps over which the KL weight ramps up.")}
    )
    phases: tuple[int, ...] = field(default=(2,), metadata={"help": "collection phases whose checkpoints are used."})
    tv_prompts: int = field(default=8, metadata={"help": "support prompts per task for task vectors."})
    tv_max_len: int = field(default=96, metadata={"help": "tokens kept per task-vector prompt."})
    tv_batch_size: int = field(default=8, metadata={"help": "prompts per forward pass when computing task vectors."})
    n_generated: int = field(
        default=4, metadata={"help": ("``checkpoint`` target: generated adapters per training task.")}
    )
    save_every: int = field(default=25, metadata={"help": "meta-steps between resume states."})
    seed: int = field(default=0, metadata={"help": "CVAE init and sampling seed."})
    split_seed: int = field(default=0, metadata={"help": "task split seed (as in collection)."})
    style: str = field(default="plain", metadata={"help": "prompt style of task-vector prompts (plain or chat)."})
    basis_rank: int | None = field(
        default=None, metadata={"help": ("override of the CVAE preset's ``basis_rank`` (``None``: the preset's).")}
    )

    def __post_init__(self) -> None:
        check_preset(self.preset_name)
        self.phases = tuple(int(p) for p in self.phases)
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        for name in (
            "meta_steps",
            "batch_size",
            "tv_prompts",
            "tv_max_len",
            "tv_batch_size",
            "n_generated",
            "save_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_optimizer not in ("adam", "sgd"):
            raise ValueError(f"inner_optimizer must be adam or sgd, got {self.inner_optimizer!r}")
        if self.meta_optimizer not in ("adam", "interpolate"):
            raise ValueError(f"meta_optimizer must be adam or interpolate, got {self.meta_optimizer!r}")
        if self.kl_max < 0 or not 0 < self.kl_anneal_fraction <= 1:
            raise ValueError("kl_max must be >= 0 and kl_anneal_fraction in (0, 1]")
        if not self.phases or not set(self.phases) <= {1, 2}:
            raise ValueError(f"phases must be a non-empty subset of (1, 2), got {self.phases}")
        if self.style not in ("plain", "chat"):
            raise ValueError(f"style must be plain or chat, got {self.style!r}")

    def kl_weight(self, step: int) -> float:
        """KL weight of 0-based meta-step ``step``: 0 at step 0, ``kl_max`` from the end of the ramp."""
        ramp = max(1, round(self.kl_anneal_fraction * (self.meta_steps - 1)))
        return self.kl_max * min(1.0, step / ramp)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----- state ------------------------------------------------------------------------------------
def _optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        for name, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value):
                out[f"{prefix}.{i}.{name}"] = value.reshape(-1) if value.ndim == 0 else value
    return out


def _load_optimizer(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        found = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{prefix}.{i}.")}
        if found:
            if "step" in found:
                found["step"] = found["step"].reshape(())
            optimizer.state[p] = {k: v.clone() for k, v in found.items()}


def _save_state(
    path: Path, meta: ConditionalVAE, optimizers: dict[str, torch.optim.Optimizer], step: int, chash: str, loss: float
) -> None:
    tensors = {f"cvae.{k}": v for k, v in meta.state_dict().items()}
    for prefix, opt in optimizers.items():
        tensors |= _optimizer_tensors(prefix, opt)
    atomic_save_safetensors(path, tensors, {"step": step, "config_hash": chash, "loss": repr(loss)})


def _load_state(
    path: Path, meta: ConditionalVAE, optimizers: dict[str, torch.optim.Optimizer], chash: str
) -> tuple[int, float]:
    """Load the resume state into ``meta`` and ``optimizers``; (its step, the loss of that step)."""
    info, tensors = read_state(
        path, chash, f"{path} belongs to another training config; delete {path.parent} to retrain"
    )
    meta.load_state_dict({k.removeprefix("cvae."): v for k, v in tensors.items() if k.startswith("cvae.")})
    for prefix, opt in optimizers.items():
        _load_optimizer(prefix, opt, tensors)
    return int(info["step"]), float(info.get("loss", "nan"))


# ----- training ---------------------------------------------------------------------------------
def config_hash(
    config: CVAETrainingConfig,
    cvae_config: CVAEConfig,
    tasks: Sequence[str],
    holdout: str | None,
    collection_hash: str,
    generator_id: str | None,
) -> str:
    training = {k: v for k, v in config.to_dict().items() if k != "save_every"}  # does not change the result
    payload = {
        "training": training,
        "cvae": cvae_config.to_dict(),
        "tasks": sorted(tasks),
        "holdout": holdout,
        "collection": collection_hash,
        "generator": generator_id,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def reptile_update(
    meta: torch.nn.Module, fast: torch.nn.Module, optimizer: torch.optim.Optimizer | None, meta_lr: float
) -> None:
    """Move the meta weights theta toward the adapted weights theta': with ``optimizer`` (Adam),
    one step on the pseudo-gradient theta - theta' (so against it, toward theta'); without,
    theta += meta_lr * (theta' - theta)."""
    with torch.no_grad():
        for p_meta, p_fast in zip(meta.parameters(), fast.parameters()):
            if optimizer is not None:
                p_meta.grad = p_meta - p_fast  # Reptile pseudo-gradient
            else:
                p_meta.add_(p_fast - p_meta, alpha=meta_lr)
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def reconstruction_report(cvae: ConditionalVAE, data: CVAETrainingData, batch_size: int = 8) -> dict[str, float]:
    """Normalised MSE on the training pairs: the CVAE's posterior-mean output, the training mean
    (a CVAE that outputs zeros), and (``checkpoint`` target) the unaligned inputs."""
    sums = {"cvae_mse": 0.0, "mean_mse": 0.0, "input_mse": 0.0}
    count = 0
    for task in data.tasks:
        x, tv, y = data.inputs[task], data.task_vectors[task], data.targets[task]
        for s in range(0, x.shape[0], batch_size):
            xb, tb = x[s : s + batch_size], tv[s : s + batch_size]
            recon, _, _ = cvae.forward_normalized(xb, tb, sample=False)
            yb = y[s : s + batch_size] if data.paired else y  # unpaired: error to every real checkpoint
            yn = cvae.normalize(yb)
            for i in range(xb.shape[0]):
                yi = yn[i] if data.paired else yn
                sums["cvae_mse"] += float((recon[i] - yi).pow(2).mean())
                sums["mean_mse"] += float(yi.pow(2).mean())
                sums["input_mse"] += float((cvae.normalize(xb[i : i + 1])[0] - yi).pow(2).mean())
                count += 1
    return {k: v / max(count, 1) for k, v in sums.items()}


def pretrain_cvae(
    config: CVAETrainingConfig,
    artifacts: str | Path,
    tasks: Sequence[str],
    *,
    holdout: str | None = None,
    data_dir=None,
    vectorizer: TaskVectorizer | None = None,
    generator=None,
    callback: StepCallback | None = None,
    progress: bool = True,
) -> ConditionalVAE:
    """Meta-train (or resume, or load if finished) the CVAE for ``tasks`` minus ``holdout``.

    Writes ``cvae_path(artifacts, preset, holdout, target)``: the CVAE (``ConditionalVAE.from_pretrained``
    loads it), ``train_config.json``, ``log.jsonl``, and while training ``train_state.safetensors``
    (the resume point, removed when the run completes).

    Args:
        vectorizer: a ``TaskVectorizer`` over the LoRA-wrapped base model (built from the
            collection's backend if omitted).
        generator: ``checkpoint`` target only: the stage-1 generator trained without
            ``holdout`` (loaded from ``generator_dir(holdout)`` if omitted).
        callback: called after each meta-step; an exception from it stops the run (the next
            call resumes from the last saved state).
    """
    from tqdm.auto import tqdm

    paths = ArtifactPaths(artifacts, config.preset_name)
    tasks = [get_task(t).name for t in dict.fromkeys(tasks)]
    holdout = get_task(holdout).name if holdout is not None else None
    # A set of tasks: sorted, so the training draws and the config hash do not depend on its order.
    train_tasks = sorted(t for t in tasks if t != holdout)
    if not train_tasks:
        raise ValueError(f"no training tasks left after holding out {holdout!r}")
    paths.require_collected(train_tasks)
    if not (paths.layout_dir / "layout.json").exists():
        raise MissingArtifactError(
            f"no adapter layout under {paths.layout_dir}; run `{paths.collect_command(train_tasks)}`"
        )
    out = cvae_path(artifacts, config.preset_name, holdout, config.target)
    gen_id = None
    if config.target == "checkpoint":
        generator = generator or load_generator(paths, holdout, artifacts)
        gen_id = generator_id(generator)
    collection_hash = paths.collect_info(train_tasks[0]).get("config_hash")
    cvae_config = CVAEConfig.preset(config.cvae, basis_rank=config.basis_rank)
    chash = config_hash(config, cvae_config, train_tasks, holdout, collection_hash, gen_id)

    info_path, state_path = out / "train_config.json", out / "train_state.safetensors"
    if info_path.exists():
        info = read_json(info_path, f"delete {out} and re-run `coral pretrain-cvae` (or `coral setup`)")
        if info.get("config_hash") == chash and info.get("complete"):
            state_path.unlink(missing_ok=True)  # left when a kill came between the save and its removal
            return ConditionalVAE.from_pretrained(out)
        if info.get("config_hash") != chash:
            raise ValueError(
                f"{out} holds a CVAE trained with another config (hash {info.get('config_hash')}, "
                f"now {chash}); delete it or use another --artifacts"
            )
    vectorizer = vectorizer or build_vectorizer(paths, train_tasks[0], config)
    if vectorizer.max_len != config.tv_max_len:
        raise ValueError(f"vectorizer keeps {vectorizer.max_len} tokens per prompt, config says {config.tv_max_len}")
    if vectorizer.layout.names != AdapterLayout.load(paths.layout_dir).names:
        raise ValueError(f"the vectorizer's model has other LoRA parameters than the layout in {paths.layout_dir}")
    data = load_cvae_data(
        paths, train_tasks, config, vectorizer, generator=generator, data_dir=data_dir, progress=progress
    )
    info = {
        "config_hash": chash,
        "training": config.to_dict(),
        "cvae": cvae_config.to_dict(),
        "tasks": train_tasks,
        "holdout": holdout,
        "collection_hash": collection_hash,
        "complete": False,
    }
    atomic_write_json(info_path, info)

    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        meta = ConditionalVAE(cvae_config, vectorizer.layout.size, vectorizer.dim)
    meta.fit_normalization(torch.cat(list(data.targets.values())), torch.cat(list(data.task_vectors.values())))
    fast = copy.deepcopy(meta)
    inner_cls = torch.optim.Adam if config.inner_optimizer == "adam" else torch.optim.SGD
    optimizers = {"inner": inner_cls(fast.parameters(), lr=config.inner_lr, foreach=False)}
    if config.meta_optimizer == "adam":
        optimizers["meta"] = torch.optim.Adam(meta.parameters(), lr=config.meta_lr, foreach=False)
    log_path = out / "log.jsonl"
    start, loss_value = _load_state(state_path, meta, optimizers, chash) if state_path.exists() else (0, float("nan"))
    trim_jsonl(log_path, start)

    fast.train()
    begun = time.perf_counter()
    bar = tqdm(
        range(start, config.meta_steps),
        desc=f"cvae[{holdout or 'all'}/{config.target}]",
        disable=not progress,
        initial=start,
        total=config.meta_steps,
    )
    for step in bar:
        t0 = time.perf_counter()
        task, x, tv, y, gen = sample_meta_batch(data, step, config.batch_size, config.seed)
        fast.load_state_dict(meta.state_dict())
        recon, mu, logvar = fast.forward_normalized(x, tv, sample=True, generator=gen)
        rec = (recon - fast.normalize(y)).pow(2).mean()
        kl = kl_divergence(mu, logvar)
        weight = config.kl_weight(step)
        loss = rec + weight * kl
        optimizers["inner"].zero_grad(set_to_none=True)
        loss.backward()
        optimizers["inner"].step()
        reptile_update(meta, fast, optimizers.get("meta"), config.meta_lr)
        loss_value = float(loss.detach())
        done = step + 1
        # The log row first: a kill after the state save must not lose it (resume trims past the state).
        append_jsonl(
            log_path,
            {
                "step": done,
                "task": task,
                "loss": loss_value,
                "recon": float(rec.detach()),
                "kl": float(kl.detach()),
                "kl_weight": weight,
                "seconds": round(time.perf_counter() - t0, 3),
            },
        )
        if done % config.save_every == 0 or done == config.meta_steps:
            _save_state(state_path, meta, optimizers, done, chash, loss_value)
        bar.set_postfix(recon=f"{rec.item():.4f}", kl=f"{kl.item():.2f}")
        if callback is not None:
            callback(done, loss_value)
    bar.close()
    meta.eval()
    report = reconstruction_report(meta, data)
    meta.save_pretrained(
        out,
        extra={
            "tasks": train_tasks,
            "holdout": holdout,
            "target": config.target,
            "preset": config.preset_name,
            "collection_hash": collection_hash,
            "tv_prompts": config.tv_prompts,
            "tv_max_len": config.tv_max_len,
            "style": config.style,
            "split_seed": config.split_seed,
            "final_loss": loss_value,
            **report,
            "training_seconds_this_run": round(time.perf_counter() - begun, 1),
        },
    )
    atomic_write_json(info_path, info | {"complete": True, "final_loss": loss_value, **report})
    state_path.unlink(missing_ok=True)  # weights + two optimizers' moments: ~5x the model, not needed now
    meta.extra = read_json(out / "config.json", f"delete {out} and re-run `coral pretrain-cvae`")["extra"]
    return meta


__all__ = [
    "CVAETrainingConfig",
    "CVAE_TRAINING_PRESETS",
    "TARGETS",
    "build_vectorizer",
    "cvae_path",
    "pretrain_cvae",
    "reconstruction_report",
    "reptile_update",
    "sample_meta_batch",
    "task_vector_prompts",
]
