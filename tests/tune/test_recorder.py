"""benchmarks/tuning.py end to end on the cpu target: a recorded sweep (every point of
each group's space, exported as JSON lines) that the simulation then compares on."""
import importlib.util
import json
import pathlib

SCRIPT = pathlib.Path(__file__).parents[2] / "benchmarks" / "tuning.py"


def _script():
    spec = importlib.util.spec_from_file_location("tuning_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_record_then_compare(tmp_path, capsys):
    bench = _script()
    out = tmp_path / "sweep.jsonl"
    bench.main(["record", "--target", "cpu", "--cases", "col_sum,row_sum", "--shapes", "16x64,32x96",
                "--warmup", "1", "--repeat", "2", "--jobs", "0", "--quiet", "--out", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    groups = {r["group_key"] for r in rows}
    assert len(groups) == 4 and all(r["strategy"] == "exhaustive" for r in rows)
    assert sum(r["is_default"] for r in rows) == 4 and all(r["status"] == "ok" for r in rows)
    capsys.readouterr()
    bench.main(["compare", "--sweep", str(out), "--strategies", "exhaustive,model,random", "--seeds", "2"])
    text = capsys.readouterr().out
    assert f"{out}: 4 groups, {len(rows)} trials" in text
    assert all(f"\n{name} " in text for name in ("exhaustive", "model", "random"))
    assert "tuned over default: geometric mean" in text and "within 5 %" in text
