"""The shared callback guard: bad requests answered with their message, bugs as internal errors logged once."""

import math

import pytest

from selfsup_perception.ros.callback_guard import CallbackGuard, RequestError, clamp_request_value


class Logger:
    """Collects what the guard logs (rclpy's logger has the same error/warning methods)."""

    def __init__(self):
        self.errors, self.warnings = [], []

    def error(self, text):
        self.errors.append(text)

    def warning(self, text):
        self.warnings.append(text)


class Response:
    def __init__(self):
        self.success, self.message, self.payload = True, "", None


def test_service_errors_become_answers_and_a_bug_is_logged_once_with_its_traceback():
    log = Logger()
    guard = CallbackGuard(log, expected=(ValueError, LookupError))

    def handler(request, response):
        if request == "bad":
            raise ValueError("score_threshold is NaN")
        if request == "bug":
            return {}["missing"] if False else 1 / 0
        response.payload = request
        return response

    svc = guard.service(handler, "segment_image")
    res = svc("bad", Response())
    assert (res.success, res.message) == (False, "score_threshold is NaN") and not log.errors
    for _ in range(3):
        res = svc("bug", Response())
        assert not res.success and res.message == "internal error: ZeroDivisionError: division by zero"
    assert len(log.errors) == 3
    assert "Traceback" in log.errors[0] and "1 / 0" in log.errors[0]
    assert all("Traceback" not in e for e in log.errors[1:]) and "seen 3 times" in log.errors[2]
    res = svc("ok", Response())  # still answering
    assert res.success and res.payload == "ok"
    assert guard.counts == {"expected": 1, "unexpected": 3}


def test_a_half_filled_response_is_not_returned_on_error():
    guard = CallbackGuard(Logger())

    def handler(request, response):
        response.payload = "half"
        raise RuntimeError("boom")

    res = guard.service(handler)(None, Response())
    assert res.payload is None and not res.success and "RuntimeError: boom" in res.message


def test_subscription_and_timer_callbacks_keep_their_signature_and_never_raise():
    import inspect

    log = Logger()
    guard = CallbackGuard(log)
    seen = []

    def on_msg(msg, info):
        seen.append((msg, info))
        raise KeyError(msg)

    wrapped = guard.callback(on_msg, "topic x")
    assert list(inspect.signature(wrapped).parameters) == ["msg", "info"]  # rclpy inspects it
    assert wrapped(1, "i") is None and seen == [(1, "i")]
    assert "KeyError" in log.warnings[0]  # LookupError: expected, one warning line
    guard.callback(lambda: 1 / 0, "timer")()
    assert "Traceback" in log.errors[0]


def test_request_values_are_clamped_to_their_documented_range():
    assert clamp_request_value("timeout_s", math.inf, low=0, high=60) == 60
    assert clamp_request_value("timeout_s", 1e300, low=0, high=60) == 60
    assert clamp_request_value("timeout_s", 0, low=0, high=60, default=5, zero_means_default=True) == 5
    assert clamp_request_value("timeout_s", 2.5, low=0, high=60) == 2.5
    with pytest.raises(RequestError, match="NaN"):
        clamp_request_value("timeout_s", math.nan, low=0, high=60)
    with pytest.raises(RequestError, match="below its minimum"):
        clamp_request_value("timeout_s", -1, low=0, high=60)
