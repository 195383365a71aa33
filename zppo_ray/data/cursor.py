"""The position in the training set: which question comes next, reproducibly and resumably."""

from __future__ import annotations

import random

from zppo_ray.data.schema import Question


class DataCursor:
    """One pass over the questions in a seeded order; past the end, a new pass in a new seeded order.

    The paper makes one pass (`epoch` stays 0); longer runs see every question again, reshuffled, and the
    controller logs the wrap. The state is two integers, which the checkpoint carries.
    """

    def __init__(self, questions: list[Question], seed: int, cursor: int = 0, epoch: int = 0):
        if not questions:
            raise ValueError("the training set is empty")
        self.questions = questions
        self.seed = seed
        self.cursor = cursor
        self.epoch = epoch
        self._order = self._shuffled(epoch)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.questions)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next(self, n: int) -> list[Question]:
        out: list[Question] = []
        while len(out) < n:
            if self.cursor >= len(self._order):
                self.epoch += 1
                self.cursor = 0
                self._order = self._shuffled(self.epoch)
            take = min(n - len(out), len(self._order) - self.cursor)
            out += [self.questions[i] for i in self._order[self.cursor:self.cursor + take]]
            self.cursor += take
        return out
