#!/bin/sh
# Entrypoint of the drill-postgres image (deploy/Dockerfile, --target drill-postgres): a
# throw-away PostgreSQL server of the major the drilled snapshot needs.
#
#   drill-postgres [POSTGRES_OPTION...]   initdb (first start only), then exec postgres
#   drill-postgres ready                  exit 0 once the server accepts connections
#
# The major is the one line in $DRILL_POSTGRES_MAJOR_FILE (default /drill/postgres-major),
# written by `drydock show SNAPSHOT --postgres-major` in an earlier init container of the
# drill pod. The cluster lives in $PGDATA (an emptyDir), trusts every connection and listens
# on 127.0.0.1 only: it is reachable from inside the pod alone and holds a copy of data the
# drill throws away. Options given to the container are passed to postgres after these and
# win (e.g. `-c shared_buffers=256MB`). Runs as any uid that has a passwd entry (the image's
# postgres, 999): initdb refuses root.
set -eu

major_file=${DRILL_POSTGRES_MAJOR_FILE:-/drill/postgres-major}
pgdata=${PGDATA:-/var/lib/postgresql/data/pgdata}
database=${DRILL_POSTGRES_DB:-drill}

fail() {
    echo "drill-postgres: $*" >&2
    exit 2
}

[ -r "$major_file" ] || fail "$major_file is missing: the drill's postgres-major init container writes it"
major=
read -r major <"$major_file" || true
case $major in
'' | *[!0-9]*) fail "$major_file holds '$major', not a PostgreSQL major" ;;
esac
bin=/usr/lib/postgresql/$major/bin
if [ ! -x "$bin/postgres" ]; then
    have=$(ls /usr/lib/postgresql 2>/dev/null | tr '\n' ' ')
    fail "the snapshot needs PostgreSQL $major; this image has ${have:-none}; rebuild deploy/Dockerfile's drill-postgres target with $major in PG_MAJORS"
fi

if [ "${1:-}" = ready ]; then
    exec "$bin/pg_isready" --quiet --host 127.0.0.1 --port "${PGPORT:-5432}" \
        --username postgres --dbname "$database"
fi

if [ -s "$pgdata/PG_VERSION" ]; then
    # A restarted container in the same pod: the emptyDir still holds the cluster.
    read -r existing <"$pgdata/PG_VERSION"
    [ "$existing" = "$major" ] || fail "$pgdata holds a PostgreSQL $existing cluster, not $major"
else
    echo "drill-postgres: creating a PostgreSQL $major cluster in $pgdata" >&2
    # UTF8 like Harbor's registry database; C.UTF-8 is built into Debian's glibc.
    "$bin/initdb" --pgdata "$pgdata" --username postgres --auth trust \
        --encoding UTF8 --locale C.UTF-8 --no-sync >&2
    # Single-user mode: the database exists before the server accepts any connection, so
    # the readiness check passes only once it is there.
    echo "CREATE DATABASE \"$database\"" |
        "$bin/postgres" --single -D "$pgdata" -c fsync=off postgres >/dev/null
fi

# Durability is worthless for a scratch copy: no fsync, no full-page writes.
exec "$bin/postgres" -D "$pgdata" \
    -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories=/var/run/postgresql \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    "$@"
