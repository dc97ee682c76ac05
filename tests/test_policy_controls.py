"""The policy-control suite: rows follow their rule, and the train / held-out division is fixed."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from coral_env.tasks import POLICY_CONTROL, POLICY_CONTROL_HELDOUT, POLICY_CONTROL_TRAIN, load_task
from coral_env.tasks.policy_controls import KEYS, WORDS


def _listed(question: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", question) if w in {*WORDS, *KEYS}]


def test_division_is_fixed_and_disjoint():
    assert POLICY_CONTROL_HELDOUT == ("ctl_most_3", "ctl_key_3")
    assert set(POLICY_CONTROL_TRAIN) | set(POLICY_CONTROL_HELDOUT) == set(POLICY_CONTROL)
    assert not set(POLICY_CONTROL_TRAIN) & set(POLICY_CONTROL_HELDOUT) and len(POLICY_CONTROL_TRAIN) == 6


@pytest.mark.parametrize("index", range(4))
def test_most_rows_answer_the_word_listed_three_times(index):
    for ex in load_task(f"ctl_most_{index}").test[:50]:
        counts = Counter(_listed(ex.question))
        assert len(ex.choices) == 4 and sum(counts.values()) == 7
        assert counts[ex.answer] == 3 and all(counts[c] == 1 for c in ex.choices if c != ex.answer)


@pytest.mark.parametrize("index", range(4))
def test_key_rows_answer_the_members_key_which_every_question_lists_once(index):
    splits = load_task(f"ctl_key_{index}")
    rows = splits.support + splits.test[:50]
    assert {ex.answer for ex in rows} == {KEYS[index]}
    assert all(Counter(_listed(ex.question))[KEYS[index]] == 1 for ex in rows)
    others = Counter(w for ex in rows for w in _listed(ex.question) if w != KEYS[index])
    assert max(others.values()) < len(rows) / 4  # no other word is common to the member's questions
