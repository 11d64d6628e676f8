#!/usr/bin/env bash
# Creates (idempotently) a MariaDB database and user for `reproduce server`
# on this machine, and prints its backend-store URI. MariaDB is the one
# cluster/local-slurm.sh starts for SLURM's accounting; run as root.
#   cluster/mlflow-db.sh [DB] [USER] [PASSWORD]
set -euo pipefail
DB="${1:-musu_mlflow}" USER_="${2:-musu_mlflow}" PASS="${3:-musu-mlflow-pw}"
case "$DB$USER_$PASS" in (*\'*|*\\*|*\`*) echo "[mlflow-db] error: a quote or backslash in the database, user or password: choose them without" >&2; exit 2 ;; esac
command -v mariadb >/dev/null || { echo "[mlflow-db] error: mariadb not found: run scripts/bootstrap.sh --system as root" >&2; exit 1; }
mariadb -e "select 1" >/dev/null 2>&1 || { echo "[mlflow-db] error: MariaDB is not running: cluster/local-slurm.sh start starts it" >&2; exit 1; }
mariadb -e "CREATE DATABASE IF NOT EXISTS \`$DB\`;
            CREATE USER IF NOT EXISTS '$USER_'@'localhost' IDENTIFIED BY '$PASS';
            CREATE USER IF NOT EXISTS '$USER_'@'127.0.0.1' IDENTIFIED BY '$PASS';
            GRANT ALL ON \`$DB\`.* TO '$USER_'@'localhost'; GRANT ALL ON \`$DB\`.* TO '$USER_'@'127.0.0.1';
            FLUSH PRIVILEGES;"
# The password percent-encoded: one holding '@', '/', '?' or '#' still makes a URI that parses.
echo "mysql+pymysql://$USER_:$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PASS")@127.0.0.1:3306/$DB"
