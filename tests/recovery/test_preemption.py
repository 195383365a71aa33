"""SIGTERM is a preemption notice, not a kill: the flag the training loop checks after every step."""

import os
import signal

from zppo_ray.launch import PreemptionNotice


def test_sigterm_sets_the_flag_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionNotice() as notice:
        assert not notice.requested
        os.kill(os.getpid(), signal.SIGTERM)  # the process survives it
        assert notice.requested
    assert signal.getsignal(signal.SIGTERM) is before
