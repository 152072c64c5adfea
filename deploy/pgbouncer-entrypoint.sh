#!/bin/sh
# PgBouncer for docker-compose.yml: transaction pooling in front of the `postgres` service.
# The password comes from the environment and is written only to a tmpfs (/run/pgbouncer),
# never to the image or the repository.
set -eu
: "${POSTGRES_PASSWORD:?set POOLBENCH_DB_PASSWORD before docker compose up}"
dir=/run/pgbouncer
mkdir -p "$dir"
umask 077
printf '"postgres" "%s"\n' "$POSTGRES_PASSWORD" > "$dir/userlist.txt"
cat > "$dir/pgbouncer.ini" <<INI
[databases]
poolbench = host=postgres port=5432 dbname=poolbench
[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
unix_socket_dir = $dir
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = ${DEFAULT_POOL_SIZE:-10}
max_client_conn = ${MAX_CLIENT_CONN:-1000}
server_reset_query =
ignore_startup_parameters = extra_float_digits
INI
chown -R postgres:postgres "$dir"
exec runuser -u postgres -- pgbouncer "$dir/pgbouncer.ini"
