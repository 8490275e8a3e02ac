"""A worker host whose clock is off (the events-clock-skew lab scenario): a worker started with
this directory on PYTHONPATH and CELERYCTL_LAB_CLOCK_SKEW=SECONDS reads `time.time()` that many
seconds ahead, from interpreter start-up on — before Celery binds it — as a host with a wrong
clock would. Nothing else is changed (monotonic time runs as it does)."""

import os
import time

try:
    _SKEW = float(os.environ.get("CELERYCTL_LAB_CLOCK_SKEW") or 0.0)
except ValueError:
    _SKEW = 0.0
if _SKEW:
    _real = time.time

    def _skewed() -> float:
        return _real() + _SKEW

    time.time = _skewed
