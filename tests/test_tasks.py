"""Tests of the tasks layer: registry, loading, lm-eval prompt formats, splits, answers, user tasks.

Long on purpose: it covers the whole tasks layer (every benchmark format, splits, answers, user
tasks) with shared fixtures.

Uses the real offline data in ../shared/datasets (found through resolve_data_dir); never the
network.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from coral_env.tasks import (
    IN_DOMAIN,
    OUT_OF_DOMAIN,
    DataDirNotFoundError,
    Example,
    MalformedRowError,
    SplitSizes,
    SplitTooSmallError,
    TaskDataNotFoundError,
    UnknownTaskError,
    UserTaskConfig,
    UserTaskConfigError,
    answers_match,
    build_generation_prompt,
    build_requests,
    extract_boxed,
    extract_gsm8k_answer,
    get_task,
    list_tasks,
    load_examples,
    load_task,
    loading,
    normalize_math_answer,
    normalize_text,
    register_user_task,
    resolve_data_dir,
    split_examples,
    stop_sequences,
    unregister_task,
)

LOCAL_TASKS = [
    "arc_challenge",
    "arc_easy",
    "hellaswag",
    "boolq",
    "piqa",
    "winogrande",
    "gsm8k",
    "math",
    "social_i_qa",
]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    try:
        return resolve_data_dir()
    except DataDirNotFoundError as exc:
        pytest.skip(f"offline benchmark data not found, set CORAL_DATA_DIR: {exc}")


def _check_example(ex: Example, kind: str) -> None:
    assert ex.uid and ex.question.strip()
    if kind == "multiple_choice":
        assert len(ex.contexts) == len(ex.continuations) == len(ex.choices) >= 2
        assert 0 <= ex.label < len(ex.choices)
        assert ex.answer == ex.choices[ex.label]
        assert all(c.startswith(" ") for c in ex.continuations)
    else:
        assert len(ex.contexts) == 1 and not ex.continuations and ex.label == -1
        assert ex.answer != ""


# ---- registry --------------------------------------------------------------------------------


def test_registry_has_the_twelve_paper_tasks() -> None:
    assert IN_DOMAIN == ("arc_challenge", "arc_easy", "hellaswag", "boolq", "piqa", "winogrande")
    assert OUT_OF_DOMAIN == ("gsm8k", "math", "divlogiceval", "social_i_qa", "codemmlu", "jama")
    assert list_tasks("in") == list(IN_DOMAIN)
    assert set(list_tasks("out")) == set(OUT_OF_DOMAIN)
    assert len(list_tasks("synthetic")) >= 5
    assert all(n.startswith(("syn_", "ctl_")) for n in list_tasks("synthetic"))
    assert get_task("math").local_dir == "math500"
    assert get_task("math").hf_id == "HuggingFaceH4/MATH-500"
    assert get_task("ARC_Easy").name == "arc_easy"
    with pytest.raises(ValueError, match="domain"):
        list_tasks("elsewhere")  # type: ignore[arg-type]


def test_tasks_layer_imports_no_models_or_network_libraries() -> None:
    code = (
        "import sys, coral_env.tasks as t; t.load_task('syn_add');"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


def test_unknown_task_error_lists_names_and_suggests() -> None:
    with pytest.raises(UnknownTaskError) as info:
        get_task("arc_easi")
    message = str(info.value)
    assert isinstance(info.value, KeyError)
    assert "Did you mean 'arc_easy'?" in message
    for name in list_tasks():
        assert name in message
    assert not message.startswith("'")  # not KeyError's quoted repr


# ---- loading and lm-eval formats -------------------------------------------------------------


@pytest.mark.parametrize("name", LOCAL_TASKS)
def test_every_local_task_loads_and_converts(data_dir: Path, name: str) -> None:
    spec = get_task(name)
    pools = load_examples(name, data_dir)
    assert set(pools) == set(spec.local_splits)
    for examples in pools.values():
        assert examples
        for ex in examples:
            _check_example(ex, spec.kind)


def _first(name: str, split: str, data_dir: Path) -> Example:
    return load_examples(name, data_dir)[split][0]


def test_arc_easy_prompt_matches_lm_eval(data_dir: Path) -> None:
    ex = _first("arc_easy", "train", data_dir)
    q = "Which factor will most likely cause a person to develop a fever?"
    assert ex.contexts[0] == f"Question: {q}\nAnswer:"
    assert ex.continuations[1] == " a bacterial population in the bloodstream"
    assert ex.label == 1 and ex.question == q
    assert build_requests(ex) == list(zip(ex.contexts, ex.continuations))


def test_boolq_prompt_matches_lm_eval(data_dir: Path) -> None:
    ex = _first("boolq", "validation", data_dir)
    row = json.loads((data_dir / "boolq" / "validation.jsonl").open().readline())
    assert ex.contexts[0] == f"{row['passage']}\nQuestion: {row['question']}?\nAnswer:"
    assert ex.continuations == (" no", " yes")
    assert ex.label == 0  # answer false
    assert ex.question.endswith(f"{row['question']}?") and "Answer:" not in ex.question


def test_winogrande_partial_scoring_matches_lm_eval(data_dir: Path) -> None:
    ex = _first("winogrande", "validation", data_dir)
    assert ex.contexts == (
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    )
    assert ex.continuations == (" always got the easier cases.",) * 2
    assert ex.label == 1 and ex.choices == ("Sarah", "Maria")


def test_hellaswag_prompt_matches_lm_eval(data_dir: Path) -> None:
    pools = load_examples("hellaswag", data_dir)["validation"]
    first, second = pools[0], pools[1]
    # lm-eval: activity_label + ": " + ctx_a + " " + ctx_b.capitalize(), then preprocess.
    assert first.contexts[0] == "Roof shingle removal: A man is sitting on a roof. He"
    assert first.continuations[3] == " starts pulling up roofing on a roof."
    assert first.label == 3
    assert second.contexts[0] == (
        "Clean and jerk: A lady walks to a barbell. She bends down and grabs the pole. The lady"
    )
    texts = [c for ex in pools for c in (*ex.contexts, *ex.continuations)]
    assert not any(re.search(r"\[.*?\]", t) for t in texts)  # lone "[" survive, as in lm-eval
    assert all("  " not in ex.contexts[0] for ex in pools)


def test_hellaswag_preprocess_and_hub_schema() -> None:
    spec = get_task("hellaswag")
    row = {
        "activity_label": "Home",
        "ctx_a": "[header] How to X [title] Do Y.",
        "ctx_b": "",
        "endings": ["[step] Then  Z.", "W."],
        "label": "0",
    }
    ex = spec.convert(row, "u")
    assert ex.contexts[0] == "Home: How to X. Do Y."
    # lm-eval does not strip after removing a leading tag: its continuation keeps two spaces.
    assert ex.continuations == ("  Then Z.", " W.")


def test_other_formats_match_lm_eval(data_dir: Path) -> None:
    piqa = _first("piqa", "validation", data_dir)
    goal = "How do I ready a guinea pig cage for it's new occupants?"
    assert piqa.contexts[0] == f"Question: {goal}\nAnswer:"
    siqa = _first("social_i_qa", "validation", data_dir)
    assert siqa.contexts[0] == (
        "Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do before this?\nA:"
    )
    assert siqa.label == 2 and siqa.continuations[2] == " Find somewhere to go"
    gsm = _first("gsm8k", "test", data_dir)
    assert gsm.contexts[0].startswith("Question: Janet’s ducks")
    assert gsm.contexts[0].endswith("\nAnswer:")
    assert gsm.answer == "18"
    assert build_generation_prompt(gsm) == gsm.contexts[0]
    math = _first("math", "test", data_dir)
    assert math.contexts[0] == "Problem: If $2^8=4^x$, what is the value of $x$?\nAnswer:"
    assert math.answer == "4"
    assert stop_sequences("gsm8k") == ["Question:", "\n\n"]
    assert stop_sequences("math") == ["Problem:"]
    assert stop_sequences("arc_easy") == []


class FakeChatTokenizer:
    """Records the conversation and renders a ChatML-like string."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def apply_chat_template(self, conversation, tokenize=True, add_generation_prompt=False):
        self.calls.append({"tokenize": tokenize, "add_generation_prompt": add_generation_prompt})
        (turn,) = conversation
        return f"<|user|>\n{turn['content']}\n<|assistant|>\n"


def test_chat_style_requests(data_dir: Path) -> None:
    ex = _first("arc_easy", "train", data_dir)
    tok = FakeChatTokenizer()
    pairs = build_requests(ex, "chat", tok, task="arc_easy")
    assert [c for _, c in pairs] == list(ex.choices)
    context = pairs[0][0]
    assert all(p[0] == context for p in pairs)
    assert ex.question in context and all(f"- {c}" in context for c in ex.choices)
    assert tok.calls[0] == {"tokenize": False, "add_generation_prompt": True}
    gsm = _first("gsm8k", "test", data_dir)
    prompt = build_generation_prompt(gsm, "chat", tok, task="gsm8k")
    assert gsm.question in prompt and "The answer is" in prompt
    with pytest.raises(ValueError, match="tokenizer"):
        build_requests(ex, "chat")
    with pytest.raises(ValueError, match="style"):
        build_requests(ex, "fancy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="generative"):
        build_requests(gsm)


def test_lettered_tasks_load_from_user_supplied_jsonl(tmp_path: Path) -> None:
    rows = [
        {
            "case": f"A patient number {i}.",
            "question": "Diagnosis?",
            "opa": "flu",
            "opb": "cold",
            "opc": "measles",
            "opd": "none",
            "answer_idx": "C",
        }
        for i in range(12)
    ]
    (tmp_path / "jama").mkdir()
    (tmp_path / "jama" / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    test = load_examples("jama", tmp_path)["test"]
    assert len(test) == 12 and test[0].label == 2 and test[0].answer == "measles"
    assert test[0].contexts[0] == (
        "Question: A patient number 0.\nDiagnosis?\nA. flu\nB. cold\nC. measles\nD. none\nAnswer:"
    )
    code = get_task("codemmlu").convert(
        {"task_id": "t1", "question": "What does len([]) return?", "choices": ["0", "1", "None"], "answer": "A"}, "x"
    )
    assert code.uid == "t1" and code.label == 0 and code.continuations[0] == " 0"
    splits = load_task("jama", tmp_path, sizes=SplitSizes(support=2, validation=2, test=4))
    assert (len(splits.test), len(splits.validation), len(splits.support)) == (4, 2, 2)


def test_missing_task_data_names_expected_path_and_hub_id(tmp_path: Path) -> None:
    with pytest.raises(TaskDataNotFoundError) as info:
        load_examples("codemmlu", tmp_path)
    assert str(tmp_path / "codemmlu" / "test.jsonl") in str(info.value)
    assert "Fsoft-AIC/CodeMMLU" in str(info.value) and "source='hub'" in str(info.value)
    with pytest.raises(TaskDataNotFoundError):
        load_examples("jama", source="hub")  # no public Hub copy; fails before any network


def test_hub_is_used_only_on_request(data_dir: Path, monkeypatch) -> None:
    calls: list[tuple] = []
    rows = [{"goal": f"goal {i}", "sol1": "a", "sol2": "b", "label": i % 2} for i in range(30)]

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return rows

    fake_datasets = types.SimpleNamespace(load_dataset=fake_load_dataset)
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets)
    load_task("piqa", data_dir)
    assert calls == []  # local by default: the Hub is never contacted
    loading.clear_caches()
    pools = load_examples("piqa", source="hub")
    assert calls == [("ybisk/piqa", None, "validation")]
    assert len(pools["validation"]) == 30 and pools["validation"][1].label == 1
    rows.append({"goal": "no solutions"})
    loading.clear_caches()
    with pytest.raises(MalformedRowError, match=r"hub:ybisk/piqa/validation, line 31: .*'sol1'"):
        load_examples("piqa", source="hub")
    loading.clear_caches()


def test_missing_data_dir_lists_searched_paths(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CORAL_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    fake_repo_dir = tmp_path / "repo" / "shared" / "datasets"
    monkeypatch.setattr(loading, "_REPO_DATA_DIR", fake_repo_dir)
    with pytest.raises(DataDirNotFoundError) as info:
        resolve_data_dir()
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert str(tmp_path.parent / "shared" / "datasets") in message
    assert str(fake_repo_dir) in message
    assert "CORAL_DATA_DIR" in message and "--data-dir" in message and "source='hub'" in message
    with pytest.raises(DataDirNotFoundError, match="nowhere"):
        resolve_data_dir(tmp_path / "nowhere")
    monkeypatch.setenv("CORAL_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path.resolve()


def test_malformed_jsonl_names_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "boolq"
    folder.mkdir()
    good = {"question": "is it", "passage": "It is.", "answer": True}
    path = folder / "validation.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + '{"question": "broken"\n')
    with pytest.raises(MalformedRowError) as info:
        load_examples("boolq", tmp_path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)
    assert "bad JSON" in str(info.value) and isinstance(info.value, ValueError)
    path.write_text(json.dumps(good) + "\n" + json.dumps({"question": "q", "answer": False}) + "\n")
    with pytest.raises(MalformedRowError) as info:
        load_examples("boolq", tmp_path)
    assert info.value.line == 2 and "'passage'" in str(info.value)


def test_rows_are_cached_per_file(data_dir: Path) -> None:
    first = load_examples("piqa", data_dir)["validation"]
    assert load_examples("piqa", data_dir)["validation"] is first


# ---- splits ----------------------------------------------------------------------------------


def _assert_disjoint(splits) -> None:
    parts = [splits.train, splits.support, splits.validation, splits.test]
    uids = [ex.uid for part in parts for ex in part]
    texts = [normalize_text(ex.question) for part in parts for ex in part]
    assert len(uids) == len(set(uids))
    assert len(texts) == len(set(texts))


@pytest.mark.parametrize("name", ["arc_challenge", "boolq", "gsm8k", "syn_add"])
def test_splits_are_deterministic_and_disjoint(data_dir: Path, name: str) -> None:
    a = load_task(name, data_dir, seed=0)
    b = load_task(name, data_dir, seed=0)
    c = load_task(name, data_dir, seed=1)
    for part in ("train", "support", "validation", "test"):
        assert [e.uid for e in a.split(part)] == [e.uid for e in b.split(part)]
    # A source test split is fixed and kept in file order (comparable with lm-eval --limit);
    # carved splits move with the seed.
    pools = load_examples(name, data_dir)
    own_test = bool(pools.get("test")) and any(pools[s] for s in pools if s != "test")
    assert ([e.uid for e in a.test] == [e.uid for e in c.test]) == own_test
    assert [e.uid for e in a.validation] != [e.uid for e in c.validation]
    for splits in (a, c):
        _assert_disjoint(splits)
        assert (len(splits.support), len(splits.validation), len(splits.test)) == (64, 100, 300)
        assert splits.n_labeled_support == 20


def test_own_test_split_is_used_and_duplicates_do_not_leak(data_dir: Path) -> None:
    splits = load_task("arc_easy", data_dir, seed=3)
    test_uids = {e.uid for e in load_examples("arc_easy", data_dir)["test"]}
    assert all(e.uid in test_uids for e in splits.test)
    assert not any(e.uid in test_uids for e in splits.train + splits.validation + splits.support)
    # The source has the same question text in its train and test files; none may cross.
    test_texts = {normalize_text(e.question) for e in splits.test}
    assert not any(normalize_text(e.question) in test_texts for e in splits.train)


def _mc(uid: str, text: str) -> Example:
    return Example(uid, text, ("c", "c"), (" a", " b"), ("a", "b"), 0, "a")


def test_split_examples_dedupes_and_reports_small_tasks() -> None:
    pools = {
        "train": [_mc(f"tr{i}", f"question {i}") for i in range(40)],
        "test": [_mc("te0", "Question 3!"), _mc("te1", "another"), _mc("te1", "dup uid")],
    }
    splits = split_examples("t", "multiple_choice", pools, sizes=SplitSizes(2, 5, 10))
    assert [e.uid for e in splits.test] in (["te0", "te1"], ["te1", "te0"])
    assert "tr3" not in {e.uid for e in splits.train + splits.support + splits.validation}
    assert len(splits.train) == 39 - 7
    many = {"validation": [_mc(str(i), f"q{i}") for i in range(50)]}
    with pytest.warns(UserWarning, match="only 50 distinct"):
        small = split_examples("t", "multiple_choice", many)
    assert small.train == [] and small.test and small.validation and small.support
    _assert_disjoint(small)
    with pytest.raises(SplitTooSmallError, match="empty"):
        split_examples("t", "multiple_choice", {"validation": [_mc("1", "q")]})
    capped = split_examples("t", "multiple_choice", many, sizes=SplitSizes(1, 1, 1, max_train=3))
    assert len(capped.train) == 3


# ---- synthetic tasks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_tasks("synthetic"))
def test_synthetic_tasks_are_valid_and_recoverable(name: str) -> None:
    spec = get_task(name)
    pools = load_examples(name)
    examples = [ex for part in pools.values() for ex in part]
    assert len(examples) >= 1000
    assert len({normalize_text(e.question) for e in examples}) == len(examples)
    for ex in examples:
        _check_example(ex, spec.kind)
        assert ex.contexts[0] == f"Question: {ex.question}\nAnswer:"
        if spec.kind == "generative":
            assert extract_gsm8k_answer(f" {ex.answer}") == ex.answer
            assert answers_match(spec.answer_type, f" {ex.answer}\n", ex.answer)
    assert spec.generate is not None and spec.generate() == spec.generate()  # fixed-seed rows


def test_synthetic_answers_are_correct() -> None:
    for ex in load_examples("syn_add")["train"][:200]:
        a, b = map(int, re.findall(r"\d+", ex.question))
        assert ex.answer == str(a + b)
    for ex in load_examples("syn_compare")["train"][:200]:
        assert int(ex.answer) == max(map(int, re.findall(r"\d+", ex.question)))
    for ex in load_examples("syn_parity")["train"][:200]:
        n = int(re.findall(r"\d+", ex.question)[0])
        assert ex.answer == ("yes" if n % 2 == 0 else "no")
    for ex in load_examples("syn_count")["train"][:200]:
        assert int(ex.answer) == len(ex.question.split(":")[1].split(","))


# ---- answer extraction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
        ("#### 1,234", "1234"),
        ("So the answer is $1,234.50.", "1234.5"),
        ("The answer is 18.0", "18"),
        ("first 3 apples, then 7 pears, so 10.", "10"),
        ("#### 72\n\nQuestion: what is 5?", "72"),
        ("The answer is -5.", "-5"),
        ("no digits here", None),
    ],
)
def test_extract_gsm8k_answer(text: str, expected: str | None) -> None:
    assert extract_gsm8k_answer(text) == expected


def test_extract_boxed_handles_nesting() -> None:
    assert extract_boxed(r"so $\boxed{\frac{1}{2}}$.") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{1} then \boxed{\sqrt{x^{2}+1}}") == r"\sqrt{x^{2}+1}"
    assert extract_boxed(r"\fbox{5}") == "5"
    assert extract_boxed(r"$\boxed 7$") == "7"
    assert extract_boxed(r"\boxed{\frac{1}{2}") is None
    assert extract_boxed("nothing") is None


@pytest.mark.parametrize(
    "raw, expected",
    [
        (r"\dfrac{1}{2}", r"\frac{1}{2}"),
        (r"\tfrac12", r"\frac{1}{2}"),
        ("1/2", r"\frac{1}{2}"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"90^\circ", "90"),
        (r"\$18.90", "18.9"),
        (r"10\text{ cm}", "10"),
        (r"864 \mbox{ inches}^2", "864"),
        ("x = 5", "5"),
        (r"10,\!080", "10080"),
        (r"\text{Evelyn}", "Evelyn"),
        (".35", "0.35"),
        ("5.", "5"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix}1\\2\end{pmatrix}"),
    ],
)
def test_normalize_math_answer(raw: str, expected: str) -> None:
    assert normalize_math_answer(raw) == expected


def test_answers_match() -> None:
    assert answers_match("gsm8k", "9 * 2 = 18\n#### 18", "18")
    assert answers_match("number", "The answer is 1,000.", "1000")
    assert not answers_match("number", "#### 17", "18")
    assert not answers_match("number", "I do not know", "18")
    assert answers_match("math", r"Thus $x=\boxed{\dfrac{1}{2}}$.", r"\frac{1}{2}")
    minerva = "Final Answer: The final answer is $24$. I hope it is correct."
    assert answers_match("math", minerva, "24")
    assert not answers_match("math", r"\boxed{3}", "4")
    assert answers_match("text", "Paris\nand more", "paris")
    with pytest.raises(ValueError, match="answer_type"):
        answers_match("poetry", "x", "x")


# ---- user tasks ------------------------------------------------------------------------------


@pytest.fixture()
def user_file(tmp_path: Path) -> Path:
    rows = [
        {"id": f"r{i}", "q": f"What is {i} squared?", "opts": [str(i * i), str(i + 1)], "gold": "A", "num": i * i}
        for i in range(40)
    ]
    path = tmp_path / "quiz.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    yield path
    for name in ("my_quiz", "my_quiz_gen"):
        unregister_task(name)


def test_user_task_config_round_trip_and_load(user_file: Path, tmp_path: Path) -> None:
    config = UserTaskConfig(
        name="my_quiz",
        path="quiz.jsonl",
        question_field="q",
        choices_field="opts",
        label_field="gold",
        template="Quiz: {q}\nAnswer:",
    )
    config_path = tmp_path / "my_quiz.json"
    config.to_json(config_path)
    loaded = UserTaskConfig.from_json(config_path)
    assert loaded.path == str(tmp_path / "quiz.jsonl")
    assert UserTaskConfig.from_dict(config.to_dict()) == config
    spec = register_user_task(loaded)
    assert spec.domain == "user" and "my_quiz" in list_tasks("user")
    splits = load_task("my_quiz", sizes=SplitSizes(support=4, validation=6, test=10))
    ex = splits.test[0]
    assert ex.contexts[0] == f"Quiz: {ex.question}\nAnswer:" and ex.label == 0
    assert ex.uid.startswith("r")
    _assert_disjoint(splits)
    with pytest.raises(UserTaskConfigError, match="overwrite"):
        register_user_task(loaded)
    gen = UserTaskConfig(
        name="my_quiz_gen",
        path=str(user_file),
        kind="generative",
        question_field="q",
        answer_field="num",
        answer_type="number",
    )
    gen_ex = load_examples(register_user_task(gen))["train"][3]
    assert gen_ex.answer == "9" and gen_ex.contexts[0] == "Question: What is 3 squared?\nAnswer:"


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"kind": "mc"}, "kind"),
        ({"choice_fields": ["a", "b"]}, "exactly one of choices_field"),
        ({"choices_field": None}, "exactly one of choices_field"),
        ({"name": "My Quiz"}, "name"),
        ({"template": "{q.__class__}"}, "not allowed"),
        ({"template": "{0}"}, "not allowed"),
        ({"template": "{q"}, "template"),
        ({"label_base": 2}, "label_base"),
        ({"colour": "red"}, "unknown config field"),
    ],
)
def test_user_task_config_errors(changes: dict, fragment: str, user_file: Path) -> None:
    data = {
        "name": "my_quiz",
        "path": str(user_file),
        "question_field": "q",
        "choices_field": "opts",
        "label_field": "gold",
        **changes,
    }
    with pytest.raises(UserTaskConfigError, match=re.escape(fragment)):
        UserTaskConfig.from_dict(data)


def test_user_task_registration_errors(user_file: Path, tmp_path: Path) -> None:
    with pytest.raises(UserTaskConfigError, match="built-in"):
        register_user_task(UserTaskConfig(name="boolq", path=str(user_file), choices_field="opts"))
    with pytest.raises(UserTaskConfigError, match="is not a file"):
        register_user_task(UserTaskConfig(name="my_quiz", path=str(tmp_path / "no.jsonl"), choices_field="opts"))
    with pytest.raises(UserTaskConfigError, match="missing required field 'path'"):
        UserTaskConfig.from_dict({"name": "my_quiz"})
    bad_row = UserTaskConfig(
        name="my_quiz", path=str(user_file), question_field="missing", choices_field="opts", label_field="gold"
    )
    with pytest.raises(UserTaskConfigError, match="question_field 'missing' does not match the data"):
        register_user_task(bad_row)  # the first row is read at registration
    rows = user_file.read_text().splitlines()
    user_file.write_text("\n".join(rows[:3] + ['{"id": "r99", "opts": ["1", "2"], "gold": "A"}'] + rows[3:]))
    register_user_task(
        UserTaskConfig(
            name="my_quiz", path=str(user_file), question_field="q", choices_field="opts", label_field="gold"
        )
    )
    with pytest.raises(MalformedRowError, match="line 4.*'q'"):  # a later bad row: file and line
        load_examples("my_quiz")
