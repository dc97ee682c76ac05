"""benchmarks/env_throughput.py at the tiny preset: first visits only, per-family table, resume."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "env_throughput.py"
_spec = importlib.util.spec_from_file_location("env_throughput", _PATH)
env_throughput = importlib.util.module_from_spec(_spec)
sys.modules["env_throughput"] = env_throughput
_spec.loader.exec_module(env_throughput)


def test_every_family_is_timed_on_a_first_visit_and_a_rerun_resumes(tiny_artifacts, tmp_path, capsys, monkeypatch):
    from coral_env.env.runtime import CoralRuntime

    cleared = []
    real = CoralRuntime.clear_memo
    monkeypatch.setattr(CoralRuntime, "clear_memo", lambda self: cleared.append(1) or real(self))
    args = ["--artifacts", str(tiny_artifacts), "--tasks", "syn_add", "--preset", "tiny"]
    args += ["--per-family", "2", "--validation-size", "8", "--threads", "1", "--out", str(tmp_path)]
    env_throughput.main(args)
    rows = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert [r["family"] for r in rows] == ["TTL", "TTL", "LORA", "LORA", "TTS", "TTS", "Latent", "Latent"]
    assert not any(r["memo_hit"] for r in rows) and all(r["validation_questions"] == 8 for r in rows)
    assert len(cleared) == 8  # each episode starts from an empty memo and empty TTS caches
    table = (tmp_path / "throughput.md").read_text()
    assert "| syn_add | 8 | LORA | 2 |" in table
    capsys.readouterr()
    env_throughput.main(args)  # every cell is there: nothing runs again
    assert '  {"family"' not in capsys.readouterr().out
    assert len((tmp_path / "episodes.jsonl").read_text().splitlines()) == 8
