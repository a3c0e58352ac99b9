"""Shared by the check scripts: open a DuckDB table read-only, as an independent reader."""
import duckdb


def open_table(db, table):
    """(connection, fully qualified table name, {column: DuckDB type}) for `schema.table`.

    Fully qualified because a schema may share the database file's name."""
    con = duckdb.connect(db, read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    schema, name = table.split(".")
    catalog = con.execute("SELECT current_database()").fetchone()[0]
    types = dict(con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position", [schema, name]
    ).fetchall())
    return con, f'"{catalog}"."{schema}"."{name}"', types
