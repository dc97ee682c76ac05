"""Kill a job with SIGKILL at chosen points, resume it, and compare its artifacts with an
uninterrupted run's.

A kill point is ``KillPoint(pattern, nth=1, when="after")``: the job SIGKILLs itself at the
``nth`` ``os.replace`` whose destination matches the glob ``pattern`` (every atomic file or
folder write of Coral ends with one), right ``after`` the rename (the file is complete) or
right ``before`` it (a temp file or folder is left behind, as by a kill mid-write). The job
runs in a subprocess of this file, which installs the hook and then runs the command::

    python tests/killresume.py -m coral_env.cli collect --preset tiny ...
    python tests/killresume.py -c "from coral_env.setup import ...; ..."

with the point in ``$CORAL_KILL_AT`` (JSON). ``assert_same_artifacts`` compares two run
folders: the same files, safetensors byte for byte, JSON and JSONL equal once timings are
dropped and the two roots are named alike, and no temp file left.
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VOLATILE = {"time", "seconds", "training_seconds_this_run", "timings"}
"""Keys whose values are wall-clock measurements: they differ between any two runs."""


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL at the ``nth`` rename onto a path matching ``pattern``, ``before`` or ``after`` it."""

    pattern: str
    nth: int = 1
    when: str = "after"

    def __str__(self) -> str:
        return f"{self.when} {self.pattern}#{self.nth}"


def run_job(
    args: list[str], kill: KillPoint | None = None, timeout: float = 600, cwd: str | Path | None = None
) -> subprocess.CompletedProcess:
    """Run ``python tests/killresume.py ARGS`` (``-m module ...`` or ``-c code``), killed at ``kill``."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        OMP_NUM_THREADS="1",
    )
    env.pop("CORAL_KILL_AT", None)
    if kill is not None:
        env["CORAL_KILL_AT"] = json.dumps(asdict(kill))
    return subprocess.run(
        [sys.executable, __file__, *args], env=env, cwd=cwd or REPO, timeout=timeout, capture_output=True, text=True
    )


def kill_then_resume(args: list[str], points: list[KillPoint], timeout: float = 600) -> None:
    """Run ``args`` killed at each point in turn (each run resumes the previous one), then to
    the end. Fails if a point was not reached (the job ended first) or the resumed run fails."""
    for point in points:
        done = run_job(args, point, timeout)
        assert done.returncode == -signal.SIGKILL, (
            f"kill point {point} was not reached (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    done = run_job(args, None, timeout)
    assert done.returncode == 0, f"the resumed run failed:\n{done.stderr[-3000:]}"


def is_temp(name: str) -> bool:
    """Names of Coral's temp files and folders (``.<name>.<pid>.<rand>.tmp``, ``.<name>.tmp-*``,
    ``.<name>.old``, ``.<name>.sft-*``)."""
    return name.startswith(".") and (
        name.endswith(".tmp") or ".tmp-" in name or name.endswith(".old") or ".sft-" in name
    )


def _normalise(value, roots: tuple[str, ...]):
    if isinstance(value, dict):
        return {k: _normalise(v, roots) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_normalise(v, roots) for v in value]
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, "<root>")
    return value


def _content(path: Path, root: Path):
    roots = (str(root), str(root.resolve()))
    if path.suffix == ".json":
        return _normalise(json.loads(path.read_text()), roots)
    if path.suffix == ".jsonl":
        return [_normalise(json.loads(line), roots) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".md":  # model cards and reports may name the run folder
        return _normalise(path.read_text(), roots)
    return path.read_bytes()


def _first_difference(a, b) -> str:
    if isinstance(a, bytes):
        return f" (bytes; {len(a)} vs {len(b)} long)"
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f": {len(a)} rows expected, {len(b)} found; first differing: " + next(
                (f"#{i} {x} vs {y}" for i, (x, y) in enumerate(zip(a, b)) if x != y), "none in the common part"
            )
        return next(f": row {i}: expected {x}, got {y}" for i, (x, y) in enumerate(zip(a, b)) if x != y)
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f": keys {keys}: expected {[a.get(k) for k in keys]}, got {[b.get(k) for k in keys]}"[:3000]
    return f": expected {str(a)[:1500]}, got {str(b)[:1500]}"


def assert_same_artifacts(expected: Path, actual: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """Assert the two folders hold the same artifacts (see the module docstring) and no temp
    files; returns the compared relative paths. ``ignore``: glob patterns of paths to skip."""

    def files(root: Path) -> dict[str, Path]:
        out = {}
        for path in root.rglob("*"):
            rel = path.relative_to(root).as_posix()
            assert not any(is_temp(part) for part in path.relative_to(root).parts), f"temp file left: {path}"
            if path.is_file() and not any(fnmatch.fnmatch(rel, g) for g in ignore):
                out[rel] = path
        return out

    want, got = files(expected), files(actual)
    assert sorted(got) == sorted(want), (
        f"missing: {sorted(set(want) - set(got))}; extra: {sorted(set(got) - set(want))}"
    )
    for rel in sorted(want):
        a, b = _content(want[rel], expected), _content(got[rel], actual)
        if a != b:
            raise AssertionError(f"{rel} differs after kill and resume" + _first_difference(a, b))
    return sorted(want)


def _install(point: dict) -> None:
    """Make this process SIGKILL itself at ``point`` (a ``KillPoint`` as a dict)."""
    real, seen = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        if fnmatch.fnmatch(os.fspath(dst), point["pattern"]):
            seen[0] += 1
            if seen[0] == point["nth"]:
                if point["when"] == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
                real(src, dst, *args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def _main(argv: list[str]) -> None:
    import runpy

    if os.environ.get("CORAL_KILL_AT"):
        _install(json.loads(os.environ["CORAL_KILL_AT"]))
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        exec(compile(argv[1], "<job>", "exec"), {"__name__": "__main__"})
    else:
        raise SystemExit("usage: killresume.py -m MODULE ARGS... | -c CODE")


if __name__ == "__main__":
    sys.path.pop(0)  # tests/ itself: the job imports the package from the repository
    _main(sys.argv[1:])
