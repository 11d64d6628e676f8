#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1 for `reproduce server`'s backend store (or
# for jobs reading it directly), from Debian's postgresql package: its own data
# folder, its own port. `start` creates (idempotently) the database and its
# user and prints the store's URI; `stop` stops that server.
#   cluster/postgres-db.sh start DIR PORT [DB] [USER] [PASSWORD]   (no PASSWORD: a random one)
#   cluster/postgres-db.sh stop DIR
# As root the server runs as the `postgres` user (PostgreSQL refuses root): DIR's
# parent folders must let that user through (a folder under /tmp does).
set -euo pipefail
say() { echo "[postgres-db] $*" >&2; }
die() { echo "[postgres-db] error: $*" >&2; exit 1; }
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] || die "PostgreSQL not found: run scripts/bootstrap.sh --system as root (Debian's postgresql)"
[ $# -ge 2 ] || die "usage: $0 start DIR PORT [DB] [USER] [PASSWORD] | stop DIR"
CMD="$1" DIR="$2"
AS=()
[ "$(id -u)" = 0 ] && AS=(runuser -u postgres --)

case "$CMD" in
start)
    # no password given: a random one (the URI printed carries it)
    PORT="${3:?give a port}" DB="${4:-musu_mlflow}" USER_="${5:-musu_mlflow}" PASS="${6:-$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')}"
    case "$PORT" in (*[!0-9]*|'') die "port '$PORT': give a number" ;; esac
    # unquoted in SQL, where PostgreSQL folds names to lower case: lower-case names only
    for name in "$DB" "$USER_"; do
        case "$name" in ([a-z_]*) ;; (*) die "name '$name': start it with a lower-case letter or _" ;; esac
        case "$name" in (*[!a-z0-9_]*) die "name '$name': lower-case letters, digits and _ only" ;; esac
    done
    case "$PASS" in (*\'*|*\\*) die "a quote or backslash in the password: choose one without" ;; esac
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    chmod 700 "$DIR"
    if [ ! -f "$DIR/PG_VERSION" ]; then
        "${AS[@]}" "$BIN/initdb" -D "$DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null \
            || die "initdb failed in $DIR (its parent folders must let the postgres user through)"
    fi
    case "$DIR" in (*[!A-Za-z0-9_./-]*) die "data folder '$DIR': letters, digits and _./- only (pg_ctl passes it to a shell)" ;; esac
    if "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
        running="$(sed -n 4p "$DIR/postmaster.pid" 2>/dev/null || true)"
        [ "$running" = "$PORT" ] || die "a server already runs on $DIR with port $running: give that port, or stop it first"
    else
        # loopback only; the socket in the data folder, so two servers never share one
        "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w -t 60 \
            -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1" start >/dev/null \
            || die "the server did not start: see $DIR/server.log"
    fi
    psql() { "${AS[@]}" "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
    # the password on stdin, never on a command line that `ps` shows
    psql -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$USER_') THEN CREATE ROLE $USER_ LOGIN; END IF;
END \$\$;
ALTER ROLE $USER_ PASSWORD '$PASS';
SQL
    [ "$(psql -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" = 1 ] \
        || psql -d postgres -c "CREATE DATABASE $DB OWNER $USER_" >/dev/null
    # The password percent-encoded: one holding '@', '/', '?' or '#' still makes a URI that parses.
    echo "postgresql://$USER_:$(PASS="$PASS" python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ["PASS"], safe=""))')@127.0.0.1:$PORT/$DB"
    ;;
stop)
    [ -f "$DIR/PG_VERSION" ] || { say "no PostgreSQL data folder at $DIR"; exit 0; }
    "${AS[@]}" "$BIN/pg_ctl" -D "$DIR" -m fast -w -t 60 stop >/dev/null 2>&1 || say "not running"
    ;;
*) die "unknown command '$CMD': start or stop" ;;
esac
