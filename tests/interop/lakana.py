"""Start a throw-away lakana-server 0.20.0 (an independent Iceberg REST catalog) for a test.

Usage: lakana.py <workdir> <port>     (run with the Python of the lakana venv)

The database is copied from a template made once per machine (migrations take seconds on
SQLite), with environment `dev` (the REST prefix; bronze/silver/gold namespaces) pointed at
file storage in <workdir>/storage. The admin's token is written to <workdir>/token. Then the
process becomes `lakana-server` (same PID: killing it stops the server), serving on
127.0.0.1:<port> as soon as it listens. Uses lakana 0.20.0's bootstrap and catalog service
to set up the environment before the server starts (its own API would race clients).
"""

import fcntl
import os
import shutil
import sqlite3
import sys

KEY_ID = "pipetest"  # no "_" in a key id
SECRET = "pipetestsecret"
TOKEN = f"lakana_pat_{KEY_ID}_{SECRET}"
ENVIRONMENT = "dev"
TEMPLATE = os.environ.get("PIPE_LAKANA_TEMPLATE", "/var/tmp/pipe-lakana/template-0.20.0")


def settings_env(db_path, port=None):
    env = dict(os.environ)
    env.update(
        LAKANA_DATABASE__URL=f"sqlite:///{db_path}",
        LAKANA_BOOTSTRAP_PAT_KEY_ID=KEY_ID,
        LAKANA_BOOTSTRAP_PAT_SECRET=SECRET,
        LAKANA_HOST="127.0.0.1",
        LAKANA_LOG__LEVEL="WARNING",
        PYTHONDONTWRITEBYTECODE="1",
    )
    if port is not None:
        env["LAKANA_PORT"] = str(port)
    return env


def seed(template):
    """Migrate a new database, create the admin and the environment."""
    db = os.path.join(template, "lakana.db")
    os.environ.update(settings_env(db))
    from sqlalchemy.orm import Session

    from lakana_core import migrate
    from lakana_core.auth import AllowAllAuthorization
    from lakana_core.bootstrap import bootstrap_if_needed, ensure_bootstrap_principal
    from lakana_core.catalog.service import CatalogService
    from lakana_core.config import StorageConfig
    from lakana_core.db import create_engine
    from lakana_core.storage.resolver import StorageResolver
    from lakana_server.settings import Settings

    s = Settings()
    migrate.upgrade(s.database.url)
    engine = create_engine(s.database)
    try:
        with Session(engine) as session:
            bootstrap_if_needed(session, s.bootstrap_admin, key_id=s.bootstrap_pat_key_id,
                                secret=s.bootstrap_pat_secret)
        with Session(engine) as session:
            admin = ensure_bootstrap_principal(session, s.bootstrap_admin)
            catalog = CatalogService(session, StorageResolver(session), AllowAllAuthorization())
            os.makedirs(os.path.join(template, "storage"), exist_ok=True)
            catalog.create_environment(
                admin, name=ENVIRONMENT,
                storage=StorageConfig(scheme="file",
                                      root="file://" + os.path.join(template, "storage")))
    finally:
        engine.dispose()


def main():
    workdir, port = os.path.realpath(sys.argv[1]), int(sys.argv[2])
    os.makedirs(TEMPLATE, exist_ok=True)
    with open(os.path.join(TEMPLATE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(TEMPLATE, "ready")):
            for stale in ("lakana.db", "lakana.db-wal", "lakana.db-shm"):
                if os.path.exists(os.path.join(TEMPLATE, stale)):
                    os.remove(os.path.join(TEMPLATE, stale))
            # in a child, so this process starts the server with nothing imported
            pid = os.fork()
            if pid == 0:
                seed(TEMPLATE)
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            if status != 0:
                sys.exit(f"lakana.py: making the template database in {TEMPLATE} failed")
            open(os.path.join(TEMPLATE, "ready"), "w").close()
        os.makedirs(os.path.join(workdir, "storage"), exist_ok=True)
        os.makedirs(os.path.join(workdir, "home"), exist_ok=True)
        db = os.path.join(workdir, "lakana.db")
        shutil.copyfile(os.path.join(TEMPLATE, "lakana.db"), db)
    con = sqlite3.connect(db)
    con.execute("UPDATE environments SET storage_root = ? WHERE name = ?",
                ("file://" + os.path.join(workdir, "storage"), ENVIRONMENT))
    con.commit()
    con.close()
    with open(os.path.join(workdir, "token"), "w") as f:
        f.write(TOKEN)
    env = settings_env(db, port)
    env.update(HOME=os.path.join(workdir, "home"), TMPDIR=workdir)
    os.chdir(workdir)
    server = os.path.join(os.path.dirname(sys.executable), "lakana-server")
    os.execve(server, [server], env)


if __name__ == "__main__":
    main()
