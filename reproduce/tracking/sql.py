"""A profile's runs read straight from the tables of an MLflow SQL store.

``status`` and ``report`` read every run of a sweep on each call. Through
MLflow's ``search_runs`` that costs, at 10,000 runs, about 4 s for the query
(the SQLAlchemy store builds every run's tags, params and metrics as entity
objects) and 2 s more to import MLflow and open its store: the 5 s target of
issue 11 cannot be met that way. The suite needs only each run's id, status,
tags and latest metrics, which are four plain tables of MLflow's schema
(``experiments``, ``runs``, ``tags``, ``latest_metrics``, unchanged since
MLflow 1.x), so a SQL store (SQLite, MySQL/MariaDB, PostgreSQL: the tracking
URI is a SQLAlchemy URL) is read here with three queries and no MLflow import.

What comes back is what ``search_runs`` returns for the same experiment
(active runs only, newest first, ties by run id; a NaN metric as NaN):
``tests/test_tracking_sql.py`` compares the two on a real store. A store this
cannot read (a schema MLflow changed, a table missing) raises
``SchemaMismatch``, and the caller reads through MLflow instead.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from reproduce.tracking.credentials import secret
from reproduce.tracking.uri import scheme

SQLITE_BUSY_MS = 30000  # wait out a writer holding the SQLite file, as MLflow's own store does
# Each driver's own name for the connection time-out (seconds).
CONNECT_TIMEOUT_ARG = {"mysql": "connect_timeout", "mariadb": "connect_timeout", "postgresql": "connect_timeout"}


class SchemaMismatch(Exception):
    """The store's tables are not the ones this module knows (read through MLflow instead)."""


class SqlRuns:
    """One SQLAlchemy engine over the store; ``runs(experiment, hash_tag, wanted)`` reads."""

    def __init__(self, uri: str, connect_timeout: float | None = None) -> None:
        """``uri`` as the suite holds it (no password: ``credentials.secret`` puts it back here);
        ``connect_timeout``: seconds one connection attempt to a database server may take."""
        import sqlalchemy
        self._sa = sqlalchemy
        kind = scheme(uri)
        args: dict = {"timeout": SQLITE_BUSY_MS / 1000} if kind == "sqlite" else {}
        if connect_timeout is not None and kind in CONNECT_TIMEOUT_ARG:
            args[CONNECT_TIMEOUT_ARG[kind]] = max(1, int(connect_timeout))
        self.engine = sqlalchemy.create_engine(secret(uri), connect_args=args, poolclass=sqlalchemy.pool.NullPool)

    def ping(self) -> None:
        """One connection, opened and closed: raises what the database says when it takes none."""
        with self.engine.connect():
            pass

    def experiment_id(self, name: str) -> str | None:
        """The active experiment called ``name``; None when there is none."""
        rows = self._query("SELECT experiment_id FROM experiments WHERE name = :name AND lifecycle_stage = 'active'",
                           name=name)
        return str(rows[0][0]) if rows else None

    def runs(self, experiment_id: str, hash_tag: str, wanted: Iterable[str] | None = None,
             since_ms: int | None = None) -> list[tuple[str, str, dict[str, str], dict[str, float], int]]:
        """``(run_id, status, tags, metrics, start_time)`` of the experiment's active runs that
        carry ``hash_tag`` (one of ``wanted``, when given), newest first; ``since_ms``: only those
        not FINISHED or FINISHED at or after it (``tracking.settled`` keeps the others)."""
        wanted = set(wanted) if wanted is not None else None
        scope = "r.experiment_id = :exp AND r.lifecycle_stage = 'active'"
        params: dict = {"exp": int(experiment_id)}
        if since_ms is not None:
            scope += " AND (r.status <> 'FINISHED' OR r.end_time IS NULL OR r.end_time >= :since)"
            params["since"] = int(since_ms)
        if wanted is not None and len(wanted) == 1:  # one config (a job's own): the database filters
            # Every column named ``key`` is qualified: KEY is a reserved word in MySQL and MariaDB,
            # where a bare ``key = ...`` is a syntax error (a qualified name may be any identifier).
            scope += (" AND r.run_uuid IN (SELECT h.run_uuid FROM tags h WHERE h.key = :hkey AND h.value = :hval)")
            params.update(hkey=hash_tag, hval=next(iter(wanted)))
        # Three reads, no shared snapshot: the status is read first, so a run ending between the
        # reads shows RUNNING with its last metrics, never FINISHED without the AP logged before.
        order = self._query(f"SELECT r.run_uuid, r.status, r.start_time FROM runs r WHERE {scope} "
                            "ORDER BY r.start_time DESC, r.run_uuid", **params)
        tags: dict[str, dict[str, str]] = defaultdict(dict)
        for run_id, key, value in self._query(
                f"SELECT t.run_uuid, t.key, t.value FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                f"WHERE {scope}", **params):
            tags[run_id][key] = value
        metrics: dict[str, dict[str, float]] = defaultdict(dict)
        for run_id, key, value, is_nan in self._query(
                f"SELECT m.run_uuid, m.key, m.value, m.is_nan FROM latest_metrics m "
                f"JOIN runs r ON r.run_uuid = m.run_uuid WHERE {scope}", **params):
            metrics[run_id][key] = float("nan") if is_nan else float(value)
        out = []
        for run_id, status, start in order:
            h = tags[run_id].get(hash_tag)
            if h and (wanted is None or h in wanted):
                out.append((run_id, status, tags[run_id], metrics[run_id], int(start or 0)))
        return out

    def deleted(self, experiment_id: str) -> list[str]:
        """The ids of the experiment's deleted runs (not yet purged)."""
        return [r[0] for r in self._query("SELECT run_uuid FROM runs WHERE experiment_id = :exp "
                                          "AND lifecycle_stage = 'deleted'", exp=int(experiment_id))]

    def _query(self, sql: str, **params) -> list[tuple]:
        sa = self._sa
        try:
            with self.engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(sql), params)]
        except (sa.exc.OperationalError, sa.exc.ProgrammingError) as exc:
            text = str(exc).lower()
            if "no such table" in text or "no such column" in text or "doesn't exist" in text \
                    or "does not exist" in text or "unknown column" in text:
                raise SchemaMismatch(str(exc).splitlines()[0]) from None
            raise
