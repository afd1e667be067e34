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
