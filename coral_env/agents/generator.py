"""The generator agent (stage 1): prompts -> LoRA weights through a hyper-convolutional decoder.

A frozen sentence encoder turns N task prompts into a condition tensor (N, L, C); the
``HyperConvDecoder`` maps it, stage by stage, to (T, h, w) where T is the adapter's token count
and h*w the token size; the tokens are de-normalised and flattened by the ``AdapterLayout``
into a vector ``AdapterLayout.set_flat`` writes into the model.

Decoder block (CORAL App. C.4, DeGAML App. E.3, layout of DnD's reference code). The block
input ``c`` has shape (B, N, L, C): N prompts (later: channels that become adapter tokens),
L token positions (the "height"), C features (the "width"). Each conv treats one axis as its
channels and slides a k x k kernel over the other two, so it is also the conv that resizes
that axis between stages:

* ``Conv_W`` (width conv): channels C -> C', kernel over the (L, N) plane;
* ``Conv_H`` (height conv): channels L -> L', kernel over the (N, C) plane;
* ``Conv_L`` (layer-wise conv): channels N -> N', kernel over the (L', C') plane;

    c   = LayerNorm_(L,C)(c)
    c_W = Conv_H1(Conv_W1(c))
    c_H = tanh(Conv_W2(Conv_H2(c)))          # the tanh is DnD's; the papers' Eq. 9 omits it
    out = Conv_L((c_W + c_H + b) / 3)        # b: a learned (L', C') bias
    out = out + c   when the block keeps the shape

The last stage's Conv_L gives each adapter token its own weights. An optional refinement block
at token resolution follows (``refine``): its Conv_W/Conv_H slide along the token axis and are
shared by all tokens, so the layout's 2D sinusoidal (layer, chunk) position embeddings are added
right before it; its Conv_L is depthwise (one k x k filter per token) because a dense
T -> T conv would cost T^2 k^2 weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..backend.lora import AdapterLayout
from .encoder import DEFAULT_ENCODER, PromptEncoder

Stage = tuple[int, int, int]
FORMAT = "coral-generator"
FORMAT_VERSION = 1


def _paper_stages(n: int = 128) -> list[Stage]:
    # CORAL Table 5 / DeGAML E.3 (Qwen2.5-0.5B, r=8: 4296 tokens of 8 x 128).
    return [
        (n, 384, 384),
        (n, 200, 300),
        (n, 100, 256),
        (2 * n, 50, 200),
        (4 * n, 50, 200),
        (8 * n, 25, 200),
        (8 * n, 10, 200),
        (16 * n, 10, 200),
        (4296, 8, 128),
    ]


GENERATOR_PRESETS: dict[str, dict] = {
    "paper": dict(stages=_paper_stages(128), kernel_size=3, refine=False),
    # 2.7M parameters; ends at SmolLM2-135M r=8 q/k/v/o: 30 layers x 120 tokens of 256 = 16 x 16.
    # No refinement block: on a 2-core CPU it doubles the step time (0.38 -> 0.88 s at batch 8).
    "cpu": dict(
        stages=[(16, 64, 384), (16, 32, 64), (32, 16, 32), (64, 16, 16), (3600, 16, 16)], kernel_size=3, refine=False
    ),
    # The tiny preset's random 2-layer model, r=2: 2 x 14 tokens of 64 = 8 x 8.
    "tiny": dict(stages=[(4, 16, 384), (4, 8, 32), (8, 8, 16), (28, 8, 8)], kernel_size=3, refine=True),
}


@dataclass
class GeneratorConfig:
    """Shape of the hyper-convolutional decoder.

    Attributes:
        stages: channel progression [(N, L, C), ...]. The first is the condition: N prompts of
            L encoder tokens of width C. The last is (T, h, w): T adapter tokens of h x w = the
            layout's token size (``for_layout`` fills T in from a layout).
        kernel_size: k of every conv (odd; "same" padding).
        refine: add positions and one token-resolution refinement block after the last stage.
        encoder: sentence-transformers model producing the condition.
    """

    stages: list[Stage] = field(
        default_factory=lambda: list(GENERATOR_PRESETS["cpu"]["stages"]),
        metadata={"help": "Channel progression [(N, L, C), ...]."},
    )
    kernel_size: int = field(default=3, metadata={"help": "Kernel size of every conv (odd)."})
    refine: bool = field(default=True, metadata={"help": "Positions + token-resolution refinement block."})
    encoder: str = field(default=DEFAULT_ENCODER, metadata={"help": "Sentence-transformers encoder."})

    def __post_init__(self) -> None:
        self.stages = [tuple(int(v) for v in s) for s in self.stages]
        if len(self.stages) < 2 or any(len(s) != 3 or min(s) < 1 for s in self.stages):
            raise ValueError(f"stages must be >= 2 positive (N, L, C) triples, got {self.stages}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {self.kernel_size}")

    @classmethod
    def preset(cls, name: str, layout: AdapterLayout | None = None, **overrides) -> "GeneratorConfig":
        """A preset decoder (``paper``, ``cpu``, ``tiny``), fitted to ``layout`` if given."""
        if name not in GENERATOR_PRESETS:
            raise ValueError(f"unknown generator preset {name!r}; choose one of {', '.join(GENERATOR_PRESETS)}")
        config = cls(**{**GENERATOR_PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})
        return config.for_layout(layout) if layout is not None else config

    @property
    def num_prompts(self) -> int:
        return self.stages[0][0]

    @property
    def prompt_length(self) -> int:
        return self.stages[0][1]

    @property
    def embed_dim(self) -> int:
        return self.stages[0][2]

    @property
    def token_shape(self) -> tuple[int, int]:
        return self.stages[-1][1], self.stages[-1][2]

    def for_layout(self, layout: AdapterLayout) -> "GeneratorConfig":
        """A copy whose last stage emits exactly ``layout``'s tokens (T = layers x tokens/layer)."""
        h, w = self.token_shape
        if h * w != layout.token_dim:
            raise ValueError(
                f"last stage tokens are {h} x {w} = {h * w} entries, the layout's tokens "
                f"have {layout.token_dim}; pick h, w with h * w = {layout.token_dim}"
            )
        n_tokens = layout.n_layers * layout.tokens_per_layer
        return dataclasses.replace(self, stages=[*self.stages[:-1], (n_tokens, h, w)])

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "stages": [list(s) for s in self.stages]}

    @classmethod
    def from_dict(cls, data: dict) -> "GeneratorConfig":
        return cls(**data)


def _conv(c_in: int, c_out: int, k: int, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=bias)


def _on_axis(conv: nn.Conv2d, x: torch.Tensor, axis: int) -> torch.Tensor:
    """Apply ``conv`` to (B, N, L, C) ``x`` with ``axis`` (1=N, 2=L, 3=C) as its channels."""
    if axis == 1:
        return conv(x)
    perm = (0, 3, 2, 1) if axis == 3 else (0, 2, 1, 3)  # both are their own inverse
    return conv(x.permute(perm)).permute(perm)


class HyperConvBlock(nn.Module):
    """One decoder block: (B, N, L, C) -> (B, N', L', C'); see the module docstring.

    Args:
        shape_in, shape_out: (N, L, C) and (N', L', C').
        kernel_size: k of every conv.
        layer_groups: groups of Conv_L (``N`` makes it depthwise, for same-N refinement).
    """

    def __init__(self, shape_in: Stage, shape_out: Stage, kernel_size: int = 3, layer_groups: int = 1) -> None:
        super().__init__()
        (n, l, c), (n2, l2, c2), k = shape_in, shape_out, kernel_size
        self.shape_in, self.shape_out = tuple(shape_in), tuple(shape_out)
        self.norm = nn.LayerNorm([l, c])
        self.conv_w1 = _conv(c, c2, k, bias=False)  # width first ...
        self.conv_h1 = _conv(l, l2, k, bias=False)  # ... then height
        self.conv_h2 = _conv(l, l2, k, bias=False)  # height first ...
        self.conv_w2 = _conv(c, c2, k, bias=False)  # ... then width
        self.bias = nn.Parameter(torch.empty(l2, c2).uniform_(-1 / (l2 * c2), 1 / (l2 * c2)))
        self.conv_l = _conv(n, n2, k, groups=layer_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.norm(x)
        c_w = _on_axis(self.conv_h1, _on_axis(self.conv_w1, c, 3), 2)
        c_h = torch.tanh(_on_axis(self.conv_w2, _on_axis(self.conv_h2, c, 2), 3))
        out = self.conv_l((c_w + c_h + self.bias) / 3)
        return out + x if out.shape == x.shape else out


class HyperConvDecoder(nn.Module):
    """Condition (B, N, L, C) -> adapter tokens (B, n_layers, tokens_per_layer, token_dim).

    Args:
        config: the stages (its last stage must match ``layout``: use ``config.for_layout``).
        layout: the adapter layout whose tokens are produced (shapes and positions only).
    """

    def __init__(self, config: GeneratorConfig, layout: AdapterLayout) -> None:
        super().__init__()
        config = config.for_layout(layout)
        self.config = config
        self.token_grid = (layout.n_layers, layout.tokens_per_layer, layout.token_dim)
        k = config.kernel_size
        self.blocks = nn.ModuleList(HyperConvBlock(a, b, k) for a, b in zip(config.stages[:-1], config.stages[1:]))
        last = config.stages[-1]
        if config.refine:
            self.register_buffer("positions", layout.positions(layout.token_dim).reshape(last), persistent=False)
            self.position_gain = nn.Parameter(torch.ones(()))
            self.refine = HyperConvBlock(last, last, k, layer_groups=last[0])
        else:
            self.refine = None

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        expected = self.config.stages[0]
        if tuple(condition.shape[-3:]) != expected:
            raise ValueError(
                f"condition has shape {tuple(condition.shape)}, expected (B, {expected[0]}, "
                f"{expected[1]}, {expected[2]}) (N prompts, L tokens, C features)"
            )
        x = condition
        for block in self.blocks:
            x = block(x)
        if self.refine is not None:
            x = self.refine(x + self.position_gain * self.positions)
        return x.reshape(x.shape[0], *self.token_grid)


class Generator:
    """Encoder + decoder + layout: prompts in, a flat adapter vector out.

    With an ``anchor`` vector (e.g. the mean of the training checkpoints) the decoder's tokens
    are a residual: ``adapter = anchor + detokenize(tokens)``; without one, the tokens are the
    adapter (the papers' formulation).

    >>> gen = Generator.from_pretrained("artifacts/cpu/generator/piqa")    # doctest: +SKIP
    >>> layout.set_flat(gen.generate_adapter(support_prompts))            # doctest: +SKIP
    """

    def __init__(
        self,
        config: GeneratorConfig,
        layout: AdapterLayout,
        decoder: HyperConvDecoder | None = None,
        encoder: PromptEncoder | None = None,
        device: str = "cpu",
        extra: dict | None = None,
        anchor: torch.Tensor | None = None,
    ) -> None:
        self.config = config.for_layout(layout)
        self.layout = layout
        self.decoder = (decoder or HyperConvDecoder(self.config, layout)).to(device).eval()
        self._encoder = encoder
        self.device = device
        self.extra = dict(extra or {})
        if anchor is not None and anchor.shape != (layout.size,):
            raise ValueError(f"anchor has shape {tuple(anchor.shape)}, expected ({layout.size},)")
        self.anchor = None if anchor is None else anchor.detach().float().cpu()

    @property
    def encoder(self) -> PromptEncoder:
        if self._encoder is None:
            self._encoder = PromptEncoder(self.config.encoder, self.config.prompt_length, self.device)
        return self._encoder

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters())

    # ----- generation -----------------------------------------------------------------------
    def select_prompts(self, prompts: Sequence[str]) -> list[str]:
        """Exactly N prompts: the first N, or all of them cycled when fewer are given."""
        if not prompts:
            raise ValueError("need at least one prompt to condition the generator")
        n = self.config.num_prompts
        return [prompts[i % len(prompts)] for i in range(n)]

    def condition(self, prompts: Sequence[str]) -> torch.Tensor:
        """The condition tensor (N, L, C) of a prompt batch."""
        return self.encoder.token_embeddings(self.select_prompts(prompts), self.config.prompt_length)

    @torch.no_grad()
    def generate_tokens(self, batches: Sequence[Sequence[str]]) -> torch.Tensor:
        """Normalised adapter tokens (B, n_layers, tokens_per_layer, token_dim) for B prompt batches."""
        cond = torch.stack([self.condition(b) for b in batches]).to(self.device)
        return self.decoder(cond).float().cpu() * self.layout.mask()

    def generate_adapters(self, batches: Sequence[Sequence[str]]) -> torch.Tensor:
        """Flat fp32 adapter vectors (B, size), one per prompt batch."""
        vectors = self.layout.detokenize(self.generate_tokens(batches))
        return vectors if self.anchor is None else vectors + self.anchor

    def generate_adapter(self, prompts: Sequence[str]) -> torch.Tensor:
        """One flat fp32 adapter vector (size,) for a prompt batch; ``layout.set_flat`` loads it."""
        return self.generate_adapters([prompts])[0]

    # ----- persistence ----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> None:
        """Write ``config.json`` (decoder config, layout, ``extra``) and ``model.safetensors``."""
        from ..backend.io import atomic_save_safetensors, atomic_write_json

        directory = Path(directory)
        self.extra.update(extra or {})
        state = {f"decoder.{k}": v for k, v in self.decoder.state_dict().items()}
        state["layout.mean"], state["layout.std"] = self.layout.mean, self.layout.std
        if self.anchor is not None:
            state["anchor"] = self.anchor
        atomic_save_safetensors(directory / "model.safetensors", state, {"format": FORMAT})
        atomic_write_json(
            directory / "config.json",
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "generator": self.config.to_dict(),
                "layout": self.layout.config(),
                "extra": self.extra,
            },
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, encoder: PromptEncoder | None = None, device: str = "cpu"
    ) -> "Generator":
        """Load a generator written by ``save_pretrained`` (safetensors + JSON only)."""
        from ..backend.io import load_artifact

        cfg, state = load_artifact(directory, FORMAT, "generator", "coral pretrain-generator")
        lay = cfg["layout"]
        layout = AdapterLayout(
            lay["names"],
            [tuple(s) for s in lay["shapes"]],
            lay["layers"],
            lay["token_dim"],
            state.pop("layout.mean"),
            state.pop("layout.std"),
        )
        anchor = state.pop("anchor", None)
        config = GeneratorConfig.from_dict(cfg["generator"])
        decoder = HyperConvDecoder(config, layout)
        decoder.load_state_dict({k.removeprefix("decoder."): v for k, v in state.items()})
        return cls(config, layout, decoder, encoder, device, cfg.get("extra"), anchor)


__all__ = ["GENERATOR_PRESETS", "GeneratorConfig", "HyperConvBlock", "HyperConvDecoder", "Generator", "Stage"]
