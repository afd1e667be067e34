"""Building programs side by side (warpweave.pipeline.parallel): what the workers build
is what a compile here would build, the compiles that follow are cache hits, and a
failing or dying worker changes nothing but the time taken."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.frontend.trace import trace
from warpweave.pipeline import parallel
from warpweave.pipeline.cache import default_cache
from warpweave.pipeline.compile import compile_graph


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path / "cache"))


def _graphs(count):
    """`count` distinct graphs (a softmax scaled by k), with their numpy answers."""
    x = np.random.default_rng(7).standard_normal((33, 50)).astype(np.float32)
    graphs = []
    for k in range(1, count + 1):
        graph, _ = trace(lambda t, k=k: ww.softmax(t * float(k), axis=-1), [(x.shape, ww.float32)])
        e = np.exp(x.astype(np.float64) * k - (x.astype(np.float64) * k).max(-1, keepdims=True))
        graphs.append((graph, e / e.sum(-1, keepdims=True)))
    return x, graphs


def test_workers_build_what_compiles_here_then_read_from_the_cache():
    x, graphs = _graphs(4)
    jobs = [parallel.Job(g, True, "cpu", f"p{k}") for k, (g, _) in enumerate(graphs)]
    jobs.append(parallel.Job(graphs[0][0], True, "cpu", "again"))  # the same program: built once
    with ww.options(compile_workers=3):
        assert parallel.precompile(jobs) == 4
        assert parallel.precompile(jobs) == 0  # all cached now
    cache = default_cache()
    before = cache.stats.hits
    for graph, want in graphs:
        got = compile_graph(graph, True, "cpu")(x)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert cache.stats.hits - before >= len(graphs)  # plans and code came from the workers


def test_one_worker_means_none():
    _, graphs = _graphs(3)
    with ww.options(compile_workers=1):
        assert parallel.precompile([parallel.Job(g, True, "cpu", "p") for g, _ in graphs]) == 0


def test_a_failing_compile_is_left_to_the_compile_that_follows(monkeypatch):
    _, graphs = _graphs(3)
    jobs = [parallel.Job(g, True, "cpu", f"p{k}") for k, (g, _) in enumerate(graphs)]
    jobs.append(parallel.Job(graphs[0][0], True, "no-such-target", "bad"))
    with ww.options(compile_workers=2), pytest.raises(ww.Error):
        parallel.precompile(jobs)  # the target is checked here, before any work is handed out


def test_a_worker_that_dies_loses_nothing(monkeypatch):
    x, graphs = _graphs(4)
    with ww.options(compile_workers=2):
        workers = parallel._workers(1)
        workers[0].process.kill()
        workers[0].process.wait()
        monkeypatch.setattr(parallel, "_workers", lambda n: workers)  # hand jobs to the dead one
        built = parallel.precompile([parallel.Job(g, True, "cpu", f"p{k}") for k, (g, _) in enumerate(graphs)])
    assert built == 4  # this process built them all
    for graph, want in graphs:
        np.testing.assert_allclose(compile_graph(graph, True, "cpu")(x), want, rtol=2e-6, atol=1e-7)


def test_compile_workers_option_is_checked():
    with pytest.raises(ww.Error, match="WARPWEAVE_COMPILE_WORKERS|compile_workers"):
        with ww.options(compile_workers=-2):
            pass
