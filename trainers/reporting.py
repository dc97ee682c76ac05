"""``--report-to tensorboard``: TensorBoard logs through the libraries' own loggers (TRL /
transformers ``report_to``, SB3 ``tensorboard_log``), off by default; TensorBoard is an extra
(``pip install -e ".[tensorboard]"``)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

REPORT_TO = ("none", "tensorboard")


def check_report_to(value: str) -> None:
    """``ValueError`` for an unknown backend; ``ImportError`` with the install command when
    ``tensorboard`` is asked for and missing."""
    if value not in REPORT_TO:
        raise ValueError(f"report_to must be one of {', '.join(REPORT_TO)}, got {value!r}")
    if value == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ImportError(
                '--report-to tensorboard needs TensorBoard: pip install -e ".[tensorboard]" '
                "(or pip install tensorboard)"
            ) from None


@contextmanager
def tensorboard_dir(path: str | Path | None):
    """Point transformers' ``TensorBoardCallback`` (created with the trainer) at ``path``: it
    reads ``$TENSORBOARD_LOGGING_DIR`` when constructed; the variable is restored after."""
    if path is None:
        yield
        return
    old = os.environ.get("TENSORBOARD_LOGGING_DIR")
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(path)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TENSORBOARD_LOGGING_DIR", None)
        else:
            os.environ["TENSORBOARD_LOGGING_DIR"] = old
