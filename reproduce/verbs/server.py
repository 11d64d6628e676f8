"""``reproduce server start|stop|status`` and ``reproduce ui``: the tracking
server for many nodes, and MLflow's UI on a work dir's own store."""
from __future__ import annotations

import sys

from reproduce import tracking
from reproduce.errors import UserError
from reproduce.tracking import server
from reproduce.tracking.credentials import redact
from reproduce.tracking.uri import is_sql, scheme


def cmd_server(args) -> int:
    if args.action == "start":
        if not args.backend_store_uri:
            raise UserError("no database for the server's runs",
                            hint="pass --backend-store-uri or set MUSU_MLFLOW_BACKEND "
                                 "(cluster/mlflow-db.sh creates a MariaDB one on this machine)")
        uri = server.start(args.workdir, args.backend_store_uri, args.artifacts or args.workdir / "mlartifacts",
                           args.host, args.port)
        print(uri)
        print(f"reproduce: tracking server at {uri} (pass --tracking-uri {uri} or export MLFLOW_TRACKING_URI={uri})",
              file=sys.stderr)
        return 0
    if args.action == "stop":
        print("stopped" if server.stop(args.workdir) else "no server of this work dir runs")
        return 0
    found = server.status(args.workdir)
    if found is None:
        print("not running")
        return 1
    state, healthy = found
    print(f"running: {state['uri']} (pid {state['pid']}, {'healthy' if healthy else 'not answering'}; "
          f"backend {state['backend']}, artifacts {state['artifacts']})")
    return 0


def cmd_ui(args) -> int:
    """The MLflow UI on this work dir's store, in the foreground until Ctrl-C."""
    uri = tracking.resolve_uri(args.tracking_uri, default_dir=args.workdir)
    if scheme(uri) in ("http", "https"):
        print(f"reproduce: the store is a tracking server, which serves its own UI: open {redact(uri)}",
              file=sys.stderr)
        return 0
    if not is_sql(uri) and scheme(uri) != "file":
        raise UserError(f"{redact(uri)} is no tracking store the UI can open",
                        hint="pass --tracking-uri sqlite:///PATH/mlruns.db, a database URL, or a server's http:// URL")
    server.serve_ui(uri, args.host, args.port)
    return 0
