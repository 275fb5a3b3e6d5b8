"""Optuna's RDB storage with lean trial reads and batched attribute writes.

A search reads its study several times per trial: Optuna's ``ask`` and ``tell`` read the
trial, and the backend's duplicate check, budget claim, balanced sampler and live view read
every trial not yet finished. Optuna's :class:`~optuna.storages.RDBStorage` makes each read
through the SQLAlchemy ORM: a query, five relationship loads and an ORM object per row, ~3-6
ms on SQLite even for one running trial, which made reads the largest part of a trial's
overhead. :class:`Store` reads the same tables with prebuilt SQLAlchemy Core statements (a
study check, the trials, then their params, values, attributes and intermediate values) and
builds each :class:`~optuna.trial.FrozenTrial` with Optuna's own conversion, so a trial reads
back exactly as Optuna would read it. Each ``suggest_*`` call's parameter write goes the same
way (the same checks, two statements). ``tests/test_store_rdb.py`` compares both with Optuna's
on every kind of value. Everything else is Optuna's.

:func:`set_trial_user_attrs` writes several attributes and intermediate values of a trial in
one transaction, where Optuna commits each on its own.

Both use Optuna's table definitions (``optuna.storages._rdb.models``, private): where those are
not as expected (another Optuna version), reads and writes fall back to Optuna's own calls.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from typing import Any, Container

from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

ID_CHUNK = 500
"""Trial ids per ``IN (...)`` list: well under every database's bound-parameter limit (999 on
old SQLite builds)."""


class _Statements:
    """The prebuilt reads and upserts over Optuna's tables (built once per process: SQLAlchemy
    then caches their compiled form, so each read costs a few statement executions)."""

    CHILDREN = {"params": "TrialParamModel", "values": "TrialValueModel",
                "user_attributes": "TrialUserAttributeModel", "system_attributes": "TrialSystemAttributeModel",
                "intermediate_values": "TrialIntermediateValueModel"}

    def __init__(self) -> None:
        from optuna.storages._rdb import models
        from sqlalchemy import bindparam, select

        self.models = models
        trials, studies = models.TrialModel.__table__, models.StudyModel.__table__
        self.trials_table = trials
        self.columns = (trials.c.trial_id, trials.c.number, trials.c.state, trials.c.datetime_start,
                        trials.c.datetime_complete)
        self.study = select(studies.c.study_id).where(studies.c.study_id == bindparam("study_id"))
        self.trial = select(*self.columns).where(trials.c.trial_id == bindparam("trial_id"))
        self.trial_state = select(trials.c.state).where(trials.c.trial_id == bindparam("trial_id"))
        self.trial_study_state = select(trials.c.study_id, trials.c.state).where(
            trials.c.trial_id == bindparam("trial_id"))
        params = models.TrialParamModel.__table__
        self.first_param = (select(params.c.distribution_json).join(trials, trials.c.trial_id == params.c.trial_id)
                            .where(trials.c.study_id == bindparam("study_id"),
                                   params.c.param_name == bindparam("param_name")).limit(1))
        self.insert_param = params.insert()
        self.children = {}
        for relation, model in self.CHILDREN.items():
            table = getattr(models, model).__table__
            self.children[relation] = select(table).where(table.c.trial_id.in_(bindparam("ids", expanding=True)))
        self._filtered: dict[tuple[bool, bool, bool], Any] = {}
        self._upserts: dict[tuple[str, str], Any] = {}
        # what Optuna's conversion reads of a trial: the ORM model's own datetime properties
        # (stored as naive UTC, shown as local time) over a plain object with the same fields
        namespace: dict[str, Any] = {"__slots__": ("trial_id", "number", "state", "_datetime_start_utc",
                                                   "_datetime_complete_utc", *self.CHILDREN)}
        for name in ("datetime_start", "datetime_complete"):
            namespace[name] = vars(models.TrialModel)[name]
        self.row = type("TrialRow", (), namespace)

    def filtered(self, states: bool, included: bool, greater: bool):
        """The trials of a study, optionally in some states and with ids in a list or above a bound."""
        key = (states, included, greater)
        if key not in self._filtered:
            from sqlalchemy import bindparam, or_, select

            t = self.trials_table
            where = [t.c.study_id == bindparam("study_id")]
            if states:
                where.append(t.c.state.in_(bindparam("states", expanding=True)))
            if included:
                where.append(or_(t.c.trial_id.in_(bindparam("included", expanding=True)),
                                 t.c.trial_id > bindparam("greater")))
            elif greater:
                where.append(t.c.trial_id > bindparam("greater"))
            self._filtered[key] = select(*self.columns).where(*where).order_by(t.c.trial_id)
        return self._filtered[key]

    def upsert(self, dialect: str, relation: str):
        """Insert-or-update rows of trial user attributes or intermediate values, executed once
        for many rows."""
        key = (dialect, relation)
        if key not in self._upserts:
            from sqlalchemy.dialects import mysql, postgresql, sqlite

            model = getattr(self.models, self.CHILDREN[relation])
            keys, values = ((["trial_id", "key"], ["value_json"]) if relation == "user_attributes"
                            else (["trial_id", "step"], ["intermediate_value", "intermediate_value_type"]))
            if dialect == "mysql":
                stmt = mysql.insert(model.__table__)
                stmt = stmt.on_duplicate_key_update({v: stmt.inserted[v] for v in values})
            else:
                stmt = (sqlite if dialect == "sqlite" else postgresql).insert(model.__table__)
                stmt = stmt.on_conflict_do_update(index_elements=keys, set_={v: stmt.excluded[v] for v in values})
            self._upserts[key] = stmt
        return self._upserts[key]


@functools.cache
def _statements() -> _Statements | None:
    """The prebuilt statements (built on first use, once per process), or ``None`` where
    Optuna's tables are not as expected."""
    try:
        from optuna.storages._rdb import models

        if not (isinstance(vars(models.TrialModel).get("datetime_start"), property)
                and hasattr(models.TrialModel, "_datetime_start_utc")
                and hasattr(RDBStorage, "_build_frozen_trial_from_trial_model")
                and hasattr(models.TrialIntermediateValueModel, "intermediate_value_to_stored_repr")):
            return None
        return _Statements()
    except (ImportError, AttributeError, KeyError):
        return None


class Store(RDBStorage):
    """Optuna's RDB storage whose trial reads (``get_trial``, and ``get_all_trials`` through
    Optuna's per-process cache) use prebuilt Core statements instead of the ORM. The trials
    read back are Optuna's, field for field."""

    def _get_trials(self, study_id: int, states: Container | None, included_trial_ids: set[int],
                    trial_id_greater_than: int) -> list[FrozenTrial]:
        s = _statements()
        included = [i for i in included_trial_ids if i <= trial_id_greater_than]
        if s is None or len(included) > ID_CHUNK:
            return super()._get_trials(study_id, states, included_trial_ids, trial_id_greater_than)
        greater = trial_id_greater_than > -1
        params: dict[str, Any] = {"study_id": study_id, "greater": trial_id_greater_than}
        if states is not None:
            params["states"] = list(states)  # type: ignore[call-overload]
        if included and greater:
            params["included"] = included
        stmt = s.filtered(states is not None, bool(included and greater), greater)
        with _reading(self.engine) as conn:
            if conn.execute(s.study, {"study_id": study_id}).first() is None:
                raise KeyError(s.models.NOT_FOUND_MSG)
            return self._frozen(s, conn, conn.execute(stmt, params).all())

    def get_trial(self, trial_id: int) -> FrozenTrial:
        s = _statements()
        if s is None:
            return super().get_trial(trial_id)
        with _reading(self.engine) as conn:
            trials = self._frozen(s, conn, conn.execute(s.trial, {"trial_id": trial_id}).all())
        if not trials:
            raise KeyError(s.models.NOT_FOUND_MSG)
        return trials[0]

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution, previous_distribution) -> None:
        """Optuna's parameter write (what each ``suggest_*`` commits), in two Core statements and
        a commit: the trial's state checked, the study's earlier distribution of the parameter
        (when Optuna's cache has none) checked for compatibility, the row inserted."""
        s = _statements()
        if s is None:
            return super()._set_trial_param(trial_id, param_name, param_value_internal, distribution,
                                            previous_distribution)
        from optuna import distributions
        from sqlalchemy.exc import IntegrityError, SQLAlchemyError

        try:
            with self.engine.begin() as conn:
                row = conn.execute(s.trial_study_state, {"trial_id": trial_id}).first()
                if row is None:
                    raise KeyError(s.models.NOT_FOUND_MSG)
                self.check_trial_is_updatable(trial_id, row.state)
                if previous_distribution is None:
                    stored = conn.execute(s.first_param, {"study_id": row.study_id, "param_name": param_name}).scalar()
                    if stored is not None:
                        previous_distribution = distributions.json_to_distribution(stored)
                if previous_distribution is not None:
                    distributions.check_distribution_compatibility(previous_distribution, distribution)
                conn.execute(s.insert_param, {"trial_id": trial_id, "param_name": param_name,
                                              "param_value": param_value_internal,
                                              "distribution_json": distributions.distribution_to_json(distribution)})
        except IntegrityError:  # the trial already has this parameter (its unique key): Optuna ignores
            return               # the second write too (its session helper's ignore_integrity_error)
        except SQLAlchemyError as exc:
            raise StorageInternalError(f"writing trial {trial_id}'s parameter {param_name!r} failed: "
                                       f"{str(exc).splitlines()[0]}") from exc

    def _frozen(self, s: _Statements, conn, rows) -> list[FrozenTrial]:
        """The trials of ``rows`` (trial_id, number, state, datetimes), their related rows read
        in chunks, converted by Optuna."""
        trials = {}
        for trial_id, number, state, start, complete in rows:
            t = s.row()
            t.trial_id, t.number, t.state, t._datetime_start_utc, t._datetime_complete_utc = (
                trial_id, number, state, start, complete)
            for relation in s.CHILDREN:
                setattr(t, relation, [])
            trials[trial_id] = t
        ids = list(trials)
        for lo in range(0, len(ids), ID_CHUNK):
            chunk = ids[lo:lo + ID_CHUNK]
            for relation, stmt in s.children.items():
                for child in conn.execute(stmt, {"ids": chunk}):
                    getattr(trials[child.trial_id], relation).append(child)
        return [self._build_frozen_trial_from_trial_model(t) for t in trials.values()]


@contextlib.contextmanager
def _reading(engine):
    """A pooled connection for a read; database errors become Optuna's
    :class:`~optuna.exceptions.StorageInternalError`, as Optuna's own reads raise them."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise StorageInternalError(f"reading the study failed: {str(exc).splitlines()[0]}") from exc


def set_trial_user_attrs(storage: Any, trial_id: int, attrs: dict[str, Any],
                         intermediate: dict[int, float] | None = None) -> None:
    """Write several user attributes of a running trial, and its ``intermediate`` values (epoch
    -> value, what ``trial.report`` writes), in one storage transaction (Optuna's
    ``set_trial_user_attr`` and ``set_trial_intermediate_value`` commit each on its own: ~2-5 ms
    apiece on SQLite). All or none are written; a finished trial raises
    :class:`optuna.exceptions.UpdateFinishedTrialError`, as Optuna's setters do. Storages
    other than Optuna's RDB one get one call per key and step."""
    intermediate = intermediate or {}
    if not attrs and not intermediate:
        return
    backend = getattr(storage, "_backend", storage)  # optuna's _CachedStorage wraps the RDBStorage
    dialect = backend.engine.name if isinstance(backend, RDBStorage) else None
    s = _statements() if dialect in ("sqlite", "postgresql", "mysql") else None
    if s is None or not hasattr(backend, "check_trial_is_updatable") or (
            dialect == "sqlite" and sqlite3.sqlite_version_info < (3, 24)):  # no upsert: as Optuna does it
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        for step, value in intermediate.items():
            storage.set_trial_intermediate_value(trial_id, step, value)
        return
    from sqlalchemy.exc import SQLAlchemyError

    model = s.models.TrialIntermediateValueModel
    try:
        with backend.engine.begin() as conn:
            state = conn.execute(s.trial_state, {"trial_id": trial_id}).scalar()
            if state is None:
                raise KeyError(s.models.NOT_FOUND_MSG)
            backend.check_trial_is_updatable(trial_id, state)
            if attrs:
                conn.execute(s.upsert(dialect, "user_attributes"),
                             [{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()])
            if intermediate:
                rows = []
                for step, value in sorted(intermediate.items()):
                    stored, kind = model.intermediate_value_to_stored_repr(float(value))
                    rows.append({"trial_id": trial_id, "step": int(step), "intermediate_value": stored,
                                 "intermediate_value_type": kind})
                conn.execute(s.upsert(dialect, "intermediate_values"), rows)
    except SQLAlchemyError as exc:  # upserts never conflict: any database error means nothing was written
        raise StorageInternalError(f"writing trial {trial_id}'s attributes failed: {str(exc).splitlines()[0]}") from exc
