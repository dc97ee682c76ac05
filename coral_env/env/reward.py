"""One reply -> strategy -> reward function for every learner and evaluator.

ReST^EM scores its sampled replies with it, the LLM policy turns replies into actions with the
same :func:`~coral_env.strategies.parse.action_from_reply`, and a GRPO reward function is
``lambda reply: reward_of(reply, env, task)[0]``: the reply is read and scored one way only.
"""

from __future__ import annotations

from typing import Any, Callable

from ..strategies.parse import action_from_reply

RewardFunc = Callable[[Any, Any], "tuple[float, dict]"]
"""``(reply or action, env) -> (reward, info)``: the signature of :func:`reward_of` (like TRL's
``RewardFunc``, one typed callable so trainers can take any scorer)."""


def reward_of(reply_or_action: Any, env: Any, task: str | None = None) -> tuple[float, dict]:
    """Score one policy reply (free text) or action (JSON text, dict, strategy) in a fresh
    one-step episode of ``env`` (a ``Coral-v0``): reset on ``task`` (None: the env picks), then
    step with the extracted action.

    Returns ``(reward, info)``: the env's reward and step ``info`` plus ``action`` (what was
    sent to the env) and ``valid`` (whether the reply held a valid strategy). An invalid reply
    gets the env's invalid-action reward (0) and its ``info["error"]``; it never raises.
    """
    action, valid = action_from_reply(reply_or_action)
    env.reset(options={"task": task} if task is not None else None)
    _, reward, _, _, info = env.step(action)
    return float(reward), {**info, "action": action, "valid": valid}
