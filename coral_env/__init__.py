"""Coral: LLM adaptation as a reinforcement-learning problem.

``import coral_env`` registers ``Coral-v0`` with Gymnasium (cheaply: the environment module is
only imported when an environment is made)::

    import gymnasium as gym, coral_env
    env = gym.make("Coral-v0", task="arc_easy", preset="cpu")
"""

__version__ = "0.1.0"

try:
    from gymnasium.envs.registration import register, registry
except ImportError:  # the model layers stay importable without it (benchmarks/gpu_check.py on a bare GPU box)
    registry = None

if registry is not None and "Coral-v0" not in registry:
    # nondeterministic: strategies sample (TTL order, TTS batches); no max_episode_steps=1, which
    # would make check_env fail.
    register(id="Coral-v0", entry_point="coral_env.env.core:CoralEnv", nondeterministic=True)
