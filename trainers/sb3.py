"""stable-baselines3 agents on ``Coral-v0`` (PPO, A2C, DQN; MaskablePPO with sb3-contrib).

The env is wrapped for SB3: the task context is embedded into a ``Box`` (``EmbedObservation``)
and an action is an index into the strategy catalogue (``DiscreteStrategies``), or, for
MaskablePPO, a factored ``MultiDiscrete`` vector with action masks (``FactoredStrategies``).
One env over all training tasks: each reset samples one. Episodes are one step (a contextual
bandit); repeated (task, strategy) pairs cost a memo lookup in the env.

The trained policy is saved as ``policy.safetensors`` + ``config.json`` (artifacts are
never pickled, so no SB3 ``.zip``); ``load_sb3`` rebuilds the algorithm and loads the state dict.
Evaluation on held-out tasks uses the same loop as ReST^EM (``trainers.evaluation``).

    python -m trainers.sb3 --algo ppo --preset cpu --train-tasks arc_easy,piqa --eval-tasks arc_challenge
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from coral_env.config import REWARD_MODES, Presets, documented

from .reporting import REPORT_TO, check_report_to
from .run_config import check_train_validation_size, prepare_run, train_env_kwargs

# SB3 and torch are imported where used: `coral --help` imports this module.

ALGOS = ("ppo", "a2c", "dqn", "maskable_ppo")
ALGO_DEFAULTS = {  # one-step episodes: gamma does not matter; short rollouts update often
    "ppo": {"learning_rate": 3e-4, "n_steps": 128},
    "maskable_ppo": {"learning_rate": 3e-4, "n_steps": 128},
    "a2c": {"learning_rate": 7e-4, "n_steps": 8},
    "dqn": {"learning_rate": 1e-3, "n_steps": 1},
}


@documented
@dataclass
class SB3Config(Presets):
    """Settings of an SB3 run; ``SB3Config.from_preset(name, **overrides)`` fills the preset's defaults."""

    PRESET_VALUES = {
        "tiny": dict(
            train_tasks=["syn_add", "syn_compare"], eval_tasks=["syn_parity"], auto_setup=True, total_timesteps=256
        ),
        "cpu": dict(total_timesteps=2000, max_prompt_batches=4),
        "paper": dict(total_timesteps=20_000, net_arch=[256, 256], eval_samples_per_task=1),
    }

    algo: str = field(default="ppo", metadata={"help": "ppo, a2c, dqn or maskable_ppo (needs sb3-contrib)"})
    preset: str = field(default="cpu", metadata={"help": "scale preset of the env and defaults: tiny, cpu, paper"})
    out: str | None = field(default=None, metadata={"help": "run folder (default runs/sb3/<algo>__seed<seed>)"})
    train_tasks: list[str] = field(
        default_factory=lambda: ["arc_easy", "piqa", "boolq", "winogrande"],
        metadata={"help": "tasks the agent trains on (each reset samples one)"},
    )
    eval_tasks: list[str] = field(
        default_factory=lambda: ["arc_challenge", "hellaswag"],
        metadata={"help": "held-out tasks the agent is evaluated on"},
    )
    artifacts: str | None = field(default=None, metadata={"help": "env artifacts root (coral setup --artifacts)"})
    data_dir: str | None = field(default=None, metadata={"help": "benchmark JSONL folder"})
    reward_metric: str = field(default="auto", metadata={"help": "env reward metric"})
    reward_mode: str = field(
        default="binary", metadata={"help": "env reward: binary, significant (McNemar p < 0.05) or delta"}
    )
    auto_setup: bool = field(default=False, metadata={"help": "let the env run `coral setup` for missing artifacts"})
    total_timesteps: int = field(default=2000, metadata={"help": "env steps of training (= episodes)"})
    learning_rate: float | None = field(default=None, metadata={"help": "default: ppo 3e-4, a2c 7e-4, dqn 1e-3"})
    n_steps: int | None = field(default=None, metadata={"help": "rollout length per update (ppo/a2c); default 128 / 8"})
    batch_size: int = field(default=64, metadata={"help": "minibatch size (ppo, dqn)"})
    n_epochs: int = field(default=10, metadata={"help": "PPO epochs per rollout"})
    ent_coef: float = field(default=0.01, metadata={"help": "entropy bonus (ppo, a2c)"})
    gamma: float = field(default=0.99, metadata={"help": "discount (irrelevant for one-step episodes)"})
    net_arch: list[int] = field(default_factory=lambda: [64, 64], metadata={"help": "MLP hidden sizes"})
    buffer_size: int = field(default=10_000, metadata={"help": "DQN replay buffer"})
    learning_starts: int = field(default=100, metadata={"help": "DQN steps before learning"})
    exploration_fraction: float = field(default=0.5, metadata={"help": "DQN share of training with decaying epsilon"})
    exploration_final_eps: float = field(default=0.05, metadata={"help": "DQN final epsilon"})
    target_update_interval: int = field(default=250, metadata={"help": "DQN target network update period"})
    train_freq: int = field(default=1, metadata={"help": "DQN steps per gradient step"})
    max_prompt_batches: int | None = field(
        default=None,
        metadata={
            "help": "Discrete catalogue: leave out TTS entries with more prompt batches (cpu preset: 4, "
            "dropping the 20-adapter ensembles that cost 20 evaluations each)"
        },
    )
    n_envs: int = field(
        default=1,
        metadata={
            "help": "training envs: 1 in this process, N > 1 in N worker processes (SB3 SubprocVecEnv, one Coral "
            "runtime each, seeds seed..seed+N-1)"
        },
    )
    report_to: str = field(
        default="none", metadata={"help": "none or tensorboard (SB3's tensorboard_log, under <out>/tensorboard)"}
    )
    train_validation_size: int | None = field(
        default=None,
        metadata={
            "help": "score training episodes on the first N validation questions (default: all); the held-out "
            "evaluation always uses the whole split. Pair a small N with --reward-mode significant"
        },
    )
    eval_samples_per_task: int = field(default=1, metadata={"help": "episodes per held-out task"})
    deterministic_eval: bool = field(default=True, metadata={"help": "greedy actions when evaluating"})
    eval_test: bool = field(default=False, metadata={"help": "also report test accuracy in the evaluation rows"})
    seed: int = field(default=0, metadata={"help": "seed of the env splits, the agent and the evaluation"})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {self.algo!r}")
        if self.total_timesteps < 1 or self.eval_samples_per_task < 1:
            raise ValueError("total_timesteps and eval_samples_per_task must be >= 1")
        if not isinstance(self.n_envs, int) or self.n_envs < 1:
            raise ValueError(f"n_envs must be an int >= 1, got {self.n_envs!r}")
        if self.reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {', '.join(REWARD_MODES)}, got {self.reward_mode!r}")
        if self.report_to not in REPORT_TO:
            raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {self.report_to!r}")
        check_train_validation_size(self.train_validation_size)
        if leak := set(self.train_tasks) & set(self.eval_tasks):
            raise ValueError(f"held-out tasks must not be trained on: {sorted(leak)}")
        for key in ("batch_size", "n_epochs", "buffer_size", "train_freq", "target_update_interval"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("n_steps", "threads", "max_prompt_batches"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or unset for the default), got {getattr(self, key)}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.net_arch or min(self.net_arch) < 1:
            raise ValueError(f"net_arch must list hidden sizes >= 1, got {self.net_arch}")

    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / "sb3" / f"{self.algo}__seed{self.seed}"


EVAL_SETTINGS = (
    "eval_tasks",
    "eval_samples_per_task",
    "deterministic_eval",
    "eval_test",
    "seed",
    "reward_metric",
    "reward_mode",
)
"""Settings of the held-out evaluation: a rerun with the same ones reuses ``eval.json``."""


def algorithm_class(algo: str):
    """The SB3 class for ``algo`` (MaskablePPO needs sb3-contrib)."""
    if algo == "maskable_ppo":
        try:
            from sb3_contrib import MaskablePPO
        except ImportError as exc:
            raise ImportError("algo 'maskable_ppo' needs sb3-contrib: pip install sb3-contrib") from exc
        return MaskablePPO
    from stable_baselines3 import A2C, DQN, PPO

    return {"ppo": PPO, "a2c": A2C, "dqn": DQN}[algo]


def hyperparameters(config: SB3Config) -> dict[str, Any]:
    """Constructor keyword arguments of the algorithm (policy_kwargs included)."""
    lr = config.learning_rate or ALGO_DEFAULTS[config.algo]["learning_rate"]
    n_steps = config.n_steps or ALGO_DEFAULTS[config.algo]["n_steps"]
    common = {
        "learning_rate": lr,
        "gamma": config.gamma,
        "seed": config.seed,
        "device": "cpu",
        "policy_kwargs": {"net_arch": list(config.net_arch)},
    }
    if config.algo == "dqn":
        return common | {
            "buffer_size": config.buffer_size,
            "learning_starts": config.learning_starts,
            "batch_size": config.batch_size,
            "train_freq": config.train_freq,
            "target_update_interval": config.target_update_interval,
            "exploration_fraction": config.exploration_fraction,
            "exploration_final_eps": config.exploration_final_eps,
        }
    if config.algo == "a2c":
        return common | {"n_steps": n_steps, "ent_coef": config.ent_coef}
    return common | {
        "n_steps": n_steps,
        "batch_size": min(config.batch_size, n_steps),
        "n_epochs": config.n_epochs,
        "ent_coef": config.ent_coef,
    }


def wrap_env(env, algo: str, encoder=None, max_prompt_batches: int | None = None):
    """``Coral-v0`` (or a look-alike) -> the Box/Discrete (or MultiDiscrete) env SB3 trains on."""
    from coral_env.env.wrappers import (
        DiscreteStrategies,
        EmbedObservation,
        FactoredStrategies,
    )

    env = EmbedObservation(env, encoder=encoder)
    if algo == "maskable_ppo":
        return FactoredStrategies(env, max_prompt_batches)
    return DiscreteStrategies(env, max_prompt_batches)


def train_sb3(config: SB3Config, make_env: Callable[[list[str]], Any] | None = None, encoder=None) -> dict[str, Any]:
    """Train (or, when ``<out>/policy`` exists, reload), save and evaluate one agent.

    Args:
        make_env: ``(tasks, **env kwargs) -> env`` (default: ``Coral-v0`` with the config's env settings;
            the held-out env is built with ``strict_heldout=True``).
        encoder: sentence encoder for ``EmbedObservation`` (default: the env's generator encoder).

    Returns:
        ``{"policy_dir", "rows", "summary", "trained", "seconds", "model"}``.
    """
    import numpy as np

    from coral_env.backend.io import append_jsonl_once, atomic_write_json, read_json, to_json
    from policies.sb3 import SB3Policy

    from .evaluation import evaluate_policy_on_tasks, summarize

    # ----- seeding, tasks, env, folders -----------------------------------------------------------
    config, make_env = prepare_run(config, make_env)
    np.random.seed(config.seed)
    out = config.run_dir()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", config)

    # ----- train (or reload a finished run) ----------------------------------------------------
    given_encoder = encoder  # workers get it too (None: each builds the env's own, the same artifact)
    local_env = wrap_env(
        make_env(config.train_tasks, **train_env_kwargs(config)), config.algo, encoder, config.max_prompt_batches
    )
    encoder = local_env.get_wrapper_attr("encoder")  # the held-out env must embed the same way
    policy_dir = out / "policy"
    started = time.perf_counter()
    trained = not (policy_dir / "config.json").exists()
    seconds = None
    if trained:
        # n_envs > 1: workers embed with their own copy of the same encoder (the same artifact)
        train_env = local_env if config.n_envs == 1 else worker_envs(config, make_env, given_encoder)
        logs = str(out / "tensorboard") if config.report_to == "tensorboard" else None
        check_report_to(config.report_to)
        model = algorithm_class(config.algo)("MlpPolicy", train_env, tensorboard_log=logs, **hyperparameters(config))
        if logs is None:
            model.set_logger(silent_logger())
        try:
            model.learn(total_timesteps=config.total_timesteps, callback=_progress_callback(config))
        finally:
            if config.n_envs > 1:
                train_env.close()
        save_sb3(model, policy_dir, config)
        seconds = time.perf_counter() - started
    else:
        _check_same_agent(policy_dir, config)
        model = load_sb3(policy_dir)
    # Logged once, also when a kill came between the save and this line.
    append_jsonl_once(
        out / "log.jsonl",
        {"event": "train", "algo": config.algo, "timesteps": config.total_timesteps, "seconds": seconds},
    )

    # ----- evaluate on held-out tasks (a finished evaluation with these settings is reused) ------
    settings = json.loads(to_json({k: getattr(config, k) for k in EVAL_SETTINGS}))
    eval_path = out / "eval.json"
    stored = None
    if not trained and eval_path.exists():
        stored = read_json(eval_path, f"delete {eval_path} and re-run the same command (it re-evaluates)")
    if stored is not None and stored.get("settings") == settings:
        rows, summary = stored["rows"], stored["summary"]
    else:
        eval_env = make_env(config.eval_tasks, strict_heldout=True)  # artifacts never trained on them
        policy = SB3Policy(
            model,
            wrap_env(eval_env, config.algo, encoder, config.max_prompt_batches),
            deterministic=config.deterministic_eval,
            name=config.algo,
        )
        rows = evaluate_policy_on_tasks(
            eval_env,
            policy,
            config.eval_tasks,
            config.eval_samples_per_task,
            name=config.algo,
            seed=config.seed,
            progress=config.progress,
        )
        summary = summarize(rows)[0]
        atomic_write_json(eval_path, {"policy": config.algo, "settings": settings, "rows": rows, "summary": summary})
    append_jsonl_once(
        out / "log.jsonl",
        {
            "event": "eval",
            "algo": config.algo,
            "settings": settings,
            "success_rate": summary["success_rate"],
            "mean_metric_gain": summary["mean_metric_gain"],
        },
        keys=("event", "settings"),
    )
    return {
        "policy_dir": str(policy_dir),
        "rows": rows,
        "summary": summary,
        "trained": trained,
        "seconds": time.perf_counter() - started,
        "model": model,
    }


def worker_envs(config: SB3Config, make_env: Callable[[list[str]], Any], encoder=None):
    """``n_envs`` wrapped training envs in worker processes (SB3 ``SubprocVecEnv``; forkserver
    or spawn, so each worker builds its own runtime). SB3 seeds worker i with ``seed + i``."""
    import functools
    import multiprocessing
    import os

    from stable_baselines3.common.vec_env import SubprocVecEnv

    threads = config.threads or max(1, (os.cpu_count() or 1) // config.n_envs)
    make = functools.partial(
        _worker_env, make_env, list(config.train_tasks), config.algo, config.max_prompt_batches, threads, encoder
    )
    make = functools.partial(make, **train_env_kwargs(config))
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return SubprocVecEnv([make] * config.n_envs, start_method=method)


def _worker_env(
    make_env, tasks: list[str], algo: str, max_prompt_batches: int | None, threads: int, encoder=None, **env_kwargs
):
    import torch

    torch.set_num_threads(threads)
    return wrap_env(make_env(tasks, **env_kwargs), algo, encoder, max_prompt_batches)


def silent_logger():
    """An SB3 logger with no outputs and no folder: SB3's default one (no tensorboard, verbose 0)
    writes nothing either but makes an empty ``$TMPDIR/SB3-<date>`` folder on every run."""
    from stable_baselines3.common.logger import Logger

    return Logger(folder=None, output_formats=[])


def _progress_callback(config: SB3Config):
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm.auto import tqdm

    class Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=config.total_timesteps, desc=f"{config.algo} train", disable=not config.progress)

        def _on_step(self) -> bool:
            self.bar.update(self.training_env.num_envs)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return Progress()


# ----- save / load without pickle ------------------------------------------------------------------


def _space_spec(space) -> dict[str, Any]:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": [int(n) for n in space.nvec]}
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape)}
    raise TypeError(f"cannot describe space {space}")


def _space(spec: dict[str, Any]):
    import numpy as np
    from gymnasium import spaces

    if spec["type"] == "Discrete":
        return spaces.Discrete(spec["n"])
    if spec["type"] == "MultiDiscrete":
        return spaces.MultiDiscrete(np.array(spec["nvec"], dtype=np.int64))
    return spaces.Box(-np.inf, np.inf, shape=tuple(spec["shape"]), dtype=np.float32)


def save_sb3(model, folder: str | Path, config: SB3Config) -> Path:
    """Write ``policy.safetensors`` (the policy's state dict) and ``config.json`` (algorithm,
    hyperparameters, spaces, and the catalogue the discrete actions index) atomically."""
    from safetensors.torch import save_file

    from coral_env.backend.io import atomic_dir, to_json
    from coral_env.strategies import catalogue

    folder = Path(folder)
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.policy.state_dict().items()}
    meta = {
        "format": "coral-sb3/1",
        "algo": config.algo,
        "hyperparameters": hyperparameters(config),
        "observation_space": _space_spec(model.observation_space),
        "action_space": _space_spec(model.action_space),
        "config": dataclasses.asdict(config),
    }
    if meta["action_space"]["type"] == "Discrete":
        meta["catalogue"] = [s.canonical_json() for s in catalogue(config.max_prompt_batches)]
    with atomic_dir(folder, clean_stale=True) as tmp:  # the old agent stays until the new one is in
        save_file(state, str(tmp / "policy.safetensors"))
        (tmp / "config.json").write_text(to_json(meta))
    return folder


def _check_same_agent(folder: Path, config: SB3Config) -> None:
    saved = json.loads((folder / "config.json").read_text())
    keys = ("algo", "preset", "train_tasks", "total_timesteps", "max_prompt_batches")
    now = {k: getattr(config, k) for k in keys} | {"hyperparameters": json.loads(json.dumps(hyperparameters(config)))}
    before = {k: saved["config"].get(k) for k in keys} | {"hyperparameters": saved["hyperparameters"]}
    if changed := sorted(k for k in now if before.get(k) != now[k]):
        raise ValueError(
            f"{folder} holds an agent trained with other settings ({', '.join(changed)}); "
            "delete it to retrain, or choose another --out"
        )


def load_sb3(folder: str | Path):
    """Rebuild the algorithm from ``config.json`` and load ``policy.safetensors`` (strict)."""
    import gymnasium as gym
    import numpy as np
    from safetensors.torch import load_file

    from coral_env.strategies import catalogue

    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    expected = catalogue(meta.get("config", {}).get("max_prompt_batches"))
    if meta.get("catalogue") not in (None, [s.canonical_json() for s in expected]):
        raise ValueError(f"{folder} was trained on a different strategy catalogue; its actions would be misread")

    class SpacesOnly(gym.Env):  # lets SB3 build the networks without the Coral env
        observation_space, action_space = _space(meta["observation_space"]), _space(meta["action_space"])

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(self.observation_space.shape, dtype=np.float32), {}

        def step(self, action):
            return np.zeros(self.observation_space.shape, dtype=np.float32), 0.0, True, False, {}

        def action_masks(self):
            return np.ones(sum(self.action_space.nvec), dtype=bool)

    model = algorithm_class(meta["algo"])("MlpPolicy", SpacesOnly(), **meta["hyperparameters"])
    model.policy.load_state_dict(load_file(str(folder / "policy.safetensors")))
    return model


# ----- command line ---------------------------------------------------------------------------------


def command(config: SB3Config) -> int:
    """``coral sb3``: train, save, then print the comparison and family tables."""
    from .evaluation import comparison_table, family_table

    result = train_sb3(config)
    print(comparison_table([result["summary"]]))
    print()
    print(family_table([result["summary"]]))
    print(f"policy saved to {result['policy_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m trainers.sb3 --algo ppo --preset cpu --train-tasks a,b --eval-tasks c``."""
    from coral_env.config import run_config_command

    from .commands import TRAINERS

    return run_config_command(SB3Config, command, argv, "python -m trainers.sb3", TRAINERS["sb3"].description)


if __name__ == "__main__":
    sys.exit(main())
