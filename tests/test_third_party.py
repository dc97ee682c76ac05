"""A third-party-style RL loop (examples/cleanrl_pg.py, CleanRL style, no Coral code in the
algorithm) trains on the wrapped env: it learns a bandit with Coral-v0's interface and runs on
the real env at the tiny preset."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from fakes import BanditCoralEnv, HashEncoder

from coral_env.env.wrappers import DiscreteStrategies, EmbedObservation
from coral_env.strategies import catalogue

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "cleanrl_pg.py"


def load_recipe():
    spec = importlib.util.spec_from_file_location("cleanrl_pg", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_source_holds_no_coral_code_outside_the_env_maker() -> None:
    source = SCRIPT.read_text()
    body = source[source.index("class Agent") :]
    assert "coral" not in body.lower().replace("coral-v0", "").split("def main")[0]


def test_cleanrl_style_loop_learns_a_bandit_with_coral_interface() -> None:
    recipe = load_recipe()
    target = catalogue()[11]
    fns = [
        lambda: DiscreteStrategies(
            EmbedObservation(BanditCoralEnv({"t1": target, "t2": target}), encoder=HashEncoder(16))
        )
    ] * 8
    rewards = recipe.train(fns, updates=40, lr=0.01)["rewards"]
    # 1 of 30 catalogue strategies earns reward: chance is 1/30; the loop finds it
    assert np.mean(rewards[:3]) < 0.3 and np.mean(rewards[-10:]) > 0.9, rewards


def test_cleanrl_style_loop_runs_on_coral_v0(tiny_artifacts) -> None:
    recipe = load_recipe()
    fns = [recipe.make_coral_env(["syn_add", "syn_compare"], preset="tiny", artifacts=str(tiny_artifacts))] * 2
    result = recipe.train(fns, updates=2)
    assert len(result["rewards"]) == 2 and all(0.0 <= r <= 1.0 for r in result["rewards"])
