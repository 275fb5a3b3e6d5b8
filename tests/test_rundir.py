"""One run directory, one study: a run directory records its store and study, a search or report
with another is refused before anything is written, and a report never uses a trial directory
that holds another run than its record. Real SQLite stores, real processes, real training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from archspace.search.optuna_backend import TRAINED, trial_status
from archspace.search.rundir import MANIFEST, read_manifest, storage_identity
from test_search import TINY, assert_ok, load, run_search, sqlite_url, start_search, write_study
from test_search_integrity import SMALL, wait_for

def small_study(folder: Path, trials: int = 1) -> Path:
    return write_study(folder, space={**SMALL, "choices": {"layout": ["C-C-C-C"], "train.lr": [1.0e-3, 2.0e-3]}},
                       train={**TINY["train"], "epochs": 1}, trials=trials)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file's hash, but for what SQLite keeps beside a store in WAL mode while any process
    (this one too) has it open: its shared-memory index and an empty log hold no data."""
    def data(p: Path) -> bool:
        return p.is_file() and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if data(p)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rundir")
    study_file = small_study(folder)
    assert_ok(run_search(study_file, "--out", folder / "out", "--format", "json"))
    return folder, study_file


def test_the_run_directory_records_its_store_and_study(finished):
    folder, _ = finished
    manifest = json.loads((folder / "out" / MANIFEST).read_text())
    assert manifest["study"] == "tiny"
    assert manifest["storage"] == "study.db"          # its own store, wherever the run directory moves
    assert read_manifest(folder / "out")["storage"] == f"sqlite:///{(folder / 'out' / 'study.db').resolve()}"
    (trial,) = [t for t in load(sqlite_url(folder / "out" / "study.db")).get_trials()
                if trial_status(t) in TRAINED]
    assert Path(trial.user_attrs["run_dir"]) == (folder / "out" / "trials" / "00000").resolve()


def test_a_second_store_on_the_same_run_directory_is_refused_and_nothing_changes(finished, tmp_path):
    folder, study_file = finished
    before = snapshot(folder / "out")
    other = tmp_path / "other"
    other.mkdir()
    result = run_search(study_file, "--storage", f"sqlite:///{other / 'study.db'}", "--out", folder / "out")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("--out: run directory ") and "Traceback" not in result.stderr
    assert str(folder / "out") in lines[0] and str(other / "study.db") in lines[0] and "--out" in lines[0]
    assert snapshot(folder / "out") == before                              # byte for byte
    assert not (other / "study.db").exists()                               # and the other store is not made
    again = run_search(study_file, "--out", folder / "out", "--format", "json")  # its own store goes on
    assert again.returncode == 0 and snapshot(folder / "out") == before


def test_another_study_name_on_the_same_run_directory_is_refused(finished, tmp_path):
    import yaml

    folder, study_file = finished
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(yaml.safe_dump({**yaml.safe_load(study_file.read_text()), "name": "another"}))
    result = run_search(renamed, "--out", folder / "out")
    assert result.returncode == 2 and "belongs to study 'tiny'" in result.stderr, result.stderr


def test_a_fresh_out_with_another_store_works(finished, tmp_path):
    _, study_file = finished
    url = f"sqlite:///{tmp_path / 'other.db'}"
    summary = assert_ok(run_search(study_file, "--storage", url, "--out", tmp_path / "fresh", "--format", "json"))
    assert summary["counts"] == {"complete": 1}
    assert json.loads((tmp_path / "fresh" / MANIFEST).read_text())["storage"] == storage_identity(url)


def test_two_processes_on_one_store_with_their_own_run_directories_never_share_a_trial_directory(tmp_path):
    choices = {"layout": ["C-C-C-C"], "train.lr": [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3, 5.0e-3]}
    study_file = write_study(tmp_path, space={**SMALL, "choices": choices}, train={**TINY["train"], "epochs": 1},
                             trials=4)
    url = sqlite_url(tmp_path / "shared.db")
    procs = [start_search(study_file, "--storage", url, "--out", tmp_path / "host0", "--format", "json")]
    # the second starts once the first has made the store (two processes creating one SQLite
    # schema at the same instant is a race of the store's own, not what this test is about)
    wait_for(lambda: load(url).get_trials(), 120, "the first process to start a trial", procs[0])
    procs.append(start_search(study_file, "--storage", url, "--out", tmp_path / "host1", "--format", "json"))
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
    trained = [t for t in load(url).get_trials() if trial_status(t) in TRAINED]
    dirs = [t.user_attrs["run_dir"] for t in trained]
    assert len(trained) == 4 and len(set(dirs)) == 4
    for t in trained:
        owner_dir = Path(t.user_attrs["run_dir"]).parents[1]
        assert owner_dir.name in ("host0", "host1")
        assert json.loads((owner_dir / MANIFEST).read_text())["storage"] == storage_identity(url)


def test_report_refuses_a_trial_directory_that_holds_another_run(finished, cli, tmp_path):
    import shutil

    folder, _ = finished
    copy = tmp_path / "out"
    shutil.copytree(folder / "out", copy)
    assert cli("report", copy, "--format", "json").exit_code == 0
    config = copy / "trials" / "00000" / "config.json"
    data = json.loads(config.read_text())
    data["lr"] = 0.5
    config.write_text(json.dumps(data))
    result = cli("report", copy)
    assert result.exit_code == 2, result.stdout
    (line,) = result.err_lines
    assert line.startswith("RUN_DIR: trial 0's directory ") and "holds another run" in line


def test_report_refuses_another_store_than_the_run_directorys(finished, cli, tmp_path):
    folder, _ = finished
    result = cli("report", folder / "out", "--storage", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.exit_code == 2 and result.err_lines[0].startswith("--storage: run directory ")
    assert not (tmp_path / "x.db").exists()


def test_json_lines_leaves_out_only_a_torn_last_line():
    from archspace.train.rundir import json_lines

    assert json_lines('{"epoch": 1}\n{"epoch": 2}\n') == [{"epoch": 1}, {"epoch": 2}]
    assert json_lines('{"epoch": 1}\n{"epo') == [{"epoch": 1}]  # a write cut by a kill
    with pytest.raises(ValueError):  # damage in the middle is not a kill: the caller repairs or refuses
        json_lines('{"epoch": 1}\n{"epo\n{"epoch": 3}\n')


def test_a_store_left_with_a_hot_journal_by_a_killed_writer_is_still_recognised(tmp_path):
    """SIGKILL in the middle of a write leaves ``study.db-journal``: a read-only connection
    cannot read such a file, yet it is the study's own store, and checking it changes nothing."""
    import subprocess
    import sys

    import optuna

    from archspace.search.rundir import check_store_file

    db = tmp_path / "study.db"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="s")
    writer = (f"import os, sqlite3; con = sqlite3.connect({str(db)!r}); con.execute('begin immediate'); "
              "con.execute(\"update studies set study_name = 'x'\"); con.execute('pragma cache_size = 1'); "
              "con.execute('create table junk (a)'); "
              "con.executemany('insert into junk values (?)', [(i,) for i in range(20000)]); "
              "os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", writer], check=False)
    assert (tmp_path / "study.db-journal").is_file()
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.iterdir()}
    check_store_file(f"sqlite:///{db}", "--storage")
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in tmp_path.iterdir()} == stamps
    assert optuna.get_all_study_names(f"sqlite:///{db}") == ["s"]   # the next writer rolls it back
