"""Envs sharing one runtime, stepped from two threads, return exactly what a serial run returns."""

import threading

import gymnasium as gym
import pytest

import coral_env  # noqa: F401  (registers Coral-v0)

ACTIONS = [
    '{"family": "TTL", "ttl_steps": 3, "learning_rate": 0.01, "batch_size": 4}',
    '{"family": "Latent", "slot_steps": 3, "slot_lr": 0.1}',
    '{"family": "LORA", "lambda": 0.7}',
    '{"family": "TTS", "num_prompt_batches": 2, "method": "max_confidence"}',
    '{"family": "TTL", "ttl_steps": 2, "learning_rate": 0.005, "batch_size": 2}',
    '{"family": "LORA", "lambda": 0.2}',
]


def _episodes(env, task: str, actions: list[str], start: threading.Barrier | None = None) -> list[tuple]:
    out = []
    if start is not None:
        start.wait()
    for action in actions:
        env.reset(options={"task": task})
        _, reward, _, _, info = env.step(action)
        out.append((reward, info["metric_after"], info["accuracy_after"], info.get("error")))
    return out


def test_two_threads_match_serial_results_bit_for_bit(tiny_artifacts):
    make = lambda: gym.make(
        "Coral-v0",
        task=["syn_add", "syn_parity"],
        preset="tiny",  # noqa: E731
        artifacts=str(tiny_artifacts),
    )
    first, second = make(), make()
    runtime = first.unwrapped.runtime
    assert second.unwrapped.runtime is runtime  # the shared state under test

    runtime.clear_memo()
    serial = {
        "syn_add": _episodes(first, "syn_add", ACTIONS),
        "syn_parity": _episodes(second, "syn_parity", ACTIONS[::-1]),
    }
    assert [row[3] for rows in serial.values() for row in rows] == [None] * 2 * len(ACTIONS)

    for _ in range(2):  # two rounds: the race, when there is one, shows up within them
        runtime.clear_memo()
        results, errors = {}, []
        barrier = threading.Barrier(2)

        def run(env, task, actions):
            try:
                results[task] = _episodes(env, task, actions, barrier)
            except BaseException as exc:  # surfaced below, with the thread's traceback lost otherwise
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=(first, "syn_add", ACTIONS)),
            threading.Thread(target=run, args=(second, "syn_parity", ACTIONS[::-1])),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert results == serial

    # What the memo kept from the threaded round is what a later single-threaded step returns.
    again = _episodes(first, "syn_add", ACTIONS)
    assert again == serial["syn_add"]


def test_reset_options_must_be_a_dict(tiny_artifacts):
    env = gym.make("Coral-v0", task="syn_add", preset="tiny", artifacts=str(tiny_artifacts))
    with pytest.raises(TypeError, match="options must be a dict"):
        env.reset(options="syn_add")
