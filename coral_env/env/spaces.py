"""Spaces of ``Coral-v0``: a Text space that admits any character."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.spaces import Text

# What ``sample`` draws from: printable ASCII plus a few non-ASCII characters and JSON's
# punctuation, so random samples exercise the action parser's error paths.
_SAMPLE_CHARS = "".join(chr(c) for c in range(32, 127)) + "\n\té€✓"


class AnyText(Text):
    """A ``Text`` space whose ``contains`` accepts every character (task contexts and JSON actions
    are free text); only the length bounds are checked.

    >>> space = AnyText(max_length=8)
    >>> space.contains("{ü: 1}")
    True
    >>> space.contains("x" * 9)
    False
    """

    def __init__(self, max_length: int, *, min_length: int = 0, seed: Any = None) -> None:
        super().__init__(max_length, min_length=min_length, charset=_SAMPLE_CHARS, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"AnyText({self.min_length}, {self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, AnyText) and (self.min_length, self.max_length) == (other.min_length, other.max_length)


def as_float32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


# ----- async vector envs ------------------------------------------------------------------------
# Gymnasium reads a Text space out of shared memory once, when the vector env is built, so text
# observations would never update (silently). Refuse shared memory for AnyText instead: Gymnasium
# turns this into a ValueError telling the user to pass shared_memory=False.


def _register_shared_memory() -> None:
    from gymnasium.error import CustomSpaceError
    from gymnasium.vector.utils import shared_memory as shm

    @shm.create_shared_memory.register(AnyText)
    def _refuse(space: AnyText, n: int = 1, ctx=None):
        raise CustomSpaceError(
            'Coral-v0\'s text observations cannot live in shared memory; use gym.make_vec("Coral-v0", '
            'vectorization_mode="async", vector_kwargs={"shared_memory": False}, ...)'
        )


_register_shared_memory()
