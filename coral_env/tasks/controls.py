"""Built-in positive controls: synthetic tasks where an agent has something to learn.

A null result means something only beside a control on which the same code *can* learn. These
tasks are controls, not benchmarks: they are built so that a working stage shows a gain.

**Generator control** (``ctl_add_*``, ``ctl_sub_*``): one rule with a parameter, "arithmetic
on two numbers below 100", the parameter being the operation (add or subtract) and the
phrasing (four per operation), eight members in all. Every question offers both operations'
results among its four choices (a + b, a - b and one near miss of each), so

* the base model is near chance (it does not tell the operations apart reliably);
* a member's own LoRA learns its operation and lifts accuracy far above chance;
* adapters of the two operations conflict, so the mean adapter of all members is poor;
* the unlabeled questions say which operation a member uses ("plus", "minus", ...), so a
  prompt-conditioned generator can in principle give a held-out member its operation's adapter.

Train / held-out division, fixed: ``GENERATOR_CONTROL_HELDOUT`` (one phrasing of each
operation) is never seen by collection, the generator, the CVAE or any policy; those train on
``GENERATOR_CONTROL_TRAIN``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from functools import partial
from typing import Any

from coral_env.tasks.converters import convert_simple_mc
from coral_env.tasks.registry import TaskSpec, register_task

N_ROWS = 3000
# (operation, phrasing) per member; {a} > {b}, both two-digit.
_PHRASINGS: dict[str, tuple[str, ...]] = {
    "add": ("What is {a} plus {b}?", "Add {a} and {b}.", "What is the sum of {a} and {b}?", "{a} + {b} = ?"),
    "sub": (
        "What is {a} minus {b}?",
        "Subtract {b} from {a}.",
        "What is the difference between {a} and {b}?",
        "{a} - {b} = ?",
    ),
}
_NEAR_MISSES = (-10, -2, -1, 1, 2, 10)


def member_name(operation: str, phrasing: int) -> str:
    return f"ctl_{operation}_{phrasing}"


GENERATOR_CONTROL: tuple[str, ...] = tuple(member_name(op, i) for op in _PHRASINGS for i in range(4))
GENERATOR_CONTROL_HELDOUT: tuple[str, ...] = (member_name("add", 3), member_name("sub", 3))
GENERATOR_CONTROL_TRAIN: tuple[str, ...] = tuple(t for t in GENERATOR_CONTROL if t not in GENERATOR_CONTROL_HELDOUT)


def _near_miss(value: int, avoid: set[int], rng: random.Random) -> int:
    options = [value + d for d in _NEAR_MISSES if value + d >= 0 and value + d not in avoid]
    return rng.choice(options)


def generate_member(operation: str, phrasing: int) -> Mapping[str, list[dict[str, Any]]]:
    """N_ROWS questions of one member: four choices holding a + b, a - b and a near miss of each."""
    name = member_name(operation, phrasing)
    rng = random.Random(f"coral-control-{name}")
    pairs = rng.sample([(a, b) for a in range(11, 100) for b in range(10, a)], N_ROWS)
    template = _PHRASINGS[operation][phrasing]
    rows = []
    for i, (a, b) in enumerate(pairs):
        total, difference = a + b, a - b
        miss_total = _near_miss(total, {total, difference}, rng)
        miss_difference = _near_miss(difference, {total, difference, miss_total}, rng)
        choices = [total, difference, miss_total, miss_difference]
        rng.shuffle(choices)
        correct = total if operation == "add" else difference
        rows.append(
            {
                "id": f"{name}-{i}",
                "question": template.format(a=a, b=b),
                "choices": [str(c) for c in choices],
                "label": choices.index(correct),
            }
        )
    return {"train": rows}


def control_spec(name: str, description: str, generate) -> TaskSpec:
    """A built-in four-choice control task whose rows come from ``generate()`` (no download)."""
    return TaskSpec(
        name,
        "multiple_choice",
        "synthetic",
        convert_simple_mc,
        description,
        generate=generate,
        chat_instruction="Answer with the text of the correct option.",
    )


CONTROL_TASKS: tuple[TaskSpec, ...] = tuple(
    control_spec(
        member_name(op, i),
        f"Generator control: {'add' if op == 'add' else 'subtract'} two numbers below 100 "
        f"(phrasing {i}); the choices hold both the sum and the difference.",
        partial(generate_member, op, i),
    )
    for op in _PHRASINGS
    for i in range(4)
)

for _spec in CONTROL_TASKS:
    register_task(_spec, overwrite=True)
