"""Agreement with labelled real responses: every disagreement must be one reviewed in benchmarks/verifier_reviewed.json.

In-process and exhaustive (6,076 responses, about a second): a change that flips any verdict on real data shows up
here, not only in the benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path

from rayscale.verify import extract_answer, verify_response

REVIEWED = json.loads((Path(__file__).parents[1] / "benchmarks" / "verifier_reviewed.json").read_text())
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def test_gsm8k_example_solutions_agree_with_labels(shared_data):
    disagreements, n = [], 0
    for i, line in enumerate((shared_data / "gsm8k_example_model_solutions.jsonl").open()):
        row = json.loads(line)
        gold = extract_answer(row["ground_truth"])
        for model in MODELS:
            n += 1
            if verify_response(gold, row[model]["solution"]).correct != row[model]["is_correct"]:
                disagreements.append(f"gsm8k:{i}:{model}")
    assert n == 5276
    assert set(disagreements) <= set(REVIEWED), disagreements


def test_qwen_math_responses_agree_with_the_qwen_grader_except_reviewed(shared_data):
    disagreements, n = [], 0
    for i, line in enumerate((shared_data / "qwen25math_math_cot_100_rm_example.jsonl").open()):
        row = json.loads(line)
        for j, (response, score) in enumerate(zip(row["response"], row["score"])):
            n += 1
            if verify_response(row["gt"], response).correct != score:
                disagreements.append(f"qwen:{i}:{j}")
    assert n == 800
    assert set(disagreements) <= set(REVIEWED), disagreements
    assert all(REVIEWED[k]["right"] == "rayscale" for k in disagreements)
