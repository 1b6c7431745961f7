"""The real :class:`~taskology.engine.runner.TaskRunner` with one fault: the task ``CRASH_TASK`` kills its own
worker process (SIGKILL, as the OOM killer would) when it is about to train step ``CRASH_STEP``.

Every incarnation restores from the newest checkpoint at or before that step and dies there again: a crash
loop, which the supervisor's restart policy must end. Workers import this module by name (LocalCluster
worker processes inherit the test's ``sys.path``, which holds ``tests/cluster``).
"""
from __future__ import annotations

import os
import signal
from typing import Any

from taskology.engine.runner import TaskRunner

CRASH_TASK = "depth"
CRASH_STEP = 4


class CrashingRunner(TaskRunner):
    def train_step(self) -> Any:
        if self.task_name == CRASH_TASK and int(self.step) >= CRASH_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().train_step()
