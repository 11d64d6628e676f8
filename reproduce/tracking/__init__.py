"""MLflow: where runs are looked up, logged and reported from.

The default store is a SQLite file in the working directory; a flag or
``MLFLOW_TRACKING_URI`` names another (a server). SQLite allows one writer at a
time, so every write goes through ``retry`` (a locked database is waited out,
not lost), and metrics are sent in batches.

An unreachable server is a decision made before anything trains: ``check``
fails with a one-line error. Nothing is buffered to be flushed later, so no
result can be silently dropped.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

from reproduce.errors import UserError, first_line
from reproduce.tracking import credentials
from reproduce.tracking.uri import is_sql, resolve_uri, scheme

T = TypeVar("T")
TAG_HASH = "musu.config_hash"
TAG_ROWS = "musu.rows"
TAG_TABLES = "tables"  # "table1,table7": for the MLflow UI's search, tags.tables LIKE '%table7%'
TAG_PROFILE = "musu.profile"
TAG_TABLE = "musu.table"
TAG_ROW = "musu.row"
TAG_ERROR = "musu.error"
TAG_JOB = "slurm.job_id"
TAG_PID = "local.pid"
TAG_COMMIT = "git.commit"
TAG_PROGRESS = "musu.progress"
TAG_RATE = "musu.rate"  # iterations per second over the last logging interval
TAG_LOSS = "musu.loss"  # the last total training loss
TAG_STATE = "musu.state"
TAG_DEVICE = "musu.device"
TAG_PREFLIGHT = "musu.preflight"
TAG_CODE = "musu.code"  # reproduce.node.fingerprint.code_fingerprint() of the code that trained the run
TAG_LIBS = "musu.libraries"  # reproduce.node.fingerprint.library_versions() of the job's own environment
TAG_DATA = "musu.data"  # reproduce.node.fingerprint.data_fingerprint() of the annotations it read
TAG_TESTDEV = "musu.testdev_detections"  # the detections file of an unlabeled test split, for COCO's server
TAG_CREATED_BY = "musu.create_token"  # one per Tracker._create_once call: finds a run a lost answer created


def experiment_name(profile: str) -> str:
    """The MLflow experiment of a profile's runs."""
    return f"musu-{profile}"


# What a busy SQLite file or a tracking server restarting says (MLflow's own
# HTTP retries have given up by the time these reach us).
TRANSIENT = ("database is locked", "database table is locked", "unable to open database", "disk i/o error",
             "deadlock", "temporarily unavailable", "connection reset", "connection refused", "connection aborted",
             "max retries exceeded", "read timed out", "remotedisconnected", "bad gateway", "service unavailable",
             "gateway timeout", "too many 502", "too many 503", "too many 504", "status code 502",
             "status code 503", "status code 504")


def is_transient(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return any(s in text for s in TRANSIENT)


def retry(fn: Callable[[], T], attempts: int = 60, base: float = 0.05, cap: float = 5.0) -> T:
    """Call ``fn`` until it stops failing on a locked/busy store or a server that is
    restarting (jittered back-off, about four minutes in all before giving up)."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - filtered below
            if attempt == attempts - 1 or not is_transient(exc):
                raise
            time.sleep(min(cap, base * 2 ** attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def client(uri: str | None = None):
    """A raw ``MlflowClient`` (``Tracker.client``; tests arrange a store's state with it): the one
    place, beside ``SqlRuns``, a store is opened with its password put back."""
    from mlflow.tracking import MlflowClient
    return MlflowClient(tracking_uri=credentials.secret(resolve_uri(uri)))


def check(uri: str | None = None, timeout: float = 10.0, read_only: bool = False) -> str:
    """Fail early, on one line, when the store cannot be used. ``read_only`` (status, report):
    a SQL store that answers a direct read is enough, without MLflow's 2 s to import and open
    (``tracking.sql``); a new or unreadable one goes through MLflow as for a writer."""
    uri = resolve_uri(uri)
    if uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///"):]).parent
        if not parent.is_dir():
            raise UserError(f"the MLflow store's folder {parent} does not exist",
                            hint="create it or pass --tracking-uri sqlite:///PATH/mlruns.db")
    down = _database_down(uri, timeout)
    if down:
        raise UserError(f"MLflow tracking store {credentials.redact(uri)} cannot be reached: {down}",
                        hint="start the database or fix the URI, or pass --tracking-uri / set MLFLOW_TRACKING_URI "
                             "to a reachable store (default: sqlite:///mlruns.db here); nothing was done")
    if read_only and _reads_directly(uri):
        return uri
    # Answer fast here, but only here: the jobs this process submits inherit
    # its environment and must keep MLflow's own retries for a server's hiccups.
    fast = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeout))}
    saved = {k: os.environ.get(k) for k in fast}
    if uri.startswith(("http://", "https://")):
        os.environ.update({k: v for k, v in fast.items() if saved[k] is None})
    try:
        with _first_use_lock(uri):
            # a server that does not answer now is the user's to start: asked twice, not for minutes
            retry(lambda: client(uri).search_experiments(max_results=1),
                  attempts=2 if uri.startswith(("http://", "https://")) else 40)
    except Exception as exc:  # noqa: BLE001 - any failure here is the user's to fix
        raise UserError(f"MLflow tracking store {credentials.redact(uri)} cannot be reached: "
                        f"{credentials.scrub(credentials.redact(first_line(exc, 200)))}",
                        hint="start the server, or pass --tracking-uri / set MLFLOW_TRACKING_URI to a reachable "
                             "store (default: sqlite:///mlruns.db here); nothing was submitted") from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
    return uri


def open_store(given: str | None, default_dir: str | Path | None = None, read_only: bool = False) -> "Tracker":
    """The store a command names (``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite
    file in ``default_dir``), resolved once and checked (``check``) before anything is done."""
    return Tracker(check(resolve_uri(given, default_dir=default_dir), read_only=read_only))


def _database_down(uri: str, timeout: float) -> str | None:
    """Why a database server's store (MySQL, MariaDB, PostgreSQL) takes no connection now, on
    one line; None when it does, or for any other store. One attempt, ``timeout`` seconds:
    MLflow's own engine creation retries a refused connection for about an hour, which
    is right in a job waiting out a restart and wrong for a command just typed."""
    if not is_sql(uri) or scheme(uri) == "sqlite":
        return None
    from reproduce.tracking.sql import SqlRuns
    try:
        SqlRuns(uri, connect_timeout=timeout).ping()
        return None
    except ImportError:  # no driver here: MLflow's check below names the package
        return None
    except Exception as exc:  # noqa: BLE001 - refused, unknown host, access denied, no such database
        orig = getattr(exc, "orig", None) or exc
        return credentials.scrub(credentials.redact(first_line(orig, 200)), uri)


def _reads_directly(uri: str) -> bool:
    from reproduce.tracking.sql import SqlRuns
    if not is_sql(uri) or (uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file()):
        return False
    try:
        SqlRuns(uri).experiment_id("musu-")
        return True
    except Exception:  # noqa: BLE001 - MLflow's own check below says what is wrong, on one line
        return False


@contextlib.contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Around the first query of a SQLite store, which creates and migrates its schema:
    MLflow's migration is not safe against a second process doing the same
    ("Online migration expected to match one row"), so processes take turns."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri[len("sqlite:///"):] + ".init.lock")
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store go beside the database file (absolute, so
    jobs running in other directories write to the same place)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


@dataclass(frozen=True)
class TrackedRun:
    """One MLflow run as the suite reads it: plain values, never MLflow's entities."""
    run_id: str
    status: str                   # MLflow's RUNNING | FINISHED | FAILED | KILLED
    tags: Mapping[str, str]
    metrics: Mapping[str, float]  # the latest value of each (params are read apart: ``Tracker.params``)

    @property
    def config_hash(self) -> str | None:
        return self.tags.get(TAG_HASH)

    @property
    def evaluated(self) -> bool:
        """FINISHED *and* evaluated: a FINISHED run without AP (an older version's
        resume that skipped the evaluation) is not finished."""
        return self.status == "FINISHED" and "AP" in self.metrics

    @classmethod
    def of(cls, run) -> "TrackedRun":
        data = run.data  # its dicts are built once by MLflow and handed over as they are, not copied
        return cls(run.info.run_id, run.info.status, data.tags, data.metrics)


SEARCH_PAGE = 50000  # MLflow's SEARCH_MAX_RESULTS_THRESHOLD for search_runs


class Tracker:
    """The suite's one door to MLflow.

    Every call is retried through a busy SQLite file or a restarting server
    (``retry``), so callers tell their story without wrapping each call. A
    tracker made for a non-zero DDP rank reads but never writes: only rank 0
    logs, and the other ranks call the same methods without a branch.
    """

    def __init__(self, uri: str | None = None, rank: int = 0) -> None:
        from reproduce.tracking.sql import SqlRuns
        self.uri = resolve_uri(uri)
        self._client = None
        self._sql = None  # bulk reads without MLflow (tracking.sql)
        if is_sql(self.uri):
            with contextlib.suppress(Exception):  # no driver for it here: MLflow's client says so when used
                self._sql = SqlRuns(self.uri)
        self.writes = rank == 0
        self._experiments: dict[str, str] = {}
        self._identity: dict[str, str] = {}
        self.last_read = ""  # through kept runs: "whole" or "since" (``tracking.settled``)
        self._route: bool | None = None  # the server's lean read (``tracking.server_app``): None untried

    @property
    def client(self):
        """MLflow's client, made on first use: a command that only reads a SQL store never imports MLflow."""
        if self._client is None:
            self._client = client(self.uri)
        return self._client

    # ---- reading -------------------------------------------------------------------------------------
    def experiment(self, profile: str) -> str:
        """The experiment id of a profile's runs (``musu-PROFILE``), made on first use."""
        if profile in self._experiments:
            return self._experiments[profile]
        name = experiment_name(profile)
        exp = retry(lambda: self.client.get_experiment_by_name(name))
        if exp is None:
            try:
                exp_id = retry(lambda: self.client.create_experiment(name, artifact_location=artifact_root(self.uri)))
            except Exception:  # noqa: BLE001 - created concurrently by another job
                exp_id = retry(lambda: self.client.get_experiment_by_name(name)).experiment_id
        else:
            exp_id = exp.experiment_id
            # with its id, what tells this experiment from another given the same id (a server
            # restarted on another database): the key of the runs kept under the work dir
            self._identity[profile] = f"{exp_id}@{exp.creation_time}"
        self._experiments[profile] = exp_id
        return exp_id

    def runs_by_hash(self, profile: str, hashes: Iterable[str] | None = None, keep_in: Path | None = None
                     ) -> dict[str, list[TrackedRun]]:
        """All runs of a profile, grouped by config hash (newest first). ``keep_in``: a folder (under
        the work dir) where runs read through MLflow that have settled are kept, so that a server is
        asked only about the others (``tracking.settled``); a SQL store is read directly instead."""
        wanted = set(hashes) if hashes is not None else None
        if self._sql is not None:
            from reproduce.tracking.sql import SchemaMismatch
            try:
                return self._runs_by_sql(profile, wanted)
            except SchemaMismatch:
                self._sql = None  # a schema this suite does not know: MLflow reads it
        exp = self.experiment(profile)
        if wanted is not None and len(wanted) == 1:
            # one config (a job's own): MLflow filters, instead of this reading the whole experiment
            runs = self._search(exp, f"tags.`{TAG_HASH}` = '{next(iter(wanted))}'")
        else:
            def fetch(since_ms: int | None) -> tuple[list, list[str]]:
                got = self._runs_by_route(exp, since_ms)
                return got if got is not None else self._runs_by_search(exp, since_ms)
            if keep_in is not None:
                from reproduce.tracking.settled import SettledRuns, cache_file
                kept = SettledRuns(cache_file(keep_in, self.uri, profile), self.uri, self._identity.get(profile, exp))
                runs = kept.read(fetch, self._read_one)
                self.last_read = kept.last_read
            else:
                runs = fetch(None)[0]
        out: dict[str, list[TrackedRun]] = {}
        for run in runs:
            h = run.tags.get(TAG_HASH)
            if h and (wanted is None or h in wanted):
                out.setdefault(h, []).append(TrackedRun(run.run_id, run.status, run.tags, run.metrics))
        return out

    def _runs_by_route(self, exp: str, since_ms: int | None) -> tuple[list, list[str]] | None:
        """Through ``reproduce server``: its lean read of the runs (``tracking.server_app``), as a
        ``settled.Fetch`` answers; None from a server without it (asked once per tracker)."""
        if self._route is False or scheme(self.uri) not in ("http", "https"):
            return None
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        from reproduce.tracking.server_app import FORMAT, ROUTE
        from reproduce.tracking.settled import Read
        creds = get_default_host_creds(self.uri)
        query = {"experiment_id": exp, "hash_tag": TAG_HASH, **({} if since_ms is None else {"since_ms": since_ms})}
        resp = retry(lambda: http_request(creds, ROUTE, "GET", params=query))
        if resp.status_code != 200:
            if resp.status_code in (404, 405):
                self._route = False  # a plain mlflow server: ask it no more
            return None  # or an answer this cannot use now (501: a schema tracking.sql does not know)
        try:
            body = resp.json()
        except ValueError:
            body = {}  # not JSON: a proxy's page, not this route
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            self._route = False
            return None
        return [Read(*row) for row in body["runs"]], list(body["deleted"])

    def _runs_by_search(self, exp: str, since_ms: int | None) -> tuple[list, list[str]]:
        """What ``settled.Fetch`` answers, through MLflow's ``search_runs`` (any store)."""
        if since_ms is None:
            return self._search(exp, ""), []
        moving = self._search(exp, "attributes.status != 'FINISHED'")
        ended = self._search(exp, f"attributes.status = 'FINISHED' AND attributes.end_time >= {since_ms}")
        once = {r.run_id: r for r in moving}
        once.update((r.run_id, r) for r in ended)  # ended between the two queries: FINISHED wins
        return list(once.values()), [r.run_id for r in self._search(exp, "", deleted_only=True)]

    def _read_one(self, run_id: str):
        """One run by id as a ``settled.Read``; None when it is deleted or gone."""
        from mlflow.exceptions import MlflowException

        from reproduce.tracking.settled import Read
        try:
            r = retry(lambda: self.client.get_run(run_id))
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        if r.info.lifecycle_stage != "active":
            return None
        return Read.of(r)

    def _search(self, exp: str, query: str, deleted_only: bool = False) -> list:
        """The experiment's runs MLflow returns for ``query``, newest first, as ``settled.Read``s."""
        from mlflow.entities import ViewType

        from reproduce.tracking.settled import Read
        view = ViewType.DELETED_ONLY if deleted_only else ViewType.ACTIVE_ONLY
        out, token = [], None
        while True:
            # MLflow's largest page: each page re-sorts the experiment's runs (10,000 runs: 3.9 s in
            # pages of 1,000, 3.4 s in one)
            page = retry(lambda: self.client.search_runs([exp], filter_string=query, run_view_type=view,
                                                         max_results=SEARCH_PAGE, page_token=token,
                                                         order_by=["attributes.start_time DESC"]))
            out.extend(Read.of(r) for r in page)
            token = page.token
            if not token:
                return out

    def _runs_by_sql(self, profile: str, wanted: set[str] | None) -> dict[str, list[TrackedRun]]:
        exp = self._experiments.get(profile) or retry(lambda: self._sql.experiment_id(experiment_name(profile)))
        if exp is None:
            return {}  # nothing logged yet: reading makes no experiment
        self._experiments[profile] = exp
        out: dict[str, list[TrackedRun]] = {}
        for run_id, status, tags, metrics, _ in retry(lambda: self._sql.runs(exp, TAG_HASH, wanted)):
            out.setdefault(tags[TAG_HASH], []).append(TrackedRun(run_id, status, tags, metrics))
        return out

    def read(self, profile: str, hashes: list[str], keep_in: Path | None = None
             ) -> tuple[dict[str, list[TrackedRun]], dict[str, "Tracked"]]:
        """What the store says of each config: its MLflow runs (newest first) and, read from them,
        its finished and latest run (``tracked``); one query for all (``keep_in``: see ``runs_by_hash``)."""
        runs = self.runs_by_hash(profile, hashes, keep_in)
        return runs, {h: tracked(runs.get(h, [])) for h in hashes}

    def runs_of(self, profile: str, config_hash: str) -> list[TrackedRun]:
        return self.runs_by_hash(profile, {config_hash}).get(config_hash, [])

    def run(self, run_id: str) -> TrackedRun:
        return TrackedRun.of(retry(lambda: self.client.get_run(run_id)))

    def params(self, run_id: str) -> dict[str, str]:
        return dict(retry(lambda: self.client.get_run(run_id)).data.params)

    def artifact(self, run_id: str, name: str, folder: str | Path) -> Path | None:
        """A run's artifact ``name`` downloaded into ``folder``; None when the run has none."""
        try:
            return Path(retry(lambda: self.client.download_artifacts(run_id, name, str(folder))))
        except Exception as exc:  # noqa: BLE001 - a missing artifact is an answer, a hiccup was retried
            if is_transient(exc):
                raise
            return None

    # ---- writing (rank 0 only) -----------------------------------------------------------------------
    def open_run(self, profile: str, config_hash: str, tags: dict[str, str], run_name: str) -> str | None:
        """The run of a config: an unsettled one of an earlier attempt (a FINISHED one
        without its evaluation included), marked RUNNING again, or a new one."""
        if not self.writes:
            return None
        for run in self.runs_of(profile, config_hash):
            if not run.evaluated:
                retry(lambda: self.client.update_run(run.run_id, status="RUNNING"))
                return run.run_id
        return self._create_once(self.experiment(profile), {**tags, TAG_HASH: config_hash}, run_name)

    def _create_once(self, experiment_id: str, tags: dict[str, str], run_name: str) -> str:
        """``create_run``, retried through a server's hiccups without a second run: each
        try first looks for the run an earlier try created (its answer lost on the
        way back), and a duplicate made by a retry below us (MLflow's own HTTP
        retries) is deleted, keeping the first."""
        token = uuid.uuid4().hex
        query = f"tags.`{TAG_CREATED_BY}` = '{token}'"

        def created() -> list:
            return self.client.search_runs([experiment_id], filter_string=query, order_by=["attributes.start_time ASC"])

        def attempt():
            return (created() or [None])[0] or self.client.create_run(
                experiment_id, tags={**tags, TAG_CREATED_BY: token}, run_name=run_name)
        run = retry(attempt)
        found = retry(created)
        for extra in found[1:]:
            self.delete_run(extra.info.run_id)
        return (found[0] if found else run).info.run_id

    def tag(self, run_id: str | None, tags: dict[str, Any]) -> None:
        """Tags in one request (a None value is left out)."""
        self.log(run_id, tags={k: v for k, v in tags.items() if v is not None})

    def log(self, run_id: str | None, metrics: dict[str, float] | None = None, tags: dict[str, Any] | None = None,
            step: int = 0) -> None:
        """Metrics (at ``step``) and tags in one request."""
        if not self.writes or run_id is None or not (metrics or tags):
            return
        from mlflow.entities import Metric, RunTag
        now = int(time.time() * 1000)
        batch_m = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
        batch_t = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        retry(lambda: self.client.log_batch(run_id, metrics=batch_m, tags=batch_t))

    def log_params(self, run_id: str | None, params: dict[str, str]) -> None:
        """Params not logged yet (a resumed attempt logs only what is new: MLflow refuses a changed param)."""
        if not self.writes or run_id is None:
            return
        from mlflow.entities import Param
        existing = self.params(run_id)
        todo = [Param(k, str(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(todo), 100):
            retry(lambda: self.client.log_batch(run_id, params=todo[i:i + 100]))

    def delete_tag(self, run_id: str | None, key: str) -> None:
        if self.writes and run_id is not None:
            try:
                retry(lambda: self.client.delete_tag(run_id, key))
            except Exception as exc:  # noqa: BLE001 - already gone (a retry's first try went through)
                if is_transient(exc):
                    raise

    # ---- names the store lets exist once (MLflow's model registry): the leases of ``node.run_lease`` ----
    def names(self, prefix: str) -> dict[str, dict[str, str]]:
        """Every registered model whose name starts with ``prefix``, with its tags."""
        like = prefix.replace("'", "")  # the prefix is the suite's own; LIKE's _ may match more: filtered below
        found = retry(lambda: self.client.search_registered_models(filter_string=f"name LIKE '{like}%'",
                                                                   max_results=1000))
        return {m.name: dict(m.tags) for m in found if m.name.startswith(prefix)}

    def create_name(self, name: str, tags: dict[str, str]) -> bool:
        """Make the registered model ``name`` with ``tags``: True when this call made it, False
        when it existed. The store makes this atomic (a unique key): of any number of
        callers at once, one gets True. A retried call whose first try went through is
        told apart by the tags (``tags['token']``, unique to the caller)."""
        from mlflow.exceptions import MlflowException
        if not self.writes:
            return False
        try:
            retry(lambda: self.client.create_registered_model(name, tags=tags))
            return True
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        now = self.names(name).get(name, {})
        return bool(tags.get("token")) and now.get("token") == tags["token"]

    def tag_name(self, name: str, tags: dict[str, str]) -> None:
        if self.writes:
            for key, value in tags.items():
                retry(lambda: self.client.set_registered_model_tag(name, key, value))

    def delete_name(self, name: str) -> None:
        """Delete a registered model, if it is there."""
        if not self.writes:
            return
        try:
            retry(lambda: self.client.delete_registered_model(name))
        except Exception as exc:  # noqa: BLE001 - already gone
            if is_transient(exc):
                raise

    def delete_run(self, run_id: str | None) -> None:
        if self.writes and run_id is not None:
            retry(lambda: self.client.delete_run(run_id))

    def log_artifact(self, run_id: str | None, path: str | Path) -> None:
        if self.writes and run_id is not None:
            retry(lambda: self.client.log_artifact(run_id, str(path)))

    def end(self, run_id: str | None, status: str, tags: dict[str, Any]) -> None:
        """Tags that say how it ended, then the run's terminal status."""
        if not self.writes or run_id is None:
            return
        self.tag(run_id, tags)
        retry(lambda: self.client.set_terminated(run_id, status=status))


def finished_run(runs: list[TrackedRun]) -> TrackedRun | None:
    """The run that settles a config: the newest one FINISHED and evaluated."""
    return next((run for run in runs if run.evaluated), None)


@dataclass(frozen=True)
class Attempt:
    """The newest MLflow run of a config: how far it got and how it ended."""
    run_id: str
    status: str          # MLflow's RUNNING | FINISHED | FAILED | KILLED
    progress: str        # "120/200", or "starting"
    state_tag: str       # what the job itself recorded: finished | failed | interrupted | ...
    error: str
    rate: float | None = None  # iterations per second lately
    loss: float | None = None  # the last total training loss


@dataclass(frozen=True)
class Tracked:
    """What MLflow holds of one config: the metrics of a finished run, if any, and the newest attempt."""
    finished: dict[str, float] | None
    latest: Attempt | None
    finished_code: str | None = None  # the code fingerprint the finished run was trained with
    finished_id: str | None = None    # its MLflow run id (a newer attempt is a rerun of a stale run)
    testdev: str | None = None        # the finished run's detections on the test split, to submit
    finished_data: str | None = None  # the annotations' fingerprint the finished run read (None: not recorded)
    finished_libs: str | None = None  # the library versions its job ran with (None: recorded before they were)


def tracked(runs: list[TrackedRun]) -> Tracked:
    """``runs``: one config's runs, newest first (``Tracker.runs_by_hash``)."""
    done = finished_run(runs)
    latest = runs[0] if runs else None
    return Tracked(dict(done.metrics) if done is not None else None,
                   Attempt(latest.run_id, latest.status, latest.tags.get(TAG_PROGRESS, "starting"),
                           latest.tags.get(TAG_STATE, ""), latest.tags.get(TAG_ERROR, ""),
                           _float(latest.tags.get(TAG_RATE)), _float(latest.tags.get(TAG_LOSS)))
                   if latest is not None else None,
                   done.tags.get(TAG_CODE) if done is not None else None,
                   done.run_id if done is not None else None,
                   done.tags.get(TAG_TESTDEV) if done is not None else None,
                   done.tags.get(TAG_DATA) if done is not None else None,
                   done.tags.get(TAG_LIBS) if done is not None else None)


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {'model.bbox_head.assigner.alpha': '0.333...'} for MLflow params."""
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, (list, tuple)) and d and any(isinstance(v, (dict, list, tuple)) for v in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = str(d)[:6000]
    return out
