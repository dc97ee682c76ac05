"""The alignment agent (stage 2, CORAL section 2.3 and App. D): a conditional VAE over flat LoRA
adapters, conditioned on the task vector.

Architecture (the papers' "Fusion VAE", sizes from ``CVAEConfig``)::

    adapter (B, D) --normalise--> pad to D_pad --> (B, 1, D_pad)
      encoder: [Conv1d(c_i -> c_{i+1}, kernel k, stride k), LeakyReLU] x n   -> (B, c_n, D_pad / k^n)
      AdaptiveAvgPool1d(pool) -> flatten                                      -> (B, c_n * pool)
    task vector (B, H) --normalise--> Linear(H -> P)                          -> t (B, P)
      mu, logvar = Linear([features, t])  (two heads)                         -> (B, latent)
      z = mu + sigma * eps   (eps = 0 for the posterior mean)
    decoder: Linear([z, t] -> c_n * pool), LeakyReLU, linear interpolation to D_pad / k^n,
      [ConvTranspose1d(c_{i+1} -> c_i, kernel k, stride k), LeakyReLU] x n (none after the last)
      -> (B, 1, D_pad) -> crop to D -> de-normalise                           -> (B, D)

Sizes not divisible by k^n: the normalised input is zero-padded at the end to
D_pad = k^n * ceil(D / k^n) and the decoder's output is cropped back to D (the padded tail
never enters the loss). Paper defaults: channels [1, 32, 64, 128, 256, 512], k = 4, pool 32,
task projection 512.

Normalisation: adapters and task vectors are standardised with statistics fitted on the
training data (``fit_normalization``) and kept as buffers, so a saved CVAE carries them.
``centered`` (default) subtracts the per-dimension mean and divides by one global std: the
shared LoRA initialisation lives in the mean and the network models task-specific deviations
(a stride-k conv stack shares weights along the vector and cannot memorise per-position
constants). ``per_dim`` also divides per dimension; ``global`` uses one scalar mean and std.
The decoder's last layer starts at zero, so an untrained CVAE returns the training mean.

Optional low-rank path (``basis_rank = k > 0``; not in the papers; on at the cpu preset, k=8): the
conv decoder shares its weights along the vector, so it cannot draw a specific 921,600-entry
pattern such as "arc_easy's checkpoint minus the mean" (measured: with the paper's decoder the
reconstruction error stays at the training mean's, benchmarks/alignment.md). With ``k > 0``,
``fit_normalization`` also keeps the top-k principal directions V (D, k) and their standard
deviations s (k,) of the normalised training adapters; the encoder additionally reads the
input's whitened coordinates ``x V / s`` and the decoder adds ``(head([z, t]) * s) V^T``
(``head`` a zero-initialised linear layer).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "coral-cvae"
FORMAT_VERSION = 1
NORMALIZATIONS = ("centered", "per_dim", "global")

CVAE_PRESETS: dict[str, dict] = {
    # CORAL App. D.2. The latent size is not stated in the papers.
    "paper": dict(channels=(1, 32, 64, 128, 256, 512), kernel_size=4, pool_size=32, latent_dim=256, task_proj_dim=512),
    # Half the paper's channels: a quarter of the FLOPs (an SmolLM2 r=8 adapter is 921,600 weights;
    # a batch of 4 costs ~1.6 s forward + backward on 2 loaded cores instead of ~4 s). The rank-8
    # path was chosen on validation over the papers' decoder alone (benchmarks/alignment.md).
    "cpu": dict(
        channels=(1, 16, 32, 64, 128, 256), kernel_size=4, pool_size=32, latent_dim=64, task_proj_dim=512, basis_rank=8
    ),
    # Tiny preset: a 2-layer model's 1,792-weight adapter.
    "tiny": dict(channels=(1, 4, 8, 16), kernel_size=4, pool_size=4, latent_dim=8, task_proj_dim=16),
}


@dataclass
class CVAEConfig:
    """Shape of the conditional VAE.

    Attributes:
        channels: encoder channel progression, starting at 1 (the decoder mirrors it).
        kernel_size: kernel size and stride of every (transposed) conv (non-overlapping windows).
        pool_size: length of the adaptive average pool after the encoder convs.
        latent_dim: size of z (and of ``describe``'s observation vector).
        task_proj_dim: width of the task-vector projection.
        normalization: ``centered``, ``per_dim`` or ``global`` (module docstring).
        negative_slope: LeakyReLU slope between layers.
        basis_rank: k of the optional low-rank output path (0: the papers' decoder only).
    """

    channels: tuple[int, ...] = field(
        default=(1, 32, 64, 128, 256, 512), metadata={"help": "Encoder channels, starting at 1."}
    )
    kernel_size: int = field(default=4, metadata={"help": "Kernel size = stride of every conv."})
    pool_size: int = field(default=32, metadata={"help": "Adaptive average pool length."})
    latent_dim: int = field(default=64, metadata={"help": "Latent size (observation vector size)."})
    task_proj_dim: int = field(default=512, metadata={"help": "Task-vector projection width."})
    normalization: str = field(default="centered", metadata={"help": "centered, per_dim or global."})
    negative_slope: float = field(default=0.2, metadata={"help": "LeakyReLU slope."})
    basis_rank: int = field(default=0, metadata={"help": "Rank of the optional principal-direction path."})

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if len(self.channels) < 2 or self.channels[0] != 1 or min(self.channels) < 1:
            raise ValueError(f"channels must start at 1 and have >= 2 positive entries, got {self.channels}")
        for name in ("kernel_size", "pool_size", "latent_dim", "task_proj_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.basis_rank < 0:
            raise ValueError(f"basis_rank must be >= 0, got {self.basis_rank}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "CVAEConfig":
        """A preset (``paper``, ``cpu``, ``tiny``) with field overrides (``None`` ignored)."""
        if name not in CVAE_PRESETS:
            raise ValueError(f"unknown CVAE preset {name!r}; choose one of {', '.join(CVAE_PRESETS)}")
        return cls(**{**CVAE_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})

    @property
    def factor(self) -> int:
        """Total downsampling of the conv stack, kernel_size ** (len(channels) - 1)."""
        return self.kernel_size ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict) -> "CVAEConfig":
        return cls(**data)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) summed over latent dims, averaged over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()


def _run_channels_last(layers: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
    """Apply a stack of (transposed) convs with kernel == stride, and activations, to (B, L, C).

    With non-overlapping windows a conv is a reshape and one matmul: identical to
    ``nn.Conv1d`` / ``nn.ConvTranspose1d`` on (B, C, L) up to float rounding, and about 1.7x
    faster on CPU at the cpu preset's adapter length. The modules keep their usual weights.
    """
    for layer in layers:
        b = h.shape[0]
        if isinstance(layer, nn.Conv1d):
            c_out, c_in, k = layer.weight.shape
            weight = layer.weight.permute(0, 2, 1).reshape(c_out, k * c_in)  # window-major, like the reshape
            h = F.linear(h.reshape(b, -1, k * c_in), weight, layer.bias)
        elif isinstance(layer, nn.ConvTranspose1d):
            c_in, c_out, k = layer.weight.shape
            weight = layer.weight.permute(2, 1, 0).reshape(k * c_out, c_in)
            bias = layer.bias.repeat(k) if layer.bias is not None else None
            h = F.linear(h, weight, bias).reshape(b, -1, c_out)
        else:
            h = layer(h)
    return h


class BinAveragePool1d(nn.Module):
    """``nn.AdaptiveAvgPool1d`` as a matmul with its bin-averaging matrix: the same bins and values.

    CUDA's adaptive-pool backward fails on the paper CVAE's long feature maps (about 4300 positions
    into 32 bins: "Couldn't reduce launch bounds to accommodate sharedMemPerBlock limit"); a matmul
    has no such limit and costs little at these sizes.
    """

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length, bins = x.shape[-1], self.output_size
        i = torch.arange(bins, device=x.device)
        start = (i * length) // bins  # PyTorch's bins: [floor(i L / P), ceil((i + 1) L / P))
        end = ((i + 1) * length + bins - 1) // bins
        pos = torch.arange(length, device=x.device)
        inside = (pos[:, None] >= start) & (pos[:, None] < end)
        weights = inside.to(x.dtype) / (end - start).to(x.dtype)
        return x @ weights


class ConditionalVAE(nn.Module):
    """Conditional VAE over flat adapters (see the module docstring).

    Args:
        config: sizes.
        adapter_size: D, length of a flat adapter (``AdapterLayout.size``).
        task_dim: H, length of a task vector (the model's hidden size).
    """

    def __init__(self, config: CVAEConfig, adapter_size: int, task_dim: int) -> None:
        super().__init__()
        if adapter_size < 1 or task_dim < 1:
            raise ValueError(f"adapter_size and task_dim must be >= 1, got {adapter_size}, {task_dim}")
        self.config, self.adapter_size, self.task_dim = config, adapter_size, task_dim
        k, ch = config.kernel_size, config.channels
        self.padded_size = config.factor * math.ceil(adapter_size / config.factor)
        self.feature_len = self.padded_size // config.factor
        act = lambda: nn.LeakyReLU(config.negative_slope)  # noqa: E731
        enc: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            enc += [nn.Conv1d(c_in, c_out, k, stride=k), act()]
        self.encoder = nn.Sequential(*enc)
        self.pool = BinAveragePool1d(config.pool_size)
        k_basis = config.basis_rank
        features = ch[-1] * config.pool_size + k_basis
        self.task_proj = nn.Linear(task_dim, config.task_proj_dim)
        self.mu_head = nn.Linear(features + config.task_proj_dim, config.latent_dim)
        self.logvar_head = nn.Linear(features + config.task_proj_dim, config.latent_dim)
        self.decoder_in = nn.Sequential(
            nn.Linear(config.latent_dim + config.task_proj_dim, ch[-1] * config.pool_size), act()
        )
        dec: list[nn.Module] = []
        pairs = list(zip(ch[:0:-1], ch[-2::-1]))
        for i, (c_in, c_out) in enumerate(pairs):
            dec.append(nn.ConvTranspose1d(c_in, c_out, k, stride=k))
            if i < len(pairs) - 1:
                dec.append(act())
        self.decoder = nn.Sequential(*dec)
        nn.init.zeros_(self.decoder[-1].weight)  # start as "return the training mean"
        nn.init.zeros_(self.decoder[-1].bias)
        self.register_buffer("adapter_mean", torch.zeros(adapter_size))
        self.register_buffer("adapter_std", torch.ones(adapter_size))
        self.register_buffer("task_mean", torch.zeros(task_dim))
        self.register_buffer("task_std", torch.ones(task_dim))
        if k_basis:
            self.basis_head = nn.Linear(config.latent_dim + config.task_proj_dim, k_basis)
            nn.init.zeros_(self.basis_head.weight)
            nn.init.zeros_(self.basis_head.bias)
            self.register_buffer("basis", torch.zeros(adapter_size, k_basis))
            self.register_buffer("basis_scale", torch.ones(k_basis))

    # ----- normalisation -------------------------------------------------------------------
    @torch.no_grad()
    def fit_normalization(self, adapters: torch.Tensor, task_vectors: torch.Tensor, eps: float = 1e-8) -> None:
        """Fit the buffers on training adapters (n, D) and task vectors (n, H)."""
        for data, mean_buf, std_buf in (
            (adapters, self.adapter_mean, self.adapter_std),
            (task_vectors, self.task_mean, self.task_std),
        ):
            data = data.detach().float()
            mode = self.config.normalization
            mean = data.mean(0) if mode != "global" else data.mean().expand(data.shape[1])
            centred = data - mean
            if mode == "per_dim":
                std = centred.pow(2).mean(0).sqrt()
            else:
                std = centred.pow(2).mean().sqrt().expand(data.shape[1])
            std = torch.where(std > eps, std, torch.ones_like(std))
            mean_buf.copy_(mean)
            std_buf.copy_(std)
        k = self.config.basis_rank
        if k:
            x = self.normalize(adapters.detach())
            _, svals, vh = torch.linalg.svd(x, full_matrices=False)  # x is (n, D) with n small
            n = min(k, vh.shape[0])
            self.basis.zero_()
            self.basis[:, :n] = vh[:n].T
            scale = svals[:n] / math.sqrt(max(x.shape[0], 1))
            self.basis_scale.fill_(1.0)
            self.basis_scale[:n] = torch.where(scale > eps, scale, torch.ones_like(scale))

    def normalize(self, adapter: torch.Tensor) -> torch.Tensor:
        return (adapter.float() - self.adapter_mean) / self.adapter_std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.adapter_std + self.adapter_mean

    def _task_features(self, task_vector: torch.Tensor) -> torch.Tensor:
        return self.task_proj((task_vector.float() - self.task_mean) / self.task_std)

    # ----- model ---------------------------------------------------------------------------
    def _check(self, adapter: torch.Tensor, task_vector: torch.Tensor) -> None:
        if adapter.ndim != 2 or adapter.shape[1] != self.adapter_size:
            raise ValueError(f"adapter has shape {tuple(adapter.shape)}, expected (B, {self.adapter_size})")
        if task_vector.shape != (adapter.shape[0], self.task_dim):
            raise ValueError(
                f"task vector has shape {tuple(task_vector.shape)}, expected ({adapter.shape[0]}, {self.task_dim})"
            )

    def encode_normalized(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised adapters (B, D) and projected task vectors (B, P) -> (mu, logvar), each (B, latent)."""
        parts = []
        if self.config.basis_rank:
            parts.append(x @ self.basis / self.basis_scale)  # whitened principal coordinates
        h = F.pad(x, (0, self.padded_size - self.adapter_size))[:, :, None]  # (B, D_pad, 1), channels last
        h = _run_channels_last(self.encoder, h)
        feats = self.pool(h.transpose(1, 2)).flatten(1)
        h = torch.cat([feats, *parts, t], dim=-1)
        return self.mu_head(h), self.logvar_head(h).clamp(-30.0, 20.0)

    def decode_normalized(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent) and projected task vectors (B, P) -> normalised adapters (B, D)."""
        h = self.decoder_in(torch.cat([z, t], dim=-1)).view(z.shape[0], self.config.channels[-1], -1)
        if h.shape[-1] != self.feature_len:
            h = F.interpolate(h, size=self.feature_len, mode="linear", align_corners=False)
        out = _run_channels_last(self.decoder, h.transpose(1, 2))[:, : self.adapter_size, 0]  # (B, D)
        if self.config.basis_rank:
            coords = self.basis_head(torch.cat([z, t], dim=-1)) * self.basis_scale
            out = out + coords @ self.basis.T
        return out

    def forward_normalized(
        self,
        adapter: torch.Tensor,
        task_vector: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Like ``forward`` but the reconstruction stays normalised (the training loss's space)."""
        self._check(adapter, task_vector)
        t = self._task_features(task_vector)
        mu, logvar = self.encode_normalized(self.normalize(adapter), t)
        z = mu
        if sample:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode_normalized(z, t), mu, logvar

    def forward(
        self,
        adapter: torch.Tensor,
        task_vector: torch.Tensor,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat adapters (B, D) and task vectors (B, H) -> (reconstruction (B, D), mu, logvar).

        ``sample=False`` decodes the posterior mean.
        """
        recon, mu, logvar = self.forward_normalized(adapter, task_vector, sample, generator)
        return self.denormalize(recon), mu, logvar

    # ----- inference -----------------------------------------------------------------------
    @torch.no_grad()
    def align(
        self,
        adapter: torch.Tensor,
        task_vector: torch.Tensor,
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Aligned flat adapter(s): (D,) and (H,) -> (D,), or batched (B, D), (B, H) -> (B, D).

        Decodes the posterior mean unless ``sample``; ``layout.set_flat`` loads the result.
        """
        single = adapter.ndim == 1
        a, t = (adapter[None], task_vector[None]) if single else (adapter, task_vector)
        out, _, _ = self.forward(a.to(self.adapter_mean.device), t.to(self.adapter_mean.device), sample, generator)
        return out[0] if single else out

    @torch.no_grad()
    def describe(self, adapter: torch.Tensor, task_vector: torch.Tensor) -> torch.Tensor:
        """Posterior mean (latent,) or (B, latent): a fixed-size description of the adapter."""
        single = adapter.ndim == 1
        a, t = (adapter[None], task_vector[None]) if single else (adapter, task_vector)
        self._check(a, t)
        mu, _ = self.encode_normalized(self.normalize(a), self._task_features(t))
        return mu[0] if single else mu

    # ----- persistence ---------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write ``config.json`` and ``model.safetensors`` (weights and normalisation buffers)."""
        from ..backend.io import atomic_save_safetensors, atomic_write_json

        directory = Path(directory)
        atomic_save_safetensors(directory / "model.safetensors", self.state_dict(), {"format": FORMAT})
        atomic_write_json(
            directory / "config.json",
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "cvae": self.config.to_dict(),
                "adapter_size": self.adapter_size,
                "task_dim": self.task_dim,
                "extra": extra or {},
            },
        )

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> "ConditionalVAE":
        """Load a CVAE written by ``save_pretrained`` (safetensors + JSON only), in eval mode."""
        from ..backend.io import load_artifact

        cfg, state = load_artifact(directory, FORMAT, "CVAE", "coral pretrain-cvae")
        model = cls(CVAEConfig.from_dict(cfg["cvae"]), cfg["adapter_size"], cfg["task_dim"])
        model.load_state_dict(state)
        model.extra = cfg.get("extra", {})
        return model.to(device).eval()


@dataclass
class Alignment:
    """Output of the alignment agent for one adapter: aligned weights, task vector, latent mean."""

    adapter: torch.Tensor
    task_vector: torch.Tensor
    latent: torch.Tensor


class AlignmentAgent:
    """Generated adapter + task prompts -> aligned adapter (CORAL App. D.5).

    Args:
        cvae: a trained ``ConditionalVAE``.
        vectorizer: a ``TaskVectorizer`` over the LoRA-wrapped base model.

    >>> agent = AlignmentAgent(ConditionalVAE.from_pretrained(d), TaskVectorizer(m, tok, layout))  # doctest: +SKIP
    >>> out = agent(generator.generate_adapter(prompts), prompts)                               # doctest: +SKIP
    >>> layout.set_flat(out.adapter)                                                            # doctest: +SKIP
    """

    def __init__(self, cvae: ConditionalVAE, vectorizer) -> None:
        if vectorizer.layout.size != cvae.adapter_size:
            raise ValueError(
                f"the CVAE expects adapters of {cvae.adapter_size} weights, the model's layout "
                f"has {vectorizer.layout.size}"
            )
        self.cvae, self.vectorizer = cvae, vectorizer

    def __call__(
        self,
        adapter: torch.Tensor,
        prompts: Sequence[str],
        sample: bool = False,
        generator: torch.Generator | None = None,
    ) -> Alignment:
        """Task vector of ``adapter`` on ``prompts``, then the CVAE's aligned adapter and latent mean."""
        tv = self.vectorizer(adapter, prompts)
        return Alignment(self.cvae.align(adapter, tv, sample, generator), tv, self.cvae.describe(adapter, tv))


__all__ = ["CVAE_PRESETS", "CVAEConfig", "ConditionalVAE", "Alignment", "AlignmentAgent", "kl_divergence"]
