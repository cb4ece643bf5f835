from __future__ import annotations

import pytest

from rayscale.rollout.scheduling import balance


def test_balance_evens_out_samples_and_keeps_input_order():
    sizes = [4, 1, 1, 1, 1, 4, 2]
    shards = balance(sizes, 2)
    assert sorted(i for s in shards for i in s) == list(range(len(sizes)))
    assert all(s == sorted(s) for s in shards)
    assert [sum(sizes[i] for i in s) for s in shards] == [7, 7]
    assert balance([3], 4) == [[0], [], [], []]
    with pytest.raises(ValueError, match="at least one worker"):
        balance([1], 0)
