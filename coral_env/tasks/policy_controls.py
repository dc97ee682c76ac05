"""Built-in policy controls: two task families whose best strategy family differs by design.

A policy can only learn "which strategy suits which task" where the strategies' effects differ
between tasks and the context shows which task it is. These two families are built so that a
mechanism of one strategy family, and not of the other, matches the rule that answers them:

* **Frequent word** (``ctl_most_*``, intended winner: Latent/SLOT). Each question lists seven
  words, one of them three times; the answer is that word. SLOT fits a per-question vector to
  the question's own tokens, which raises the repeated word's likelihood most; test-time
  learning over all questions raises every listed word alike, because the answer changes from
  question to question.
* **Hidden key** (``ctl_key_*``, intended winner: TTL). Each question lists four words, one of
  them the member's fixed key word (``orange``, ``violin``, ...), which is the answer to every
  question of the member. Test-time learning on the unlabeled questions raises the one word
  common to all of them; SLOT sees each word once in a question and has nothing to prefer.

Members differ in phrasing (and, for the key family, in the key), so a held-out member is a new
task of a known kind; its examples in the context show the kind. Nothing here assumes the
mechanisms work: ``benchmarks/landscape.py`` on the held-out members measures it.

Train / held-out division, fixed: ``POLICY_CONTROL_HELDOUT`` (``ctl_most_3``, ``ctl_key_3``) is
never seen by collection, the generator, the CVAE or any policy.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from functools import partial
from typing import Any

from coral_env.tasks.controls import control_spec
from coral_env.tasks.registry import TaskSpec, register_task

N_ROWS = 2000
WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "table", "garden", "window", "bottle", "candle", "mirror",
    "forest", "bridge", "pillow", "rocket", "silver", "basket", "ladder", "jacket", "pepper", "castle",
    "engine", "meadow", "planet", "saddle", "button", "carpet", "helmet", "island", "kettle", "lantern",
    "marble", "needle", "oyster", "parrot", "puzzle", "ribbon", "shovel", "teapot", "tunnel", "wallet",
)  # fmt: skip
KEYS: tuple[str, ...] = ("orange", "violin", "pencil", "tiger")  # one per key member, not in WORDS
_MOST_PHRASINGS = (
    "Which word appears most often: {words}?",
    "Find the most frequent word in this list: {words}.",
    "Which item is repeated the most? {words}",
    "{words}. Which word occurs most?",
)
_KEY_PHRASINGS = (
    "Pick the right word: {words}.",
    "Which one is correct: {words}?",
    "Choose the word that fits: {words}.",
    "{words}. Which is the answer?",
)
FAMILIES = {"most": _MOST_PHRASINGS, "key": _KEY_PHRASINGS}


def member_name(family: str, index: int) -> str:
    return f"ctl_{family}_{index}"


POLICY_CONTROL: tuple[str, ...] = tuple(member_name(f, i) for f in FAMILIES for i in range(4))
POLICY_CONTROL_HELDOUT: tuple[str, ...] = (member_name("most", 3), member_name("key", 3))
POLICY_CONTROL_TRAIN: tuple[str, ...] = tuple(t for t in POLICY_CONTROL if t not in POLICY_CONTROL_HELDOUT)


def _most_row(rng: random.Random, template: str) -> tuple[str, list[str], str]:
    answer, *others = rng.sample(WORDS, 5)
    listed = [answer] * 3 + others  # the answer three times, four others once
    rng.shuffle(listed)
    choices = [answer, *others[:3]]
    return template.format(words=", ".join(listed)), choices, answer


def _key_row(rng: random.Random, template: str, key: str) -> tuple[str, list[str], str]:
    listed = [key, *rng.sample(WORDS, 3)]
    rng.shuffle(listed)
    return template.format(words=", ".join(listed)), list(listed), key


def generate_member(family: str, index: int) -> Mapping[str, list[dict[str, Any]]]:
    """N_ROWS four-choice questions of one member (choices in random order)."""
    name = member_name(family, index)
    rng = random.Random(f"coral-policy-control-{name}")
    rows, seen = [], set()
    for i in range(N_ROWS):
        question = None
        while question is None or question in seen:  # distinct questions: splits never share one
            if family == "most":
                question, choices, answer = _most_row(rng, _MOST_PHRASINGS[index])
            else:
                question, choices, answer = _key_row(rng, _KEY_PHRASINGS[index], KEYS[index])
        seen.add(question)
        rng.shuffle(choices)
        rows.append({"id": f"{name}-{i}", "question": question, "choices": choices, "label": choices.index(answer)})
    return {"train": rows}


POLICY_CONTROL_TASKS: tuple[TaskSpec, ...] = tuple(
    control_spec(
        member_name(family, i),
        "Policy control: "
        + ("the word listed most often" if family == "most" else "the member's hidden key word")
        + f" (phrasing {i}).",
        partial(generate_member, family, i),
    )
    for family in FAMILIES
    for i in range(4)
)

for _spec in POLICY_CONTROL_TASKS:
    register_task(_spec, overwrite=True)
