"""Fault injection for the measurement worker's test hook (picklable: the worker
process imports this module)."""
import os
import time


class Faults:
    """Called by the worker with each job: for a job whose schedule (JSON) maps to
    "exit" the process dies, to "hang" it sleeps past any timeout."""

    def __init__(self, faults: dict[str, str]):
        self.faults = faults

    def __call__(self, job):
        kind = self.faults.get(job.schedule)
        if kind == "exit":
            os._exit(3)
        if kind == "hang":
            time.sleep(600)


class CrashingCompiler:
    """Wraps a task's compile callable: compiling the schedule whose JSON is `crash`
    kills the process; `fail` raises an ordinary error."""

    def __init__(self, compiler, crash: str = "", fail: str = ""):
        self.compiler, self.crash, self.fail = compiler, crash, fail

    def __call__(self, schedule):
        from warpweave.errors import CompileError
        from warpweave.tune.records import schedule_to_json

        text = schedule_to_json(schedule)
        if text == self.crash:
            os._exit(3)
        if text == self.fail:
            raise CompileError(f"injected failure compiling {text}")
        return self.compiler(schedule)
