"""`heap.settle` takes start-up's objects out of full collections without keeping the run's garbage alive."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from edge_runtime import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    yield
    while gc.get_freeze_count():
        heap.release()


def test_settled_objects_leave_the_collectors_walk_and_later_garbage_is_still_freed() -> None:
    before = _Node()
    frozen = heap.settle()
    assert frozen == gc.get_freeze_count() > 1000  # the interpreter's and the test run's modules at least
    assert all(o is not before for o in gc.get_objects()), "a settled object is still walked by full passes"
    after = _Node()
    gone = weakref.ref(after)
    del after
    gc.collect()
    assert gone() is None, "cyclic garbage made after settling was not collected"


def test_settling_again_frees_cycles_that_were_frozen() -> None:
    """A reload drops pipelines that were frozen at start-up: settling again must let their cycles go."""
    node = _Node()
    gone = weakref.ref(node)
    heap.settle()
    del node
    gc.collect()
    assert gone() is not None  # frozen cyclic garbage: exactly what a reload leaves behind
    heap.settle()
    assert gone() is None


def test_the_freeze_lasts_until_the_last_holder_releases_it() -> None:
    """Two services in one process (tests, a replay beside a run): the first to stop must not unfreeze the other's
    heap; the last one hands everything back."""
    heap.settle(hold=True)
    heap.settle(hold=True)
    heap.release()
    assert gc.get_freeze_count() > 0
    heap.release()
    assert gc.get_freeze_count() == 0
