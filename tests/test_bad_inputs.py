"""Bad inputs a user makes, answered before anything starts: what is wrong, with which key or file and line, and
what to do; exit status 2, never a traceback, with and without --dry-run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rayscale.cli", "train", "tracking.wandb=false", *args],
                          capture_output=True, text=True, timeout=300)


def _refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "configuration valid" not in r.stdout
    for w in words:
        assert w in r.stderr, (w, r.stderr)


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_model_path_that_does_not_exist(tmp_path, dry_run):
    _refused(_train(f"model.path={tmp_path}/nonexistent", f"tracking.run_dir={tmp_path}/run",
                    *(["--dry-run"] if dry_run else [])), "model.path=", "nonexistent: no such directory")


def test_a_model_directory_without_a_tokenizer_or_weights(tmp_path, tiny_model_dir):
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_model_dir}/{f}", no_tok / f)
    _refused(_train(f"model.path={no_tok}", f"tracking.run_dir={tmp_path}/run"), "no tokenizer", "save_pretrained")
    (no_tok / "model.safetensors").unlink()
    _refused(_train(f"model.path={no_tok}", "--dry-run"), "no weights")
    _refused(_train("teacher.backend=local", f"teacher.local.model_path={tmp_path}", "--dry-run"),
             "teacher.local.model_path=", "no config.json", "rayscale model")


def test_a_data_path_that_does_not_exist(tmp_path):
    _refused(_train("data.source=gsm8k", f"data.path={tmp_path}/gsm8k.jsonl", "--dry-run"),
             "gsm8k.jsonl: no such file")


def test_a_gsm8k_row_without_its_final_answer_line(tmp_path, shared_data):
    rows = [json.loads(line) for line in (shared_data / "gsm8k_test.jsonl").read_text().splitlines()[:3]]
    rows[1]["answer"] = rows[1]["answer"].replace("####", "")
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _refused(_train("data.source=gsm8k", f"data.path={bad}", "--dry-run"), f"{bad}:2", "'####")


# ------------------------------------------------------------------------------------------------ data files
GSM8K_ROWS = [
    {"question": "Janet has 3 apples and buys 2 more. How many apples does she have?",
     "answer": "She has 3 + 2 = <<3+2=5>>5 apples.\n#### 5"},
    {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total?",
     "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total is 2+1=<<2+1=3>>3 bolts\n#### 3"},
    {"question": "Tom reads 4 pages a day for 5 days. How many pages?", "answer": "4*5=<<4*5=20>>20\n#### 20"},
]


def _gsm8k_lines() -> list[bytes]:
    return [json.dumps(r).encode() for r in GSM8K_ROWS]


def _without_final_answer(lines):
    lines[1] = json.dumps({**GSM8K_ROWS[1], "answer": GSM8K_ROWS[1]["answer"].replace("#### ", "")}).encode()


def _not_json(lines):
    lines[1] = lines[1][:40]  # a row cut off mid-string


def _without_question(lines):
    lines[2] = json.dumps({"answer": GSM8K_ROWS[2]["answer"]}).encode()


def _number_as_answer(lines):
    lines[0] = json.dumps({**GSM8K_ROWS[0], "answer": 5}).encode()


def _not_utf8(lines):
    lines[1] = lines[1].replace(b"robe", b"r\xf4be")  # latin-1


def _not_an_object(lines):
    lines[1] = b'["a question", "an answer"]'


BAD_GSM8K = {
    "no '####' line": (_without_final_answer, 2, "field 'answer' has no final '#### <number>' line"),
    "not JSON": (_not_json, 2, "not valid JSON"),
    "no question": (_without_question, 3, "missing or empty field 'question'"),
    "answer not text": (_number_as_answer, 1, "field 'answer' must be a string, got int"),
    "not UTF-8": (_not_utf8, 2, "not UTF-8 text (byte 0xf4"),
    "not an object": (_not_an_object, 2, "expected a JSON object, got list"),
}


def _write(path, lines: list[bytes]):
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _cli(capsys, *args: str) -> subprocess.CompletedProcess:
    """The CLI in this process (one import of torch for many cases); an uncaught exception fails the test itself."""
    from rayscale.cli import main

    rc = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, rc, out, err)


@pytest.mark.parametrize("case", list(BAD_GSM8K))
def test_a_bad_gsm8k_row_names_file_line_and_the_expected_row(tmp_path, capsys, case):
    spoil, line, problem = BAD_GSM8K[case]
    lines = _gsm8k_lines()
    spoil(lines)
    bad = _write(tmp_path / "gsm8k.jsonl", lines)
    r = _cli(capsys, "train", "tracking.wandb=false", f"tracking.run_dir={tmp_path}/run", "data.source=gsm8k",
             f"data.path={bad}", "--dry-run")
    _refused(r, f"{bad}:{line}: {problem}", 'a GSM8K row is {"question": "...", "answer": "<steps>\\n#### <number>"}',
             "fix or remove that line")


def test_a_bad_gsm8k_row_without_dry_run_fails_before_anything_is_built(tmp_path):
    lines = _gsm8k_lines()
    _not_json(lines)
    bad = _write(tmp_path / "gsm8k.jsonl", lines)
    _refused(_train("data.source=gsm8k", f"data.path={bad}", f"tracking.run_dir={tmp_path}/run"),
             f"{bad}:2: not valid JSON", "a GSM8K row is")
    assert not (tmp_path / "run").exists()  # neither the run directory nor the tiny model was made


def test_a_bad_held_out_file_is_named_with_its_key(tmp_path, capsys):
    lines = _gsm8k_lines()
    _without_question(lines)
    bad = _write(tmp_path / "held_out.jsonl", lines)
    r = _cli(capsys, "train", f"tracking.run_dir={tmp_path}/run", "data.eval_source=gsm8k", f"data.eval_path={bad}",
             "--dry-run")
    _refused(r, f"{bad}:3: missing or empty field 'question'")
    missing = tmp_path / "nope.jsonl"
    r = _cli(capsys, "train", f"tracking.run_dir={tmp_path}/run", "data.eval_source=gsm8k", f"data.eval_path={missing}",
             "--dry-run")
    _refused(r, f"data.eval_path={missing}: no such file")


BAD_MATH500 = {
    "no problem": ({"solution": "so \\boxed{2}", "answer": "2"}, "missing or empty field 'problem'"),
    "no answer, no boxed": ({"problem": "1+1?", "solution": "it is two"},
                            "no 'answer' field and no \\boxed{} in 'solution'"),
    "problem not text": ({"problem": ["1+1?"], "answer": "2"}, "field 'problem' must be a string, got list"),
}


@pytest.mark.parametrize("case", list(BAD_MATH500))
def test_a_bad_math500_row(tmp_path, capsys, case):
    row, problem = BAD_MATH500[case]
    good = json.dumps({"problem": "2+2?", "solution": "\\boxed{4}", "answer": "4", "unique_id": "t/1.json"}).encode()
    bad = _write(tmp_path / "math500.jsonl", [good, json.dumps(row).encode()])
    r = _cli(capsys, "train", f"tracking.run_dir={tmp_path}/run", "data.source=math500", f"data.path={bad}",
             "--dry-run")
    _refused(r, f"{bad}:2: {problem}", 'a MATH500 row is {"problem": "...", "answer": "..."}')


def test_a_generic_jsonl_row_missing_its_mapped_fields(tmp_path, capsys):
    bad = _write(tmp_path / "mine.jsonl", [b'{"q": "1+1?", "a": 2}', b'{"q": "2+2?"}'])
    r = _cli(capsys, "train", f"tracking.run_dir={tmp_path}/run", "data.source=jsonl", f"data.path={bad}",
             "--dry-run")
    _refused(r, f"{bad}:1: missing or empty field 'question' (expected fields: question, gold_answer)",
             "data.field_map")
    r = _cli(capsys, "train", f"tracking.run_dir={tmp_path}/run", "data.source=jsonl", f"data.path={bad}",
             "data.field_map={question: q, gold_answer: a}", "--dry-run")
    _refused(r, f"{bad}:2: missing or empty field 'a' (expected fields: q, a)")


@pytest.mark.parametrize("case", ["empty", "txt", "directory", "hub id"])
def test_a_data_path_that_is_not_a_data_file(tmp_path, capsys, case):
    if case == "empty":
        path, words = _write(tmp_path / "empty.jsonl", [b""]), ["no rows", "a GSM8K row is"]
    elif case == "txt":
        path, words = tmp_path / "gsm8k.txt", ["a .txt file; expected a .jsonl file"]
        path.write_text("Janet has 3 apples\n")
    elif case == "directory":
        path, words = tmp_path, ["no train*.parquet files in this directory"]
    else:
        path, words = "nobody-here/no-such-dataset", ["could not be loaded", "give a local .jsonl or .parquet file"]
    r = _cli(capsys, "train", f"tracking.run_dir={tmp_path}/run", "data.source=gsm8k", f"data.path={path}",
             "--dry-run")
    _refused(r, f"data.path={path}: ", *words)


def test_eval_names_its_data_file_line_and_its_model_flag(tmp_path, tiny_model_dir, capsys):
    bad = _write(tmp_path / "eval.jsonl", [b'{"question": "1+1?", "gold_answer": "2"}', b'{"question": "2+2?"}'])
    r = subprocess.run([sys.executable, "-m", "rayscale.cli", "eval", "--model", tiny_model_dir, "--data", str(bad)],
                       capture_output=True, text=True, timeout=300)
    _refused(r, f"{bad}:2: missing or empty field 'gold_answer'", "fix or remove that line")
    _refused(_cli(capsys, "eval", "--model", tiny_model_dir, "--data", str(tmp_path / "nope.jsonl")),
             f"--data={tmp_path}/nope.jsonl: no such file")
    _refused(_cli(capsys, "eval", "--model", str(tmp_path / "nonexistent"), "--data", str(bad)),
             f"--model={tmp_path}/nonexistent: no such directory")
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_model_dir}/{f}", no_tok / f)
    _refused(_cli(capsys, "eval", "--model", str(no_tok), "--data", "synthetic"), "--model=", "no tokenizer")


def test_a_model_directory_without_a_tokenizer_on_a_dry_run(tmp_path, tiny_model_dir, capsys):
    no_tok = tmp_path / "no_tokenizer"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{tiny_model_dir}/{f}", no_tok / f)
    _refused(_cli(capsys, "train", f"model.path={no_tok}", f"tracking.run_dir={tmp_path}/run", "--dry-run"),
             f"model.path={no_tok}: no tokenizer", "save_pretrained")


def test_overrides_after_an_option_are_applied_not_unrecognized(tmp_path, capsys):
    lines = _gsm8k_lines()
    _without_final_answer(lines)
    bad = _write(tmp_path / "gsm8k.jsonl", lines)
    r = _cli(capsys, "train", "data.source=gsm8k", "--dry-run", f"data.path={bad}", f"tracking.run_dir={tmp_path}/r")
    _refused(r, f"{bad}:2: field 'answer' has no final '#### <number>' line")
    with pytest.raises(SystemExit) as e:  # anything else after an option is still a usage error (argparse: status 2)
        _cli(capsys, "train", "--dry-run", "--no-such-flag")
    assert e.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


def test_a_synthetic_task_too_small_for_its_split_sizes(tmp_path):
    _refused(_train("data.synthetic.operand_max=3", "data.synthetic.num_operands=2", "data.synthetic.train_size=400",
                    f"tracking.run_dir={tmp_path}", "--dry-run"),
             "data.synthetic: cannot draw", "distinct", "raise data.synthetic.operand_max")
