import pytest

from rayscale import checkpointing as C
from rayscale.data.cursor import PromptCursor


def test_cursor_covers_each_epoch_once_and_reshuffles():
    c = PromptCursor(10, seed=1)
    first = c.next_batch(4) + c.next_batch(4) + c.next_batch(2)
    assert sorted(first) == list(range(10))
    second = c.next_batch(10)
    assert sorted(second) == list(range(10)) and second != first
    assert c.state_dict() == {"epoch": 1, "position": 10}


def test_cursor_resume_draws_the_same_batches():
    a = PromptCursor(7, seed=3)
    a.next_batch(5)
    saved = a.state_dict()
    expected = [a.next_batch(3) for _ in range(4)]
    b = PromptCursor.from_state(7, 3, saved)
    assert [b.next_batch(3) for _ in range(4)] == expected


def test_cursor_rejects_empty():
    with pytest.raises(ValueError):
        PromptCursor(0, seed=0)


def state(tmp_path, it):
    return C.ControllerState(iteration=it, policy_version=it, cursor={"epoch": 0, "position": it},
                             start_model="m", path=str(C.checkpoint_path(tmp_path, it)), learner_dir="l")


def test_checkpoint_state_round_trip_resume_and_prune(tmp_path):
    assert C.find_resume_state("auto", tmp_path) is None
    for it in (1, 2, 3):
        C.write_state(C.checkpoint_path(tmp_path, it), state(tmp_path, it))
    (tmp_path / "iter_000004").mkdir()  # an interrupted save: no controller.json, ignored
    assert C.find_resume_state("auto", tmp_path).iteration == 3
    assert C.find_resume_state("never", tmp_path) is None
    assert C.find_resume_state(str(C.checkpoint_path(tmp_path, 2)), tmp_path).cursor == {"epoch": 0, "position": 2}
    C.prune(tmp_path, keep_last=2)
    assert [p.name for p in C.complete_checkpoints(tmp_path)] == ["iter_000002", "iter_000003"]
    with pytest.raises(C.CheckpointError, match="not a rayscale checkpoint"):
        C.find_resume_state(str(tmp_path / "iter_000004"), tmp_path)
