"""The gateway process's garbage collector policy (gateway/heap.py): long-lived objects
leave the collector's walks, and reference cycles are still reclaimed.  Driven by
tick() with explicit times: nothing here depends on the wall clock."""

import gc
import weakref

import pytest

from sealink_gateway.heap import HeapKeeper


class Node:
    def __init__(self):
        self.other = None


@pytest.fixture
def keeper():
    gc.collect()
    k = HeapKeeper(freeze_s=1.0, sweep_s=600.0)
    yield k
    k.release()
    gc.collect()


def _walked(obj) -> bool:
    # Whether a full collection walks obj: gc.get_objects() lists the tracked objects
    # of every generation, and not those of the permanent one.
    return any(o is obj for o in gc.get_objects())


def test_long_lived_objects_leave_the_collectors_walk(keeper):
    sessions = [Node() for _ in range(100)]
    assert _walked(sessions[0])
    keeper.tick(0.0)
    assert not _walked(sessions[0]) and gc.get_freeze_count() >= len(sessions)
    newer = Node()
    keeper.tick(0.5)  # not yet due: the newer object is still walked
    assert _walked(newer)
    keeper.tick(1.0)
    assert not _walked(newer)


def test_frozen_objects_are_still_freed_by_reference_counting(keeper):
    node = Node()
    ref = weakref.ref(node)
    keeper.tick(0.0)
    del node
    assert ref() is None


def test_a_reference_cycle_frozen_is_reclaimed_at_the_next_sweep(keeper):
    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    keeper.tick(0.0)
    del a, b
    gc.collect()
    assert ref() is not None  # frozen: the collector does not see the cycle
    keeper.tick(599.0)
    assert ref() is not None and keeper.sweeps == 0
    keeper.tick(600.0)
    assert ref() is None and keeper.sweeps == 1 and keeper.swept >= 2
    assert gc.get_freeze_count() > 0  # frozen again after the sweep


def test_release_hands_everything_back(keeper):
    node = Node()
    keeper.tick(0.0)
    assert not _walked(node)
    keeper.release()
    assert _walked(node) and gc.get_freeze_count() == 0
