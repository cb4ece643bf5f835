"""`rayscale verify`: rows in, rows out with pred/correct/status, a summary, and clean failures on bad input."""

from __future__ import annotations

import json

import pytest

from rayscale.cli import main


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_verify_file_end_to_end(tmp_path, capsys):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out" / "out.jsonl"
    rows = [
        {"id": "a", "gold": "18", "response": "so 9*2=18\n#### 18", "model": "m1"},
        {"id": "b", "gold": "\\frac{1}{2}", "response": "The answer is 0.4."},
        {"id": "c", "gold": 7, "response": "I am not sure."},
        {"id": "d", "gold": "(x+1)^{9000}", "response": "\\boxed{x^{9000}+1}"},
    ]
    _write(src, rows)
    assert main(["verify", "--input", str(src), "--output", str(dst), "--workers", "1", "--timeout", "1"]) == 0
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["id"] for r in out] == ["a", "b", "c", "d"]
    assert out[0] == {**rows[0], "pred": "18", "correct": True, "status": "ok"}
    assert (out[1]["pred"], out[1]["correct"], out[1]["status"]) == ("0.4", False, "ok")
    assert (out[2]["gold"], out[2]["pred"], out[2]["status"]) == ("7", None, "no_answer")
    assert (out[3]["pred"], out[3]["correct"], out[3]["status"]) == ("x^{9000}+1", False, "timeout")
    printed = capsys.readouterr().out
    assert "4 responses: ok=2  no_answer=1  timeout=1  error=0" in printed
    assert "accuracy 0.2500 (1/4)" in printed and "responses/s" in printed


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"gold": "1", "response": "\\\\boxed{1}"}\n{"gold": null, "response": "x"}',
         "in.jsonl:2: field 'gold' must be a string, got null"),
        ('{"gold": "1"}', "in.jsonl:1: field 'response' must be a string, got nothing (field missing)"),
        ('{"gold": "1", "response": 5}', "in.jsonl:1: field 'response' must be a string, got int 5"),
        ('{"gold": "1", "response": "x"}\nnot json', "in.jsonl:2: not valid JSON"),
        ('["gold", "response"]', "in.jsonl:1: expected a JSON object"),
    ],
)
def test_bad_rows_fail_with_line_number_and_write_nothing(tmp_path, capsys, line, message):
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text(line + "\n")
    assert main(["verify", "--input", str(src), "--output", str(dst)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [src]  # no output, no temporary file left behind


def test_missing_input_and_bad_flags(tmp_path, capsys):
    assert main(["verify", "--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "input file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["verify", "--input", "a", "--output", "b", "--timeout", "0"])
    assert e.value.code == 2


@pytest.mark.ray
def test_verify_on_a_ray_pool(tmp_path, capsys, monkeypatch):
    """`--ray` with no cluster given: the pool starts a local Ray and shuts it down again."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("needs no Ray running in this process")
    monkeypatch.setenv("RAY_ADDRESS", "local")  # never join another process's cluster on this host
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _write(src, [{"gold": "1/2", "response": "\\boxed{0.5}"}, {"gold": "2", "response": "\\boxed{3}"}])
    assert main(["verify", "--input", str(src), "--output", str(dst), "--workers", "1", "--ray"]) == 0
    assert [json.loads(line)["correct"] for line in dst.read_text().splitlines()] == [True, False]
    assert "accuracy 0.5000 (1/2)" in capsys.readouterr().out
    assert not ray.is_initialized()
