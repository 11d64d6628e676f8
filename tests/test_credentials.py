"""Issue 23, item 5: a password in any tracking URI reaches the stores it opens and nothing else."""
from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from reproduce.tracking import credentials

NASTY = "p/a?s#s:w@o%rd"  # every character that ends a URL's user info early in some parser


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in (credentials.DB_PASSWORD, credentials.HTTP_USER, credentials.HTTP_PASSWORD):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("written", [NASTY, quote(NASTY, safe="")])  # as typed, or percent-encoded
@pytest.mark.parametrize("scheme", ["mysql+pymysql", "postgresql", "http"])
def test_no_password_survives_redaction_or_the_public_uri(scheme, written):
    uri = f"{scheme}://alice:{written}@db.example:3306/mlflow?charset=utf8"
    for shown in (credentials.redact(uri), credentials.public(uri)):
        assert written not in shown and "w@o" not in shown and "o%rd" not in shown, shown
        assert shown.endswith("db.example:3306/mlflow?charset=utf8"), shown
    assert credentials.redact(uri) == f"{scheme}://alice:***@db.example:3306/mlflow?charset=utf8"
    assert NASTY not in credentials.scrub(f"could not connect with {uri} ({NASTY})", uri)


def test_a_sql_password_goes_by_environment_and_comes_back_only_to_open_the_store():
    uri = f"mysql+pymysql://alice:{NASTY}@127.0.0.1:3306/mlflow"  # '@' unencoded: the last one ends it
    public = credentials.public(uri)
    assert public == "mysql+pymysql://alice@127.0.0.1:3306/mlflow"
    opened = make_url(credentials.secret(public))
    assert (opened.username, opened.password, opened.host, opened.database) == ("alice", NASTY, "127.0.0.1", "mlflow")
    assert credentials.scrub(f"Access denied {NASTY} {quote(NASTY, safe='')}") == "Access denied *** ***"


def test_a_password_set_only_in_the_environment_is_used_and_http_goes_to_mlflows_variables(monkeypatch):
    monkeypatch.setenv(credentials.DB_PASSWORD, NASTY)
    assert make_url(credentials.secret("postgresql://bob@db/mlflow")).password == NASTY
    assert credentials.secret("postgresql://db/mlflow") == "postgresql://db/mlflow"  # no user: nothing to add
    assert credentials.secret("sqlite:////w/mlruns.db") == "sqlite:////w/mlruns.db"
    assert credentials.public(f"https://carol:{quote(NASTY, safe='')}@mlflow.example/") == "https://mlflow.example/"
    import os
    assert (os.environ[credentials.HTTP_USER], os.environ[credentials.HTTP_PASSWORD]) == ("carol", NASTY)
    # URIs without user info are left alone, an '@' in a query included
    for uri in ("http://127.0.0.1:5000", "sqlite:////w/mlruns.db", "mysql://db/m?ssl_ca=/a@b", "file:///tmp/x"):
        assert credentials.public(uri) == uri and credentials.redact(uri) == uri
