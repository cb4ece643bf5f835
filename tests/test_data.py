import json

import pytest

from rayscale.config import SyntheticTaskConfig
from rayscale.data import DataError, load_problems, synthetic_splits
from rayscale.data.synthetic import solve_steps
from rayscale.prompts import format_solution, render_prompt
from rayscale.text import last_boxed, split_steps


def test_gsm8k_shared_file(shared_data):
    problems = load_problems("gsm8k", split="test")
    assert len(problems) == 1319
    rows = [json.loads(line) for line in open(shared_data / "gsm8k_test.jsonl")]
    for p, row in zip(problems, rows):
        assert p.gold_answer and p.gold_answer == row["answer"].split("####")[-1].strip().replace(",", "")
        assert p.question == row["question"] and p.gold_steps
    assert "<<16-3-4=9>>" in problems[0].gold_steps[0]  # calculator annotations kept as exact arithmetic
    assert len({p.id for p in problems}) == 1319


def test_math500_shared_file(shared_data):
    problems = load_problems("math500", split="test")
    assert len(problems) == 500
    rows = [json.loads(line) for line in open(shared_data / "math500_test.jsonl")]
    for p, row in zip(problems, rows):
        assert p.gold_answer and p.gold_answer == row["answer"].strip()
    assert problems[0].id == rows[0]["unique_id"]


def test_math_answer_falls_back_to_last_boxed(tmp_path):
    f = tmp_path / "m.jsonl"
    f.write_text(json.dumps({"problem": "p", "solution": "so \\boxed{1} then \\boxed{\\frac{1}{2}}"}) + "\n")
    assert load_problems("math", str(f))[0].gold_answer == "\\frac{1}{2}"


def test_malformed_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"question": "q", "answer": "x\\n#### 1"}\n{"question": oops}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        load_problems("gsm8k", str(f))


def test_missing_field_names_file_line_and_field(tmp_path):
    f = tmp_path / "g.jsonl"
    f.write_text('{"question": "q", "answer": "a\\n#### 3"}\n\n{"question": "q2"}\n')
    with pytest.raises(DataError, match=r"g.jsonl:3: missing or empty field 'answer'"):
        load_problems("gsm8k", str(f))


def test_generic_jsonl_field_map(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"q": "2+2?", "a": 4, "uid": "u1"}) + "\n")
    (p,) = load_problems("jsonl", str(f), field_map={"question": "q", "gold_answer": "a", "id": "uid"})
    assert (p.id, p.question, p.gold_answer) == ("u1", "2+2?", "4")


def test_synthetic_deterministic_and_disjoint():
    cfg = SyntheticTaskConfig(train_size=3000, test_size=300, seed=3)
    a, b = synthetic_splits(cfg, dev=True), synthetic_splits(cfg, dev=True)
    assert a == b
    train = {p.meta["expression"] for p in a["train"]}
    test = {p.meta["expression"] for p in a["test"]}
    dev = {p.meta["expression"] for p in a["dev"]}
    assert len(train) == 3000 and len(test) == 300 and len(dev) == 500
    assert not train & test and not dev & (train | test)
    # the dev split is drawn last: adding it (or resizing it) leaves train and test as they were
    c = synthetic_splits(SyntheticTaskConfig(train_size=3000, test_size=300, dev_size=7, seed=3), dev=True)
    assert (c["train"], c["test"], len(c["dev"])) == (a["train"], a["test"], 7)
    # ... and is only drawn when asked for: a task too small for it still serves train and test
    tiny = SyntheticTaskConfig(num_operands=2, operand_max=7, operators="+", train_size=20, test_size=5)
    assert set(synthetic_splits(tiny)) == {"train", "test"}
    with pytest.raises(ValueError, match="distinct dev problems"):
        synthetic_splits(tiny, dev=True)
    assert synthetic_splits(SyntheticTaskConfig(train_size=3000, test_size=300, seed=4)) != a


def test_synthetic_gold_steps_are_correct_arithmetic():
    for p in synthetic_splits(SyntheticTaskConfig(train_size=200, test_size=50))["train"]:
        expr = p.meta["expression"]
        assert int(p.gold_answer) == eval(expr)  # trusted, generated text: checks the generator itself
        for step in p.gold_steps:
            lhs, rhs = step.split("=")
            assert eval(lhs) == int(rhs)
        assert last_boxed(p.gold_solution) == p.gold_answer
        assert split_steps(p.gold_solution)[:-1] == list(p.gold_steps)


def test_precedence_order():
    steps, answer = solve_steps([5, 7, 3, 4], ["+", "*", "-"])
    assert steps == ["7*3=21", "5+21=26", "26-4=22"] and answer == 22


def test_synthetic_too_small_space_is_clear_error():
    with pytest.raises(ValueError, match="cannot draw"):
        synthetic_splits(SyntheticTaskConfig(num_operands=2, operand_max=2, operators="+", train_size=10, test_size=5))


def test_prompt_styles():
    from rayscale.models import build_char_tokenizer

    tok = build_char_tokenizer()
    assert render_prompt(tok, "1+2=?") == "<|user|>1+2=?<|assistant|>"
    assert "\\boxed{}" in render_prompt(tok, "1+2=?", style="boxed")
    assert format_solution(["1+2=3"], "3", "answer_is") == "1+2=3\nThe answer is 3."


def test_last_boxed_nested_and_unbalanced():
    assert last_boxed("x \\boxed{\\frac{a}{b}} y") == "\\frac{a}{b}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed 5 done") == "5"
    assert last_boxed("\\boxed{1") is None and last_boxed("none") is None
