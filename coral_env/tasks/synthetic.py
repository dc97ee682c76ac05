"""Built-in synthetic tasks: no download, deterministic rows, regular enough for a small LoRA.

Each generator draws from its own fixed-seed RNG, so every process sees the same rows; the
split seed of ``load_task`` then decides which rows land in which split. Prompts follow the
plain "Question: ...\\nAnswer:" style of the benchmark tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from coral_env.tasks.converters import convert_simple_mc, convert_simple_number
from coral_env.tasks.registry import TaskSpec, register_task

Rows = list[dict[str, Any]]
N_ROWS = 3000
_WORDS = (
    "apple",
    "river",
    "stone",
    "cloud",
    "tiger",
    "chair",
    "lamp",
    "bread",
    "ship",
    "garden",
    "pencil",
    "horse",
    "window",
    "candle",
    "forest",
    "mirror",
    "rocket",
    "violin",
    "button",
    "castle",
    "planet",
    "basket",
    "kettle",
    "ladder",
    "pepper",
    "saddle",
    "tunnel",
    "wallet",
)


def _rng(name: str) -> random.Random:
    return random.Random(f"coral-synthetic-{name}")


def _mc_row(
    name: str, index: int, question: str, correct: int, distractors: list[int], rng: random.Random
) -> dict[str, Any]:
    choices = [correct, *distractors]
    rng.shuffle(choices)
    return {
        "id": f"{name}-{index}",
        "question": question,
        "choices": [str(c) for c in choices],
        "label": choices.index(correct),
    }


def _distractors(correct: int, offsets: tuple[int, ...], k: int, rng: random.Random) -> list[int]:
    pool = sorted({correct + o for o in offsets if correct + o >= 0 and o != 0})
    return rng.sample(pool, k)


def generate_add() -> Mapping[str, Rows]:
    """syn_add: "What is a + b?" (1 <= a, b <= 99), four numeric choices."""
    rng = _rng("syn_add")
    pairs = rng.sample([(a, b) for a in range(1, 100) for b in range(1, 100)], N_ROWS)
    rows = [
        _mc_row("syn_add", i, f"What is {a} + {b}?", a + b, _distractors(a + b, (-10, -2, -1, 1, 2, 10), 3, rng), rng)
        for i, (a, b) in enumerate(pairs)
    ]
    return {"train": rows}


def generate_compare() -> Mapping[str, Rows]:
    """syn_compare: "Which number is larger: a or b?", the two numbers as choices."""
    rng = _rng("syn_compare")
    seen: set[tuple[int, int]] = set()
    rows = []
    while len(rows) < N_ROWS:
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        if a == b or (a, b) in seen:
            continue
        seen.add((a, b))
        rows.append(
            {
                "id": f"syn_compare-{len(rows)}",
                "question": f"Which number is larger: {a} or {b}?",
                "choices": [str(a), str(b)],
                "label": 0 if a > b else 1,
            }
        )
    return {"train": rows}


def generate_parity() -> Mapping[str, Rows]:
    """syn_parity: "Is N an even number?" with choices no / yes."""
    rng = _rng("syn_parity")
    rows = [
        {
            "id": f"syn_parity-{i}",
            "question": f"Is {n} an even number?",
            "choices": ["no", "yes"],
            "label": int(n % 2 == 0),
        }
        for i, n in enumerate(rng.sample(range(10_000), N_ROWS))
    ]
    return {"train": rows}


def generate_sequence() -> Mapping[str, Rows]:
    """syn_sequence: the next number of a short arithmetic sequence, four numeric choices."""
    rng = _rng("syn_sequence")
    specs = [(a, d, n) for a in range(1, 100) for d in range(2, 10) for n in (3, 4, 5)]
    rows = []
    for i, (a, d, n) in enumerate(rng.sample(specs, 2000)):
        terms = [a + d * k for k in range(n)]
        nxt = terms[-1] + d
        rows.append(
            _mc_row(
                "syn_sequence",
                i,
                f"What number comes next in the sequence {', '.join(map(str, terms))}?",
                nxt,
                _distractors(nxt, (-1, 1, d, -d + 1, 2 * d), 3, rng),
                rng,
            )
        )
    return {"train": rows}


def generate_count() -> Mapping[str, Rows]:
    """syn_count (generative): "How many words are in this list: ...?" answer 2..9."""
    rng = _rng("syn_count")
    seen: set[str] = set()
    rows = []
    while len(rows) < N_ROWS:
        words = rng.sample(_WORDS, rng.randint(2, 9))
        question = f"How many words are in this list: {', '.join(words)}?"
        if question in seen:
            continue
        seen.add(question)
        rows.append({"id": f"syn_count-{len(rows)}", "question": question, "answer": len(words)})
    return {"train": rows}


def generate_sum() -> Mapping[str, Rows]:
    """syn_sum (generative): "Add a and b. What is the total?" (1 <= a, b <= 60)."""
    rng = _rng("syn_sum")
    pairs = rng.sample([(a, b) for a in range(1, 61) for b in range(1, 61)], N_ROWS)
    rows = [
        {"id": f"syn_sum-{i}", "question": f"Add {a} and {b}. What is the total?", "answer": a + b}
        for i, (a, b) in enumerate(pairs)
    ]
    return {"train": rows}


_MC = "Answer with the text of the correct option."
_NUM = "Answer with the number only."
_GEN_STOP = ("Question:", "\n")

SYNTHETIC_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(
        "syn_add",
        "multiple_choice",
        "synthetic",
        convert_simple_mc,
        "Add two numbers below 100 and pick the sum.",
        generate=generate_add,
        chat_instruction=_MC,
    ),
    TaskSpec(
        "syn_compare",
        "multiple_choice",
        "synthetic",
        convert_simple_mc,
        "Pick the larger of two numbers below 1000.",
        generate=generate_compare,
        chat_instruction=_MC,
    ),
    TaskSpec(
        "syn_parity",
        "multiple_choice",
        "synthetic",
        convert_simple_mc,
        "Say whether a number is even (yes/no).",
        generate=generate_parity,
        chat_instruction="Answer with yes or no.",
    ),
    TaskSpec(
        "syn_sequence",
        "multiple_choice",
        "synthetic",
        convert_simple_mc,
        "Continue a short arithmetic sequence.",
        generate=generate_sequence,
        chat_instruction=_MC,
    ),
    TaskSpec(
        "syn_count",
        "generative",
        "synthetic",
        convert_simple_number,
        "Count the words in a short list.",
        generate=generate_count,
        answer_type="number",
        stop=_GEN_STOP,
        chat_instruction=_NUM,
    ),
    TaskSpec(
        "syn_sum",
        "generative",
        "synthetic",
        convert_simple_number,
        "Add two numbers and write the total.",
        generate=generate_sum,
        answer_type="number",
        stop=_GEN_STOP,
        chat_instruction=_NUM,
    ),
)

GENERATORS: dict[str, Callable[[], Mapping[str, Rows]]] = {
    spec.name: spec.generate for spec in SYNTHETIC_TASKS if spec.generate is not None
}

for _spec in SYNTHETIC_TASKS:
    register_task(_spec, overwrite=True)
