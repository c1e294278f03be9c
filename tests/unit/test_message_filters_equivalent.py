"""The approximate time synchroniser used when message_filters is not importable."""

import pytest
from sensor_msgs.msg import CameraInfo, Image

import selfsup_perception.compat.message_filters as mf

pytestmark = pytest.mark.skipif(mf.USING_ROS_MESSAGE_FILTERS, reason="testing the fallback; message_filters present")


class FakeInput:
    """Stands in for mf.Subscriber: the synchroniser only calls registerCallback."""

    def __init__(self):
        self.cb = None

    def registerCallback(self, cb):  # noqa: N802
        self.cb = cb


def stamped(cls, t):
    m = cls()
    m.header.stamp.sec, m.header.stamp.nanosec = int(t), int(round((t % 1) * 1e9))
    return m


def test_matches_within_slop_and_skips_unmatched():
    a, b, c = FakeInput(), FakeInput(), FakeInput()
    sync = mf.ApproximateTimeSynchronizer([a, b, c], queue_size=5, slop=0.05)
    out = []
    sync.registerCallback(lambda *msgs: out.append(tuple(m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
                                                         for m in msgs)))
    a.cb(stamped(Image, 1.00))
    b.cb(stamped(Image, 1.02))
    assert out == []
    c.cb(stamped(CameraInfo, 1.01))
    assert out == [(1.00, 1.02, 1.01)]
    a.cb(stamped(Image, 2.00))
    b.cb(stamped(Image, 2.20))  # too far from 2.00
    c.cb(stamped(CameraInfo, 2.19))
    assert len(out) == 1  # 2.00 is 0.19 s from the others: no set
    a.cb(stamped(Image, 2.21))
    assert out[-1] == (2.21, 2.20, 2.19)


def test_queue_size_is_validated():
    with pytest.raises(ValueError, match="queue_size"):
        mf.ApproximateTimeSynchronizer([FakeInput()], queue_size=0, slop=0.1)
