"""The app ``reproduce server`` runs: MLflow's tracking server, plus the one read it lacks.

``status`` and ``report`` need each run's id, status, tags and latest metrics,
never its params. MLflow's REST ``search_runs`` returns every param of every
run (a real run logs about 300: its flattened config), which the server loads
and serialises for each read: at 10,000 runs a ``status`` took three minutes,
most of it in runs still moving, which no client-side cache can skip. So the
server the suite starts answers one more route, ``ROUTE``, with what
``tracking.sql`` reads from the server's own database: the same queries the
suite runs on a SQL store it reaches directly, read only, no params.

A server without the route (a plain ``mlflow server``, one behind MLflow's
basic-auth app, whose permission checks know nothing of this route) answers
404, and the suite reads through ``search_runs`` and the settled runs it keeps
under the work dir (``tracking.settled``).
"""
from __future__ import annotations

import os

# GET ?experiment_id=ID&hash_tag=TAG[&since_ms=T] -> {"format": 2, "runs": [[id, status, tags, metrics,
# start_time]], "deleted": [id]}: every active run, or with since_ms those a client keeping the
# settled runs needs (``SqlRuns.runs``), and then the ids of the deleted runs
ROUTE = "/musu/api/runs"
FORMAT = 2


def create_app():
    """MLflow's app with ``ROUTE`` added, as ``mlflow server --app-name musu`` loads it
    (an ``mlflow.app`` entry point; under uvicorn, MLflow's FastAPI wrapper around it)."""
    from flask import jsonify, request
    from mlflow.server import app
    from mlflow.server.constants import BACKEND_STORE_URI_ENV_VAR

    from reproduce.tracking.sql import SchemaMismatch, SqlRuns
    reader = SqlRuns(os.environ[BACKEND_STORE_URI_ENV_VAR])

    def runs():
        exp, tag = request.args.get("experiment_id", ""), request.args.get("hash_tag", "")
        since = request.args.get("since_ms")
        if not exp.isdigit() or not tag or not (since is None or since.lstrip("-").isdigit()):
            return jsonify(error="give experiment_id (a number), hash_tag and, optionally, since_ms (a number)"), 400
        try:
            rows = reader.runs(exp, tag, since_ms=None if since is None else int(since))
            deleted = [] if since is None else reader.deleted(exp)
        except SchemaMismatch as exc:  # a schema this suite does not know: the client falls back
            return jsonify(error=str(exc)), 501
        return jsonify(format=FORMAT, runs=rows, deleted=deleted)

    app.add_url_rule(ROUTE, "musu_runs", runs, methods=["GET"])
    if os.environ.get("_MLFLOW_SGI_NAME") == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app
        return create_fastapi_app(app)
    return app
