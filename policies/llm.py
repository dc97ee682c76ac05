"""The LLM policy: reads the task context, writes one JSON strategy (CORAL's policy agent).

Prompt: the paper's template (system + user, families described from the schema), rendered
with the model's chat template. Sampling: temperature 1.0, top-p 0.9, top-k 50 (the paper's).
The first JSON object in the reply is extracted and validated; an invalid reply is re-sampled
up to ``max_retries`` times, after which the last reply is returned as is (the environment then
scores it 0 and says why: a policy that cannot write valid JSON is not silently repaired).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from coral_env.strategies import action_from_reply, policy_prompt

OFFLINE_DEFAULT = "qwen2.5-coder-0.5b-instruct"
HUB_DEFAULT = "Qwen/Qwen2.5-0.5B-Instruct"


@dataclass
class SamplingConfig:
    """The paper's sampling settings plus bounds on the reply."""

    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 96
    max_retries: int = 3

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_p, self.top_k, self.max_new_tokens)
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")


def check_sampling(temperature: float, top_p: float, top_k: int, max_new_tokens: int) -> None:
    """``ValueError`` naming the setting and its allowed range when a sampling value is unusable
    (checked before any model loads)."""
    import math

    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0 (the paper: 1.0), got {temperature!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (the paper: 0.9), got {top_p!r}")
    if not (isinstance(top_k, int) and top_k >= 0):
        raise ValueError(f"top_k must be an int >= 0 (0 turns it off; the paper: 50), got {top_k!r}")
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")


def default_policy_model() -> str:
    """Qwen2.5-0.5B-Instruct where the Hub is reachable, else the packaged Qwen2.5-Coder-0.5B."""
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return OFFLINE_DEFAULT
    try:
        from huggingface_hub import model_info

        model_info(HUB_DEFAULT, timeout=3)
        return HUB_DEFAULT
    except Exception:  # any failure to reach the Hub means offline
        return OFFLINE_DEFAULT


class LLMPolicy:
    """A causal LM (optionally with a ReST^EM-trained PEFT adapter) as a policy.

    Args:
        model: model name for ``coral_env.backend.load_model`` or an already-loaded model.
        tokenizer: required when ``model`` is a loaded model.
        adapter: a PEFT adapter folder (ReST^EM checkpoint) to apply.
        seed: seeds the sampler (each call without its own seed advances it).
        shared_prefix: sample K replies from one prefill (False: transformers'
            ``num_return_sequences``, K prefills).
    """

    name = "llm"

    def __init__(
        self,
        model="smollm2-135m-instruct",
        tokenizer=None,
        adapter: str | None = None,
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        dtype: str = "auto",
        device: str = "cpu",
        shared_prefix: bool = True,
    ) -> None:
        if isinstance(model, str):
            from coral_env.backend import load_model

            self.model_name = model
            model, tokenizer = load_model(model, dtype=dtype, device=device)
        else:
            self.model_name = getattr(model.config, "_name_or_path", "custom")
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a loaded model")
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter)
            model.eval()
        self.model, self.tokenizer = model, tokenizer
        self.sampling = sampling or SamplingConfig()
        self.generator = torch.Generator().manual_seed(seed)
        self.seed = seed
        self.shared_prefix = shared_prefix

    def reseed(self, seed: int) -> None:
        """Restart the sampler from ``seed`` (evaluations call it per episode; see policies.base)."""
        self.generator = torch.Generator().manual_seed(seed)

    def prompt(self, context: str, task: str | None = None) -> str:
        """The chat-formatted policy prompt for a task context."""
        return self.tokenizer.apply_chat_template(
            policy_prompt(context, task), tokenize=False, add_generation_prompt=True
        )

    @torch.no_grad()
    def sample(self, context: str, task: str | None = None, n: int = 1, seed: int | None = None) -> list[str]:
        """``n`` raw replies sampled for one context (ReST^EM draws K of these).

        ``seed`` fixes this call's draws (resumable jobs derive it from their position); without
        it the policy's own generator supplies one and advances. With ``n > 1`` and
        ``shared_prefix`` the prompt is prefilled once and its KV cache expanded to ``n`` rows, so
        K replies cost one prefill plus K-row decoding instead of K prefills.
        """
        s = self.sampling
        ids = self.tokenizer(self.prompt(context, task), return_tensors="pt", add_special_tokens=False)["input_ids"].to(
            self.model.device
        )
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        torch.manual_seed(seed)
        options = dict(
            do_sample=True,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_new_tokens=s.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if n > 1 and self.shared_prefix:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            self.model(input_ids=ids[:, :-1], cache=cache, use_cache=True)
            cache.batch_repeat_interleave(n)
            rows = ids.expand(n, -1)
            out = self.model.generate(input_ids=rows, attention_mask=torch.ones_like(rows), cache=cache, **options)
        else:
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), num_return_sequences=n, **options
            )
        return self.tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)

    @staticmethod
    def to_action(reply: str) -> tuple[str, bool]:
        """(action text, valid): the extracted canonical JSON, or the raw reply if invalid
        (:func:`coral_env.strategies.parse.action_from_reply`, shared with ``reward_of``)."""
        return action_from_reply(reply)

    def act(self, observation: dict, info: dict | None = None) -> str:
        task = (info or {}).get("task")
        reply = ""
        for _ in range(self.sampling.max_retries + 1):
            reply = self.sample(observation["context"], task, n=1)[0]
            action, valid = self.to_action(reply)
            if valid:
                return action
        return reply
