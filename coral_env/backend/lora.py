"""LoRA attached once, and the map between PEFT weights, one flat vector and generator tokens.

``AdapterLayout`` fixes an order over the LoRA parameters of a PEFT model. From it:

* ``get_flat`` / ``set_flat``: read or write every LoRA weight as one fp32 vector, in place
  (no re-wrapping, no reload), so strategies and the generator swap adapters cheaply;
* ``tokenize`` / ``detokenize``: the vector as a ``(n_layers, tokens_per_layer, token_dim)``
  tensor of normalised chunks plus a padding mask, the generator's target format (exact round
  trip; per-chunk mean/std are layout state, fitted on a checkpoint collection);
* ``positions``: 2D sinusoidal (layer, chunk) embeddings for those tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


@dataclass
class LoraSpec:
    """Which LoRA to attach: rank, alpha, target module names, dropout."""

    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.rank < 1 or self.rank % 2:
            # Two-subspace mixing (LORA strategy) splits the rank in halves.
            raise ValueError(f"LoRA rank must be a positive even number, got {self.rank}")
        self.targets = tuple(self.targets)


def attach_lora(model, spec: LoraSpec, seed: int = 0):
    """Wrap ``model`` with one PEFT LoRA adapter named ``default``; returns the PeftModel.

    B starts at zero (PEFT's default), so the wrapped model equals the base model.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        target_modules=list(spec.targets),
        lora_dropout=spec.dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    peft_model.eval()
    return peft_model


@dataclass
class AdapterLayout:
    """Ordered LoRA parameters of one PEFT model and their token view.

    Attributes:
        names: parameter names (PEFT naming), in layout order (layer, module, A before B).
        shapes: their shapes.
        layers: transformer layer index of each parameter.
        token_dim: chunk size of one generator token.
        mean, std: per-token normalisation, shape (n_layers, tokens_per_layer); zeros/ones until
            ``fit_scales`` is called.
    """

    names: list[str]
    shapes: list[tuple[int, ...]]
    layers: list[int]
    token_dim: int = 256
    mean: torch.Tensor | None = field(default=None, repr=False)
    std: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.numels = [math.prod(s) for s in self.shapes]
        self.offsets = [0]
        for n in self.numels:
            self.offsets.append(self.offsets[-1] + n)
        self.n_layers = max(self.layers) + 1
        per_layer = [0] * self.n_layers
        for layer, n in zip(self.layers, self.numels):
            per_layer[layer] += n
        self.layer_sizes = per_layer
        self.tokens_per_layer = max(math.ceil(n / self.token_dim) for n in per_layer)
        self._params: list[torch.Tensor] | None = None
        if self.mean is None:
            self.mean = torch.zeros(self.n_layers, self.tokens_per_layer)
            self.std = torch.ones(self.n_layers, self.tokens_per_layer)

    # ----- construction ------------------------------------------------------------------
    @classmethod
    def from_model(cls, model, token_dim: int = 256) -> "AdapterLayout":
        """Layout of every ``lora_A``/``lora_B`` parameter of a PEFT model, bound to that model."""
        names, shapes, layers, params = [], [], [], []
        for name, param in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                match = _LAYER_RE.search(name)
                names.append(name)
                shapes.append(tuple(param.shape))
                layers.append(int(match.group(1)) if match else 0)
                params.append(param)
        if not names:
            raise ValueError("model has no LoRA parameters; call attach_lora(model, spec) first")
        layout = cls(names, shapes, layers, token_dim)
        layout._params = params
        return layout

    def bind(self, model) -> "AdapterLayout":
        """Bind this layout to ``model`` (must have the same LoRA parameters)."""
        found = {n: p for n, p in model.named_parameters() if n in set(self.names)}
        missing = [n for n in self.names if n not in found]
        if missing or any(tuple(found[n].shape) != s for n, s in zip(self.names, self.shapes)):
            raise ValueError(f"model's LoRA parameters do not match this layout (missing {missing[:3]})")
        self._params = [found[n] for n in self.names]
        return self

    @property
    def size(self) -> int:
        """Number of adapter parameters (length of the flat vector)."""
        return self.offsets[-1]

    # ----- flat vector <-> model ------------------------------------------------------------
    def _bound(self) -> list[torch.Tensor]:
        if self._params is None:
            raise RuntimeError("layout is not bound to a model; use AdapterLayout.from_model or bind")
        return self._params

    def parameters(self) -> list[torch.Tensor]:
        """The bound model's LoRA parameters, in layout order."""
        return list(self._bound())

    @torch.no_grad()
    def get_flat(self) -> torch.Tensor:
        """All LoRA weights of the bound model as one fp32 vector (a copy)."""
        return torch.cat([p.detach().reshape(-1).float() for p in self._bound()])

    @torch.no_grad()
    def set_flat(self, vector: torch.Tensor) -> None:
        """Write ``vector`` (shape (size,)) into the bound model's LoRA weights in place."""
        if vector.shape != (self.size,):
            raise ValueError(f"adapter vector has shape {tuple(vector.shape)}, expected ({self.size},)")
        params = self._bound()
        # One fused copy instead of a copy per matrix (hundreds of small tensors).
        torch._foreach_copy_(params, [piece.view(p.shape) for piece, p in zip(vector.split(self.numels), params)])

    def to_state_dict(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat vector -> {PEFT parameter name: tensor}."""
        return {
            n: vector[s:e].reshape(shape).clone()
            for n, shape, s, e in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:])
        }

    def from_state_dict(self, state: dict[str, torch.Tensor]) -> torch.Tensor:
        """{PEFT parameter name: tensor} -> flat fp32 vector; names must match the layout."""
        missing = [n for n in self.names if n not in state]
        if missing:
            raise KeyError(f"adapter state lacks {len(missing)} layout parameters, e.g. {missing[0]!r}")
        return torch.cat([state[n].reshape(-1).float() for n in self.names])

    # ----- tokens ----------------------------------------------------------------------------
    def _per_layer(self, vector: torch.Tensor) -> list[torch.Tensor]:
        buckets: list[list[torch.Tensor]] = [[] for _ in range(self.n_layers)]
        for layer, s, e in zip(self.layers, self.offsets[:-1], self.offsets[1:]):
            buckets[layer].append(vector[..., s:e])
        return [torch.cat(b, dim=-1) for b in buckets]

    def mask(self) -> torch.Tensor:
        """Bool (n_layers, tokens_per_layer, token_dim): True where a token entry is a real weight."""
        full = self.tokens_per_layer * self.token_dim
        m = torch.zeros(self.n_layers, full, dtype=torch.bool)
        for layer, n in enumerate(self.layer_sizes):
            m[layer, :n] = True
        return m.view(self.n_layers, self.tokens_per_layer, self.token_dim)

    def tokenize(self, vector: torch.Tensor) -> torch.Tensor:
        """Flat vector(s) (..., size) -> normalised tokens (..., n_layers, tokens_per_layer, token_dim).

        Padding entries are 0. ``detokenize(tokenize(v)) == v``.
        """
        if vector.shape[-1] != self.size:
            raise ValueError(f"adapter vector has {vector.shape[-1]} entries, layout expects {self.size}")
        full = self.tokens_per_layer * self.token_dim
        rows = []
        for chunk in self._per_layer(vector.float()):
            rows.append(torch.nn.functional.pad(chunk, (0, full - chunk.shape[-1])))
        tokens = torch.stack(rows, dim=-2).unflatten(-1, (self.tokens_per_layer, self.token_dim))
        tokens = (tokens - self.mean[..., None]) / self.std[..., None]
        return tokens * self.mask()

    def detokenize(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of ``tokenize``: (..., n_layers, tokens_per_layer, token_dim) -> (..., size)."""
        expected = (self.n_layers, self.tokens_per_layer, self.token_dim)
        if tuple(tokens.shape[-3:]) != expected:
            raise ValueError(f"tokens have trailing shape {tuple(tokens.shape[-3:])}, expected {expected}")
        raw = tokens * self.std[..., None] + self.mean[..., None]
        raw = raw.flatten(-2)  # (..., n_layers, full)
        layer_chunks = [raw[..., layer, :n] for layer, n in enumerate(self.layer_sizes)]
        # Re-interleave per-layer segments back into layout order.
        cursors = [0] * self.n_layers
        pieces = []
        for layer, n in zip(self.layers, self.numels):
            pieces.append(layer_chunks[layer][..., cursors[layer] : cursors[layer] + n])
            cursors[layer] += n
        return torch.cat(pieces, dim=-1)

    def fit_scales(self, vectors: torch.Tensor, eps: float = 1e-8) -> None:
        """Set per-token mean/std from a stack of flat vectors (n, size), e.g. collected checkpoints."""
        self.mean = torch.zeros(self.n_layers, self.tokens_per_layer)
        self.std = torch.ones(self.n_layers, self.tokens_per_layer)
        raw = self.tokenize(vectors)  # identity scales: raw padded chunks
        counts = self.mask().sum(-1).clamp(min=1)
        mean = raw.sum(dim=(0, -1)) / (counts * raw.shape[0])
        var = ((raw - mean[..., None]) ** 2 * self.mask()).sum(dim=(0, -1)) / (counts * raw.shape[0])
        self.mean, self.std = mean, var.sqrt().clamp(min=eps)

    def positions(self, dim: int) -> torch.Tensor:
        """2D sinusoidal embeddings (n_layers, tokens_per_layer, dim): half for layer, half for chunk."""
        if dim % 4:
            raise ValueError(f"position dim must be a multiple of 4, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(0, half, 2).float() / half)

        def enc(n: int) -> torch.Tensor:
            angles = torch.arange(n).float()[:, None] * freqs[None]
            return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (n, half)

        rows, cols = enc(self.n_layers), enc(self.tokens_per_layer)
        return torch.cat(
            [rows[:, None].expand(-1, self.tokens_per_layer, -1), cols[None].expand(self.n_layers, -1, -1)], dim=-1
        )

    # ----- identity, persistence ----------------------------------------------------------
    def config(self) -> dict:
        return {
            "names": self.names,
            "shapes": [list(s) for s in self.shapes],
            "layers": self.layers,
            "token_dim": self.token_dim,
        }

    def save(self, directory: str | Path) -> None:
        """Write ``layout.json`` and ``layout_scales.safetensors`` into ``directory`` atomically."""
        from .io import atomic_save_safetensors, atomic_write_json

        directory = Path(directory)
        atomic_write_json(directory / "layout.json", self.config())
        atomic_save_safetensors(directory / "layout_scales.safetensors", {"mean": self.mean, "std": self.std})

    @classmethod
    def load(cls, directory: str | Path) -> "AdapterLayout":
        from .io import read_json, read_safetensors

        directory = Path(directory)
        fix = (
            f"delete {directory.parent} and re-run `coral collect` (or `coral setup`) into it "
            "(the layout and the checkpoints are made together)"
        )
        cfg = read_json(directory / "layout.json", fix)
        _, scales = read_safetensors(directory / "layout_scales.safetensors", fix)
        return cls(
            cfg["names"],
            [tuple(s) for s in cfg["shapes"]],
            cfg["layers"],
            cfg["token_dim"],
            scales["mean"],
            scales["std"],
        )


def adapter_hash(vector: torch.Tensor) -> str:
    """Short content hash of an adapter vector (memo keys, bit-identity checks)."""
    data = vector.detach().contiguous().float().numpy().tobytes()
    return hashlib.sha1(data).hexdigest()[:16]


@dataclass
class LoadedAdapter:
    """A PEFT adapter folder read from disk: its LoRA spec and flat weights."""

    spec: LoraSpec
    state: dict[str, torch.Tensor]


def save_adapter(
    directory: str | Path,
    layout: AdapterLayout,
    vector: torch.Tensor,
    spec: LoraSpec,
    base_model: str,
    extra: dict | None = None,
) -> Path:
    """Save as a PEFT adapter folder: ``adapter_model.safetensors`` + ``adapter_config.json``
    (``peft.PeftModel.from_pretrained(base, directory)`` loads it), plus ``extra`` (provenance)
    in ``coral_adapter.json``. Written with ``atomic_dir``: it appears complete or not at all,
    and an existing adapter folder is replaced; any other existing folder is refused."""
    from safetensors.torch import save_file

    from .io import atomic_dir

    directory = Path(directory)
    if directory.is_file() or (
        directory.is_dir() and any(directory.iterdir()) and not (directory / "adapter_config.json").exists()
    ):
        raise ValueError(
            f"{directory} exists and is not an adapter folder; choose a new or empty "
            "folder (an existing adapter folder is replaced)"
        )
    with atomic_dir(directory) as tmp:
        state = {_peft_key(n): t.detach().float().cpu().contiguous() for n, t in layout.to_state_dict(vector).items()}
        save_file(state, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": spec.rank,
            "lora_alpha": spec.alpha,
            "target_modules": list(spec.targets),
            "lora_dropout": spec.dropout,
            "bias": "none",
            "base_model_name_or_path": base_model,
        }
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if extra:
            (tmp / "coral_adapter.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
    return directory


def load_adapter(directory: str | Path) -> LoadedAdapter:
    """Read a PEFT adapter folder (safetensors only, never pickle)."""
    from .io import read_json, read_safetensors

    directory = Path(directory)
    cfg_path, weights = directory / "adapter_config.json", directory / "adapter_model.safetensors"
    if not cfg_path.exists() or not weights.exists():
        raise FileNotFoundError(
            f"{directory} is not an adapter folder: expected adapter_config.json and "
            "adapter_model.safetensors (as written by save_adapter or PEFT's save_pretrained)"
        )

    fix = f"delete {directory} and save or train the adapter again"
    cfg = read_json(cfg_path, fix)
    spec = LoraSpec(
        rank=cfg["r"],
        alpha=cfg["lora_alpha"],
        targets=tuple(cfg["target_modules"]),
        dropout=cfg.get("lora_dropout", 0.0),
    )
    return LoadedAdapter(spec, read_safetensors(weights, fix)[1])


def _peft_key(name: str) -> str:
    # PEFT saves without the adapter name: "...lora_A.default.weight" -> "...lora_A.weight".
    return name.replace(".default.", ".")


def state_for_layout(layout: AdapterLayout, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """Flat vector from a PEFT state dict, whether or not its keys carry the adapter name."""
    resolved = {}
    for name in layout.names:
        key = name if name in state else _peft_key(name)
        if key in state:
            resolved[name] = state[key]
    return layout.from_state_dict(resolved)


__all__ = [
    "LoraSpec",
    "attach_lora",
    "AdapterLayout",
    "adapter_hash",
    "save_adapter",
    "load_adapter",
    "state_for_layout",
    "LoadedAdapter",
]
