"""Shared fixtures. Tests never touch the network and use the ``tiny`` preset for mechanics."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and two OpenMP threads collapse when the other core
    is busy (a spinning thread waits for a core that another process holds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the tiny preset: a random 2-layer Qwen2 with SmolLM2's tokenizer."""
    from coral_env.backend.models import load_model

    torch.manual_seed(0)
    return load_model("tiny", dtype="fp32")


@pytest.fixture()
def tiny_lora(tiny):
    """A fresh LoRA-wrapped tiny model and its layout (B randomised so the adapter matters)."""
    from coral_env.backend.lora import AdapterLayout, LoraSpec, attach_lora
    from coral_env.backend.models import load_model

    model, tok = load_model("tiny", dtype="fp32")
    peft_model = attach_lora(model, LoraSpec(rank=2, alpha=4))
    layout = AdapterLayout.from_model(peft_model, token_dim=64)
    return peft_model, tok, layout


TINY_TASKS = ["syn_add", "syn_parity", "syn_compare"]


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """Stage-1/2 artifacts of the tiny preset (collection, generator, CVAE) on synthetic tasks."""
    from coral_env.setup.pipeline import run_setup

    root = tmp_path_factory.mktemp("artifacts")
    run_setup("tiny", root, tasks=TINY_TASKS, progress=False)
    return root
