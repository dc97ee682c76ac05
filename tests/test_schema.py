"""The strategy schema: parsing, aliases, errors, generated views, and a fuzz of untrusted input.

Long on purpose: the action contract is one surface (schema, values, parse, extract, views), and
its error messages and the Hypothesis fuzz read best side by side.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_env.strategies import (
    ENSEMBLE_METHODS,
    FAMILIES,
    FAMILY_NAMES,
    MAX_ACTION_CHARS,
    ROUTING_METHODS,
    TTS_METHODS,
    FactoredEncoding,
    LatentStrategy,
    LoRAStrategy,
    ParsedStrategy,
    StrategyValidationError,
    TTLStrategy,
    TTSStrategy,
    catalogue,
    catalogue_index,
    default_strategy,
    describe_families,
    extract_json,
    family_spec,
    json_schema,
    parse_strategy,
    policy_prompt,
    sample_strategy,
)


def parse(action):
    return parse_strategy(action).strategy


def error_of(action) -> StrategyValidationError:
    with pytest.raises(StrategyValidationError) as info:
        parse_strategy(action)
    return info.value


# ---------------------------------------------------------------------------------- the table


def test_table_pins_the_spec_ranges():
    assert FAMILY_NAMES == ("TTL", "LORA", "TTS", "Latent")
    expect = {
        ("TTL", "ttl_steps"): ("int", 1, 50, 10),
        ("TTL", "learning_rate"): ("float", 1e-7, 1e-2, 1e-4),
        ("TTL", "batch_size"): ("int", 1, 32, 4),
        ("TTL", "shuffle_data"): ("bool", None, None, True),
        ("LORA", "lambda"): ("float", 0, 1, 0.5),
        ("TTS", "num_prompt_batches"): ("int", 1, 20, 4),
        ("TTS", "method"): ("enum", None, None, "max_confidence"),
        ("Latent", "slot_steps"): ("int", 0, 20, 5),
        ("Latent", "slot_lr"): ("float", 1e-4, 1.0, 0.01),
    }
    got = {(fam.name, f.name): (f.kind, f.low, f.high, f.default) for fam in FAMILIES for f in fam.fields}
    assert got == expect
    assert family_spec("TTL").field("learning_rate").log
    assert family_spec("Latent").field("slot_lr").log
    assert set(ROUTING_METHODS) == {"avg_sim_score", "avg_prompt_embed"}
    assert set(ENSEMBLE_METHODS) == {"max_confidence", "majority_vote", "sum_logprobs"}
    assert TTS_METHODS == ROUTING_METHODS + ENSEMBLE_METHODS


def test_defaults_and_canonical():
    s = TTLStrategy()
    assert s.family == "TTL"
    assert s.canonical() == {
        "family": "TTL",
        "ttl_steps": 10,
        "learning_rate": 1e-4,
        "batch_size": 4,
        "shuffle_data": True,
    }
    assert LoRAStrategy().canonical() == {"family": "LORA", "lambda": 0.5}
    assert TTSStrategy().canonical() == {"family": "TTS", "num_prompt_batches": 4, "method": "max_confidence"}
    assert LatentStrategy().canonical() == {"family": "Latent", "slot_steps": 5, "slot_lr": 0.01}
    assert default_strategy("ttt") == TTLStrategy()
    assert TTSStrategy(method="avg_sim_score").is_routing
    assert TTSStrategy(method="sum_logprobs").is_ensemble


def test_canonical_json_is_a_stable_memo_key():
    text = TTLStrategy(ttl_steps=25, learning_rate=1e-5).canonical_json()
    assert text == ('{"batch_size":4,"family":"TTL","learning_rate":1e-05,"shuffle_data":true,"ttl_steps":25}')
    assert LoRAStrategy(lambda_=0).canonical_json() == LoRAStrategy(lambda_=-0.0).canonical_json()
    assert LoRAStrategy(lambda_=1).canonical_json() == '{"family":"LORA","lambda":1.0}'
    a = parse('{"family": "lora", "lambda": 1}')
    b = parse({"family": "LORA", "lambda": 1.0})
    assert a == b and hash(a) == hash(b) and a.canonical_json() == b.canonical_json()
    assert json.loads(TTLStrategy().to_json(indent=2))["family"] == "TTL"


def test_dataclasses_validate_and_are_frozen():
    with pytest.raises(StrategyValidationError, match="ttl_steps"):
        TTLStrategy(ttl_steps=0)
    with pytest.raises(StrategyValidationError, match="lambda"):
        LoRAStrategy(lambda_=1.5)
    with pytest.raises(StrategyValidationError, match="method"):
        TTSStrategy(method="best")
    assert TTLStrategy(ttl_steps=np.int64(7), learning_rate=np.float32(0.5) * 0 + 1e-3).ttl_steps == 7
    s = LatentStrategy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.slot_steps = 3  # type: ignore[misc]
    assert s.replace(slot_steps=0).slot_steps == 0
    with pytest.raises(StrategyValidationError):
        s.replace(slot_steps=21)


# --------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("s", catalogue() + [sample_strategy(i) for i in range(50)], ids=lambda s: s.canonical_json())
def test_round_trip(s):
    for form in (s.canonical_json(), s.canonical(), s.to_json(indent=2), s):
        parsed = parse_strategy(form)
        assert parsed.strategy == s and parsed.notes == []
    assert parse_strategy(s.canonical_json().encode()).strategy == s
    assert parse_strategy(parse_strategy(s)).strategy == s


# ---------------------------------------------------------------------------- aliases & notes


def test_aliases_are_read_and_noted():
    p = parse_strategy(
        '{"family": "TTT", "ttl_steps": 5, "learning_rate": 1e-5, "batch_size": 2, "shuffle_data": false}'
    )
    assert p.strategy == TTLStrategy(ttl_steps=5, learning_rate=1e-5, batch_size=2, shuffle_data=False)
    assert p.family == "TTL" and any("TTT" in n and "TTL" in n for n in p.notes)

    p = parse_strategy({"strategy": "SLOT", "times": 3, "learning_rate": 0.1})
    assert p.strategy == LatentStrategy(slot_steps=3, slot_lr=0.1)
    notes = " | ".join(p.notes)
    assert "'strategy' read as 'family'" in notes
    assert "alias 'times' read as 'slot_steps'" in notes
    assert "alias 'learning_rate' read as 'slot_lr'" in notes

    for name, family in [
        ("lora", "LORA"),
        ("LoRA", "LORA"),
        ("latent", "Latent"),
        ("slot", "Latent"),
        ("tts", "TTS"),
        (" ttl ", "TTL"),
    ]:
        assert parse({"family": name}).family == family
    assert parse({"family": "LORA", "lambda_": 0.25}) == LoRAStrategy(lambda_=0.25)
    p = parse_strategy({"Family": "TTS", "Method": "Majority Vote"})
    assert p.strategy.method == "majority_vote" and len(p.notes) >= 2


def test_learning_rate_alias_only_within_latent():
    e = error_of({"family": "LORA", "learning_rate": 0.1})
    assert "learning_rate" in str(e) and "lambda" in str(e)


def test_defaults_are_noted():
    p = parse_strategy('{"family": "TTL", "ttl_steps": 20}')
    assert p.strategy == TTLStrategy(ttl_steps=20)
    assert "field 'shuffle_data' missing: default true used" in p.notes
    assert "field 'learning_rate' missing: default 0.0001 used" in p.notes
    p = parse_strategy('{"family": "TTS", "method": null}')
    assert p.strategy.method == "max_confidence"
    assert any("'method' is null" in n for n in p.notes)


def test_integral_float_for_int_field_is_accepted_and_noted():
    p = parse_strategy('{"family": "Latent", "slot_steps": 3.0}')
    assert p.strategy.slot_steps == 3 and type(p.strategy.slot_steps) is int
    assert any("3.0" in n and "integer 3" in n for n in p.notes)
    e = error_of('{"family": "Latent", "slot_steps": 3.5}')
    assert "slot_steps" in str(e) and "3.5" in str(e) and "whole number" in str(e)


# ------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "action, needles",
    [
        ('{"family": "LORA", "lambda": 0.5,}', ["not valid JSON", "line 1", "column 34", "trailing"]),
        ("[1, 2]", ["[1, 2]", "array", "JSON object"]),
        ("42", ["42", "JSON object"]),
        (None, ["null", "JSON object"]),
        ("", ["empty"]),
        ('"{\\"family\\": \\"TTL\\"}"', ["JSON string", "twice"]),
        ('{"ttl_steps": 5}', ['no "family"', "belong to TTL", "TTL", "LORA", "TTS", "Latent"]),
        ('{"family": "XYZ"}', ['"XYZ"', "TTL", "LORA", "TTS", "Latent", "Allowed families"]),
        ('{"family": 3}', ["family", "3", "string"]),
        (
            '{"family": "TTL", "foo": 1}',
            ['"foo"', "ttl_steps", "learning_rate", "batch_size", "shuffle_data", "remove"],
        ),
        ('{"family": "TTL", "slot_lr": 0.1}', ['"slot_lr"', "belongs to Latent"]),
        ('{"family": "TTL", "batch_size": true}', ["batch_size", "1 to 32", "true", "boolean"]),
        ('{"family": "TTL", "ttl_steps": "3"}', ["ttl_steps", '"3"', "without quotes", "1 to 50"]),
        ('{"family": "TTL", "shuffle_data": "yes"}', ["shuffle_data", '"yes"', "true or false"]),
        ('{"family": "TTL", "shuffle_data": 1}', ["shuffle_data", "1", "true or false"]),
        ('{"family": "Latent", "slot_lr": NaN}', ["slot_lr", "NaN", "finite", "0.0001 to 1"]),
        ('{"family": "LORA", "lambda": -Infinity}', ["lambda", "-Infinity", "0 to 1"]),
        ('{"family": "LORA", "lambda": 1e999}', ["lambda", "Infinity"]),
        ('{"family": "TTL", "ttl_steps": 100}', ["ttl_steps", "100", "1 to 50", "never clipped"]),
        ('{"family": "TTL", "learning_rate": 0.5}', ["learning_rate", "0.5", "1e-7 to 0.01"]),
        ('{"family": "TTS", "num_prompt_batches": 0}', ["num_prompt_batches", "0", "1 to 20"]),
        ('{"family": "TTS", "method": "vote"}', ["method", '"vote"', *TTS_METHODS]),
        ('{"family": "TTS", "method": 3}', ["method", "3", "max_confidence"]),
        ('{"family": "Latent", "times": 3, "slot_steps": 4}', ["slot_steps", "twice", "times"]),
        ('{"family": "LORA", "lambda": 0.1, "lambda": 0.2}', ["lambda", "more than once"]),
        ('{"family": "TTL", "family": "TTS"}', ["family", "more than once"]),
        ({"family": "TTL", "strategy": "TTS"}, ["family", "more than once"]),
        ({"family": "TTL", 3: 4}, ["field names must be strings", "3"]),
        ('{"family": "TTL", "ttl_steps": ' + "9" * 5000 + "}", ["JSON"]),
        ("x" * (MAX_ACTION_CHARS + 1), [str(MAX_ACTION_CHARS), "characters"]),
        ({"family": "TTL", "note": "y" * (MAX_ACTION_CHARS + 1)}, [str(MAX_ACTION_CHARS)]),
        ("[" * 5000 + "]" * 5000, ["nested too deeply"]),
        (b"\xff\xfe", ["UTF-8"]),
        ({"family": {"family": "TTL"}}, ["top level"]),
    ],
    ids=lambda v: repr(v)[:40] if not isinstance(v, list) else "",
)
def test_error_messages(action, needles):
    message = str(error_of(action))
    for needle in needles:
        assert needle in message, (needle, message)
    assert "Fix" in message or "fix" in message


def test_error_attributes_and_multiple_problems():
    e = error_of({"family": "TTL", "ttl_steps": 100})
    assert isinstance(e, ValueError)
    assert (e.field, e.value, e.family) == ("ttl_steps", 100, "TTL")
    e = error_of({"family": "TTL", "ttl_steps": 0, "batch_size": 99, "bogus": 1})
    assert len(e.problems) == 3 and "3 problems" in str(e)
    for needle in ("ttl_steps", "batch_size", "bogus", "99"):
        assert needle in str(e)


def test_invalid_json_points_at_embedded_object():
    e = error_of('Here you go: {"family": "LORA", "lambda": 0.5}')
    assert "extract_json" in str(e) and "character 13" in str(e)


# ------------------------------------------------------------------------------- extract_json


@pytest.mark.parametrize(
    "text, expected",
    [
        ('```json\n{"family": "LORA", "lambda": 0.5}\n```', '{"family": "LORA", "lambda": 0.5}'),
        (
            'I pick TTS.\n{"family": "TTS", "method": "majority_vote"} Done.',
            '{"family": "TTS", "method": "majority_vote"}',
        ),
        ('{"family": "TTS", "method": "a } { \\" }"}', '{"family": "TTS", "method": "a } { \\" }"}'),
        ('Use the {family} key: {"a": {"b": 1}} then {"c": 2}', '{"a": {"b": 1}}'),
        ("no json here", None),
        ('{"family": "TTL", "ttl_steps": 5,}', '{"family": "TTL", "ttl_steps": 5,}'),
        ('{oops} {"family": "TTL", // comment\n}', '{"family": "TTL", // comment\n}'),
        ("{" * 3000, None),
        (b'x {"family": "LORA"}', '{"family": "LORA"}'),
        (None, None),
    ],
    ids=lambda v: repr(v)[:30],
)
def test_extract_json(text, expected):
    assert extract_json(text) == expected


def test_extract_then_parse_llm_output():
    out = 'Sure!\n```json\n{\n  "family": "TTT",\n  "ttl_steps": 25,\n  "learning_rate": 1e-5\n}\n```'
    assert parse(extract_json(out)) == TTLStrategy(ttl_steps=25, learning_rate=1e-5)


# -------------------------------------------------------------------------------- JSON schema


def _valid(schema, x) -> bool:
    """A tiny checker for the JSON Schema subset the generator emits."""
    if "oneOf" in schema:
        return sum(_valid(s, x) for s in schema["oneOf"]) == 1
    t = schema.get("type")
    if t == "object":
        if not isinstance(x, dict):
            return False
        props = schema["properties"]
        if any(k not in x for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and set(x) - set(props):
            return False
        return all(_valid(props[k], v) for k, v in x.items())
    if t == "integer" and (isinstance(x, bool) or not isinstance(x, int)):
        return False
    if t == "number" and (isinstance(x, bool) or not isinstance(x, (int, float))):
        return False
    if t == "boolean" and not isinstance(x, bool):
        return False
    if t == "string" and not isinstance(x, str):
        return False
    if "const" in schema and x != schema["const"]:
        return False
    if "enum" in schema and x not in schema["enum"]:
        return False
    if "minimum" in schema and not x >= schema["minimum"]:
        return False
    if "maximum" in schema and not x <= schema["maximum"]:
        return False
    return True


INVALID_FOR_SCHEMA = [
    {"family": "TTL", "ttl_steps": 51},
    {"family": "TTL", "ttl_steps": 5, "extra": 1},
    {"family": "LORA", "lambda": -0.1},
    {"family": "TTS", "method": "vote"},
    {"family": "Latent", "slot_lr": 2.0},
    {"family": "NOPE"},
    {"ttl_steps": 5},
    [],
]


def test_json_schema_shape_and_catalogue():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert [v["properties"]["family"]["const"] for v in schema["oneOf"]] == list(FAMILY_NAMES)
    for variant, fam in zip(schema["oneOf"], FAMILIES):
        assert variant["additionalProperties"] is False
        for f in fam.fields:
            prop = variant["properties"][f.name]
            assert prop.get("minimum") == f.low and prop.get("maximum") == f.high
            assert prop["default"] == f.default
    strict = json_schema(strict=True)
    for s in catalogue() + [sample_strategy(i) for i in range(100)]:
        assert _valid(schema, s.canonical()) and _valid(strict, s.canonical())
    assert _valid(schema, {"family": "TTL"}) and not _valid(strict, {"family": "TTL"})
    for bad in INVALID_FOR_SCHEMA:
        assert not _valid(schema, bad)
        with pytest.raises(StrategyValidationError):
            parse_strategy(bad)


def test_json_schema_with_jsonschema_if_installed():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    for s in catalogue():
        validator.validate(s.canonical())
    for bad in INVALID_FOR_SCHEMA:
        assert not validator.is_valid(bad)


# ----------------------------------------------------------------------------- prompt text


def test_describe_families_and_policy_prompt():
    text = describe_families()
    for fam in FAMILIES:
        assert f'"family": "{fam.name}"' in text and fam.title in text
        for f in fam.fields:
            assert f'"{f.name}"' in text and f"- {f.name}:" in text
    for needle in (
        "from 1 to 50",
        "from 1e-7 to 0.01",
        "from 0 to 1",
        "from 1 to 20",
        "from 0 to 20",
        "from 0.0001 to 1",
        "log scale",
        '"TTT"',
        *TTS_METHODS,
    ):
        assert needle in text, needle
    msgs = policy_prompt("Answer science questions.", "arc_challenge")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "single, structured JSON object" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert user.startswith("Task Context:\nAnswer science questions.")
    assert text in user and user.endswith("Now, provide only the JSON object for the arc_challenge dataset.")
    assert policy_prompt("ctx")[1]["content"].endswith("for this dataset.")


# ------------------------------------------------------------------------------- catalogue


def test_catalogue_without_costly_ensembles():
    small = catalogue(max_prompt_batches=4)
    assert len(small) == 25 and small == [s for s in catalogue() if getattr(s, "num_prompt_batches", 0) <= 4]
    assert {s.family for s in small} == {"TTL", "LORA", "TTS", "Latent"}


def test_catalogue():
    cat = catalogue()
    assert 24 <= len(cat) <= 40
    assert cat == catalogue()  # deterministic
    keys = [s.canonical_json() for s in cat]
    assert len(set(keys)) == len(keys)
    assert {s.family for s in cat} == set(FAMILY_NAMES)
    for method in TTS_METHODS:
        counts = {s.num_prompt_batches for s in cat if s.family == "TTS" and s.method == method}
        assert len(counts) >= 2, method
    assert LoRAStrategy(lambda_=0.0) in cat
    assert LatentStrategy(slot_steps=5, slot_lr=0.1) in cat  # the paper's example
    assert TTLStrategy(ttl_steps=25, learning_rate=1e-5) in cat
    assert TTSStrategy(num_prompt_batches=20, method="max_confidence") in cat
    latent = [s for s in cat if s.family == "Latent"]
    assert all(s.slot_steps >= 1 for s in latent)
    assert {s.slot_lr for s in latent} >= {0.01, 0.1}
    assert len({(s.ttl_steps, s.learning_rate) for s in cat if s.family == "TTL"}) >= 4
    assert [catalogue_index(s) for s in cat] == list(range(len(cat)))


# -------------------------------------------------------------------------------- factored


def test_factored_encoding():
    enc = FactoredEncoding()
    assert enc.nvec[0] == len(FAMILIES)
    assert len(enc.nvec) == 1 + sum(len(f.fields) for f in FAMILIES)
    assert all(n >= 2 for n in enc.nvec)
    mask = enc.action_masks()
    assert mask.dtype == bool and mask.shape == (sum(enc.nvec),) and mask.all()
    for s in catalogue():
        vec = enc.encode(s)
        assert vec.shape == (len(enc.nvec),) and (vec < np.asarray(enc.nvec)).all()
        assert enc.decode(vec) == s
        other = vec.copy()  # the other families' dims do not matter
        for i in range(1, len(enc.nvec)):
            if i not in enc.family_dims(s.family):
                other[i] = enc.nvec[i] - 1 - other[i]
        assert enc.decode(other) == s
        assert enc.decode(list(map(int, vec))) == s
    rng = np.random.default_rng(0)
    for _ in range(200):
        vec = [int(rng.integers(n)) for n in enc.nvec]
        parse_strategy(enc.decode(vec).canonical_json())


def test_factored_errors_and_nearest():
    enc = FactoredEncoding()
    with pytest.raises(StrategyValidationError, match="entries"):
        enc.decode([0])
    bad = [0] * len(enc.nvec)
    bad[0] = len(FAMILIES)
    with pytest.raises(StrategyValidationError, match="family"):
        enc.decode(bad)
    with pytest.raises(StrategyValidationError):
        enc.decode(None)
    off = TTLStrategy(ttl_steps=7, learning_rate=2e-4)
    with pytest.raises(ValueError, match="ttl_steps"):
        enc.encode(off)
    snapped = enc.decode(enc.encode(off, nearest=True))
    assert snapped == TTLStrategy(ttl_steps=5, learning_rate=1e-4)


# --------------------------------------------------------------------------------- sampler


def test_sampler_deterministic_and_in_range():
    assert [sample_strategy(7) for _ in range(3)] == [sample_strategy(7)] * 3
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert [sample_strategy(g1) for _ in range(20)] == [sample_strategy(g2) for _ in range(20)]
    r1, r2 = random.Random(5), random.Random(5)
    assert [sample_strategy(r1) for _ in range(20)] == [sample_strategy(r2) for _ in range(20)]
    draws = [sample_strategy(np.random.RandomState(i)) for i in range(5)]
    rng = np.random.default_rng(0)
    draws += [sample_strategy(rng) for _ in range(400)]
    assert {s.family for s in draws} == set(FAMILY_NAMES)
    for s in draws:
        assert parse_strategy(s.canonical_json()).strategy == s  # in range by construction
    lrs = [s.learning_rate for s in draws if s.family == "TTL"]
    assert min(lrs) < 1e-5 and max(lrs) > 1e-3  # log-uniform reaches both decades
    assert {s.method for s in draws if s.family == "TTS"} == set(TTS_METHODS)


def test_package_import_is_light():
    code = "import sys, coral_env.strategies; assert 'torch' not in sys.modules, 'importing the schema imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------ fuzz

FIELD_KEYS = sorted({k for fam in FAMILIES for f in fam.fields for k in (f.name, *f.aliases)})
FAMILY_KEYS = ["family", "strategy", "Family", "FAMILY"]
FAMILY_VALUES = sorted(
    {n for fam in FAMILIES for n in (fam.name, *fam.aliases)} | {"lora", "latent", "ttt", "", "NONE"}
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(FAMILY_VALUES + list(TTS_METHODS) + ["3", "1e-4", "true"])
    | st.sampled_from([0, 1, -1, 0.0, -0.0, 1e-8, 1e-7, 0.01, 1.0, 3.0, 3.5, 20, 21, 50, 51, 1e300, 2**63, True, False])
)
junk = (
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(st.text(max_size=6), scalars, max_size=2)
    | st.sampled_from([[[[]]], {"a": {"b": [1, {"c": None}]}}, [{"family": "TTL"}]])
)
keys = st.sampled_from(FIELD_KEYS) | st.text(max_size=12)
random_dicts = st.dictionaries(keys | st.sampled_from(FAMILY_KEYS), junk, max_size=5)
family_dicts = st.builds(
    lambda fam, rest: {"family": fam, **rest},
    st.sampled_from(FAMILY_VALUES) | junk,
    st.dictionaries(keys, junk, max_size=4),
)
odd_key_dicts = st.dictionaries(st.integers(-3, 3) | st.none() | keys, junk, max_size=3)


@st.composite
def near_valid(draw):
    """Right family and fields, values around the edges of each range."""
    fam = draw(st.sampled_from(FAMILIES))
    out = {draw(st.sampled_from(FAMILY_KEYS)): draw(st.sampled_from([fam.name, *fam.aliases]))}
    for f in fam.fields:
        if not draw(st.booleans()):
            continue
        if f.kind == "int":
            value = draw(st.integers(f.low - 2, f.high + 2) | st.floats(f.low - 2, f.high + 2))
        elif f.kind == "float":
            value = draw(st.floats(f.low / 2 - 0.01, f.high * 2) | st.integers(-1, 2))
        elif f.kind == "bool":
            value = draw(st.booleans() | st.sampled_from([0, 1, "true"]))
        else:
            value = draw(st.sampled_from(f.choices) | st.text(max_size=6))
        out[draw(st.sampled_from([f.name, *f.aliases]))] = value
    return out


@st.composite
def mutated_valid(draw):
    base = draw(st.sampled_from(catalogue())).canonical()
    names = [k for k in base if k != "family"]
    for name in draw(st.lists(st.sampled_from(names), max_size=len(names))):
        base[name] = draw(junk)
    if draw(st.booleans()):
        base[draw(keys | st.sampled_from(FAMILY_KEYS))] = draw(junk)
    return base


def _as_text(draw_value):
    try:
        return json.dumps(draw_value, allow_nan=True)
    except (TypeError, ValueError):
        return repr(draw_value)


@st.composite
def mutated_text(draw):
    text = draw(st.sampled_from(catalogue())).canonical_json()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 5)))
        text = text[:i] + draw(st.text(max_size=4) | st.sampled_from(list('{}[]",:'))) + text[j:]
    return text


actions = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=100),
    junk,
    random_dicts,
    family_dicts,
    odd_key_dicts,
    near_valid(),
    near_valid().map(_as_text),
    mutated_valid(),
    mutated_valid().map(_as_text),
    family_dicts.map(_as_text),
    mutated_text(),
    st.sampled_from(
        [
            "{" * 20000,
            "[" * 3000,
            "x" * 10001,
            '{"family": "TTL"' + " " * 9990 + "}",
            "1" * 5000,
            '{"family": "TTL", "ttl_steps": 1' + "0" * 4400 + "}",
        ]
    ),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(actions)
def test_fuzz_only_validation_errors(action):
    try:
        parsed = parse_strategy(action)
    except StrategyValidationError as e:
        assert str(e).strip() and not str(e).startswith("internal error"), str(e)
        return
    assert isinstance(parsed, ParsedStrategy)
    s = parsed.strategy
    assert parse_strategy(s.canonical_json()).strategy == s
    for spec in s.spec().fields:  # anything accepted is in range
        value = getattr(s, spec.attribute)
        if spec.kind in ("int", "float"):
            assert spec.low <= value <= spec.high and math.isfinite(value)
    extract_json(action)  # must not raise either


def test_readme_family_table_is_the_generated_one():
    from pathlib import Path

    from coral_env.strategies.schema_views import family_table_markdown

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = "\n".join("  " + line for line in family_table_markdown().splitlines())
    assert table in readme, "README's family table drifted; paste family_table_markdown()"


def test_plot_order_and_colours_come_from_the_table():
    from trainers.evaluation import FAMILY_COLORS, FAMILY_ORDER

    assert FAMILY_ORDER == (*FAMILY_NAMES, "invalid")
    assert all(FAMILY_COLORS[f.name] == f.color for f in FAMILIES) and "invalid" in FAMILY_COLORS
