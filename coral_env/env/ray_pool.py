"""One-step ``Coral-v0`` episodes scored on Ray actors, one env (so one runtime, one model) per
actor; the driver keeps the memo.

``EpisodePool(env_kwargs, workers=N)`` starts N actors (``ray.init()`` locally unless
``address`` names a cluster). ``pool.score([(task, reply), ...])`` reads each reply with
``action_from_reply`` and scores it like ``reward_of`` in a fresh one-step episode on some
actor (``replies=False``: actions sent as they are); results come back in input order. A
(task, action) pair already scored, by any actor, is answered from the driver's memo, so
duplicate strategies cost nothing across actors.
``pool.reset(options={"task": t})`` returns the task's starting observation (the same on every
actor). Trainers accept a pool wherever they take an env for one-step scoring
(``trainers.evaluation.evaluate_policy_on_tasks``, ReST^EM's sampling, the GRPO reward).

User tasks registered from config files in the driver are registered in every actor too.
Ray is an extra: ``pip install -e ".[ray]"``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from ..strategies.parse import action_from_reply


class _EnvActor:
    """``Coral-v0`` envs (one per task, all on this process's one runtime) inside a Ray actor."""

    def __init__(self, env_kwargs: dict, threads: int | None) -> None:
        import torch

        import coral_env  # noqa: F401  (registers Coral-v0)

        if threads:
            torch.set_num_threads(threads)
        self.env_kwargs = env_kwargs
        self.envs: dict[str, Any] = {}

    def _env(self, task: str, task_files: dict[str, str], extra: dict):
        key = (task, tuple(sorted(extra.items())))
        if key not in self.envs:
            import gymnasium as gym

            from coral_env.tasks import register_task_files

            register_task_files({k: v for k, v in task_files.items() if k == task})
            self.envs[key] = gym.make("Coral-v0", task=[task], **(self.env_kwargs | extra))
        return self.envs[key]

    def reset(self, task: str, task_files: dict[str, str], extra: dict, seed: int | None) -> tuple[dict, dict]:
        return self._env(task, task_files, extra).reset(seed=seed, options={"task": task})

    def score(self, task: str, action: str, task_files: dict[str, str], extra: dict) -> tuple[float, dict]:
        """A one-step episode with ``action`` sent as it is (the driver read the reply)."""
        env = self._env(task, task_files, extra)
        env.reset(options={"task": task})
        _, reward, _, _, info = env.step(action)
        return float(reward), info

    def pid(self) -> int:
        return os.getpid()


def _require_ray():
    try:
        import ray
    except ImportError:
        raise ImportError('--workers N needs Ray: pip install -e ".[ray]" (or pip install ray)') from None
    return ray


def init_ray(address: str | None, workers: int, threads: int | None):
    """``ray`` itself, initialised unless it already is: a local Ray (``address=None``) declares
    enough CPUs for ``workers`` actors of ``threads`` threads, and its workers import this code
    (PYTHONPATH) and stay offline like the driver; otherwise it joins the cluster at ``address``."""
    ray = _require_ray()
    if not ray.is_initialized():
        env_vars = {
            k: os.environ[k]
            for k in (
                "PYTHONPATH",
                "HF_HUB_OFFLINE",
                "HF_DATASETS_OFFLINE",
                "CORAL_TASKS",
                "CORAL_DATA_DIR",
                "CORAL_ARTIFACTS",
                "OMP_WAIT_POLICY",
                "TOKENIZERS_PARALLELISM",
            )
            if k in os.environ
        }
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "runtime_env": {"env_vars": env_vars},
        }
        if address is None:
            kwargs["num_cpus"] = max(os.cpu_count() or 1, workers * (threads or 1))
        ray.init(address=address, **kwargs)
    return ray


class EpisodePool:
    """N Ray actors, each with its own ``Coral-v0`` runtime; see the module docstring. One pool
    serves any tasks (an actor makes one env per task on its runtime), so a trainer's training
    and held-out envs share the actors.

    Args:
        env_kwargs: ``gym.make("Coral-v0", ...)`` arguments except ``task``.
        workers: number of actors.
        address: Ray cluster address (``ray.init(address=...)``); None starts a local Ray.
        threads: torch CPU threads per actor (default 1 locally).
    """

    def __init__(
        self, env_kwargs: dict, workers: int = 2, address: str | None = None, threads: int | None = None
    ) -> None:
        if not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        threads = threads or (None if address else 1)
        ray = init_ray(address, workers, threads)
        actor = ray.remote(num_cpus=threads or 1)(_EnvActor)
        self.actors = [actor.remote(dict(env_kwargs), threads) for _ in range(workers)]
        self.memo: dict[tuple, tuple[float, dict]] = {}
        self.extra: dict = {}
        self._ray = ray

    def with_env_kwargs(self, **extra) -> "EpisodePool":
        """The same actors and memo, episodes made with these extra ``Coral-v0`` arguments (e.g.
        ``strict_heldout=True`` for held-out tasks)."""
        view = copy.copy(self)
        view.extra = dict(self.extra) | extra
        return view

    @property
    def workers(self) -> int:
        return len(self.actors)

    def pids(self) -> list[int]:
        """Process ids of the actors (one runtime each)."""
        return self._ray.get([a.pid.remote() for a in self.actors])

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        """The starting observation and info of an episode of ``options["task"]`` (first actor)."""
        from coral_env.tasks import registered_task_files, resolve_task

        if not options or "task" not in options:
            raise ValueError("EpisodePool.reset needs options={'task': name}: a pool serves any task")
        task = resolve_task(options["task"])
        return self._ray.get(self.actors[0].reset.remote(task, registered_task_files(), self.extra, seed))

    def score(self, items: list[tuple[str, Any]], replies: bool = True) -> list[tuple[float, dict]]:
        """``[(task, reply)] -> [(reward, info)]`` in input order, as ``reward_of`` scores a reply
        (info gains ``action`` and ``valid``). ``replies=False``: the items are actions, sent to
        the env as they are (``env.step(action)``, as an evaluation loop does)."""
        from coral_env.tasks import registered_task_files, resolve_task

        keys = []
        for task, reply in items:
            action, valid = action_from_reply(reply) if replies else (reply, None)
            keys.append((resolve_task(task), action, valid))
        extra = tuple(sorted(self.extra.items()))
        todo = list(dict.fromkeys((t, a) for t, a, _ in keys if (extra, t, a) not in self.memo))
        files = registered_task_files()
        from ray.util import ActorPool

        def submit(actor, item):  # to the next idle actor: episodes differ in cost by 10x
            return actor.score.remote(*item, files, self.extra)

        for (t, a), result in zip(todo, ActorPool(self.actors).map(submit, todo)):
            self.memo[(extra, t, a)] = result
        out = []
        for task, action, valid in keys:
            reward, info = self.memo[(extra, task, action)]
            out.append((reward, {**info, "action": action, "valid": valid} if replies else dict(info)))
        return out

    def close(self) -> None:
        """Stop the actors (Ray itself keeps running; ``ray.shutdown()`` stops it)."""
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
