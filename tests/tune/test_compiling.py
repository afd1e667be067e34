"""Candidates compiled in a pool of processes: the same trials as compiling here, and a
compile that kills its process is a failed trial, not a crash."""
import numpy as np

from warpweave.pipeline.autotune import group_task, tune_graph
from warpweave.pipeline.compile import compile_graph
from warpweave.tune.compiling import CompileCrash, CompilePool
from warpweave.tune.database import Database
from warpweave.tune.executors import LocalExecutor
from warpweave.tune.records import host_device, schedule_to_json
from warpweave.tune.session import tune_tasks

from ..utils import assert_ptxas_accepts
from .conftest import FAST, traced
from .faults import CrashingCompiler


def layer_norm(x):
    import warpweave as ww

    return ww.layer_norm(x)


def _task(fn, shape):
    graph, single = traced(fn, shape)
    program = compile_graph(graph, single, "cpu")
    return group_task(program.plan.groups[0], program.graph, "cpu", 132)


def test_parallel_compiles_give_the_serial_trials(tmp_path):
    graph, single = traced(layer_norm, (48, 200))
    runs = {}
    for jobs in (0, 2):
        db = Database(str(tmp_path / f"{jobs}.db"))
        [result] = tune_graph(graph, single, "cpu", strategy="exhaustive", db=db, settings=FAST,
                              progress=False, jobs=jobs).groups
        runs[jobs] = [(t.schedule, t.status, t.is_default, t.estimate_us, t.group_key) for t in db.trials()]
        assert result.trials == len(runs[jobs]) >= 4 and result.failed == 0
    assert runs[0] == runs[2]


def test_pool_results_match_in_process_and_a_crash_names_its_item():
    task = _task(layer_norm, (16, 96))
    points = task.problem.space[:4]
    crash = CrashingCompiler(task.compile_candidate, crash=schedule_to_json(points[1]),
                             fail=schedule_to_json(points[2]))
    with CompilePool(2) as pool:
        out = {n: (value, error) for n, value, error in pool.map(crash, points)}
        assert pool.crashes >= 1
        # the pool works again afterwards
        [(_, again, error)] = pool.map(task.problem.estimate, [points[0]])
    assert error is None and again == task.problem.estimate(points[0])
    assert isinstance(out[1][1], CompileCrash) and repr(points[1]) in str(out[1][1])
    assert "injected failure" in str(out[2][1])
    for n in (0, 3):
        value, error = out[n]
        here = task.compile_candidate(points[n])
        assert error is None and value.artifact.buffers == here.artifact.buffers
        assert value.artifact.launches == here.artifact.launches and value.estimate_s == here.estimate_s


def test_a_crashing_compile_is_a_failed_trial(tmp_path):
    task = _task(layer_norm, (16, 96))
    points = task.problem.space[:4]
    task.compile_candidate = CrashingCompiler(task.compile_candidate, crash=schedule_to_json(points[2]))
    db = Database(str(tmp_path / "t.db"))
    with LocalExecutor("cpu") as executor, CompilePool(2) as pool:
        [result] = tune_tasks([task], executor=executor, db=db, device=host_device(), strategy="exhaustive",
                              budget=4, settings=FAST, progress=False, pool=pool)
    trials = {t.schedule: t for t in db.trials()}
    assert len(trials) == 4 and (result.trials, result.failed) == (4, 1)
    crashed = trials[schedule_to_json(points[2])]
    assert crashed.status == "failed" and "died" in crashed.error and crashed.median_us is None
    assert all(t.status == "ok" and t.median_us > 0 for s, t in trials.items() if s != crashed.schedule)
    assert np.isfinite(result.best_us)


def test_pool_processes_compile_through_the_callers_disk_cache(tmp_path, monkeypatch):
    task = _task(layer_norm, (16, 96))
    with CompilePool(1) as pool:
        list(pool.map(task.problem.estimate, task.problem.space[:1]))  # the process starts, under the old cache
        monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path / "cache"))
        here = _task(layer_norm, (16, 96))  # made under the new one
        before = set((tmp_path / "cache").rglob("*.*"))
        [(_, compiled, error)] = pool.map(here.compile_candidate, here.problem.space[1:2])
    assert error is None and compiled.artifact.image
    assert len(set((tmp_path / "cache").rglob("*.*")) - before) == 1  # the candidate's object code


def test_several_workers_take_jobs_from_a_generator_as_they_come():
    import pytest

    from warpweave.tune.measure import Job

    task = _task(layer_norm, (16, 96))
    reference = task.compile_candidate(task.problem.default).artifact
    points = task.problem.space[:4]

    def jobs(fail_after=None):
        for n, s in enumerate(points):
            if n == fail_after:
                raise RuntimeError("the job source broke")
            yield Job("t", reference, task.compile_candidate(s).artifact, schedule_to_json(s), FAST)

    with LocalExecutor("cpu", devices=2) as executor:
        results = dict(executor.run(jobs()))
        assert sorted(results) == [0, 1, 2, 3] and {r.status for r in results.values()} == {"ok"}
        with pytest.raises(RuntimeError, match="job source broke"):
            list(executor.run(jobs(fail_after=2)))


def test_a_script_without_a_main_guard_tunes_once(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np\nimport warpweave as ww\nfrom warpweave.tune.measure import Settings\n"
        "print('top level ran')\n"
        "x = np.ones((16, 96), np.float32)\n"
        "r = ww.tune(lambda t: ww.layer_norm(t), x, target='cpu', strategy='exhaustive', budget=3, jobs=2,\n"
        f"            db={str(tmp_path / 't.db')!r}, settings=Settings(warmup=1, repeat=2), progress=False)\n"
        "print('trials', r.groups[0].trials, 'failed', r.groups[0].failed)\n")
    root = str(pathlib.Path(__file__).parents[2])
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": root, "WARPWEAVE_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("top level ran") == 1 and "trials 3 failed 0" in run.stdout


def test_cuda_candidates_compile_in_the_pool_as_here():
    graph, single = traced(layer_norm, (64, 200))
    program = compile_graph(graph, single, "interp")  # the GPU family's plan, no GPU needed
    task = group_task(program.plan.groups[0], program.graph, "cuda", 132)
    points = task.problem.space[:3]
    with CompilePool(2) as pool:
        out = {n: (value, error) for n, value, error in pool.map(task.compile_candidate, points)}
    for n, s in enumerate(points):
        value, error = out[n]
        here = task.compile_candidate(s)
        assert error is None and value.artifact.target == "cuda" and value.artifact.image
        assert (value.artifact.launches, value.artifact.buffers) == (here.artifact.launches, here.artifact.buffers)
        assert value.estimate_s == here.estimate_s > 0
        if not value.artifact.image.startswith(b"\x7fELF"):  # PTX where no driver links a cubin
            assert_ptxas_accepts(value.artifact.image.decode())
