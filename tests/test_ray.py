"""Ray: one-step episodes scored on 2 local actors (one runtime each) give what one process
gives: the pool's scores, a user task by path inside the actors, and a ReST^EM run."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import pytest

import coral_env  # noqa: F401  (registers Coral-v0)

ray = pytest.importorskip("ray")

from coral_env.env.ray_pool import EpisodePool  # noqa: E402
from coral_env.env.reward import reward_of  # noqa: E402

REPLIES = [
    '{"family": "LORA", "lambda": 0.5}',
    'I pick {"family":"LORA","lambda":0.5}.',
    '{"family": "LORA", "lambda": 1.0}',
    "no json",
    '{"family": "TTL", "ttl_steps": 1, "batch_size": 4}',
    '{"family": "LORA", "lambda": 7}',
]


@pytest.fixture(scope="module")
def local_ray():
    yield
    ray.shutdown()


def user_task(folder, name: str = "ray_odd") -> str:
    rows = [
        {"id": f"u{i}", "item": {"q": f"Is {i} odd?"}, "answers": ["yes", "no"], "gold": 0 if i % 2 else 1}
        for i in range(80)
    ]
    (folder / "odd.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "odd.json").write_text(
        json.dumps(
            {
                "name": name,
                "path": "odd.jsonl",
                "question_field": "item.q",
                "choices_field": "answers",
                "label_field": "gold",
            }
        )
    )
    return str(folder / "odd.json")


def test_pool_scores_like_one_process_with_a_user_task_in_the_actors(local_ray, tiny_artifacts, tmp_path) -> None:
    config = user_task(tmp_path)
    kwargs = dict(preset="tiny", artifacts=str(tiny_artifacts), tie_reward=0.5)  # valid -> > 0
    tasks = ["syn_add", config]
    local = gym.make("Coral-v0", task=tasks, **kwargs)
    items = [(t, r) for t in ("syn_add", "ray_odd") for r in REPLIES]
    expected = [reward_of(r, local, t) for t, r in items]
    pool = EpisodePool(kwargs, workers=2)
    try:
        pids = pool.pids()
        assert len(set(pids)) == 2 and os.getpid() not in pids  # one process (and runtime) per actor
        got = pool.score(items)
        assert [r for r, _ in got] == [r for r, _ in expected]
        assert any(r != 0 for r, _ in got)
        for (_, a), (_, b) in zip(got, expected):
            assert (a["action"], a["valid"], a.get("metric_after"), a.get("error")) == (
                b["action"],
                b["valid"],
                b.get("metric_after"),
                b.get("error"),
            )
        # replies 0 and 1 are one strategy: scored once per task, the second answered by the driver's memo
        assert len(pool.memo) == 2 * 5
        obs, info = pool.reset(options={"task": config})  # a path works too
        assert info["task"] == "ray_odd" and obs["context"] == local.reset(options={"task": "ray_odd"})[0]["context"]
    finally:
        pool.close()


class StubPolicy:
    name = "stub"

    def __init__(self) -> None:
        self.calls = 0

    def sample(self, context, task, n, **_):
        return (REPLIES * 2)[:n]

    def act(self, observation, info=None):
        self.calls += 1
        return REPLIES[self.calls % len(REPLIES)]


def test_restem_with_two_ray_actors_keeps_the_same_samples_as_one_process(local_ray, tiny_artifacts, tmp_path) -> None:
    from trainers.restem import RestemConfig, train_restem

    held_out = user_task(tmp_path, "ray_odd_heldout")

    def run(workers: int) -> tuple[dict, list]:
        out = tmp_path / f"w{workers}"
        # the held-out task is a user task by path: the tiny artifacts never saw it (strict_heldout)
        config = RestemConfig.from_preset(
            "tiny",
            out=str(out),
            artifacts=str(tiny_artifacts),
            samples_per_task=6,
            min_reward=0.0,
            max_steps=1,
            progress=False,
            workers=workers,
            eval_tasks=[held_out],
        )
        train_restem(config, make_policy=lambda adapter: StubPolicy())
        samples = {
            t: json.loads((out / "iter_1" / "samples" / f"{t}.json").read_text())["results"] for t in config.train_tasks
        }
        rows = [row for i in (0, 1) for row in json.loads((out / f"iter_{i}" / "eval.json").read_text())["rows"]]
        return samples, json.loads((out / "iter_1" / "dataset.json").read_text()), rows

    one, two = run(1), run(2)
    assert one[0] == two[0]  # every sample: action, validity, reward, metrics
    assert one[1] == two[1] and len(one[1]) > 0  # the kept samples (the SFT data)
    assert one[2] == two[2] and len(one[2]) == 2 * 2  # held-out evaluation rows (zero-shot + iteration 1)
    assert {row["task"] for row in two[2]} == {"ray_odd_heldout"}


def test_workers_need_a_positive_count() -> None:
    with pytest.raises(ValueError, match="workers must be an int >= 1"):
        EpisodePool({}, workers=0)


def _ray_bench():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    try:
        import ray_bench
    finally:
        sys.path.pop(0)
    return ray_bench


def test_ray_bench_work_is_distinct_pairs_with_families_interleaved() -> None:
    episodes = _ray_bench().episodes(["syn_add", "syn_compare"], 4)
    assert len(episodes) == len(set(episodes)) == 8  # no memo hit on either side
    families = [json.loads(action)["family"] for task, action in episodes if task == "syn_add"]
    assert len(set(families)) == 4  # a task's episodes mix the families' costs
    assert [a for t, a in episodes if t == "syn_add"] == [a for t, a in episodes if t == "syn_compare"]
    with pytest.raises(ValueError, match="catalogue strategies"):
        _ray_bench().episodes(["syn_add"], 1000)


@pytest.mark.slow
def test_ray_bench_at_tiny_times_both_modes_with_equal_rewards(tiny_artifacts, tmp_path) -> None:
    bench = _ray_bench()
    out = tmp_path / "ray"
    argv = ["--preset", "tiny", "--artifacts", str(tiny_artifacts), "--tasks", "syn_add", "--per-task", "2"]
    assert bench.main([*argv, "--runs", "1", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["equal_rewards"] and [r["mode"] for r in result["runs"]] == ["single", "ray"]
    assert all(r["score_s"] > 0 and len(r["episodes"]) == 2 for r in result["runs"])
    assert "| 2 Ray actors x 1 thread |" in out.with_suffix(".md").read_text()
