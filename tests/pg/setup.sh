#!/usr/bin/env bash
# Make the local PostgreSQL ready for the tests (idempotent):
#  - start it if it is down;
#  - require a password for the one role the wrong-password test uses (`pipe_pw_test`);
#    every other role keeps the machine's trust authentication.
set -euo pipefail
host=127.0.0.1 port=5432
if ! pg_isready -h "$host" -p "$port" -q; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 30); do pg_isready -h "$host" -p "$port" -q && break; sleep 1; done
fi
hba=$(psql -h "$host" -p "$port" -U postgres -d postgres -Atc 'SHOW hba_file')
line="host all pipe_pw_test 127.0.0.1/32 scram-sha-256"
if ! grep -qF "$line" "$hba" 2>/dev/null; then
  if [ -w "$hba" ]; then
    { echo "$line"; cat "$hba"; } > "$hba.pipe" && cat "$hba.pipe" > "$hba" && rm -f "$hba.pipe"
    psql -h "$host" -p "$port" -U postgres -d postgres -qAtc 'SELECT pg_reload_conf()' >/dev/null
    echo "pg_hba.conf: password authentication for role pipe_pw_test"
  else
    echo "warning: cannot edit $hba; the wrong-password test will fail (run as root)" >&2
  fi
fi
