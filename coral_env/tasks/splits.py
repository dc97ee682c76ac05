"""Deterministic, disjoint train / support / validation / test splits of a task.

The order of examples is a seeded hash of their uid, so a split depends only on the seed and
the set of examples, not on file order or the Python version.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence

from coral_env.tasks.base import Example, SplitSizes, TaskKind, TaskSplits
from coral_env.tasks.errors import SplitTooSmallError
from coral_env.tasks.loading import Source, load_examples
from coral_env.tasks.registry import TaskSpec, get_task

N_LABELED_SUPPORT = 20

PRESET_SPLIT_SIZES: dict[str, SplitSizes] = {
    "tiny": SplitSizes(support=16, validation=16, test=16, max_train=64),
    # cpu validation 300: at 100 questions a binary reward pays for noise (benchmarks/landscape.md)
    "cpu": SplitSizes(support=64, validation=300, test=300, max_train=2000),
    "paper": SplitSizes(support=128, validation=200, test=1000, max_train=5000),
}
"""The one set of split sizes per scale preset: every stage (collection, generator prompts, CVAE
data, the env, ``coral eval``, the benchmarks) splits a task with these, so a row that one stage
trains on is never another stage's validation or test row."""

_SPLITS = ("train", "support", "validation", "test")


def preset_split_sizes(preset: str) -> SplitSizes:
    """The split sizes every stage uses at ``preset`` (``PRESET_SPLIT_SIZES``)."""
    if preset not in PRESET_SPLIT_SIZES:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_SPLIT_SIZES)}")
    return PRESET_SPLIT_SIZES[preset]


def split_fingerprint(splits: TaskSplits, seed: int, sizes: SplitSizes) -> dict:
    """What identifies a task's splits: the split seed, the sizes, and per split the number of
    rows and a sha256 of their row ids (in split order). Two stages agree on a task's splits
    exactly when their fingerprints are equal.

    >>> from coral_env.tasks import load_task
    >>> a = split_fingerprint(load_task("syn_add", seed=0), 0, SplitSizes())
    >>> a == split_fingerprint(load_task("syn_add", seed=0), 0, SplitSizes())
    True
    >>> a["row_ids"]["test"] == split_fingerprint(load_task("syn_add", seed=1), 1, SplitSizes())["row_ids"]["test"]
    False
    """
    row_ids, counts = {}, {}
    for name in _SPLITS:
        uids = [ex.uid for ex in splits.split(name)]
        row_ids[name] = hashlib.sha256("\x00".join(uids).encode()).hexdigest()[:16]
        counts[name] = len(uids)
    return {"split_seed": int(seed), "sizes": dataclasses.asdict(sizes), "counts": counts, "row_ids": row_ids}


def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: the key for duplicate text."""
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


_cached_normalize = functools.lru_cache(maxsize=1 << 17)(normalize_text)  # repeat loads


def _text_key(example: Example) -> str:
    return _cached_normalize(example.question or (example.contexts[0] if example.contexts else ""))


def _seeded_order(examples: Iterable[Example], seed: int) -> list[Example]:
    def key(ex: Example) -> bytes:
        return hashlib.sha256(f"{seed}\x00{ex.uid}".encode()).digest()

    return sorted(examples, key=key)


class _Deduper:
    """Drops examples whose uid or normalised text was already seen (first one wins)."""

    def __init__(self) -> None:
        self.uids: set[str] = set()
        self.texts: set[str] = set()
        self.dropped = 0

    def __call__(self, examples: Iterable[Example]) -> list[Example]:
        kept = []
        for ex in examples:
            text = _text_key(ex)
            if ex.uid in self.uids or text in self.texts:
                self.dropped += 1
                continue
            self.uids.add(ex.uid)
            self.texts.add(text)
            kept.append(ex)
        return kept


def _fit_sizes(wanted: dict[str, int], available: int) -> dict[str, int]:
    # Train already gets only what is left; here the fixed-size splits shrink proportionally.
    total = sum(wanted.values())
    if total <= available:
        return dict(wanted)
    scaled = {k: (v * available) // total for k, v in wanted.items()}
    for k in sorted(wanted, key=lambda k: -wanted[k]):  # hand leftovers to the largest asks
        if sum(scaled.values()) < available and scaled[k] < wanted[k]:
            scaled[k] += 1
    return scaled


def split_examples(
    name: str,
    kind: TaskKind,
    pools: Mapping[str, Sequence[Example]],
    *,
    seed: int = 0,
    sizes: SplitSizes = SplitSizes(),
) -> TaskSplits:
    """Deduplicate and split a task's examples (``pools``: source split name -> examples).

    Test comes from the source "test" split (in file order) when there is one beside other data; otherwise it
    is carved, like validation and support, from the pooled rows. Train gets what is left
    (capped by ``sizes.max_train``). Too few rows shrink train first, then the other splits
    proportionally with a warning; ``SplitTooSmallError`` if validation or test would be empty.
    """
    dedupe = _Deduper()
    own_test = bool(pools.get("test")) and any(pools.get(s) for s in pools if s != "test")
    if own_test:
        # File order, like lm-eval's --limit: the test split is fixed, so "first N" is comparable.
        test_pool = dedupe(pools["test"])
        rest = dedupe(ex for s in ("train", "validation") for ex in pools.get(s, ()))
    else:
        test_pool = []
        rest = dedupe(ex for s in ("train", "validation", "test") for ex in pools.get(s, ()))
    rest = _seeded_order(rest, seed)

    wanted = {"validation": sizes.validation, "support": sizes.support}
    if not own_test:
        wanted = {"test": sizes.test, **wanted}
    got = _fit_sizes(wanted, len(rest))
    n_test = min(sizes.test, len(test_pool)) if own_test else got["test"]
    for split_name, requested, actual in (
        ("validation", sizes.validation, got["validation"]),
        ("test", sizes.test, n_test),
    ):
        if requested > 0 and actual == 0:
            raise SplitTooSmallError(
                f"task {name!r}: the {split_name} split would be empty "
                f"({len(rest) + len(test_pool)} distinct examples after removing "
                f"{dedupe.dropped} duplicates); supply more data or smaller SplitSizes"
            )
    if got != wanted:
        warnings.warn(
            f"task {name!r} has only {len(rest)} distinct examples to carve "
            f"{', '.join(f'{k}={v}' for k, v in wanted.items())} from; using "
            f"{', '.join(f'{k}={v}' for k, v in got.items())} and an empty train split",
            stacklevel=2,
        )
    carved: dict[str, list[Example]] = {}
    start = 0
    for split_name, n in got.items():
        carved[split_name] = rest[start : start + n]
        start += n
    train = rest[start:]
    if sizes.max_train is not None:
        train = train[: sizes.max_train]
    test = test_pool[: sizes.test] if own_test else carved["test"]
    support = carved["support"]
    return TaskSplits(
        name=name,
        kind=kind,
        train=train,
        support=support,
        validation=carved["validation"],
        test=test,
        n_labeled_support=min(N_LABELED_SUPPORT, len(support)),
    )


def load_task(
    name: str | TaskSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    sizes: SplitSizes = SplitSizes(),
    source: Source = "local",
) -> TaskSplits:
    """Load a registered task and split it deterministically from ``seed``.

    ``data_dir`` defaults to ``resolve_data_dir()``; ``source="hub"`` reads the Hugging Face
    Hub instead (needs network; never the default). Same arguments -> identical splits.
    """
    spec = get_task(name)
    pools = load_examples(spec, data_dir, source=source)
    return split_examples(spec.name, spec.kind, pools, seed=seed, sizes=sizes)
