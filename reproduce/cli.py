"""``reproduce``: from a paper table to trained, tracked runs and reports.

    reproduce plan TABLE|all [--profile P] [--json]
    reproduce run TABLE|all [--profile P] [--cluster NAME] [--no-wait]
    reproduce status [TABLE]
    reproduce check TABLE|all [--profile P] [--cluster NAME]
    reproduce server start|stop|status [--backend-store-uri URI] [--artifacts DIR]
    reproduce report TABLE|all [--format md|tex|html|json] [--paper] [-o DIR]
    reproduce cancel TABLE|all [--row NAME] [--yes]
    reproduce logs TABLE ROW [--follow] [--attempt N]
    reproduce ui [--port P]

Bad input ends with one line on stderr and exit status 2; nothing already
done is touched.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reproduce.errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse, with the suite's one line for bad input: ``reproduce run: error: ...``,
    exit status 2, instead of the usage block argparse prints first."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} -h` lists the options)\n")


def _number(kind, low: float, what: str):
    """An argparse type: ``kind`` (int or float) of at least ``low``, refused on one line otherwise."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if value != value:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number")
        if value < low:
            raise argparse.ArgumentTypeError(f"{text} is {what}")
        return value
    return parse


def _port(text: str) -> int:
    value = _number(int, 1, "not a port (1 to 65535)")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1 to 65535)")
    return value


def _folder(text: str) -> Path:
    """A work dir: a folder, or a path where one can be made; a file there is refused before anything runs."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder: pass a folder (made if missing)")
    return path


def _common(p: argparse.ArgumentParser, workdir: bool = True, tracking: bool = True) -> None:
    """The options every verb over a sweep takes; ``workdir``, ``tracking``: whether it reads a work
    dir and a tracking store (``plan`` reads neither, ``cancel`` no store: a verb takes no flag it
    would ignore)."""
    p.add_argument("--profile", default=os.environ.get("REPRODUCE_PROFILE", "paper"),
                   help="profile in sweeps/profiles, or a profile file of your own (default: paper)")
    p.add_argument("--sweeps", type=Path, default=None, help="folder of sweep specs (default: the suite's sweeps/)")
    if workdir:
        p.add_argument("--workdir", type=_folder, default=Path.cwd(),
                       help="where data/, work_dirs/, .reproduce/ and the default MLflow store live (default: .)")
    if tracking:
        p.add_argument("--tracking-uri", default=None,
                       help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///WORKDIR/mlruns.db)")
    p.add_argument("--set", dest="switches", nargs="+", action="extend", default=[], metavar="SWITCH=VALUE",
                   help="a MuSu switch on every MuSu row, e.g. --set b=0.2 num_anchors=3 (changes the run's hash)")
    p.add_argument("--cfg-options", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="any mmengine config key on every row, e.g. optim_wrapper.optimizer.lr=0.02")
    p.add_argument("--configs", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder of your own mmengine configs that profiles may name (repeatable); config names "
                        "otherwise resolve only in the suite's configs and mmdet::")


def _stale_libraries(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stale-libraries", action="store_true",
                   help="count a finished run trained with other versions of torch, mmcv, mmdet, mmengine, numpy "
                        "or pycocotools than this environment's as stale (default: shown, not stale: a login "
                        "node's environment is often not the compute nodes')")


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="reproduce", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)
    p = sub.add_parser("plan", help="list the runs a table needs, with config hashes and GPU-hours")
    p.add_argument("tables", help="table name(s), comma-separated, or all")
    _common(p, workdir=False, tracking=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("run", help="train what is not finished yet and follow it")
    p.add_argument("tables")
    _common(p)
    p.add_argument("--cluster", default="local", help="cluster profile in cluster/ (default: local, no SLURM)")
    p.add_argument("--no-wait", action="store_true", help="exit once everything is submitted")
    p.add_argument("--parallel", type=_number(int, 1, "fewer than one run at a time"), default=1,
                   help="local runs trained at once (default 1)")
    p.add_argument("--poll", type=_number(float, 0.1, "below 0.1 s, the shortest poll"), default=5.0,
                   help="seconds between progress updates")
    p.add_argument("--rerun-stale", action="store_true",
                   help="train again the finished runs whose code fingerprint is not today's (status says stale)")
    _stale_libraries(p)
    p = sub.add_parser("status", help="per row: pending, running, finished or failed")
    p.add_argument("tables", nargs="?", default="all")
    _common(p)
    p.add_argument("--json", action="store_true")
    _stale_libraries(p)
    p = sub.add_parser("check", help="run the jobs' preflight (mmcv ops on the device, data, weights, tracking) "
                                     "before spending GPU-hours")
    p.add_argument("tables")
    _common(p)
    p.add_argument("--cluster", default="local", help="cluster profile; local runs the checks in this process")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("server", help="an MLflow tracking server with a database backend, for jobs on many nodes")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--workdir", type=_folder, default=Path.cwd(), help="where its pid file and log live (default: .)")
    p.add_argument("--backend-store-uri", default=os.environ.get("MUSU_MLFLOW_BACKEND", ""),
                   help="database for runs: mysql+pymysql://USER:PASS@HOST/DB or postgresql://... "
                        "(default: $MUSU_MLFLOW_BACKEND; cluster/mlflow-db.sh makes a local MariaDB one)")
    p.add_argument("--artifacts", type=Path, default=None, help="shared artifacts folder (default: WORKDIR/mlartifacts)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; the nodes' network "
                                                       "interface on a cluster)")
    p.add_argument("--port", type=_port, default=5000)
    p = sub.add_parser("report", help="compile tables from MLflow beside the paper's numbers")
    p.add_argument("tables")
    _common(p)
    p.add_argument("--format", default="md", choices=["md", "tex", "html", "json", "orderings"],
                   help="orderings: whether the paper's orderings between rows hold over the seeds "
                        "(sweeps/vocabulary/orderings.yaml), as orderings.md")
    p.add_argument("--paper", action="store_true", help="render the paper's numbers alone, from the specs")
    p.add_argument("-o", "--output", type=_folder, default=None, help="output folder (default: print)")
    _stale_libraries(p)
    p = sub.add_parser("cancel", help="stop the queued or running jobs of a table's rows")
    p.add_argument("tables")
    _common(p, tracking=False)
    p.add_argument("--row", default=None, help="only this row")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = sub.add_parser("logs", help="a row's job log and its MLflow run")
    p.add_argument("table")
    p.add_argument("row")
    _common(p)
    p.add_argument("--attempt", type=int, default=-1,
                   help="which job, when the run was submitted more than once: 0 the first, -1 the latest")
    p.add_argument("--lines", type=_number(int, 0, "below 0 (0 prints every line)"), default=0,
                   help="only the last N lines of each file (default: all)")
    p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    p = sub.add_parser("ui", help="the MLflow UI on this work dir's store (foreground, Ctrl-C stops it)")
    p.add_argument("--workdir", type=_folder, default=Path.cwd(), help="where the default store lives (default: .)")
    p.add_argument("--tracking-uri", default=None, help="the store (default: as for run)")
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=_port, default=5000)
    return ap


# verb -> (module, function): each verb is one function of the stage it belongs to
VERBS = {"plan": ("verbs.plan", "cmd_plan"), "run": ("verbs.run", "cmd_run"), "status": ("verbs.status", "cmd_status"),
         "server": ("verbs.server", "cmd_server"), "check": ("verbs.check", "cmd_check"), "ui": ("verbs.server", "cmd_ui"),
         "cancel": ("verbs.cancel", "cmd_cancel"), "logs": ("verbs.logs", "cmd_logs"), "report": ("verbs.report", "cmd_report")}


def _passwords_out_of_uris(args: argparse.Namespace) -> None:
    """Where the command line is read, and only here: a password in ``--tracking-uri`` or
    ``MLFLOW_TRACKING_URI`` moves into the environment (``tracking.credentials.public``), so no
    URI the suite holds, pickles into a job, records or prints carries one."""
    from reproduce.tracking import credentials
    if getattr(args, "tracking_uri", None):
        args.tracking_uri = credentials.public(args.tracking_uri)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        os.environ["MLFLOW_TRACKING_URI"] = credentials.public(os.environ["MLFLOW_TRACKING_URI"])


def main(argv: list[str] | None = None) -> int:
    import warnings
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    import logging
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow sets its loggers to INFO when imported (later than this) unless told otherwise:
    # "Creating initial MLflow database tables..." would precede every one-line error.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    args = build_parser().parse_args(argv)
    _passwords_out_of_uris(args)
    try:
        import importlib
        module, function = VERBS[args.command]  # imported on use: `plan` need not pay for submitit or MLflow
        return getattr(importlib.import_module(f"reproduce.{module}"), function)(args)
    except UserError as exc:
        print(f"reproduce: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reproduce: interrupted; submitted jobs keep running, `reproduce run` again reattaches",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
