"""The cpu target end to end: candidates compiled here, measured in a worker process,
checked against the default, recorded; later compiles read the database or predict."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.pipeline.autotune import group_task, tune_graph
from warpweave.pipeline.compile import compile_graph
from warpweave.tune.database import Database
from warpweave.tune.executors import LocalExecutor
from warpweave.tune.measure import Job, Worker
from warpweave.tune.records import host_device, schedule_from_json, schedule_to_json

from .conftest import FAST, softmax, traced
from .faults import Faults


def test_tune_records_every_trial_and_compiles_use_the_database(db_path):
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    report = ww.tune(softmax, x, target="cpu", strategy="exhaustive", db=db_path, settings=FAST, progress=False)
    [group] = report.groups
    trials = Database(db_path).trials()
    assert len(trials) == group.trials >= 2 and all(t.status == "ok" for t in trials)
    assert sum(t.is_default for t in trials) == 1 and all(t.device == host_device() for t in trials)
    assert group.best == min(((schedule_from_json(t.schedule), t.median_us) for t in trials), key=lambda p: p[1])[0]
    assert "speed-up" in str(report) and group.summary in str(report)
    assert [k.source for k in report.program.kernels] == ["database"]
    assert "(database)" in report.program.dump("groups")
    np.testing.assert_allclose(report.program(x), np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-5)

    with ww.options(tuning_db=db_path):
        seen = ww.jit(softmax, target="cpu").lower(x)
        unseen = ww.jit(softmax, target="cpu").lower(np.zeros((48, 320), np.float32))
        with ww.options(tuned=False):
            plain = ww.jit(softmax, target="cpu").lower(x)
    assert seen.kernels[0].source == "database" and seen.kernels[0].schedule == group.best
    assert unseen.kernels[0].source == "predicted"
    assert plain.kernels[0].source == "default"


def test_crashes_and_timeouts_are_failed_trials_and_the_search_goes_on(db_path):
    graph, single = traced(softmax, (32, 128))
    program = compile_graph(graph, single, "cpu")
    [group] = program.plan.groups
    points = group_task(group, program.graph, "cpu", 132).problem.space
    assert len(points) >= 4
    crash, hang = schedule_to_json(points[1]), schedule_to_json(points[2])
    settings = FAST.__class__(warmup=1, repeat=3, timeout_s=3.0, flush_bytes=1 << 20)
    with LocalExecutor("cpu", hook=Faults({crash: "exit", hang: "hang"})) as executor:
        [result] = tune_graph(graph, single, "cpu", strategy="exhaustive", budget=4, db=db_path,
                              executor=executor, settings=settings, progress=False).groups
        assert executor.restarts == 2
    trials = {t.schedule: t for t in Database(db_path).trials()}
    assert trials[crash].status == "failed" and "worker process died (exit code 3)" in trials[crash].error
    assert trials[hang].status == "timeout"
    assert [t.status for s, t in trials.items() if s not in (crash, hang)] == ["ok"] * 2
    assert (result.trials, result.failed) == (4, 2)


def test_wrong_outputs_are_incorrect_trials():
    graph, single = traced(lambda x: x + 1.0, (8, 64))
    other, _ = traced(lambda x: x + 2.0, (8, 64))
    tasks = []
    for g in (graph, other):
        p = compile_graph(g, single, "cpu")
        tasks.append(group_task(p.plan.groups[0], p.graph, "cpu", 132))
    reference = tasks[0].compile_candidate(tasks[0].problem.default).artifact
    wrong = tasks[1].compile_candidate(tasks[1].problem.default).artifact
    assert reference.buffers == wrong.buffers
    worker = Worker("cpu")
    try:
        right = worker.run(Job("t", reference, reference, "{}", FAST))
        bad = worker.run(Job("t", reference, wrong, "{}", FAST))
    finally:
        worker.stop()
    assert right.status == "ok" and right.runs == FAST.repeat and right.min_us <= right.median_us
    assert bad.status == "incorrect" and "512 of 512 elements differ" in bad.error


def test_interp_is_not_tunable():
    graph, single = traced(softmax, (4, 8))
    with pytest.raises(ww.ArgumentError, match="cannot be tuned"):
        tune_graph(graph, single, "interp")
