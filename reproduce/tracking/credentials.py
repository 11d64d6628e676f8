"""Passwords in tracking URIs, kept out of everything the suite writes or prints.

A tracking URI goes into job payloads (pickles), job records, ``server.json``,
logs and error lines. Its password must reach none of them. ``public`` takes
it out of the URI into this process's environment, which local jobs inherit
and sbatch exports to SLURM jobs: once, where the command line is read
(``reproduce.cli``), so no URI the suite holds ever has one. ``secret`` puts it back at the few places a
store is opened. ``redact`` makes any URI fit to print.

The grammar is SQLAlchemy's for every scheme: ``scheme://[user[:password]@]rest``.
The password runs from the first ``:`` of the user info to the *last* ``@`` of
the URI, so a password that holds ``/``, ``?``, ``#``, ``:`` or even an unencoded
``@`` is found whole. (The one misreading is an ``@`` in the path of a URI
without user info, such as ``http://host:5000/a@b``. Then too much is redacted,
never too little.)
"""
from __future__ import annotations

import os
import re
from urllib.parse import quote, unquote

from reproduce.tracking.uri import SQL_SCHEMES, scheme

# The SQL store's password, for a URI that names its user but no password: set
# by ``public`` from a URI that had one, or by the user, who then never writes it
# in a URI at all.
DB_PASSWORD = "MUSU_TRACKING_DB_PASSWORD"
HTTP_USER, HTTP_PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"  # MLflow's own

_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://"
                  r"(?:(?P<user>[^:/@?#]*)(?::(?P<password>.*))?@(?=[^@]*$))?(?P<rest>.*)$", re.S)


def _parts(uri: str):
    return _URI.match(uri or "")


def redact(uri: str) -> str:
    """``scheme://user:***@rest``: the password replaced, whatever characters it holds."""
    m = _parts(uri)
    if m is None or m["password"] is None:
        return uri
    return f"{m['scheme']}://{m['user']}:***@{m['rest']}"


def public(uri: str) -> str:
    """The URI without its password, the password moved into the environment.

    http(s): the user and password go to MLflow's own variables (its client reads
    them). A SQL store: the password goes to ``DB_PASSWORD`` and the user stays in
    the URI (``secret`` puts the password back). Any other URI is returned as it is."""
    m = _parts(uri)
    if m is None or (m["user"] is None and m["password"] is None):
        return uri
    kind = scheme(uri)
    if kind in ("http", "https"):
        os.environ[HTTP_USER] = unquote(m["user"] or "")
        if m["password"] is not None:
            os.environ[HTTP_PASSWORD] = unquote(m["password"])
        return f"{m['scheme']}://{m['rest']}"
    if kind in SQL_SCHEMES and m["password"] is not None:
        os.environ[DB_PASSWORD] = unquote(m["password"])
        return f"{m['scheme']}://{m['user']}@{m['rest']}"
    return uri


def secret(uri: str) -> str:
    """The URI to open a SQL store with: its user's password from ``DB_PASSWORD``
    put back (percent-encoded). Never print or store what this returns."""
    m = _parts(uri)
    password = os.environ.get(DB_PASSWORD)
    if m is None or not m["user"] or m["password"] is not None or password is None \
            or scheme(uri) not in SQL_SCHEMES:
        return uri
    return f"{m['scheme']}://{m['user']}:{quote(password, safe='')}@{m['rest']}"


def scrub(text: str, *uris: str) -> str:
    """Any text (an error message, a server's log line) with the passwords of
    ``uris`` and those this process holds, plain or percent-encoded, replaced by ``***``."""
    passwords = [os.environ.get(DB_PASSWORD), os.environ.get(HTTP_PASSWORD)]
    for uri in uris:
        m = _parts(uri)
        if m is not None and m["password"]:
            passwords += [m["password"], unquote(m["password"])]
    for password in passwords:
        if password:
            for form in {password, quote(password, safe=""), quote(password)}:
                text = text.replace(form, "***")
    return text
