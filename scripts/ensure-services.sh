#!/usr/bin/env bash
# Starts the local servers the tests talk to, if one has stopped. Idempotent.
set -uo pipefail
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done; return 1; }

if ! port_open 5432; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  wait_port 5432 || echo "warning: PostgreSQL did not come up" >&2
fi
if ! port_open 6379; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_port 6379 || echo "warning: Redis did not come up" >&2
fi
if ! port_open 5672; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached || true
  wait_port 5672 || echo "warning: RabbitMQ did not come up" >&2
fi
# The PostgreSQL tests need database `test`.
if port_open 5432 && command -v psql >/dev/null; then
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
fi
exit 0
