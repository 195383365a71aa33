import pytest

from zppo_ray.data.cursor import DataCursor
from zppo_ray.data.schema import Question

QS = [Question(id=f"q{i}", prompt="p", answer="1") for i in range(5)]


def ids(qs):
    return [q.id for q in qs]


def test_one_pass_then_a_new_seeded_order():
    c = DataCursor(QS, seed=3)
    first = ids(c.next(5))
    assert sorted(first) == ids(QS) and c.epoch == 0
    second = ids(c.next(5))
    assert sorted(second) == ids(QS) and c.epoch == 1 and second != first
    assert ids(DataCursor(QS, seed=3).next(5)) == first  # deterministic


def test_resume_from_cursor_and_epoch_continues_identically():
    a = DataCursor(QS, seed=1)
    a.next(7)
    b = DataCursor(QS, seed=1, cursor=a.cursor, epoch=a.epoch)
    assert ids(b.next(9)) == ids(a.next(9))


def test_empty_training_set_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        DataCursor([], seed=0)
