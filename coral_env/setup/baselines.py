"""The papers' LoRA baselines, for the results table (CORAL Table 2's comparison rows).

Every baseline ends the same way: a LoRA fine-tuned for ``finetune_steps`` on the *target*
task's labeled support examples, then evaluated on the target's test split. They differ in the
LoRA that fine-tuning starts from:

* ``no_meta_lora``   the preset's fixed LoRA initialisation (no meta-training);
* ``union_lora``     one LoRA trained on the union of the training tasks' train data;
* ``maml_fo``        MAML-en-LLM, **first-order** (FOMAML): per meta-step a task, ``inner_steps``
  SGD steps on one batch, the outer Adam step uses the gradient at the adapted weights on a
  second batch (no second derivatives);
* ``abmll_fo``       ABMLL, **first-order**: a Gaussian prior N(mu, sigma^2) over the LoRA
  weights; per meta-step a task posterior starts at a sample of the prior and takes
  ``inner_steps`` steps on loss + ``prior_weight`` * ||theta - mu||^2 / (2 sigma^2); mu moves
  toward the task weights (Reptile-style), sigma^2 tracks their spread. It keeps ABMLL's
  hierarchical Gaussian prior but not its amortised variational objective or second-order terms.
  Target fine-tuning keeps the prior term.

Meta-training is leave-one-out: the target is never among the training tasks. Runs are
resumable: the meta-trained weights (and optimizer state, every ``save_every`` steps) are
written atomically as safetensors + JSON, and each finished (method, target) result is a JSON
file that later runs reuse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..backend.finetune import answer_loss, batch_indices, build_sequences, collate
from ..backend.io import atomic_save_safetensors, atomic_write_json, read_json, read_state

METHODS = ("no_meta_lora", "union_lora", "maml_fo", "abmll_fo")
METHOD_LABELS = {
    "no_meta_lora": "No Meta-Train LoRA",
    "union_lora": "Union Train LoRA",
    "maml_fo": "MAML-en-LLM (first-order)",
    "abmll_fo": "ABMLL (first-order)",
}


@dataclass
class BaselineConfig:
    """Schedules of the baselines (cpu-scale defaults; ``preset`` picks tiny/cpu/paper values)."""

    meta_steps: int = field(default=40, metadata={"help": "meta-training steps (union: plain steps)"})
    inner_steps: int = field(default=2, metadata={"help": "MAML/ABMLL inner SGD steps per meta-step"})
    inner_lr: float = field(default=1e-3, metadata={"help": "inner-loop SGD learning rate"})
    meta_lr: float = field(default=3e-4, metadata={"help": "outer Adam learning rate (union: its lr)"})
    reptile_rate: float = field(default=0.3, metadata={"help": "ABMLL: how far mu moves toward a task"})
    prior_weight: float = field(default=1e-3, metadata={"help": "ABMLL: weight of the Gaussian prior term"})
    finetune_steps: int = field(default=20, metadata={"help": "steps on the target's support set"})
    finetune_lr: float = field(default=3e-4, metadata={"help": "target fine-tuning learning rate"})
    batch_size: int = field(default=8, metadata={"help": "sequences per step"})
    max_len: int = field(default=128, metadata={"help": "tokens per training sequence"})
    max_samples: int = field(default=2000, metadata={"help": "train examples per task"})
    save_every: int = field(default=10, metadata={"help": "meta-steps between resumable snapshots"})
    seed: int = field(default=0, metadata={"help": "data order and ABMLL sampling"})
    style: str = field(default="plain", metadata={"help": "prompt style"})

    def __post_init__(self) -> None:
        for name in ("meta_steps", "finetune_steps", "batch_size", "save_every", "max_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"BaselineConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.inner_steps < 1:
            raise ValueError(f"BaselineConfig.inner_steps must be >= 1, got {self.inner_steps}")
        for name in ("inner_lr", "meta_lr", "finetune_lr"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"BaselineConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        if not 0 < self.reptile_rate <= 1:
            raise ValueError(f"BaselineConfig.reptile_rate must be in (0, 1], got {self.reptile_rate}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "BaselineConfig":
        presets = {
            "tiny": dict(
                meta_steps=3, inner_steps=1, finetune_steps=2, batch_size=2, max_len=48, max_samples=32, save_every=2
            ),
            "cpu": {},
            "paper": dict(
                meta_steps=300,
                inner_steps=4,
                finetune_steps=75,
                batch_size=32,
                max_len=384,
                max_samples=5000,
                save_every=25,
                meta_lr=1e-4,
                finetune_lr=1e-4,
            ),
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(presets)}")
        return cls(**(presets[name] | {k: v for k, v in overrides.items() if v is not None}))

    def config_hash(self, extra: dict) -> str:
        payload = json.dumps({"config": dataclasses.asdict(self), **extra}, sort_keys=True, default=str)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


class _FlatAdam:
    """Adam on one flat fp32 vector, with its state as tensors (for atomic snapshots)."""

    def __init__(self, size: int, lr: float, betas=(0.9, 0.999), eps=1e-8) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m, self.v, self.t = torch.zeros(size), torch.zeros(size), 0

    def step(self, theta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        return theta - self.lr * (self.m / (1 - b1**self.t)) / ((self.v / (1 - b2**self.t)).sqrt() + self.eps)

    def state(self) -> dict[str, torch.Tensor]:
        return {"adam_m": self.m, "adam_v": self.v, "adam_t": torch.tensor([float(self.t)])}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        self.m, self.v = tensors["adam_m"].clone(), tensors["adam_v"].clone()
        self.t = int(tensors["adam_t"][0])


def loss_and_grad(model, layout, theta: torch.Tensor, batch: dict) -> tuple[float, torch.Tensor]:
    """Answer-token loss at LoRA weights ``theta`` and its gradient as a flat fp32 vector."""
    layout.set_flat(theta)
    params = layout.parameters()
    for p in params:
        p.grad = None
    with torch.enable_grad():
        loss = answer_loss(model, batch)
        loss.backward()
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    for p in params:
        p.grad = None
    return float(loss.detach()), grad


class BaselineTrainer:
    """Meta-trains and fine-tunes baseline LoRAs on one LoRA-wrapped model (``layout`` bound to it)."""

    def __init__(self, model, tokenizer, layout, init: torch.Tensor, config: BaselineConfig) -> None:
        self.model, self.tokenizer, self.layout, self.init = model, tokenizer, layout, init.clone()
        self.config = config

    # ----- data ------------------------------------------------------------------------------
    def sequences(self, examples) -> list:
        return build_sequences(examples, self.tokenizer, style=self.config.style, max_len=self.config.max_len)

    def batch(self, sequences: list, step: int, seed: int) -> dict:
        idx = batch_indices(len(sequences), self.config.batch_size, step, seed)
        return collate([sequences[i] for i in idx], self.tokenizer.pad_token_id)

    # ----- meta-training ---------------------------------------------------------------------
    def meta_train(self, method: str, train_data: dict[str, list], folder: Path, progress: bool = True) -> torch.Tensor:
        """The starting LoRA of ``method`` (flat fp32), trained on ``train_data`` (task -> examples).

        Resumes from ``folder/state.safetensors``; a finished run is read from
        ``folder/adapter.safetensors``.
        """
        from tqdm.auto import tqdm

        if method not in METHODS:
            raise ValueError(f"unknown baseline {method!r}; choose one of {', '.join(METHODS)}")
        if method == "no_meta_lora":
            return self.init.clone()
        cfg = self.config
        chash = cfg.config_hash(
            {"method": method, "tasks": sorted(train_data), "init": float(self.init.double().sum())}
        )
        done, state_path = folder / "adapter.safetensors", folder / "state.safetensors"
        for path in (done, state_path):
            if path.exists():
                meta, tensors = read_state(
                    path, chash, f"{path} was trained with other settings; delete {folder} to retrain"
                )
                if path == done:  # finished; a kill may have come before its config or cleanup
                    if not (folder / "config.json").exists():
                        self._write_config(folder, method, chash, sorted(train_data), float(meta["final_loss"]))
                    state_path.unlink(missing_ok=True)
                    return tensors["adapter"]
                break
        else:
            tensors, meta = None, {}
        tasks = sorted(train_data)
        seqs = {t: self.sequences(train_data[t]) for t in tasks}
        union = [s for t in tasks for s in seqs[t]]
        theta = self.init.clone()
        adam = _FlatAdam(theta.numel(), cfg.meta_lr)
        var = torch.full_like(theta, float(self.init.float().var().clamp(min=1e-6)))
        start = 0
        if tensors is not None:
            theta, start = tensors["adapter"].clone(), int(meta["step"])
            adam.load(tensors)
            var = tensors.get("prior_var", var).clone()
        bar = tqdm(
            range(start, cfg.meta_steps),
            desc=f"meta-train {method}",
            initial=start,
            total=cfg.meta_steps,
            disable=not progress,
            leave=False,
        )
        loss = float("nan")
        for step in bar:
            if method == "union_lora":
                loss, grad = loss_and_grad(self.model, self.layout, theta, self.batch(union, step, cfg.seed))
                theta = adam.step(theta, grad)
            else:
                task = tasks[step % len(tasks)]
                # Fresh seeds per step keep the data order a pure function of the step (resumable).
                support = self.batch(seqs[task], 2 * step, cfg.seed + 1)
                query = self.batch(seqs[task], 2 * step + 1, cfg.seed + 1)
                if method == "maml_fo":
                    fast = theta.clone()
                    for _ in range(cfg.inner_steps):
                        _, g = loss_and_grad(self.model, self.layout, fast, support)
                        fast -= cfg.inner_lr * g
                    loss, grad = loss_and_grad(self.model, self.layout, fast, query)
                    theta = adam.step(theta, grad)
                else:  # abmll_fo
                    g = torch.Generator().manual_seed(cfg.seed * 7919 + step)
                    fast = theta + var.sqrt() * torch.randn(theta.shape, generator=g)
                    for batch in [support] * cfg.inner_steps + [query]:
                        loss, g_data = loss_and_grad(self.model, self.layout, fast, batch)
                        fast -= cfg.inner_lr * (g_data + cfg.prior_weight * (fast - theta) / var)
                    dev = fast - theta
                    theta = theta + cfg.reptile_rate * dev
                    var = (0.9 * var + 0.1 * dev.pow(2)).clamp(min=1e-8)
            bar.set_postfix(loss=f"{loss:.3f}")
            if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.meta_steps:
                atomic_save_safetensors(
                    state_path,
                    {"adapter": theta, "prior_var": var, **adam.state()},
                    {"step": str(step + 1), "config_hash": chash, "method": method},
                )
        bar.close()
        atomic_save_safetensors(
            done,
            {"adapter": theta, "prior_var": var},
            {"config_hash": chash, "method": method, "final_loss": repr(loss)},
        )
        self._write_config(folder, method, chash, tasks, loss)
        state_path.unlink(missing_ok=True)
        return theta

    def _write_config(self, folder: Path, method: str, chash: str, tasks: list[str], loss: float) -> None:
        atomic_write_json(
            folder / "config.json",
            {
                "method": method,
                "config_hash": chash,
                "train_tasks": tasks,
                "config": dataclasses.asdict(self.config),
                "final_loss": loss,
            },
        )

    def prior_var(self, folder: Path) -> torch.Tensor | None:
        path = folder / "adapter.safetensors"
        if not path.exists():
            return None
        from safetensors.torch import load_file

        return load_file(str(path)).get("prior_var")

    # ----- target fine-tuning ----------------------------------------------------------------
    def finetune(self, start: torch.Tensor, support, prior_var: torch.Tensor | None = None) -> torch.Tensor:
        """``finetune_steps`` Adam steps on the target's labeled support examples from ``start``.

        With ``prior_var`` (ABMLL) the Gaussian prior term around ``start`` is kept.
        """
        cfg = self.config
        seqs = self.sequences(support)
        theta = start.clone()
        adam = _FlatAdam(theta.numel(), cfg.finetune_lr)
        for step in range(cfg.finetune_steps):
            _, grad = loss_and_grad(self.model, self.layout, theta, self.batch(seqs, step, cfg.seed + 2))
            if prior_var is not None:
                grad = grad + cfg.prior_weight * (theta - start) / prior_var
            theta = adam.step(theta, grad)
        return theta


def run_baselines(
    model,
    tokenizer,
    layout,
    init: torch.Tensor,
    config: BaselineConfig,
    *,
    targets: Sequence[str],
    train_tasks: Sequence[str],
    out: str | Path,
    load_splits,
    evaluate_test,
    methods: Sequence[str] = METHODS,
    progress: bool = True,
) -> list[dict]:
    """Every (method, target): meta-train without the target, fine-tune on its support, test.

    Args:
        load_splits: ``task -> TaskSplits`` (train, support, test).
        evaluate_test: ``(task, adapter) -> dict`` with at least ``accuracy`` and ``n``, the
            target's test evaluation with that adapter set.
    Returns one row per (method, target); each is also ``out/<method>/<target>/result.json``
    and is reused when present.
    """
    from tqdm.auto import tqdm

    trainer = BaselineTrainer(model, tokenizer, layout, init, config)
    out = Path(out)
    rows = []
    jobs = [(m, t) for t in targets for m in methods]
    for method, target in tqdm(jobs, desc="baselines", disable=not progress):
        result_path = out / method / target / "result.json"
        if result_path.exists():
            rows.append(read_json(result_path, f"delete {result_path} and re-run (that result is redone)"))
            continue
        t0 = time.perf_counter()
        pool = [t for t in train_tasks if t != target]
        if method != "no_meta_lora" and not pool:
            raise ValueError(f"{method} needs at least one training task besides the target {target!r}")
        train = {t: load_splits(t).train[: config.max_samples] for t in pool}
        # The meta-trained init depends on the training pool only, so targets that share a pool
        # share the meta-training run.
        folder = out / method / ("pool-" + hashlib.sha1(",".join(sorted(pool)).encode()).hexdigest()[:8])
        start = trainer.meta_train(method, train, folder, progress=progress)
        var = trainer.prior_var(folder) if method == "abmll_fo" else None
        tuned = trainer.finetune(start, load_splits(target).support, var)
        metrics = evaluate_test(target, tuned)
        row = {
            "method": method,
            "label": METHOD_LABELS[method],
            "task": target,
            "train_tasks": sorted(pool),
            **metrics,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        atomic_write_json(result_path, row)
        rows.append(row)
    layout.set_flat(init)
    return rows


__all__ = ["BaselineConfig", "BaselineTrainer", "METHODS", "METHOD_LABELS", "loss_and_grad", "run_baselines"]
