"""Design choices made on validation, test reported once (used by the generator and alignment
benchmarks: the generator's anchor, the CVAE's basis rank).

>>> scores = {"a": {"t1": {"validation": 0.6, "test": 0.5}}, "b": {"t1": {"validation": 0.5, "test": 0.9}}}
>>> choose_on_validation(scores)["chosen"]
'a'
"""

from __future__ import annotations


def choose_on_validation(candidates: dict[str, dict[str, dict[str, float]]]) -> dict:
    """Pick the option with the highest mean validation accuracy over the held-out tasks.

    Args:
        candidates: option -> held-out task -> {"validation": accuracy, "test": accuracy}
            (every option must cover the same tasks; ties go to the option listed first).
    Returns:
        ``chosen``, ``validation`` (option -> mean validation accuracy) and ``test``: the chosen
        option's mean test accuracy, the one test number the choice reports.
    """
    if not candidates:
        raise ValueError("no options to choose from")
    tasks = {name: sorted(by_task) for name, by_task in candidates.items()}
    first = next(iter(tasks.values()))
    if any(t != first for t in tasks.values()) or not first:
        raise ValueError(f"every option must be scored on the same held-out tasks; got {tasks}")
    validation = {
        name: sum(r["validation"] for r in by_task.values()) / len(by_task) for name, by_task in candidates.items()
    }
    chosen = max(validation, key=lambda name: validation[name])  # first of equals wins
    test = sum(r["test"] for r in candidates[chosen].values()) / len(first)
    return {"chosen": chosen, "validation": validation, "test": test, "tasks": first}


def choice_markdown(title: str, choice: dict) -> str:
    """A short markdown section: validation per option, the choice, its test accuracy."""
    rows = [f"### {title}", "", "| option | mean validation accuracy |", "|---|---|"]
    rows += [
        f"| {name}{' (chosen)' if name == choice['chosen'] else ''} | {acc:.3f} |"
        for name, acc in choice["validation"].items()
    ]
    rows += [
        "",
        f"Chosen on validation: **{choice['chosen']}**; its mean test accuracy over "
        f"{', '.join(choice['tasks'])}: {choice['test']:.3f} (test reported once, for the chosen option).",
    ]
    return "\n".join(rows)
