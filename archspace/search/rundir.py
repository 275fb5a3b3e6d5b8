"""A study's run directory belongs to one store and one study.

The run directory (``runs/<study>`` or ``--out``) holds the trials' files
(``trials/NNNNN/``: spec, recipe, metrics, checkpoint) and, by default, the store itself
(``study.db``). A small manifest, ``archspace-run.json``, written when the directory is first
used, records which store and which study its trials belong to. A search or report that
names another store or study is refused before anything is written or read, so a second
store can never overwrite another study's trial files; several run directories may share
one store (one per machine, say), and trial numbers, which the store makes unique within a
study, name the trial directories, so no two processes write the same one (a trial queued
again after its process died resumes in its own directory, on purpose).

Each trial's record holds its directory (``run_dir``); :func:`check_trial_dir` tells whether
a directory's own spec and recipe still hash to the record's key, so a report never uses a
directory that another run has overwritten.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..errors import SpecError

MANIFEST = "archspace-run.json"
MANIFEST_MAX_BYTES = 64 * 1024
SQLITE_HEADER = b"SQLite format 3\x00"
OPTUNA_TABLES = {"studies", "trials", "version_info"}
STORE_APPLICATION_ID = int.from_bytes(b"arch", "big")
"""Stamped in the header of every SQLite store file archspace creates, before Optuna makes its
tables: a file with this mark and no tables yet is a store being created by another process of
the same search (not another program's database)."""
OWN_STORE = "study.db"  # a manifest's storage when the store is the run directory's own: moves with it


def _sqlite_url(url: str):
    """The parsed URL if it names an SQLite database, else ``None``."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except ArgumentError:
        return None
    return u if u.get_backend_name() == "sqlite" else None


def sqlite_file(url: str) -> Path | None:
    """The file an SQLite URL names, or ``None`` for an in-memory database or another one."""
    u = _sqlite_url(url)
    database = (u.database or "") if u is not None else ""
    if database in ("", ":memory:") or database.startswith("file::memory:") or "mode=memory" in database:
        return None
    return Path(database).expanduser()


def storage_identity(url: str) -> str:
    """The store a URL names, comparable across spellings: an SQLite file by its resolved
    path; any other database by backend, user, host, port and name (never its password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if _sqlite_url(url) is not None:
        path = sqlite_file(url)
        return "sqlite://" if path is None else f"sqlite:///{path.resolve()}"
    try:
        u = make_url(url)
    except ArgumentError:
        return url
    return u.set(drivername=u.get_backend_name(), password=None, query={}).render_as_string(hide_password=False)


def check_store_file(url: str, option: str = "--storage", reading: bool = False) -> None:
    """Refuse an SQLite URL that archspace must not use as a study store: an in-memory database
    (its results would be lost when the process ends), a folder, a file that is not an SQLite
    database, or one without Optuna's tables (another program's data, which Optuna's tables
    would be written into) unless archspace stamped it (:data:`STORE_APPLICATION_ID`: a store
    another process is creating). ``reading`` (a report, which never creates a store) also refuses a
    missing or empty file. Other URLs pass (:func:`~archspace.search.optuna_backend.check_reachable`
    connects to them).

    Raises:
        SpecError: one problem on ``option``.
    """
    import sqlite3

    if _sqlite_url(url) is None:
        return
    path = sqlite_file(url)
    if path is None:
        raise SpecError.single(option, f"{url} is an in-memory database: the study would be lost when the process "
                                       f"ends; give a file, e.g. sqlite:///runs/my-study/study.db")
    if path.is_dir():
        raise SpecError.single(option, f"{url} names the folder {path}, not a study store file")
    if not path.exists() or path.stat().st_size == 0:
        if reading:
            what = "no" if not path.exists() else "an empty file, not a"
            raise SpecError.single(option, f"{path} is {what} study store (a report never creates one)"
                                   if path.exists() else f"no study store at {url}")
        return
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
        if header != SQLITE_HEADER:
            raise SpecError.single(option, f"{path} is not an SQLite database, so not a study store; archspace "
                                           f"does not write into it")
        tables, application_id = _schema(path)
    except (OSError, sqlite3.Error) as exc:
        raise SpecError.single(option, f"cannot read {path}: {exc}") from None
    if not OPTUNA_TABLES <= tables and application_id != STORE_APPLICATION_ID:
        raise SpecError.single(option, f"{path} is an SQLite database without Optuna's tables (another program's "
                                       f"data, {len(tables)} tables): not a study store; archspace does not write "
                                       f"into it")


def _schema(path: Path) -> tuple[set[str], int]:
    """The table names and the application id of an SQLite file, read without writing to it.

    A writer killed mid-transaction leaves a hot rollback journal beside the file, which a
    read-only connection cannot roll back ("attempt to write a readonly database"), and the
    file alone may hold half-written pages. The schema is then read from a copy of the file and
    its journal in a temporary folder, where SQLite rolls the copy back; the store itself is
    rolled back by its next writer, as SQLite always does.
    """
    import shutil
    import sqlite3
    import tempfile

    def read(file: Path, mode: str) -> tuple[set[str], int]:
        con = sqlite3.connect(f"file:{file}?mode={mode}", uri=True)
        try:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type = 'table'")}
            return tables, int(con.execute("PRAGMA application_id").fetchone()[0])
        finally:
            con.close()

    try:
        return read(path, "ro")
    except sqlite3.OperationalError as exc:
        journal = path.with_name(path.name + "-journal")
        if "readonly" not in str(exc) or not journal.is_file():
            raise
    with tempfile.TemporaryDirectory(prefix="archspace-store-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(journal, Path(tmp) / journal.name)
        return read(copy, "rw")


def default_storage(run_dir: Path) -> str:
    """The run directory's own store: ``RUN_DIR/study.db``."""
    return f"sqlite:///{(Path(run_dir) / OWN_STORE).resolve()}"


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    """The run directory's manifest, or ``None`` if it has none; its ``storage`` is the store's
    identity (see :func:`storage_identity`), the run directory's own store resolved to its path.

    Raises:
        SpecError: on ``--out``, a manifest that is not archspace's (too large, not JSON,
            wrong fields).
    """
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MANIFEST_MAX_BYTES:
            raise ValueError(f"larger than {MANIFEST_MAX_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(data, dict) and isinstance(data.get("study"), str) and isinstance(data.get("storage"), str)):
            raise ValueError("no study and storage in it")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise SpecError.single("--out", f"{path} is not a run manifest archspace wrote ({exc}); choose another "
                                        f"run directory with --out") from None
    if data["storage"] == OWN_STORE:
        data["storage"] = storage_identity(default_storage(run_dir))
    return data


def check_run_dir(run_dir: Path, storage_url: str, study: str) -> None:
    """Refuse a run directory that belongs to another store or study (before anything is written).

    A directory without a manifest is taken if it holds no trials, or if its trials can only
    be this study's: the store is the directory's own ``study.db`` and holds this study (a
    run directory made before manifests existed).

    Raises:
        SpecError: on ``--out``, naming the run directory, both stores and how to choose another.
    """
    run_dir = Path(run_dir)
    here = storage_identity(storage_url)
    manifest = read_manifest(run_dir)
    if manifest is not None:
        if (manifest["storage"], manifest["study"]) != (here, study):
            raise SpecError.single("--out", f"run directory {run_dir} belongs to study {manifest['study']!r} in "
                                            f"{manifest['storage']}, not to {study!r} in {here}; choose another "
                                            f"run directory with --out (or use that store and study there)")
        return
    if not (run_dir / "trials").is_dir():
        return
    if here == storage_identity(default_storage(run_dir)) and _store_holds(storage_url, study):
        return
    raise SpecError.single("--out", f"run directory {run_dir} holds trials but no {MANIFEST}, so which store and "
                                    f"study they belong to is unknown; choose another run directory with --out")


def _store_holds(url: str, study: str) -> bool:
    import optuna

    path = storage_identity(url)
    if path.startswith("sqlite:///") and not Path(path[len("sqlite:///"):]).is_file():
        return False
    try:
        return study in optuna.study.get_all_study_names(storage=url)
    except Exception:  # noqa: BLE001 - an unreadable store holds nothing we can claim
        return False


def write_manifest(run_dir: Path, storage_url: str, study: str) -> None:
    """Record the run directory's store and study (once; atomic)."""
    from .. import __version__
    from ..train.checkpoint import write_json

    if read_manifest(run_dir) is None:
        here = storage_identity(storage_url)
        own = here == storage_identity(default_storage(run_dir))
        write_json(Path(run_dir) / MANIFEST, {"study": study, "storage": OWN_STORE if own else here,
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                              "archspace": __version__})


def check_trial_dir(path: Path, key: str) -> str | None:
    """Why the trial directory ``path`` does not hold the run its record describes (its
    ``spec.yaml`` and ``config.json`` hash to another key, or cannot be read), or ``None``."""
    import yaml

    from ..spec._yaml import parse_yaml
    from ..spec.io import validate
    from ..train.config import TrainConfig
    from .space import spec_hash

    try:
        spec = validate(parse_yaml((path / "spec.yaml").read_text(encoding="utf-8"), "spec.yaml"))
        config = TrainConfig.model_validate(json.loads((path / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, UnicodeDecodeError, yaml.YAMLError, SpecError) as exc:
        return f"its spec.yaml or config.json cannot be read ({type(exc).__name__})"
    found = spec_hash(spec, config)
    if found != key:
        return f"its spec.yaml and config.json hash to {found}, but the store records {key} for it"
    return None


def open_study(run_dir: Path, storage: str | None = None, name: str | None = None):
    """The Optuna study of a run directory: the store and study its manifest names (or
    ``RUN_DIR/study.db``), or ``storage`` — which must then be the manifest's.

    Raises:
        SpecError: no store, another store or study than the run directory's, an unreadable store.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    manifest = read_manifest(Path(run_dir))
    if manifest is not None:
        if storage is not None and storage_identity(storage) != manifest["storage"]:
            raise SpecError.single("--storage", f"run directory {run_dir} belongs to {manifest['storage']}, not "
                                                f"{storage_identity(storage)}: its trial files are not that store's")
        if name is not None and name != manifest["study"]:
            raise SpecError.single("--study", f"run directory {run_dir} belongs to study {manifest['study']!r}, "
                                              f"not {name!r}")
        name = manifest["study"]
        if storage is None and manifest["storage"].startswith("sqlite:///"):
            storage = manifest["storage"]
    if storage is None:
        db = Path(run_dir) / "study.db"
        if not db.is_file():
            where = f" (its manifest names {manifest['storage']}: pass it with --storage)" if manifest else ""
            raise SpecError.single("RUN_DIR", f"no study store in {run_dir} (expected {db}){where}")
        storage = f"sqlite:///{db.resolve()}"
    check_store_file(storage, reading=True)  # never create a store, nor write into another program's file
    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    except Exception as exc:
        raise SpecError.single("--storage", f"cannot read {storage}: {str(exc).splitlines()[0]}") from None
    if name is None:
        if len(names) != 1:
            raise SpecError.single("--study", f"the store holds {len(names)} studies ({', '.join(names)}): name one")
        name = names[0]
    if name not in names:
        raise SpecError.single("--study", f"no study {name!r} in the store (found: {', '.join(names)})")
    from ._rdb import Store

    return optuna.load_study(study_name=name, storage=Store(storage))  # reads the trials twice as fast
