"""``Coral-v0``: choose an adaptation strategy for a generated, aligned LoRA adapter."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from ..backend.evaluator import METRICS
from ..backend.metrics import mcnemar_improvement_pvalue
from ..config import REWARD_MODES
from ..strategies.schema import MAX_ACTION_CHARS, StrategyValidationError, parse_strategy
from .runtime import CoralRuntime, EnvConfig, TaskState
from .spaces import AnyText, as_float32

MAX_CONTEXT_CHARS = 4096


class CoralEnv(gym.Env[dict, str]):
    """
    ## Description

    LLM adaptation to an unseen task as a decision problem (CORAL / DeGAML-LLM). On reset, a
    hyper-convolutional generator turns the task's support prompts into a LoRA adapter and a
    conditional VAE aligns it with the task (stage 1 and 2 artifacts from ``coral setup``). The
    agent reads a natural-language description of the task and picks one adaptation strategy,
    written as JSON, from four families: test-time learning (``TTL``), two-subspace LoRA mixing
    (``LORA``), test-time scaling over several generated adapters (``TTS``) and SLOT latent
    steering (``Latent``). The strategy is executed on the adapter and the model is scored on the
    task's validation split.

    ## Action Space

    A JSON string (a ``dict`` is accepted too), e.g. ``{"family": "LORA", "lambda": 0.5}``,
    validated against ``coral_env.strategies.schema`` (fields, types and ranges). The space is
    ``AnyText(max_length=10000)``.

    ## Observation Space

    ``Dict`` with
    - ``context``: the task context (``AnyText``: any character, up to 4096): three verbatim
      labeled support examples, the answer format, a task statement and facts measured on the
      support split (kind, choices, answer type, question length, passages, blanks,
      continuations, numbers, math notation, shared wording), then an LLM-written
      description; see ``coral_env.env.contexts``. In a chained episode
      (``max_adaptation_steps > 1``, DeGAML's closed loop) each later observation ends with the
      episode's history so far, one line per strategy with the validation metric before and
      after it, so a policy that reads the context sees the feedback;
    - ``adapter``: a fixed-size float32 vector describing the current adapter (in a chained
      episode, the adapter the last strategy left; the terminal observation keeps the one
      before, as nothing acts on it): the CVAE posterior mean when alignment is
      on, else RMS of each LoRA matrix pooled to 32 bins;
    - ``metrics``: float32 ``[validation metric before the action, adaptation step index]``.

    ## Starting State

    The generated (and aligned) adapter of the episode's task; ``task`` may be a list, in which
    case each reset samples one (or takes ``options={"task": name}``).

    ## Rewards

    ``reward_mode="binary"`` (default): 1 if the validation metric after the strategy is higher
    than before, ``tie_reward`` (default 0) if equal, else 0. ``reward_mode="delta"``: the
    metric difference. ``reward_mode="significant"``: 1 only when the metric rose and the
    per-question improvement is significant: a one-sided exact McNemar test on the correctness
    of the same validation questions before and after (questions fixed vs broken) gives
    p < ``significance_level`` (default 0.05), else 0; ``info["p_value"]`` reports p. A small
    validation split rewards noise under ``binary`` (benchmarks/landscape.md measures how
    often); ``significant`` pays only for changes its size can tell apart from noise.
    ``reward_metric``: ``auto`` (balanced accuracy for two-answer tasks, accuracy otherwise),
    or one of accuracy, acc_norm, balanced_accuracy, auc.

    ## Episode End

    Terminates after ``max_adaptation_steps`` valid strategies (1 by default, as in CORAL; more
    chains strategies on the current adapter, DeGAML's closed loop) or at the first invalid
    action (reward 0, ``info["error"]`` says what was wrong). Never truncates.

    ## Information

    ``reset``'s ``info`` has ``heldout`` (True only when the generator and the CVAE in use were
    both trained without the task) and ``adapter_source``. ``info`` has ``task``, ``metric``,
    ``metric_before``/``metric_after``, ``accuracy_before``/
    ``accuracy_after``, ``strategy`` (canonical JSON), ``notes`` (defaults filled, aliases
    read), ``cost`` and ``timings`` (seconds), ``memo_hit``, ``p_value`` (one-sided McNemar;
    every valid step), ``error`` (invalid actions only),
    and, when ``eval_test=True``, ``test_accuracy`` and ``test_correct`` (per test question)
    after the step (after an invalid action: the unchanged adapter's) and
    ``test_accuracy_before``/``test_correct_before`` of the episode's starting adapter.

    ## Arguments

    ``task`` (a name, the path of a user task config ``*.json``/``*.yaml``, or a list of
    them), ``preset`` (tiny/cpu/paper), ``model``, ``artifacts``, ``data_dir``,
    ``seed``, ``reward_mode``, ``reward_metric``, ``tie_reward``, ``significance_level``
    (``significant`` mode), ``max_adaptation_steps``,
    ``eval_test``, ``context`` (str or {task: str}: your own task descriptions),
    ``split_seed`` (the task split seed; must match the artifacts' split manifest),
    ``strict_heldout`` (refuse, with the ``coral setup --holdout T`` command that fixes it, any
    task whose generator or CVAE was trained on it), ``validation_size`` (score the reward on
    the first N validation questions, ``reset``'s ``info["validation_questions"]``; cheaper and
    noisier: pair a small N with ``reward_mode="significant"``, whose test accounts for N;
    ``benchmarks/landscape.md`` measures the false-reward rate at 50/100/200 questions),
    ``use_alignment``, ``auto_setup`` (run ``coral setup`` for missing artifacts),
    ``context_model`` (the instruct model that writes contexts; default: the env's model, or
    the packaged Qwen2.5-Coder-0.5B at the cpu preset when installed),
    ``render_mode`` (``"ansi"``).

    ## Thread safety

    Envs with equal settings in one process share a ``CoralRuntime`` (the model, artifacts and
    evaluation memo). The runtime serialises access: loading the adapter, running the strategy,
    restoring the model and writing the memo happen under one lock, so envs stepped from
    several threads return exactly what a serial run returns (and the memo only holds such
    results), but their evaluations run one at a time. For parallel evaluation use processes
    (``gym.make_vec(..., vectorization_mode="async")``). One env instance is not meant to be
    stepped from two threads at once (its episode state is its own).

    ## Version History

    * v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        task: str | list[str] = "arc_easy",
        preset: str = "cpu",
        model: str | None = None,
        artifacts: str | None = None,
        data_dir: str | None = None,
        seed: int = 0,
        reward_mode: str = "binary",
        reward_metric: str = "auto",
        tie_reward: float = 0.0,
        significance_level: float = 0.05,
        max_adaptation_steps: int = 1,
        eval_test: bool = False,
        context: str | dict[str, str] | None = None,
        use_alignment: bool = True,
        auto_setup: bool = False,
        context_model: str | None = None,
        render_mode: str | None = None,
        split_seed: int = 0,
        strict_heldout: bool = False,
        validation_size: int | None = None,
    ) -> None:
        self.tasks = [task] if isinstance(task, str) else list(task)
        if not self.tasks:
            raise ValueError("task must name at least one task")
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode must be one of {REWARD_MODES}, got {reward_mode!r}")
        if not (isinstance(significance_level, (int, float)) and 0.0 < significance_level < 1.0):
            raise ValueError(f"significance_level must be a number in (0, 1), e.g. 0.05; got {significance_level!r}")
        if reward_metric != "auto" and reward_metric not in METRICS:
            raise ValueError(f"reward_metric must be 'auto' or one of {METRICS}, got {reward_metric!r}")
        if not isinstance(max_adaptation_steps, int) or not 1 <= max_adaptation_steps <= 16:
            raise ValueError(f"max_adaptation_steps must be an int in [1, 16], got {max_adaptation_steps!r}")
        if validation_size is not None and (not isinstance(validation_size, int) or validation_size < 1):
            raise ValueError(f"validation_size must be an int >= 1 (None: the whole split), got {validation_size!r}")
        if render_mode not in (None, "ansi"):
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        from ..tasks import get_task, resolve_task

        self.tasks = [resolve_task(name) for name in self.tasks]  # a config path registers its task
        for name in self.tasks:
            get_task(name)  # unknown names fail here, listing the known ones
        self.config = EnvConfig(
            preset=preset,
            model=model,
            artifacts=artifacts,
            data_dir=data_dir,
            seed=seed,
            split_seed=split_seed,
            use_alignment=use_alignment,
            auto_setup=auto_setup,
            context_model=context_model,
        )
        self.runtime = CoralRuntime.get(self.config)
        self.strict_heldout = bool(strict_heldout)
        self.runtime.ensure_artifacts(self.tasks, self.strict_heldout)
        for name in self.tasks:
            self.runtime.splits(name)  # the split contract is checked now, not at the first reset
        if self.strict_heldout:
            for name in self.tasks:
                self.runtime.require_heldout(name)
        if isinstance(context, str):
            if len(self.tasks) != 1:
                raise ValueError("a single context string needs a single task; pass {task: context}")
            context = {self.tasks[0]: context}
        self.user_contexts = {resolve_task(k): v for k, v in (context or {}).items()}
        self.reward_mode, self.reward_metric, self.tie_reward = reward_mode, reward_metric, tie_reward
        self.significance_level = float(significance_level)
        self.max_adaptation_steps, self.eval_test, self.render_mode = max_adaptation_steps, eval_test, render_mode
        self.validation_size = validation_size
        dim = self.runtime.observation_dim(self.tasks[0])
        self.observation_space = spaces.Dict(
            {
                "context": AnyText(MAX_CONTEXT_CHARS),
                "adapter": spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float32),
                "metrics": spaces.Box(
                    np.array([-1.0, 0.0], dtype=np.float32),
                    np.array([1.0, float(max_adaptation_steps)], dtype=np.float32),
                ),
            }
        )
        self.action_space = AnyText(MAX_ACTION_CHARS, min_length=1)
        self._state = None
        self._last_info: dict = {}
        self._contexts_ready = False

    # ----- helpers -------------------------------------------------------------------------
    def _metric_name(self, result) -> str:
        if self.reward_metric != "auto":
            return self.reward_metric
        return "balanced_accuracy" if result.two_answer else "accuracy"

    def _observation(self) -> dict:
        state = self._state
        context = self.user_contexts.get(state.task.name, state.task.context)
        if state.history:  # the closed loop's feedback goes last; the task's own context keeps its room
            feedback = "\n\nAdaptation so far (validation " + state.metric_name + "):\n" + "\n".join(state.history)
            context = context[: max(0, MAX_CONTEXT_CHARS - len(feedback))] + feedback
        context = context[:MAX_CONTEXT_CHARS]
        return {
            "context": context,
            "adapter": state.description.copy(),
            "metrics": as_float32([state.metric, state.step]),
        }

    # ----- Gymnasium API -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options is not None and not isinstance(options, dict):
            raise TypeError(
                f"options must be a dict such as {{'task': {self.tasks[0]!r}}} or None, "
                f"got {type(options).__name__} {options!r}"
            )
        options = options or {}
        name = options.get("task")
        if name is not None:
            from ..tasks import resolve_task

            name = resolve_task(name)
        if name is None:
            name = self.tasks[int(self.np_random.integers(len(self.tasks)))]
        elif name not in self.tasks:
            raise ValueError(f"options['task'] = {name!r} is not one of this env's tasks {self.tasks}")
        start = time.perf_counter()
        self.prepare_contexts()
        task = self.runtime.task(name)
        evaluation, _ = self.runtime.evaluate(task, task.start_adapter, None, limit=self.validation_size)
        metric = self._metric_name(evaluation.result)
        self._state = _Episode(
            task,
            task.start_adapter,
            task.description,
            metric,
            evaluation.result.metric(metric),
            evaluation.result.accuracy,
            evaluation.result.correct,
        )
        info = {
            "task": name,
            "metric": metric,
            "metric_before": self._state.metric,
            "accuracy_before": evaluation.result.accuracy,
            "validation_questions": int(evaluation.result.n),
            "adapter_source": task.source,
            "heldout": self.runtime.provenance(name)["heldout"],
            "timings": {"reset": time.perf_counter() - start},
        }
        self._last_info = info
        return self._observation(), info

    def step(self, action: str | dict):
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self._state.done:
            raise gym.error.ResetNeeded("the episode has ended; call reset()")
        state = self._state
        info: dict[str, Any] = {
            "task": state.task.name,
            "metric": state.metric_name,
            "metric_before": state.metric,
            "accuracy_before": state.accuracy,
        }
        start = time.perf_counter()
        try:
            parsed = parse_strategy(action)
        except StrategyValidationError as exc:
            state.done = True
            info |= {
                "error": str(exc),
                "metric_after": state.metric,
                "accuracy_after": state.accuracy,
                "timings": {"step": time.perf_counter() - start},
            }
            self._add_test_accuracy(info, None)
            self._last_info = info
            return self._observation(), 0.0, True, False, info
        strategy = parsed.strategy
        try:
            evaluation, hit = self.runtime.evaluate(state.task, state.adapter, strategy, limit=self.validation_size)
        except ValueError as exc:  # e.g. TTS without a generator for this task
            state.done = True
            info |= {
                "error": str(exc),
                "strategy": strategy.canonical_json(),
                "metric_after": state.metric,
                "accuracy_after": state.accuracy,
                "timings": {"step": time.perf_counter() - start},
            }
            self._add_test_accuracy(info, None)
            self._last_info = info
            return self._observation(), 0.0, True, False, info
        after = evaluation.result.metric(state.metric_name)
        delta = after - state.metric
        p_value = mcnemar_improvement_pvalue(state.correct, evaluation.result.correct)
        if self.reward_mode == "delta":
            reward = float(delta)
        elif self.reward_mode == "significant":
            reward = 1.0 if delta > 0 and p_value < self.significance_level else 0.0
        else:
            reward = 1.0 if delta > 0 else (float(self.tie_reward) if delta == 0 else 0.0)
        info |= {
            "strategy": strategy.canonical_json(),
            "notes": parsed.notes + evaluation.notes,
            "metric_after": after,
            "accuracy_after": evaluation.result.accuracy,
            "p_value": p_value,
            "cost": dict(evaluation.cost),
            "memo_hit": hit,
        }
        self._add_test_accuracy(info, strategy)
        state.step += 1
        state.history.append(f"step {state.step}: {strategy.to_json()} -> {state.metric:.3f} to {after:.3f}")
        state.metric, state.accuracy, state.correct = after, evaluation.result.accuracy, evaluation.result.correct
        state.done = state.step >= self.max_adaptation_steps
        if evaluation.adapter is not None and evaluation.adapter is not state.adapter:
            state.adapter = evaluation.adapter
            if not state.done:  # the next strategy sees the adapter it will act on
                state.description = self.runtime.describe(state.task.name, state.adapter)
        info["timings"] = {"step": time.perf_counter() - start}
        self._last_info = info
        return self._observation(), reward, state.done, False, info

    def _add_test_accuracy(self, info: dict, strategy) -> None:
        """With ``eval_test``: test accuracy and per-question correctness after ``strategy`` on the
        current adapter, and of the episode's starting adapter (for paired comparisons); an invalid
        action changes nothing, so it reports the unchanged adapter's."""
        if self.eval_test:
            task = self._state.task
            test, _ = self.runtime.evaluate(task, self._state.adapter, strategy, split="test")
            start, _ = self.runtime.evaluate(task, task.start_adapter, None, split="test")
            info["test_accuracy"] = test.result.accuracy
            info["test_accuracy_before"] = start.result.accuracy
            info["test_correct"] = test.result.correct.astype(int).tolist()
            info["test_correct_before"] = start.result.correct.astype(int).tolist()

    def prepare_contexts(self) -> None:
        """Write every task's missing context description in one batch (the first ``reset`` does
        it otherwise). Trainers call it before loading a policy model, so that the context writer
        and the policy are never in memory together."""
        if not self._contexts_ready:
            self.runtime.prepare_contexts([t for t in self.tasks if t not in self.user_contexts])
            self._contexts_ready = True

    def save_adapter(self, directory) -> "Path":
        """Write the current episode's adapter (after the strategies applied so far; TTS and
        Latent act at inference and leave it unchanged) as a PEFT adapter folder that
        ``peft.PeftModel.from_pretrained(base_model, directory)`` loads."""
        from .export import save_runtime_adapter

        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before save_adapter(): the adapter is the episode's")
        state = self._state
        return save_runtime_adapter(
            self.runtime,
            state.adapter,
            directory,
            {
                "task": state.task.name,
                "step": state.step,
                "source": state.task.source,
                "split_seed": self.config.split_seed,
            },
        )

    def render(self) -> str | None:
        if self.render_mode != "ansi" or self._state is None:
            return None
        info = self._last_info
        lines = [
            f"Coral-v0 | task {self._state.task.name} | step {self._state.step}/"
            f"{self.max_adaptation_steps} | {info.get('metric')} {self._state.metric:.4f}"
        ]
        if "strategy" in info:
            lines.append(
                f"  strategy {info['strategy']}: {info.get('metric_before', 0):.4f} -> "
                f"{info.get('metric_after', 0):.4f}"
            )
        if "error" in info:
            lines.append(f"  invalid action: {info['error']}")
        return "\n".join(lines) + "\n"


@dataclass
class _Episode:
    """Mutable state of the current episode."""

    task: TaskState
    adapter: torch.Tensor
    description: np.ndarray
    metric_name: str
    metric: float
    accuracy: float
    correct: np.ndarray  # per validation question, for the significance test
    step: int = 0
    done: bool = False
    history: list[str] = field(default_factory=list)  # one line per strategy applied
