"""A Sweep: one profile's tables and their runs in one work dir, with the job
store and the tracking store that say what became of them.

Every verb builds one (``Sweep.from_args``) and asks it; the state of the runs
(their job records, their MLflow runs, today's fingerprints, where each
stands) is read here and nowhere else, in one MLflow query and one poll per
backend (``views``).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from reproduce import tracking
from reproduce.errors import UserError
from reproduce.backends.records import JobRecord, JobStore
from reproduce.node.fingerprint import Today
from reproduce.sweep.plan import Planner, Run, plan_tables
from reproduce.sweep.profiles import Profile
from reproduce.sweep.spec import Row, Table
from reproduce.sweep.status import RunState, states_of


@dataclass
class RunView:
    """One run as the verbs show it: the run, its job, what the store says of it, where it stands."""
    run: Run
    job: JobRecord | None
    tracked: tracking.Tracked
    state: RunState

    @property
    def config_hash(self) -> str:
        return self.run.config_hash


@dataclass
class RowView:
    """One row of a table: its seeds' runs (none for a paper row that is not trained)."""
    table: Table
    row: Row
    seeds: list[Run] = field(default_factory=list)


@dataclass
class Sweep:
    profile: Profile
    tables: list[Table]
    runs: list[Run]
    workdir: Path
    tracking_uri: str | None = None  # as given (--tracking-uri); resolved and checked on first use
    stale_libraries: bool = False    # other library versions than this process's make a run stale

    @classmethod
    def from_args(cls, args: argparse.Namespace, tables: str | None = None) -> "Sweep":
        """The one place a verb's parsed options become a Sweep (every verb takes the same ones)."""
        profile, specs, runs = plan_tables(args.profile, tables if tables is not None else args.tables, args.sweeps,
                                           args.switches, args.cfg_options, getattr(args, "configs", None))
        return cls(profile, specs, runs, Path(getattr(args, "workdir", None) or Path.cwd()).resolve(),
                   getattr(args, "tracking_uri", None),
                   getattr(args, "stale_libraries", False))

    # --- what it holds -------------------------------------------------------------------------
    @cached_property
    def jobs(self) -> JobStore:
        return JobStore.at(self.workdir)

    @property
    def settled_runs_dir(self) -> Path:
        """Where runs read through a tracking server that have settled are kept (``tracking.settled``)."""
        return self.workdir / ".reproduce" / "settled-runs"

    @cached_property
    def planner(self) -> Planner:
        return Planner(self.profile)

    def uri(self, read_only: bool = True) -> str:
        """The tracking store's URI, resolved and checked once (``read_only``: status, report, logs)."""
        return self.tracker(read_only).uri

    def tracker(self, read_only: bool = True) -> tracking.Tracker:
        """The tracking store, opened and checked once (``tracking.open_store``)."""
        key = "_tracker_ro" if read_only else "_tracker_rw"
        if key not in self.__dict__:
            self.__dict__[key] = tracking.open_store(self.tracking_uri, self.workdir, read_only)
        return self.__dict__[key]

    @cached_property
    def today(self) -> Today:
        """Today's fingerprints of the code, the annotations the runs read and the libraries
        (``node.fingerprint``): read once per command."""
        from reproduce.sweep.datasets import fingerprint_today
        return fingerprint_today(self.profile, self.workdir, self.runs)

    # --- where the runs stand ------------------------------------------------------------------
    def views(self, read_only: bool = True) -> dict[str, RunView]:
        """Every run by config hash: its job record, its MLflow runs and where it stands now."""
        # the store first: one that cannot be reached leaves the work dir untouched
        mlruns, tracked = self.tracker(read_only).read(self.profile.name, [r.config_hash for r in self.runs],
                                                       keep_in=self.settled_runs_dir)
        records = self.jobs.records(self.profile.name)
        states = states_of(tracked, mlruns, records, self.today, self.stale_libraries)
        return {r.config_hash: RunView(r, records.get(r.config_hash), tracked[r.config_hash], states[r.config_hash])
                for r in self.runs}

    def rows(self) -> list[RowView]:
        """Every row of every table in order, each with its seeds' runs (a paper row that is
        not trained has none)."""
        by_row: dict[tuple[str, str], list[Run]] = {}
        for run in self.runs:
            for t, row in run.rows:
                by_row.setdefault((t, row), []).append(run)
        return [RowView(table, row, by_row.get((table.name, row.name), []))
                for table in self.tables for row in table.rows]

    def select(self, row: str | None = None) -> list[tuple[str, str, Run]]:
        """(table, row, run) of every seed of every trained row (only rows named ``row`` when given)."""
        chosen = [(r.table.name, r.row.name, run) for r in self.rows() if r.seeds and (row is None or r.row.name == row)
                  for run in r.seeds]
        if row is not None and not chosen:
            known = sorted({r.row.name for r in self.rows() if r.seeds})
            raise UserError(f"no trained row {row!r} in {', '.join(t.name for t in self.tables)}",
                            hint=f"rows: {', '.join(known)}")
        return chosen
