"""The family runners named by the strategy table, resolved at import, and :func:`execute`.

Each row of ``FAMILIES`` names its runner as ``"module:function"`` (Gymnasium's
``entry_point`` style). Importing this module imports every runner; a row whose runner cannot
be imported or is not callable fails here, at import, with the family and the fix named, not
at the first episode that picks the family.

Every family is a bounded transformation: :func:`execute` snapshots the adapter and restores
it in a ``finally`` block, so the model and the adapter it was given are exactly as before,
even when the strategy raises.
"""

from __future__ import annotations

import importlib
import time
from typing import Callable

from ..tasks import Example
from .context import StrategyContext, StrategyOutcome
from .schema import FAMILIES, FamilySpec, Strategy

Runner = Callable[[Strategy, StrategyContext, "list[Example]"], StrategyOutcome]
"""``run(strategy, ctx, examples) -> StrategyOutcome``: evaluates ``examples`` after the strategy."""


class RunnerImportError(ImportError):
    """A family row whose runner cannot be imported or is not callable."""


def load_runner(family: FamilySpec) -> Runner:
    """The callable a table row's ``runner`` string names (raises :class:`RunnerImportError`)."""
    module_name, _, attr = family.runner.partition(":")
    fix = (
        f"Fix: point FAMILIES row {family.name!r} in coral_env/strategies/schema.py at "
        "'package.module:function', a function run(strategy, ctx, examples) -> StrategyOutcome."
    )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise RunnerImportError(
            f"strategy family {family.name!r}: cannot import runner module {module_name!r} ({e}). {fix}"
        ) from e
    runner = getattr(module, attr, None)
    if not callable(runner):
        raise RunnerImportError(
            f"strategy family {family.name!r}: runner {family.runner!r} is not a function in {module_name!r}. {fix}"
        )
    return runner


RUNNERS: dict[str, Runner] = {family.name: load_runner(family) for family in FAMILIES}
"""Family name -> runner, in table order (built at import)."""


def execute(strategy: Strategy, ctx: StrategyContext, examples: list[Example]) -> StrategyOutcome:
    """Run ``strategy`` on the model's current adapter and evaluate ``examples``.

    The adapter (and with it the whole model: only LoRA weights are ever written) is restored
    before returning, whatever happens. A strategy of no registered family raises ValueError
    (the env reports it as an invalid action).
    """
    runner = RUNNERS.get(getattr(strategy, "family", None))
    if runner is None:
        raise ValueError(
            f"no runner for strategy {strategy!r}; registered families: "
            f"{', '.join(RUNNERS)}. Fix: add a row to FAMILIES in "
            "coral_env/strategies/schema.py."
        )
    snapshot = ctx.layout.get_flat()
    was_training = ctx.model.training
    start = time.perf_counter()
    try:
        outcome = runner(strategy, ctx, examples)
    finally:
        ctx.layout.set_flat(snapshot)
        ctx.model.train(was_training)
        ctx.model.zero_grad(set_to_none=True)
    outcome.cost["seconds"] = time.perf_counter() - start
    return outcome
