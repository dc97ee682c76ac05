"""Heavy state shared by every ``Coral-v0`` instance in a process, and the evaluation memo.

The model, tokenizer, LoRA layout, prompt encoder, generators and CVAEs are built once per
(preset, model, artifacts, data, seed) and reused; evaluations are memoised by
(task, split, adapter hash, canonical strategy), so a repeated action costs a dict lookup.

Thread safety: one runtime serves every env with the same config in a process, so its public
methods hold ``CoralRuntime.lock`` (re-entrant) while they load an adapter into the shared
model, run a strategy, restore the model and write the memo. Envs in different threads are
safe and give the results of a serial run, but their steps run one at a time; code that uses
``runtime.model`` or ``runtime.layout`` directly must hold ``runtime.lock`` too.
"""

from __future__ import annotations

import functools
import json
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..backend.config import BackendConfig, check_preset
from ..backend.lora import AdapterLayout, adapter_hash, attach_lora
from ..backend.models import load_model
from ..setup.artifacts import ArtifactPaths, MissingArtifactError, default_artifacts_root
from ..setup.split_manifest import contract_splits
from ..strategies.context import StrategyContext, StrategyOutcome
from ..strategies.runners import execute
from ..strategies.schema import Strategy
from ..tasks import TaskSplits, get_task, input_prompts

OBS_ADAPTER_DIM = 32
"""Size of the adapter description without a CVAE (the CVAE latent replaces it when present)."""


class HeldOutError(ValueError):
    """A strict env was asked to serve a task with artifacts that were trained on it."""


@dataclass
class EnvConfig:
    """Everything that decides the shared state (two envs with equal configs share it).

    Attributes:
        preset: ``tiny`` (tests), ``cpu`` (laptop), ``paper`` (GPU).
        model: override the preset's model (offline name, folder, .gguf or Hub id).
        artifacts: root of the stage-1/2 artifacts (``coral setup --artifacts``).
        data_dir: benchmark JSONL folder (default: ``$CORAL_DATA_DIR`` or ``../shared/datasets``).
        seed: the seed of every sampled choice inside strategies (TTL shuffling, TTS batches);
            it never changes the splits.
        split_seed: the task split seed; the splits must match the ones the artifacts recorded
            (``<artifacts>/<preset>/splits.json``), which every stage checks.
        use_alignment: align generated adapters with the CVAE when one exists.
        auto_setup: run ``coral setup`` for missing artifacts instead of raising.
        context_model: the instruct model that writes task contexts (``None``: the preset's
            choice, see ``default_context_model``).
    """

    preset: str = "cpu"
    model: str | None = None
    artifacts: str | None = None
    data_dir: str | None = None
    seed: int = 0
    split_seed: int = 0
    use_alignment: bool = True
    auto_setup: bool = False
    context_model: str | None = None

    def __post_init__(self) -> None:
        check_preset(self.preset)

    @property
    def root(self) -> Path:
        return Path(self.artifacts) if self.artifacts else default_artifacts_root()

    def key(self) -> tuple:
        return (
            self.preset,
            self.model,
            str(self.root.resolve()),
            self.data_dir,
            self.seed,
            self.split_seed,
            self.use_alignment,
            self.context_model,
        )


def default_context_model(preset: str, env_model: str) -> str:
    """The model that writes task contexts when none is named.

    At the cpu preset the env's SmolLM2-135M writes incoherent descriptions (it copies or
    invents example content), so the packaged Qwen2.5-Coder-0.5B-Instruct writes them when it
    is installed; otherwise, and at the other presets, the env's own model does.
    """
    from ..backend.models import offline_package_installed

    if preset == "cpu" and offline_package_installed("qwen2.5-coder-0.5b-instruct"):
        return "qwen2.5-coder-0.5b-instruct"
    return env_model


@dataclass
class TaskState:
    """One task prepared for episodes: splits, context text, and the starting adapter."""

    name: str
    splits: TaskSplits
    context: str
    start_adapter: torch.Tensor
    description: np.ndarray
    source: str


MAX_GENERATED = 48
"""Generated adapters the runtime keeps (3.7 MB each at the cpu preset; TTS asks for up to 20 per task)."""
MAX_MEMO_ADAPTERS = 64
"""Memo entries holding a TTL or LORA adapter the runtime keeps (the oldest are forgotten first)."""


class _GeneratedAdapters:
    """TTS's adapter source: generate (and align) an adapter per prompt batch; embed texts."""

    def __init__(self, runtime: "CoralRuntime", task: str) -> None:
        self.runtime, self.task = runtime, task

    def generate(self, prompts: list[str]) -> torch.Tensor:
        return self.runtime.adapter_for_prompts(self.task, prompts)[0]

    def embed(self, texts: list[str]) -> torch.Tensor:
        return self.runtime.generator_for(self.task).encoder.sentence_embeddings(texts)


def _serialised(method):
    """Run ``method`` holding the runtime's lock: the shared model is touched by one thread at a time."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return locked


class CoralRuntime:
    """The process-wide heavy state behind every ``Coral-v0`` with the same ``EnvConfig``.

    Every public method that reads or changes the model holds ``lock`` (see the module
    docstring), so envs in several threads never see each other's adapters.
    """

    _instances: dict[tuple, "CoralRuntime"] = {}
    _instances_lock = threading.Lock()

    @classmethod
    def get(cls, config: EnvConfig) -> "CoralRuntime":
        key = config.key()
        with cls._instances_lock:  # two threads creating the same runtime must not load it twice
            if key not in cls._instances:
                cls._instances[key] = cls(config)
            return cls._instances[key]

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.backend = BackendConfig.preset(config.preset, model=config.model)
        self.paths = ArtifactPaths(config.root, config.preset)
        if not self.has_generator() and not config.auto_setup:
            raise MissingArtifactError(
                f"no trained generator under {self.paths.base} (stage-1/2 artifacts are missing); run "
                f"`{self.setup_command()}` first, or pass auto_setup=True to run it now"
            )
        model, self.tokenizer = load_model(self.backend.model, self.backend.dtype, self.backend.device)
        self.model = attach_lora(model, self.backend.lora)
        self.layout = AdapterLayout.from_model(self.model, self.backend.token_dim)
        self._generators: dict[str, object] = {}
        self._cvaes: dict[str, object | None] = {}
        self._tasks: dict[str, TaskState] = {}
        self._splits: dict[str, TaskSplits] = {}
        self._vectorizers: dict[int, object] = {}
        self.memo: dict[tuple, StrategyOutcome] = {}
        self.contexts: dict[str, str] = {}
        self._context_writer: tuple[object, object] | None = None
        self._hash_cache: dict[int, tuple] = {}
        self._descriptions: dict[tuple, np.ndarray] = {}
        self._generated: dict[tuple, tuple] = {}  # (task, prompts) -> adapter_for_prompts's result
        self._scores: dict[tuple, object] = {}  # TTS's per-adapter evaluations, shared by its methods
        self._adapter_keys: list[tuple] = []  # memo keys whose outcome holds a strategy's adapter, oldest first

    # ----- artifacts ---------------------------------------------------------------------
    def setup_command(self, holdout: str | None = None) -> str:
        flag = f" --holdout {holdout}" if holdout else ""
        return f"coral setup --preset {self.config.preset} --artifacts {self.config.root}{flag}"

    def has_generator(self) -> bool:
        return any(self.paths.base.glob("generator/*/config.json"))  # "all" or any leave-one-out one

    @_serialised
    def ensure_artifacts(self, tasks: list[str], strict_heldout: bool = False) -> None:
        """With ``auto_setup``: run ``coral setup`` for what ``tasks`` need. Strict envs get, per
        task that has none, a generator and CVAE trained without it (``--holdout task``); other
        envs the ones trained on the preset's default setup tasks when a task has no generator."""
        if not self.config.auto_setup:
            return
        from ..setup.pipeline import run_setup

        if strict_heldout:
            for task in tasks:
                if not self.provenance(task)["heldout"]:
                    run_setup(
                        self.config.preset,
                        self.config.root,
                        holdout=task,
                        data_dir=self.config.data_dir,
                        split_seed=self.config.split_seed,
                    )
        elif any(self._variant("generator", task) is None for task in tasks):
            run_setup(
                self.config.preset, self.config.root, data_dir=self.config.data_dir, split_seed=self.config.split_seed
            )

    def _variant(self, kind: str, task: str) -> Path | None:
        """The artifact trained without ``task`` if there is one, else the one trained on all."""
        for holdout in (task, None):
            path = (
                self.paths.generator_dir(holdout) if kind == "generator" else self.paths.cvae_dir(holdout) / "input"
            )  # the paper's reconstruction target
            if path.joinpath("config.json").exists():
                return path
        return None

    def provenance(self, task: str) -> dict:
        """Which generator and CVAE serve ``task`` and whether both were trained without it.

        ``heldout`` is True only when the generator and the CVAE in use (when alignment is on
        and a CVAE exists) list their training tasks and ``task`` is not among them.
        """
        name = get_task(task).name
        out: dict = {"generator": None, "cvae": None}
        trained_on: list[bool] = []
        for kind in ("generator", "cvae"):
            if kind == "cvae" and not self.config.use_alignment:
                continue
            path = self._variant(kind, name)
            if path is None:
                if kind == "generator":
                    trained_on.append(True)  # nothing to serve it: not held out
                continue
            tasks = json.loads((path / "config.json").read_text()).get("extra", {}).get("tasks")
            out[kind] = str(path)
            trained_on.append(tasks is None or name in tasks)  # unknown training tasks: assume seen
        out["heldout"] = not any(trained_on)
        return out

    def require_heldout(self, task: str) -> None:
        """Raise ``HeldOutError`` unless ``task`` is served by artifacts trained without it."""
        found = self.provenance(task)
        if not found["heldout"]:
            raise HeldOutError(
                f"task {task!r} is not held out: the generator ({found['generator']}) or the CVAE "
                f"({found['cvae']}) under {self.paths.base} was trained on it, so its results would not be "
                f"those of an unseen task. Fix: `{self.setup_command(task)}` (trains both without it), "
                f"or drop strict_heldout=True to use them anyway"
            )

    @_serialised
    def generator_for(self, task: str):
        from ..agents.generator import Generator

        path = self._variant("generator", task)
        if path is None:
            raise MissingArtifactError(
                f"no generator for task {task!r} under {self.paths.base}; run `{self.setup_command()}`"
            )
        if str(path) not in self._generators:
            self._generators[str(path)] = Generator.from_pretrained(path)
        return self._generators[str(path)]

    @_serialised
    def cvae_for(self, task: str):
        """The CVAE (reconstruction target ``input``, the paper's) trained without ``task``, if any."""
        if not self.config.use_alignment:
            return None
        path = self._variant("cvae", task)
        if path is None:
            return None
        if str(path) not in self._cvaes:
            from ..agents.cvae import ConditionalVAE

            self._cvaes[str(path)] = ConditionalVAE.from_pretrained(path)
        return self._cvaes[str(path)]

    @_serialised
    def splits(self, task: str) -> TaskSplits:
        """The task's splits at this preset's sizes, checked against the artifacts' manifest."""
        if task not in self._splits:
            self._splits[task] = contract_splits(
                self.paths, task, self.config.data_dir, self.config.split_seed, stage="env"
            )
        return self._splits[task]

    @_serialised
    def task_vector(self, task: str, adapter: torch.Tensor, cvae) -> torch.Tensor:
        """v_T of ``adapter`` measured as ``cvae`` was trained: its saved number of support
        prompts, tokens per prompt and prompt style (model-facing inputs, no labels)."""
        from ..agents.task_vector import TaskVectorizer

        extra = cvae.extra
        n_prompts, max_len = int(extra.get("tv_prompts", 16)), int(extra.get("tv_max_len", 128))
        if max_len not in self._vectorizers:
            self._vectorizers[max_len] = TaskVectorizer(self.model, self.tokenizer, self.layout, max_len=max_len)
        prompts = input_prompts(
            self.splits(task).support[:n_prompts],
            extra.get("style", self.backend.prompt_style),
            self.tokenizer,
            task=task,
        )
        return self._vectorizers[max_len](adapter, prompts)

    @_serialised
    def describe(self, task: str, adapter: torch.Tensor) -> np.ndarray:
        """The observation's fixed-size description of ``adapter`` (the CVAE posterior mean, or
        RMS per LoRA matrix without a CVAE)."""
        key = (task, self.adapter_key(adapter))
        if key not in self._descriptions:
            cvae = self.cvae_for(task)
            if cvae is None:
                self._descriptions[key] = summarize_adapter(self.layout, adapter)
            else:
                vector = self.task_vector(task, adapter, cvae)
                self._descriptions[key] = cvae.describe(adapter, vector).detach().float().numpy().reshape(-1)
        return self._descriptions[key].astype(np.float32)

    # ----- adapters ------------------------------------------------------------------------
    @_serialised
    def adapter_for_prompts(self, task: str, prompts: list[str]) -> tuple[torch.Tensor, np.ndarray, str]:
        """Generate an adapter from ``prompts``; align it with the CVAE where one exists.

        ``prompts`` are question texts (the generator's conditioning); the task vector that
        conditions the CVAE is measured on the task's own model-facing support prompts.
        Returns (flat adapter, fixed-size description, source label), computed once per prompt
        list (generation and alignment are deterministic; TTS asks again for the same batches).
        """
        key = (task, tuple(prompts))
        if key not in self._generated:
            generated = self.generator_for(task).generate_adapter(prompts)
            cvae = self.cvae_for(task)
            if cvae is None:
                self._generated[key] = (generated, summarize_adapter(self.layout, generated), "generated")
            else:
                vector = self.task_vector(task, generated, cvae)
                aligned = cvae.align(generated, vector)
                description = cvae.describe(generated, vector).detach().float().numpy().reshape(-1)
                self._generated[key] = (aligned, description.astype(np.float32), "generated+aligned")
            while len(self._generated) > MAX_GENERATED:  # a TTS ensemble's adapters, not every one ever made
                self._generated.pop(next(iter(self._generated)))
        adapter, description, source = self._generated[key]
        return adapter, description.copy(), source

    @_serialised
    def observation_dim(self, task: str) -> int:
        cvae = self.cvae_for(task)
        return int(cvae.config.latent_dim) if cvae is not None else OBS_ADAPTER_DIM

    # ----- tasks ---------------------------------------------------------------------------
    @_serialised
    def task(self, name: str) -> TaskState:
        if name not in self._tasks:
            splits = self.splits(name)
            prompts = [ex.question for ex in splits.support]
            adapter, description, source = self.adapter_for_prompts(name, prompts)
            context = self.contexts.get(name) or self._context(name, splits)
            self._tasks[name] = TaskState(name, splits, context, adapter, description, source)
        return self._tasks[name]

    def prepare_contexts(self, names: list[str]) -> None:
        """Write the missing descriptions of these tasks in one batch, one context-writer load for
        all (an env calls it at its first reset, so a multi-task env does not load the writer per
        task)."""
        from .contexts import write_missing_descriptions

        todo = [n for n in names if n not in self._tasks and n not in self.contexts]
        write_missing_descriptions(self, [(n, self.splits(n)) for n in todo])

    def _context(self, name: str, splits: TaskSplits) -> str:
        from .contexts import task_context

        return task_context(self, name, splits)

    @property
    def context_model_name(self) -> str:
        return self.config.context_model or default_context_model(self.config.preset, self.backend.model)

    @_serialised
    def context_writer(self) -> tuple[object, object]:
        """(model, tokenizer) that writes task contexts: the env's own model, or another loaded
        on need and dropped by :meth:`release_context_writer` once a context is written."""
        name = self.context_model_name
        if name == self.backend.model:
            return self.model, self.tokenizer
        if self._context_writer is None:
            self._context_writer = load_model(name, self.backend.dtype, self.backend.device)
        return self._context_writer

    @_serialised
    def release_context_writer(self) -> None:
        """Free a separately loaded context model: descriptions are cached on disk, so it is
        needed once per task, and keeping it would double the memory of a run whose policy
        loads the same model."""
        from ..allocator import release_free_memory

        if self._context_writer is not None:
            self._context_writer = None
            release_free_memory()

    def strategy_context(self, state: TaskState) -> StrategyContext:
        generator = self.generator_for(state.name)
        return StrategyContext(
            self.model,
            self.tokenizer,
            self.layout,
            state.name,
            state.splits.support,
            style=self.backend.prompt_style,
            scoring=self.backend.scoring,
            adapters=_GeneratedAdapters(self, state.name),
            prompts_per_batch=generator.config.num_prompts,
            seed=self.config.seed,
            scores=self._scores,
        )

    # ----- evaluation memo -------------------------------------------------------------------
    def clear_memo(self) -> None:
        """Forget every memoised evaluation, generated TTS adapter and TTS score (a benchmark's
        first visit); the tasks, their starting adapters and contexts stay."""
        self.memo.clear()
        self._adapter_keys.clear()
        self._scores.clear()
        self._generated.clear()

    def adapter_key(self, adapter: torch.Tensor) -> str:
        """``adapter_hash(adapter)``, computed once per tensor (hashing a 1M-float adapter takes
        ~2 ms, more than the rest of a memo hit); an in-place change to the tensor is noticed
        through its version counter."""
        entry = self._hash_cache.get(id(adapter))
        if entry is not None and entry[0]() is adapter and entry[1] == adapter._version:
            return entry[2]
        if len(self._hash_cache) > 4096:  # drop entries of freed tensors
            self._hash_cache = {k: v for k, v in self._hash_cache.items() if v[0]() is not None}
        value = adapter_hash(adapter)
        self._hash_cache[id(adapter)] = (weakref.ref(adapter), adapter._version, value)
        return value

    @_serialised
    def evaluate(
        self,
        state: TaskState,
        adapter: torch.Tensor,
        strategy: Strategy | None,
        split: str = "validation",
        limit: int | None = None,
    ) -> tuple[StrategyOutcome, bool]:
        """Evaluate ``adapter`` on ``split`` (its first ``limit`` questions; None: all) after
        ``strategy`` (None: as is). Returns (outcome, hit): the metrics, the adapter the strategy
        left (for chaining) and its cost, memoised.

        A strategy already run on another split or prefix that left an adapter (TTL, LORA) is not
        run again: that adapter is scored as is, the same result at a fraction of the cost (such
        runners build their adapter from the support set, never from the scored questions)."""
        strategy_json = strategy.canonical_json() if strategy is not None else ""
        examples = state.splits.split(split)
        if limit is not None and limit < len(examples):
            examples, split = examples[:limit], f"{split}[:{limit}]"
        key = (state.name, split, self.adapter_key(adapter), strategy_json)
        if key in self.memo:
            return self.memo[key], True
        if strategy_json and (done := self._adapter_left(state.name, key[2], strategy_json)) is not None:
            scored, _ = self.evaluate(state, done.adapter, None, split.split("[")[0], limit)
            cost = done.cost | {"seconds": scored.cost["seconds"], "reused_validation_adapter": True}
            evaluation = StrategyOutcome(scored.result, done.adapter, cost)
            self._remember(key, evaluation)
            return evaluation, False
        snapshot = self.layout.get_flat()
        start = time.perf_counter()
        try:
            self.layout.set_flat(adapter)
            ctx = self.strategy_context(state)
            if strategy is None:
                evaluation = StrategyOutcome(ctx.evaluate(examples), adapter, {"evaluations": 1})
            else:
                evaluation = execute(strategy, ctx, examples)
        finally:
            self.layout.set_flat(snapshot)
        evaluation.cost.setdefault("seconds", time.perf_counter() - start)
        self._remember(key, evaluation)
        return evaluation, False

    def _remember(self, key: tuple, evaluation: StrategyOutcome) -> None:
        """Memoise ``evaluation``; past ``MAX_MEMO_ADAPTERS`` entries holding an adapter (TTL, LORA),
        the oldest of them is forgotten (evaluations are deterministic: a repeat recomputes it)."""
        self.memo[key] = evaluation
        if evaluation.adapter is not None and key[3]:  # a strategy's own adapter (3.7 MB at the cpu preset)
            self._adapter_keys.append(key)
            while len(self._adapter_keys) > MAX_MEMO_ADAPTERS:
                self.memo.pop(self._adapter_keys.pop(0), None)

    def _adapter_left(self, task: str, adapter_key: str, strategy_json: str) -> StrategyOutcome | None:
        """A memoised run of ``strategy_json`` on this adapter, on any split, that left an adapter."""
        for (name, _, key, done), outcome in self.memo.items():
            if (name, key, done) == (task, adapter_key, strategy_json) and outcome.adapter is not None:
                return outcome
        return None


def summarize_adapter(layout: AdapterLayout, vector: torch.Tensor, dim: int = OBS_ADAPTER_DIM) -> np.ndarray:
    """A fixed-size description without a CVAE: RMS of each LoRA matrix, pooled to ``dim`` bins."""
    rms = torch.stack(
        [vector[s:e].float().pow(2).mean().sqrt() for s, e in zip(layout.offsets[:-1], layout.offsets[1:])]
    )
    pooled = torch.nn.functional.adaptive_avg_pool1d(rms[None, None], dim)[0, 0]
    return pooled.numpy().astype(np.float32)
