"""What a tracking URI names: its scheme, whether MLflow's SQLAlchemy store opens
it, and the one the suite uses when none is given. Pure: nothing here reads or
moves a password (``credentials`` does, once, at the command line)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "mlruns.db"
# The databases MLflow's SQLAlchemy store opens (the URI is a SQLAlchemy URL: ``mysql+pymysql://...``).
SQL_SCHEMES = ("sqlite", "mysql", "mariadb", "postgresql", "mssql")


def scheme(uri: str) -> str:
    """``mysql`` for ``mysql+pymysql://...``: the scheme without its driver, lower case ('' for none)."""
    head, sep, _ = (uri or "").partition("://")
    return head.split("+", 1)[0].lower() if sep else ""


def is_sql(uri: str) -> bool:
    """A database MLflow's SQLAlchemy store opens (``sqlite:///``, ``mysql+pymysql://``...)."""
    return scheme(uri) in SQL_SCHEMES


def resolve_uri(uri: str | None = None, default_dir: Path | None = None) -> str:
    """Flag, then ``MLFLOW_TRACKING_URI``, then ``sqlite:///<default_dir or cwd>/mlruns.db``
    (absolute, so jobs started in other directories find the same store)."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            path = Path(uri[len("sqlite:///"):])
            if not path.is_absolute():
                return f"sqlite:///{path.resolve()}"
        return uri
    return f"sqlite:///{Path(default_dir or Path.cwd()).resolve() / DEFAULT_DB}"
