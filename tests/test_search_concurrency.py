"""Three ``archspace search`` processes started one second apart on one SQLite store, five
times: no point is trained twice and the budget is trained exactly (real processes, real
store, real training of a tiny network; in a file of its own so that it runs beside the
other search tests on the second core)."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from archspace.search.optuna_backend import TRAINED, trial_status
from test_search import TINY, load, sqlite_url, start_search, write_study
from test_search_integrity import SMALL


def _three_processes_one_store(folder: Path) -> optuna.Study:
    choices = {"layout": ["C-C-C-C"], "train.lr": [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3, 5.0e-3]}
    study_file = write_study(folder, space={**SMALL, "choices": choices}, train={**TINY["train"], "epochs": 1},
                             trials=4)
    (folder / "out").mkdir()
    url = sqlite_url(folder / "out" / "study.db")
    args = (study_file, "--out", folder / "out", "--storage", url, "--format", "json")
    procs = []
    for i in range(3):
        procs.append(start_search(*args))
        if i < 2:
            time.sleep(1.0)
    for p in procs:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
    return load(url)


def test_three_processes_on_one_store_train_no_point_twice(tmp_path):
    for run in range(5):
        study = _three_processes_one_store(tmp_path / f"run{run}")
        trained = [t for t in study.get_trials() if trial_status(t) in TRAINED]
        keys = [t.user_attrs["key"] for t in trained]
        assert len(trained) == 4, (run, [(t.number, trial_status(t)) for t in study.get_trials()])
        assert len(set(keys)) == 4, (run, keys)
        assert not [t for t in study.get_trials() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        owners = {t.user_attrs["owner"]["pid"] for t in study.get_trials()}
        assert len(owners) >= 2, "the processes did not overlap"


def _open_at_once(url: str, barrier, results) -> None:
    from archspace.errors import SpecError
    from archspace.search.optuna_backend import open_storage

    barrier.wait()
    try:
        open_storage(url)
        results.put("ok")
    except SpecError as exc:
        results.put(str(exc))


def test_processes_opening_one_fresh_store_at_the_same_moment_all_get_it(tmp_path):
    # Without the retry, one of four processes loses the race to create Optuna's tables nearly
    # every time ("table studies already exists", "UNIQUE constraint failed: alembic_version");
    # switching the fresh file to WAL mode races too ("database is locked").
    import multiprocessing
    import sqlite3

    ctx = multiprocessing.get_context("fork")
    for i in range(3):
        url = sqlite_url(tmp_path / f"study{i}.db")
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(url, barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        outcome = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert outcome == ["ok"] * 4, outcome
        assert optuna.storages.RDBStorage(url).get_all_studies() == []
        con = sqlite3.connect(tmp_path / f"study{i}.db")  # one of them switched it to WAL; the others found it so
        try:
            assert con.execute("pragma journal_mode").fetchone()[0] == "wal"
        finally:
            con.close()


def _pragma(path: Path, name: str):
    """An SQLite file's setting, read as SQLite reports it."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return con.execute(f"pragma {name}").fetchone()[0]
    finally:
        con.close()


def test_a_store_archspace_makes_is_write_ahead_logged_and_another_keeps_its_mode(tmp_path, monkeypatch):
    from archspace.search.optuna_backend import SQLITE_WAL_ENV, close_storage, open_storage

    def mode(path: Path) -> str:
        return _pragma(path, "journal_mode")

    def synchronous(storage) -> int:
        with storage.engine.connect() as con:
            return con.exec_driver_sql("pragma synchronous").scalar()

    monkeypatch.delenv(SQLITE_WAL_ENV, raising=False)
    ours = tmp_path / "ours" / "study.db"
    ours.parent.mkdir()
    storage = open_storage(sqlite_url(ours))
    optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert mode(ours) == "wal" and synchronous(storage) == 1          # NORMAL: synced at checkpoints
    assert (ours.parent / "study.db-wal").exists()                    # recent commits live in the log ...
    close_storage(storage)
    assert sorted(p.name for p in ours.parent.iterdir()) == ["study.db"]  # ... until the last connection closes
    assert len(optuna.load_study(study_name="s", storage=sqlite_url(ours)).trials) == 2

    theirs = tmp_path / "theirs.db"                                   # a store made by Optuna itself
    optuna.create_study(storage=sqlite_url(theirs), study_name="s")
    storage = open_storage(sqlite_url(theirs))
    assert mode(theirs) == "delete" and synchronous(storage) == 2     # its mode and full syncs, as made
    close_storage(storage)

    monkeypatch.setenv(SQLITE_WAL_ENV, "0")                           # e.g. on a network file system
    off = tmp_path / "off.db"
    close_storage(open_storage(sqlite_url(off)))
    assert mode(off) == "delete"
    monkeypatch.setenv(SQLITE_WAL_ENV, "1")                           # every SQLite store, on request
    close_storage(open_storage(sqlite_url(theirs)))
    assert mode(theirs) == "wal"


def test_a_store_being_made_by_another_process_is_not_taken_for_another_programs_file(tmp_path, monkeypatch):
    """Between the moment a process makes a fresh store file and the moment Optuna's tables exist
    in it, a second process of the same search checks the file: it is archspace's (stamped), so it
    passes, in WAL mode or not; an SQLite file without tables that archspace did not make is
    still refused, and an existing store is not stamped."""
    import sqlite3

    from archspace.errors import SpecError
    from archspace.search.optuna_backend import SQLITE_WAL_ENV, _prepare_store_file, close_storage, open_storage
    from archspace.search.rundir import STORE_APPLICATION_ID, check_store_file

    def application_id(path: Path) -> int:
        return _pragma(path, "application_id")

    for wal in (True, False):
        being_made = tmp_path / f"made-{wal}.db"
        _prepare_store_file(being_made, stamp=True, wal=wal)              # the first process, before its tables
        assert being_made.stat().st_size > 0 and application_id(being_made) == STORE_APPLICATION_ID
        check_store_file(sqlite_url(being_made))                          # the second process's check passes
    foreign = tmp_path / "foreign.db"
    sqlite3.connect(foreign).execute("pragma user_version = 1").connection.close()
    try:
        check_store_file(sqlite_url(foreign))
        raise AssertionError("an SQLite file without tables that archspace did not make was accepted")
    except SpecError as exc:
        assert "without Optuna's tables" in str(exc)

    monkeypatch.setenv(SQLITE_WAL_ENV, "0")
    fresh = tmp_path / "fresh.db"
    close_storage(open_storage(sqlite_url(fresh)))                        # made by open_storage, WAL off: stamped
    assert application_id(fresh) == STORE_APPLICATION_ID
    theirs = tmp_path / "theirs.db"
    optuna.create_study(storage=sqlite_url(theirs), study_name="s")
    monkeypatch.setenv(SQLITE_WAL_ENV, "1")
    close_storage(open_storage(sqlite_url(theirs)))                       # switched to WAL, not stamped
    assert application_id(theirs) == 0
