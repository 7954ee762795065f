# PostgreSQL for deploy/local/stack: the backend FerretDB stores its data in when
# CT_STACK_FERRETDB_BACKEND=postgresql (the default is sqlite). Sourced by the stack.
#
# Debian's `postgresql` package provides the binaries (`make tools` installs it); the stack runs
# a server of its own, not the package's cluster: initdb in the state directory, TCP on
# 127.0.0.1:$CT_STACK_POSTGRES_PORT (default 5433, beside a system one on 5432) and no Unix
# socket, trust authentication for the one role `ct`, which only local clients can reach.
# PostgreSQL refuses to run as root; as root the stack runs it as the `postgres` user, with its
# data under /var/tmp (root's home is closed to other users).

postgres_port="${CT_STACK_POSTGRES_PORT:-5433}"
ferretdb_backend="${CT_STACK_FERRETDB_BACKEND:-sqlite}"
[[ "$ferretdb_backend" == sqlite || "$ferretdb_backend" == postgresql ]] ||
  die "CT_STACK_FERRETDB_BACKEND must be sqlite or postgresql, not '$ferretdb_backend'"

postgres_bin() {
  local dir
  dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
  [[ -x "$dir/postgres" ]] || die "postgres not found: 'make tools' installs Debian's postgresql package"
  echo "$dir"
}

if ((EUID == 0)); then
  postgres_user=postgres
  postgres_data="/var/tmp/conversation-tracker-postgres/$(echo "$state" | sha256sum | cut -c1-12)"
else
  postgres_user=""
  postgres_data="$state/postgres-data"
fi

# setpriv execs: the PID the stack keeps is the server's own.
as_postgres_user() {  # command...
  if [[ -n "$postgres_user" ]]; then
    setpriv --reuid="$postgres_user" --regid="$postgres_user" --init-groups -- "$@"
  else
    "$@"
  fi
}

postgres_url() { echo "postgres://ct@127.0.0.1:$postgres_port/ferretdb"; }

start_postgres() {
  local bin; bin="$(postgres_bin)"
  if [[ ! -f "$postgres_data/PG_VERSION" ]]; then
    mkdir -p "$postgres_data"
    [[ -z "$postgres_user" ]] || chown "$postgres_user:" "$postgres_data" "$(dirname "$postgres_data")"
    chmod 700 "$postgres_data"
    as_postgres_user "$bin/initdb" -D "$postgres_data" -U ct --auth=trust -E UTF8 --locale=C.UTF-8 \
      >>"$run/postgres.log" 2>&1 || die "postgres: initdb failed: read $run/postgres.log"
  fi
  # Durable commits, as FerretDB on SQLite has with synchronous(normal): a fair comparison.
  local server=("$bin/postgres" -D "$postgres_data" -p "$postgres_port" -c listen_addresses=127.0.0.1
                -c unix_socket_directories= -c max_connections=200 -c shared_buffers=256MB)
  [[ -z "$postgres_user" ]] ||
    server=(setpriv --reuid="$postgres_user" --regid="$postgres_user" --init-groups -- "${server[@]}")
  nohup "${server[@]}" >>"$run/postgres.log" 2>&1 &
  echo $! >"$run/postgres.pid"
  wait_ready postgres wait_postgres "$bin"
  if ! "$bin/psql" -h 127.0.0.1 -p "$postgres_port" -U ct -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'ferretdb'" | grep -q 1; then
    "$bin/createdb" -h 127.0.0.1 -p "$postgres_port" -U ct ferretdb >>"$run/postgres.log" 2>&1 ||
      die "postgres: could not create the ferretdb database: read $run/postgres.log"
  fi
}

wait_postgres() {  # bin
  local deadline=$((SECONDS + ready_timeout))
  until "$1/pg_isready" -q -h 127.0.0.1 -p "$postgres_port" -U ct; do
    ((SECONDS < deadline)) || { echo "pg_isready: no answer" >&2; return 1; }
    sleep 0.3
  done
}

# FerretDB's backend options: SQLite files in the state directory, or the PostgreSQL above.
if [[ "$ferretdb_backend" == postgresql ]]; then
  ferretdb_backend_args=(--handler=postgresql "--postgresql-url=$(postgres_url)")
else
  ferretdb_backend_args=(--handler=sqlite "--sqlite-url=file:$state/ferretdb-data/?_pragma=synchronous(normal)")
fi
