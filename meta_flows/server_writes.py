"""One write to the Prefect server at a time from the threads of this process.

Prefect's default database is SQLite, which takes one writer at a time. The server returns
HTTP 503 for a write that collides with another one, and Prefect's client (3.9.1) retries it
after about 2, 4, 8 and 16 seconds. Deployment and history writes therefore hold this lock,
so the threads of one deploy-all-flows run do not collide with each other. Each write takes
milliseconds, and builds, pushes and reads still run side by side.

NOTE: the server's own writes (logs, events, task run states) can still collide with ours on
SQLite. A many-flow deploy on SQLite can therefore wait several seconds; on PostgreSQL it does
not.
"""

from __future__ import annotations

import threading

server_writes = threading.Lock()
