"""Strategies compared by simulation (replaying recorded sweeps), and the predictor
for unseen shapes, on the CPU sweep shipped in benchmarks/data and on synthetic sweeps
whose best points are known."""
import math
import pathlib

import pytest

from warpweave.schedule.templates import CpuColumnReduce
from warpweave.tune import predict, simulate
from warpweave.tune.database import Database
from warpweave.tune.records import DeviceInfo, Trial, schedule_to_json
from warpweave.tune.strategies import STRATEGIES

SWEEP = pathlib.Path(__file__).parents[2] / "benchmarks" / "data" / "cpu_sweep.jsonl"
CPU = DeviceInfo("cpu", "synthetic")
POINTS = [CpuColumnReduce(vector=v, chunk=c) for v in (4, 8, 16, 32, 64, 128) for c in (64, 256, 1024)]


def synthetic(rows: int, time, estimate=None) -> list[Trial]:
    """An exhaustive sweep of one column-sum shape [rows, 512] whose point times are
    `time(point, rows)`; the first point is the default."""
    shapes = ((rows, 512), (512,))
    return [Trial(f"g{rows}", "colsum", f"colsum[{rows}, 512]", shapes, ("float32", "float32"), schedule_to_json(p),
                  CPU, "exhaustive", "ok", time(p, rows), time(p, rows), 5,
                  (estimate or time)(p, rows), n == 0) for n, p in enumerate(POINTS)]


def best_at(p, rows):
    """Fastest at vector = rows / 16 (a shape-dependent best), chunk 256."""
    return 10.0 + abs(math.log2(p.vector) - math.log2(rows / 16)) * 3 + abs(math.log2(p.chunk / 256))


def load(trials) -> Database:
    db = Database(":memory:")
    db.add(trials)
    return db


@pytest.fixture(scope="module")
def recorded():
    return simulate.sweeps(simulate.load(str(SWEEP)))


def test_the_shipped_sweep_holds_every_case(recorded):
    summaries = " ".join(s.trials[0].summary for s in recorded)
    for case in ("softmax", "layer_norm", "sum(axis=-1)", "sum(axis=0)"):
        assert case in summaries
    assert len(recorded) >= 16 and all(s.trials[0].device.target == "cpu" for s in recorded)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_measures_each_point_once_and_finds_the_best(recorded, strategy):
    for sweep in recorded[::4]:
        times = simulate.replay(strategy, sweep, seed=1)
        assert len(times) == len(sweep.problem.space)
        assert sorted(times, key=lambda t: (t is None, t)) == \
            sorted(sweep.times.values(), key=lambda t: (t is None, t))
        assert simulate.trials_to_within(times, sweep.best_us, 0.0) <= len(times)


def test_model_guided_search_follows_the_cost_model():
    right = simulate.sweeps(load(synthetic(2048, best_at)))[0]
    wrong = simulate.sweeps(load(synthetic(2048, best_at, lambda p, r: -best_at(p, r))))[0]
    assert simulate.trials_to_within(simulate.replay("model", right), right.best_us, 0.01) == 2
    assert simulate.trials_to_within(simulate.replay("model", wrong), wrong.best_us, 0.01) > len(POINTS) * 2 // 3


def test_the_learned_model_transfers_from_other_shapes():
    flat = lambda p, r: 1.0  # noqa: E731 - a cost model that knows nothing
    trials = [t for rows in (256, 512, 1024, 4096, 8192) for t in synthetic(rows, best_at, flat)]
    trials += synthetic(2048, best_at, flat)
    [held_out] = [s for s in simulate.sweeps(load(trials)) if s.problem.key == "g2048"]
    assert len(held_out.problem.history) == 5 * len(POINTS)
    learned = simulate.trials_to_within(simulate.replay("learned", held_out), held_out.best_us, 0.01)
    random = sum(simulate.trials_to_within(simulate.replay("random", held_out, seed), held_out.best_us, 0.01)
                 for seed in range(10)) / 10
    assert learned <= 3 < random


def test_compare_reports_every_strategy(recorded):
    rows = simulate.compare(recorded[:3], ["exhaustive", "model"], seeds=1)
    assert [r.strategy for r in rows] == ["exhaustive", "model"]
    assert all(1 <= r.within3 <= r.within1 <= r.space + 1 and r.default_gap >= 1 for r in rows)


def test_predictor_picks_the_neighbours_best_for_an_unseen_shape():
    trials = [t for rows in (256, 512, 1024, 4096) for t in synthetic(rows, best_at)]
    predictor = predict.Predictor(trials)
    # between 1024 (best vector 64) and 4096 (best vector 256: not in POINTS, so 128)
    choice = predictor.predict("cpu", "synthetic", "colsum", ((2048, 512), (512,)), ("float32", "float32"), POINTS)
    assert choice.chunk == 256 and choice.vector in (64, 128)
    assert predictor.predict("cpu", "other device", "colsum", ((2048, 512), (512,)), ("float32", "float32"),
                             POINTS) is None


def test_predictor_leave_one_out_beats_a_random_point(recorded):
    result = predict.leave_one_out([t for s in recorded for t in s.trials])
    assert result.shapes == len(recorded)
    assert result.predicted < result.space_mean, result
    synthetic_result = predict.leave_one_out([t for rows in (256, 512, 1024, 2048, 4096) for t in
                                              synthetic(rows, best_at)])
    assert synthetic_result.predicted < min(synthetic_result.default, synthetic_result.space_mean)


def test_learned_predictor_leave_one_out(recorded):
    result = predict.leave_one_out([t for s in recorded for t in s.trials], "learned")
    assert result.shapes == len(recorded) and result.predicted < result.space_mean, result
    synthetic_result = predict.leave_one_out([t for rows in (256, 512, 1024, 2048, 4096) for t in
                                              synthetic(rows, best_at)], "learned")
    assert synthetic_result.predicted < min(synthetic_result.default, synthetic_result.space_mean)


H200_SWEEP = SWEEP.with_name("h200_sweep.jsonl")


@pytest.fixture(scope="module")
def recorded_h200():
    return simulate.sweeps(simulate.load(str(H200_SWEEP)))


def test_the_h200_sweep_replays_and_the_cost_model_finds_the_best_within_a_tenth(recorded_h200):
    """The exhaustive H200 sweep shipped in benchmarks/data: every group's space fully
    measured on the device; cost-model-guided search gets within 3 % of the best in at
    most a tenth of the space's trials."""
    assert len(recorded_h200) >= 5
    for sweep in recorded_h200:
        assert sweep.trials[0].device.target == "cuda" and "H200" in sweep.trials[0].device.name
        times = simulate.replay("model", sweep, seed=1)
        assert len(times) == len(sweep.problem.space) >= 50
        assert simulate.trials_to_within(times, sweep.best_us, 0.03) <= len(times) / 10, sweep.trials[0].summary


def test_schedules_predicted_for_held_out_h200_shapes_are_within_five_percent():
    """Both recorded H200 sweeps (softmax at four shapes, layer norm at two): each group
    hidden in turn, the nearest-neighbour predictor's point is within 5 % of the hidden
    group's measured best on at least 90 % of them (issue 16's target)."""
    db = simulate.load(str(H200_SWEEP))
    db.import_jsonl(str(SWEEP.with_name("h200_sweep_2026-12-03.jsonl")))
    result = predict.leave_one_out(db.trials(), "neighbours")
    assert result.shapes >= 5 and result.hits5 >= 0.9, result
