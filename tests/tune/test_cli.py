from warpweave.cli import main
from warpweave.tune.database import Database

from .test_database import GPU, trial


def test_db_show_export_import_clear(tmp_path, capsys):
    path = str(tmp_path / "a.db")
    Database(path).add([trial(4, 10.0, default=True), trial(8, 5.0), trial(16, status="failed"),
                        trial(8, 2.0, device=GPU)])
    assert main(["db", "show", "--db", path]) == 0
    out = capsys.readouterr().out
    assert "4 trials, 2 groups" in out and "3 trials (1 failed), default 10.0 us, best 5.0 us (2.00x)" in out
    jsonl = str(tmp_path / "t.jsonl")
    assert main(["db", "export", jsonl, "--db", path, "--device", "test cpu"]) == 0
    other = str(tmp_path / "b.db")
    assert main(["db", "import", jsonl, "--db", other]) == 0
    assert "imported 3 new trials" in capsys.readouterr().out.splitlines()[-1]
    assert main(["db", "clear", "--db", other]) == 0 and Database(other).count() == 0
    assert main(["db", "import", str(tmp_path / "missing.jsonl"), "--db", other]) == 1


def test_tune_command(tmp_path, capsys):
    script = tmp_path / "model.py"
    script.write_text("import warpweave as ww\n\ndef rowsum(x):\n    return x.sum(axis=-1)\n")
    path = str(tmp_path / "t.db")
    assert main(["tune", f"{script}:rowsum", "--arg", "8x32:float32", "--target", "cpu", "--budget", "2",
                 "--strategy", "exhaustive", "--db", path, "--repeat", "3", "--jobs", "1"]) == 0
    assert "speed-up" in capsys.readouterr().out and Database(path).count() == 2
    assert main(["tune", f"{script}:nothing", "--target", "cpu", "--db", path]) == 1
    assert "defines no function 'nothing'" in capsys.readouterr().err
