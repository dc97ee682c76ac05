"""The ``coral`` command: eval output and error messages (tiny model, synthetic tasks)."""

import json

import pytest

from coral_env.cli import main


def test_eval_json_on_synthetic_task(capsys):
    assert main(["eval", "--model", "tiny", "--task", "syn_parity", "--limit", "12", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 12 and 0 <= out["accuracy"] <= 1
    lo, hi = out["ci95"]
    assert lo <= out["accuracy"] <= hi
    assert "balanced_accuracy" in out and "auc" in out  # two-answer task


def test_eval_text_output_on_generative_task(capsys):
    assert main(["eval", "--model", "tiny", "--task", "syn_sum", "--limit", "3"]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["eval", "--model", "tiny", "--task", "arc_esay"], "arc_easy"),  # lists/suggests known tasks
        (["eval", "--model", "/nonexistent/model", "--task", "syn_add"], "not a model folder"),
        (["eval", "--model", "tiny", "--task", "arc_easy", "--data-dir", "/nonexistent/data"], "/nonexistent/data"),
        (["eval", "--model", "tiny", "--task", "syn_add", "--limit", "0"], "--limit"),
    ],
)
def test_eval_errors_are_clear(capsys, argv, needle):
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


_RUN_AS_MAIN = """
import runpy, sys
sys.argv = ["trainers.restem", "--preset", "tiny", "--help"]
try:
    runpy.run_module("trainers.restem", run_name="__main__", alter_sys=True)  # what `python -m` does
except SystemExit as exc:
    assert exc.code == 0, exc.code
print("imported again" if "trainers.restem" in sys.modules else "imported once")
"""


def test_python_m_trainer_imports_its_module_once():
    """`python -m trainers.restem` runs restem.py as __main__; importing it again as
    trainers.restem would define a second RestemConfig class."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _RUN_AS_MAIN], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    help_text = " ".join(proc.stdout.split())
    assert "--samples-per-task" in help_text
    assert "(default: syn_add,syn_compare)" in help_text  # --preset is read first; its values are the defaults
    assert proc.stdout.strip().endswith("imported once")


def test_one_user_error_handler_for_every_command(capsys):
    assert main(["sb3", "--preset", "tiny", "--algo", "sac"]) == 2
    assert "coral sb3: error: algo must be one of" in capsys.readouterr().err
    assert main(["eval", "--model", "tiny", "--task", "syn_add", "--limit", "0"]) == 2
    assert "coral eval: error: --limit must be >= 1" in capsys.readouterr().err
