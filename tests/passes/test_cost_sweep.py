"""The GPU cost model against the recorded exhaustive H200 sweep (issue 15, item 4):
on every group of benchmarks/data/h200_sweep.jsonl, the rank correlation of its
estimates with the measured times is at least 0.8 and its top-ranked point is within
10 % of the best measured point.

The estimates come from the stored kernel counts (benchmarks/data/h200_sweep_counts.json:
what `kernel_cost` reads from each point's GIR, no time; written by
`benchmarks/cost_model_fit.py --write-counts`), so that the 1648 points need not be
compiled here; a few points are compiled afresh and must count the same, so the
stored counts cannot drift from the code."""
import os
import sys

import numpy as np
import pytest

from warpweave.passes.cost import H200, kernel_cost
from warpweave.tune import simulate
from warpweave.tune.records import schedule_from_json

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")
sys.path.insert(0, BENCHMARKS)
import cost_model_fit as fit  # noqa: E402

RHO, PICK = 0.8, 1.10


@pytest.fixture(scope="module")
def sweeps():
    return simulate.sweeps(simulate.load(fit.SWEEP))


@pytest.fixture(scope="module")
def counts():
    return fit.read_counts(fit.COUNTS)


def _check(sweep, estimate):
    ok = [t for t in sweep.trials if t.status == "ok"]
    measured = np.array([t.median_us for t in ok])
    est = np.array([estimate(t) for t in ok])
    return simulate.spearman(est, measured), measured[int(np.argmin(est))] / measured.min()


def test_every_group_is_ranked_and_its_pick_is_near_the_best(sweeps, counts):
    assert len(sweeps) == 5
    for sweep in sweeps:
        est = fit.estimates(counts[sweep.trials[0].group_key], H200)
        rho, pick = _check(sweep, lambda t: est[t.schedule])
        assert rho >= RHO and pick <= PICK, (sweep.trials[0].summary, rho, pick)


def test_the_bar_is_one_the_recorded_estimates_missed(sweeps):
    """The estimates the sweep recorded (the cost model of 2026-12-02) fall short of
    it: the test can fail."""
    checks = [_check(sweep, lambda t: t.estimate_us) for sweep in sweeps]
    assert any(rho < RHO or pick > PICK for rho, pick in checks)


def test_the_stored_counts_are_what_the_code_counts(sweeps, counts):
    """One point of each group (its default and, for the smaller spaces, the space's
    last), compiled to GIR now, counts as the stored file says."""
    for sweep in sweeps:
        t0 = sweep.trials[0]
        group, graph = fit.group_of(fit.case_of(t0.summary), t0.shapes[0], t0.dtypes[0], t0.group_key)
        stored = counts[t0.group_key]
        picks = [t for t in sweep.trials if t.is_default]
        if len(sweep.trials) < 100:
            picks.append(sweep.trials[-1])
        for t in picks:
            kernels = fit.gir_kernels(group, graph, schedule_from_json(t.schedule))
            assert fit.counts_of(kernels) == stored[t.schedule], (t0.summary, t.schedule)
            assert [kernel_cost(k, H200).time_s for k in kernels] == \
                pytest.approx([fit.kernel_time(fit.cost_of(r), H200) for r in stored[t.schedule]])
