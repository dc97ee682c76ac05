"""What every trainer run shares: preparing a run (threads, seeds, task paths, the env factory),
the LLM-policy settings of ReST^EM and GRPO (``PolicyTrainingConfig``), the resume check of a
run folder, and the LLM policy a run samples and evaluates.

``prepare_run`` serves ReST^EM, GRPO and SB3; ``PolicyTrainingConfig`` is the base of
``RestemConfig`` and ``GrpoConfig``, which add their own algorithm's fields and presets.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from coral_env.config import REWARD_MODES, Presets

from .reporting import REPORT_TO

TINY_TASKS = (["syn_add", "syn_compare"], ["syn_parity"])
CPU_TASKS = (["arc_easy", "piqa", "boolq", "winogrande"], ["arc_challenge", "hellaswag"])

POLICY_PRESETS = {
    "tiny": dict(
        policy_model="tiny",
        lora_layers=0,
        policy_dtype="fp32",
        train_tasks=TINY_TASKS[0],
        eval_tasks=TINY_TASKS[1],
        auto_setup=True,
        lora_r=2,
        lora_alpha=4,
        eval_samples_per_task=2,
    ),
    "cpu": {},
    "paper": dict(
        eval_samples_per_task=20,
        lora_layers=0,
        lora_targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    ),
}
"""Preset values of the shared fields; each trainer's ``PRESET_VALUES`` adds its own to them."""

RESUMABLE_CHANGES = {"out", "threads", "progress", "report_to", "workers", "ray_address"}
"""Fields that may change between a run and its resumption (each trainer adds its length field)."""


@dataclass
class PolicyTrainingConfig(Presets):
    """Settings of a run that trains the LLM policy (ReST^EM, GRPO): tasks, env, policy model,
    sampling, LoRA, Ray workers and the held-out evaluation."""

    preset: str = field(default="cpu", metadata={"help": "scale preset of the env and defaults: tiny, cpu, paper"})
    out: str = field(default="runs/policy", metadata={"help": "run folder (reused to resume)"})
    train_tasks: list[str] = field(
        default_factory=lambda: list(CPU_TASKS[0]),
        metadata={"help": "tasks the policy trains on (names or task config paths)"},
    )
    eval_tasks: list[str] = field(
        default_factory=lambda: list(CPU_TASKS[1]),
        metadata={"help": "held-out tasks the policy is evaluated on (names or paths)"},
    )
    policy_model: str | None = field(
        default=None, metadata={"help": "policy LLM (load_model name); default: policies.llm.default_policy_model()"}
    )
    policy_dtype: str = field(
        default="auto", metadata={"help": "dtype of the policy that samples and is evaluated: auto, bf16, fp32"}
    )
    artifacts: str | None = field(default=None, metadata={"help": "env artifacts root (coral setup --artifacts)"})
    data_dir: str | None = field(default=None, metadata={"help": "benchmark JSONL folder"})
    reward_metric: str = field(default="auto", metadata={"help": "env reward metric"})
    reward_mode: str = field(
        default="binary",
        metadata={
            "help": "env reward: binary (any validation gain), significant (a gain McNemar tells apart from "
            "noise, p < 0.05) or delta"
        },
    )
    auto_setup: bool = field(default=False, metadata={"help": "let the env run `coral setup` for missing artifacts"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (paper: 1.0)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling (paper: 0.9)"})
    top_k: int = field(default=50, metadata={"help": "top-k sampling (paper: 50)"})
    max_new_tokens: int = field(default=96, metadata={"help": "reply length bound"})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank of the policy adapter"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], metadata={"help": "modules that get LoRA"}
    )
    lora_layers: int = field(
        default=4,
        metadata={
            "help": "LoRA on the last N transformer layers only (0: every layer; paper: 0). Backpropagation then "
            "stops N layers below the top: on a CPU the SFT step costs about a forward pass"
        },
    )
    train_validation_size: int | None = field(
        default=None,
        metadata={
            "help": "score training episodes on the first N validation questions (default: all); the held-out "
            "evaluation always uses the whole split. Pair a small N with --reward-mode significant"
        },
    )
    eval_base: bool = field(default=True, metadata={"help": "also evaluate the zero-shot base policy"})
    eval_samples_per_task: int = field(default=4, metadata={"help": "episodes per held-out task"})
    eval_test: bool = field(default=False, metadata={"help": "also report test accuracy in the evaluation rows"})
    workers: int = field(
        default=1,
        metadata={
            "help": "Ray actors that score episodes (training samples and held-out evaluation), one env runtime "
            'each; 1 = in this process (needs pip install -e ".[ray]" when > 1)'
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={"help": "join this Ray cluster (ray.init(address=...)); default: a local Ray when --workers > 1"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the env's strategies, sampling and training"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    report_to: str = field(
        default="none",
        metadata={"help": "none or tensorboard (TRL's report_to; logs in tensorboard/ folders under --out)"},
    )
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def lora_config(self, num_layers: int):
        """The PEFT ``LoraConfig`` of a fresh policy adapter on a model of ``num_layers`` layers."""
        from peft import LoraConfig

        top = range(max(0, num_layers - self.lora_layers), num_layers) if self.lora_layers else None
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_targets),
            layers_to_transform=list(top) if top is not None else None,
            task_type="CAUSAL_LM",
        )

    def _check_policy_values(self) -> None:
        """Every shared setting a later stage would reject, checked before any model loads and
        before ``config.json`` is written (a corrected rerun would otherwise be refused)."""
        from policies.llm import check_sampling

        if not self.train_tasks or not self.eval_tasks:
            raise ValueError("train_tasks and eval_tasks must each name at least one task")
        if leak := set(self.train_tasks) & set(self.eval_tasks):
            raise ValueError(f"held-out tasks must not be trained on: {sorted(leak)}")
        check_sampling(self.temperature, self.top_p, self.top_k, self.max_new_tokens)
        if self.policy_dtype not in ("auto", "bf16", "fp16", "fp32"):
            raise ValueError(f"policy_dtype must be auto, bf16, fp16 or fp32, got {self.policy_dtype!r}")
        if not isinstance(self.lora_layers, int) or self.lora_layers < 0:
            raise ValueError(f"lora_layers must be an int >= 0 (0: every layer), got {self.lora_layers!r}")
        for key in ("lora_r", "lora_alpha", "eval_samples_per_task"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets:
            raise ValueError("lora_targets must name at least one module (e.g. q_proj,v_proj)")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {self.reward_mode!r}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {self.report_to!r}")
        check_train_validation_size(self.train_validation_size)
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {self.workers!r}")


def check_train_validation_size(size: int | None) -> None:
    """``ValueError`` unless ``size`` is None or an int >= 1."""
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"train_validation_size must be an int >= 1 (unset: the whole split), got {size!r}")


def train_env_kwargs(config) -> dict[str, Any]:
    """Env arguments of a run's training env: rewards need validation only, so test is not
    scored (``eval_test=False``); ``Coral-v0``'s ``validation_size`` when the config sets one."""
    size = getattr(config, "train_validation_size", None)
    return {"eval_test": False} | ({} if size is None else {"validation_size": size})


def prepare_run(config, make_env: Callable[..., Any] | None = None) -> tuple[Any, Callable[..., Any]]:
    """Start a trainer run: torch threads and seed set, task config paths registered and
    replaced by their names, the default policy model filled in, and, unless ``make_env`` is
    given, every task checked (a misspelt one fails now, not after an hour of work) and the
    env factory built from the config's env settings (Ray workers where the config has them).

    Returns ``(config, make_env)``.
    """
    import torch

    from coral_env.tasks import get_task, resolve_tasks

    from .evaluation import env_factory

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    config = dataclasses.replace(
        config, train_tasks=resolve_tasks(config.train_tasks), eval_tasks=resolve_tasks(config.eval_tasks)
    )
    if getattr(config, "policy_model", "") is None:
        from policies.llm import default_policy_model

        config = dataclasses.replace(config, policy_model=default_policy_model())
    if make_env is None:
        for task in config.train_tasks + config.eval_tasks:
            get_task(task)
        make_env = env_factory(
            config.preset,
            config.artifacts,
            config.data_dir,
            config.seed,
            reward_metric=config.reward_metric,
            reward_mode=getattr(config, "reward_mode", "binary"),
            auto_setup=config.auto_setup,
            eval_test=config.eval_test,
            workers=getattr(config, "workers", 1),  # SB3 parallelises with --n-envs instead
            ray_address=getattr(config, "ray_address", None),
        )
    return config, make_env


def write_contexts(*envs) -> None:
    """Write each env's missing task contexts now, before a policy model loads, so that the
    context writer and the policy are never in memory together (a Ray pool writes its own)."""
    for env in envs:
        prepare = getattr(getattr(env, "unwrapped", None), "prepare_contexts", None)
        if prepare is not None:
            prepare()


def check_resume(path: Path, config, resumable: set[str]) -> None:
    """``ValueError`` when ``path`` (a run's ``config.json``) holds other settings than
    ``config``, apart from the ``resumable`` fields."""
    if not path.exists():
        return
    from coral_env.backend.io import read_json

    old = read_json(path, f"delete {path.parent} or choose another --out")
    new = json.loads(json.dumps(dataclasses.asdict(config)))
    defaults = json.loads(json.dumps(dataclasses.asdict(type(config)())))
    # a field added since the run was written counts as its default (what the run did)
    old = {k: old.get(k, defaults.get(k)) for k in new}
    if changed := sorted(k for k in new if k not in resumable and old.get(k) != new[k]):
        raise ValueError(
            f"{path.parent} holds a run with different settings ({', '.join(changed)}); "
            "resume it with the same settings or choose another --out"
        )


def llm_policy_factory(config: PolicyTrainingConfig) -> Callable[[str | None], Any]:
    """``adapter folder | None -> LLMPolicy`` on the config's policy model and sampling settings."""

    def make(adapter: str | None):
        import torch

        from policies.llm import LLMPolicy, SamplingConfig

        sampling = SamplingConfig(
            temperature=config.temperature, top_p=config.top_p, top_k=config.top_k, max_new_tokens=config.max_new_tokens
        )
        policy = LLMPolicy(
            config.policy_model,
            adapter=adapter,
            sampling=sampling,
            seed=config.seed,
            dtype=config.policy_dtype,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
        policy.name = "llm" if adapter is None else f"llm+{Path(adapter).parent.name}"
        return policy

    return make
