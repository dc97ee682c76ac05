"""The built-in control suite: the generator control family (coral_env/tasks/controls.py)."""

from __future__ import annotations

import re

import pytest

from coral_env.tasks import (
    GENERATOR_CONTROL,
    GENERATOR_CONTROL_HELDOUT,
    GENERATOR_CONTROL_TRAIN,
    get_task,
    load_task,
)
from coral_env.tasks.controls import generate_member

_ADD_WORDS = ("plus", "Add", "sum", "+")
_SUB_WORDS = ("minus", "Subtract", "difference", "-")


def _operands(question: str) -> tuple[int, int]:
    a, b = (int(x) for x in re.findall(r"\d+", question))
    # "Subtract b from a" names the smaller number first
    return (b, a) if question.startswith("Subtract") else (a, b)


def test_suite_has_eight_members_split_into_train_and_heldout_by_operation():
    assert len(GENERATOR_CONTROL) == 8
    assert set(GENERATOR_CONTROL_TRAIN) | set(GENERATOR_CONTROL_HELDOUT) == set(GENERATOR_CONTROL)
    assert not set(GENERATOR_CONTROL_TRAIN) & set(GENERATOR_CONTROL_HELDOUT)
    # each held-out member's operation is present among the training members
    for held in GENERATOR_CONTROL_HELDOUT:
        op = held.split("_")[1]
        assert sum(t.split("_")[1] == op for t in GENERATOR_CONTROL_TRAIN) == 3
    assert all(get_task(t).kind == "multiple_choice" for t in GENERATOR_CONTROL)


@pytest.mark.parametrize("task", GENERATOR_CONTROL)
def test_gold_is_the_members_operation_and_both_results_are_offered(task):
    op = task.split("_")[1]
    rows = generate_member(op, int(task.rsplit("_", 1)[1]))["train"]
    assert len(rows) == 3000 and len({r["question"] for r in rows}) == 3000
    for row in rows[:500]:
        a, b = _operands(row["question"])
        choices = [int(c) for c in row["choices"]]
        assert len(set(choices)) == 4 and a + b in choices and a - b in choices
        assert choices[row["label"]] == (a + b if op == "add" else a - b)
    # gold position is not a shortcut: every position holds the answer sometimes
    assert {r["label"] for r in rows} == {0, 1, 2, 3}


@pytest.mark.parametrize("task", GENERATOR_CONTROL)
def test_unlabeled_questions_reveal_the_operation(task):
    own, other = (_ADD_WORDS, _SUB_WORDS) if "_add_" in task else (_SUB_WORDS, _ADD_WORDS)
    support = load_task(task, seed=0).support
    assert all(any(w in ex.question for w in own) for ex in support)
    assert not any(any(w in ex.question for w in other) for ex in support)


def test_members_differ_in_phrasing_and_rows_are_deterministic():
    first = {t: load_task(t, seed=0).test[0].question for t in GENERATOR_CONTROL}
    templates = {re.sub(r"\d+", "N", q) for q in first.values()}
    assert len(templates) == 8
    assert generate_member("sub", 2) == generate_member("sub", 2)
