"""``gym.make_vec("Coral-v0", vectorization_mode="async")``: one runtime per worker process,
per-worker seeds, the same results as the sync mode; a user task by path inside the workers."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest

import coral_env  # noqa: F401  (registers Coral-v0)

LORA = '{"family": "LORA", "lambda": 0.5}'
TTL = '{"family": "TTL", "ttl_steps": 1, "learning_rate": 0.001, "batch_size": 4}'


def user_task_config(folder) -> str:
    rows = [
        {
            "id": f"q{i}",
            "q": {"text": f"Is {i} larger than {40 - i}?"},
            "opts": {"text": ["yes", "no"], "label": ["Y", "N"]},
            "gold": "Y" if i > 40 - i else "N",
        }
        for i in range(80)
    ]
    (folder / "cmp.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = folder / "cmp_task.json"
    config.write_text(
        json.dumps(
            {
                "name": "vec_cmp",
                "path": "cmp.jsonl",
                "question_field": "q.text",
                "choices_field": "opts.text",
                "choice_labels_field": "opts.label",
                "label_field": "gold",
            }
        )
    )
    return str(config)


def rollout(mode: str, kwargs: dict, **vector_kwargs) -> list[tuple]:
    """One seeded reset, then three episodes through autoreset (next-step mode: each step after
    a terminal one resets); everything a worker returns."""
    envs = gym.make_vec("Coral-v0", num_envs=2, vectorization_mode=mode, vector_kwargs=vector_kwargs, **kwargs)
    try:
        obs, info = envs.reset(seed=3)
        rounds = [(tuple(info["task"]), tuple(obs["context"]), obs["adapter"].copy())]
        for actions in ((LORA, TTL), (LORA, LORA), (TTL, LORA), (LORA, LORA), (LORA, "not json")):
            obs, reward, terminated, _, info = envs.step(actions)
            rounds.append(
                (
                    tuple(info["task"]),
                    tuple(obs["context"]),
                    obs["adapter"].copy(),
                    reward.tolist(),
                    terminated.tolist(),
                    tuple(info.get("metric_after", ())),
                    tuple(info.get("strategy", ())),
                )
            )
        pids = [p.pid for p in envs.processes] if mode == "async" else None
    finally:
        envs.close()
    return rounds, pids


def test_async_vector_env_equals_sync_with_a_user_task_in_spawned_workers(tiny_artifacts, tmp_path) -> None:
    kwargs = dict(task=["syn_add", user_task_config(tmp_path)], preset="tiny", artifacts=str(tiny_artifacts))
    sync, _ = rollout("sync", kwargs)
    # spawn: workers start from a fresh interpreter, so the user task is registered from its path
    # there (a forked worker would inherit this process's registry)
    async_, pids = rollout("async", kwargs, context="spawn", shared_memory=False)
    assert len(set(pids)) == 2 and os.getpid() not in pids  # one process (and runtime) per worker
    tasks = {t for r in sync for t in r[0]}
    assert tasks == {"syn_add", "vec_cmp"}  # per-worker seeds sample different tasks
    assert [r[4] for r in sync[1::2]] == [[True, True]] * 3  # three episodes were scored
    for s, a in zip(sync, async_):
        assert s[0] == a[0] and s[1] == a[1]
        np.testing.assert_array_equal(s[2], a[2])
        assert s[3:] == a[3:]


def test_async_with_shared_memory_is_refused_with_the_fix(tiny_artifacts) -> None:
    # Gymnasium reads text out of shared memory only once: contexts would silently stay empty
    with pytest.raises(ValueError, match="shared_memory=False") as caught:
        gym.make_vec(
            "Coral-v0",
            num_envs=2,
            vectorization_mode="async",
            task="syn_add",
            preset="tiny",
            artifacts=str(tiny_artifacts),
        )
    assert "text observations cannot live in shared memory" in str(caught.value.__cause__)
