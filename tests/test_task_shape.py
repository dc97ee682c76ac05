"""The task-shape facts of a context, each on constructed examples whose shape is known."""

from __future__ import annotations

from coral_env.env.contexts import compose_context, example_block
from coral_env.env.task_shape import TaskShape, question_pattern, split_passage
from coral_env.tasks import Example, TaskSplits

PASSAGE = " ".join(f"word{i}" for i in range(45)) + "."


def mc(question: str, choices: tuple[str, ...], prompt: str | None = None, per_choice: bool = False) -> Example:
    """A multiple-choice example; ``prompt`` is the scoring context ("Question: ...\\nAnswer:" by
    default); ``per_choice`` puts each choice into the prompt (WinoGrande-style partial scoring)."""
    prompt = f"Question: {question}\nAnswer:" if prompt is None else prompt
    contexts = tuple(question.replace("_", c) for c in choices) if per_choice else (prompt,) * len(choices)
    return Example(
        uid=question,
        question=question,
        contexts=contexts,
        continuations=tuple(f" {c}" for c in choices),
        choices=choices,
        label=0,
        answer=choices[0],
    )


def free(question: str, answer: str) -> Example:
    return Example(uid=question, question=question, contexts=(f"Question: {question}\nAnswer:",), answer=answer)


def test_passage_is_text_before_a_final_question():
    assert split_passage(f"{PASSAGE}\nis the sky blue?") == (PASSAGE, "is the sky blue?")
    assert split_passage("One. Two words here? Three?") == ("One. Two words here?", "Three?")
    with_passage = TaskShape.measure([mc(f"{PASSAGE}\nis it {i}?", ("no", "yes")) for i in range(3)])
    assert with_passage.passage and with_passage.statement() == "Task: answer a yes/no question about a passage."
    short = TaskShape.measure([mc(f"Is {i} even?", ("no", "yes")) for i in range(3)])
    assert not short.passage and short.statement() == "Task: answer a yes/no question."
    statement = TaskShape.measure([mc(f"{PASSAGE} The end {i}.", ("no", "yes")) for i in range(3)])
    assert not statement.passage  # a passage needs a question after it
    # numbers in the passage are not numbers in the question
    dated = TaskShape.measure([mc(f"In 1999 {PASSAGE}\nwas it rainy {'x' * i}?", ("no", "yes")) for i in range(3)])
    assert dated.passage and not dated.numbers


def test_continuation_blank_and_substitution_come_from_the_scoring_prompts():
    endings = [mc(f"A man walks {i}. He", ("sits.", "runs."), prompt=f"A man walks {i}. He") for i in range(3)]
    shape = TaskShape.measure(endings)
    assert shape.continuation and not shape.substitution
    assert shape.statement() == "Task: choose the most plausible ending of a text among 2 continuations."
    asked = TaskShape.measure([mc(f"A man walks {i}. What next", ("a", "b")) for i in range(3)])
    assert not asked.continuation  # "Answer:" ends the scoring prompt: answers, not endings
    blanks = [mc(f"Ann met Bob {i} times and _ smiled.", ("Ann", "Bob"), per_choice=True) for i in range(3)]
    shape = TaskShape.measure(blanks)
    assert shape.blank and shape.substitution and shape.choices_from_question
    assert shape.statement() == (
        "Task: fill the blank in a sentence with the right one of 2 options, names or words taken from the sentence."
    )
    assert not TaskShape.measure([mc(f"Who smiled {i}?", ("Ann", "Bob")) for i in range(3)]).choices_from_question


def test_a_fact_needs_most_examples():
    blanks = [mc(f"Ann met Bob and _ smiled {i}.", ("Ann", "Bob"), per_choice=True) for i in range(2)]
    plain = [mc(f"Who smiled {i}?", ("Ann", "Bob")) for i in range(3)]
    assert not TaskShape.measure(blanks + plain).blank  # 2 of 5
    assert TaskShape.measure(blanks * 2 + plain).blank  # 4 of 7


def test_answer_kinds_numbers_and_math_notation():
    def kind(examples, labeled=()):
        return TaskShape.measure(examples, labeled).answers

    assert kind([mc("What is 2 + 3?", ("5", "6"))]) == "numbers"
    assert kind([mc("Is it?", ("Yes", "no"))]) == "yes / no"
    assert kind([mc("Who?", ("Ann", "Bob"))]) == "single words"
    assert kind([mc("How?", ("use a pan", "use a pot"))]) == "short phrases"
    assert kind([mc("How?", ("put it in a hot pan for two minutes", "boil it in a pot of salted water"))]) == (
        "full sentences"
    )
    sums = [free(f"Tom has {i} apples and buys 3 more. How many apples has he now?", str(i + 3)) for i in range(3)]
    shape = TaskShape.measure(sums, sums)
    assert shape.answers == "a number" and shape.numbers and not shape.math_notation
    assert TaskShape.measure(sums, ()).answers == "free text"  # no labeled answer shown: no claim
    latex = [free(f"Find $x$ if $x^2 = {i}$.", f"\\sqrt{{{i}}}") for i in range(3)]
    shape = TaskShape.measure(latex, latex)
    assert shape.math_notation and shape.answers == "a mathematical expression or text"
    assert shape.statement().startswith("Task: solve a math problem written in LaTeX notation")
    assert "the questions use LaTeX math notation" in shape.facts()


def test_question_pattern_masks_numbers_or_finds_a_shared_opening():
    assert question_pattern([f"What is {a} + {b}?" for a, b in [(1, 2), (30, 4), (5, 66)]]) == "What is N + N?"
    lists = ["How many words are in this list: a, b?", "How many words are in this list: c?", "Why?"]
    assert question_pattern(lists) == "How many words are in this list: ..."
    assert question_pattern(["Why is the sky blue?", "Who wrote it?", "Where is Rome?"]) is None
    facts = TaskShape.measure([mc(f"What is {i} + 1?", (str(i + 1), str(i))) for i in range(3)]).facts()
    assert facts[-1] == 'most questions read "What is N + N?"'


def test_example_block_names_parts_after_the_shape_and_keeps_a_passages_question():
    examples = [mc(f"{PASSAGE * 4}\nis it true {i}?", ("no", "yes")) for i in range(3)]
    shape = TaskShape.measure(examples)
    block = example_block(examples, k=3, budget=600, shape=shape)
    assert block.count("Passage: word0") == 3 and all(f"\nQuestion: is it true {i}?\n" in block for i in range(3))
    assert len(block) <= len("Examples:\n") + 600 + 4
    endings = [mc(f"A man walks {i}. He", ("sits.", "runs."), prompt=f"A man walks {i}. He") for i in range(2)]
    block = example_block(endings, shape=TaskShape.measure(endings))
    assert block.count("Text: A man walks") == 2 and block.count("Endings: sits. | runs.") == 2


def test_context_order_examples_format_statement_facts_description():
    examples = [mc(f"Who {verb} first?", ("Ann", "Bob")) for verb in ("smiled", "left", "sang", "won")]
    splits = TaskSplits(name="t", kind="multiple_choice", support=examples, n_labeled_support=2)
    context = compose_context("A toy task.", splits)
    parts = context.split("\n\n")
    assert parts[0].startswith("Examples:\nQuestion: Who smiled first?") and "Who sang first?" not in context
    assert parts[-3] == "Answer format: multiple choice, 2 options, scored by log-likelihood."
    assert parts[-2].split("\n") == [
        "Task: answer a question by choosing the right one of 2 options (single words).",
        "Task facts: multiple choice with 2 choices; the choices are single words; "
        "very short questions (mean 3 words).",
    ]
    assert parts[-1] == "Description: A toy task."
    assert compose_context("", splits).split("\n\n")[-1].startswith("Task: answer a question")
