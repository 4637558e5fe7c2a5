"""PostgreSQL storage: one queue shared by workers on many machines, on asyncpg.

`backend.py` is the `Backend`; `claims.py` its worker's path (claim, settle, and the two
as one statement); `sql.py` holds the schema and every statement as plain SQL; `link.py` is
how the backend talks to the server (a pool and a LISTEN connection); `rows.py` turns
sitq's records into the tuples the statements take, and back.
"""

from sitq.backends.postgres.backend import PostgresBackend

__all__ = ["PostgresBackend"]
