"""FairSlots: a bounded number of holders, waiters served in arrival order, timeouts that leave no trace."""

import threading
import time

import pytest

from selfsup_perception.ros.work_queue import FairSlots


def test_waiters_get_released_slots_in_arrival_order_and_newcomers_do_not_barge():
    slots = FairSlots(1)
    assert slots.acquire(0)
    order, threads = [], []
    for i in range(5):
        t = threading.Thread(target=lambda i=i: (slots.acquire(5.0), order.append(i), slots.release()))
        t.start()
        threads.append(t)
        while slots.waiting() < i + 1:  # queue them one after another
            time.sleep(0.001)
    assert not slots.acquire(0)  # a newcomer does not take the slot while others wait
    slots.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert slots.acquire(0)  # all released: free again


def test_timeouts_bound_the_holders_and_leave_no_waiter_behind():
    slots = FairSlots(2)
    assert slots.acquire(0) and slots.acquire(0)
    t0 = time.monotonic()
    assert not slots.acquire(0.05)
    assert time.monotonic() - t0 >= 0.04 and slots.waiting() == 0
    slots.release()
    assert slots.acquire(0)
    slots.release()
    slots.release()
    with pytest.raises(ValueError, match="more often"):
        slots.release()
    with pytest.raises(ValueError):
        FairSlots(0)
