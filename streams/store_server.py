"""The embedded chDB store behind ClickHouse's HTTP interface, so several local processes share it.

chDB lets one process open a data directory. Production runs a ClickHouse server that every worker,
Grafana and the analysts reach over HTTP; on a machine without one, ``riskwatch store-server`` owns
the chDB directory and answers the subset of the HTTP interface clickhouse-connect speaks: queries
with bound ``param_*`` values and a trailing ``FORMAT``, commands, and Native inserts (plain or
compressed bodies, chunked or not). Each clickhouse-connect session gets its own chDB connection, so
``SET`` and ``USE`` stay per client as on a server. It is a local stand-in: no users, no TLS, loopback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from streams.children import terminate

log = logging.getLogger(__name__)

# HTTP parameters the server consumes itself; everything else that is not ``param_*`` is a setting.
TRANSPORT_PARAMETERS = frozenset(
    {
        "query", "database", "session_id", "session_timeout", "session_check", "query_id", "quota_key",
        "compress", "decompress", "wait_end_of_query", "client_protocol_version", "role", "buffer_size",
        "send_progress_in_http_headers", "http_headers_progress_interval_ms", "enable_http_compression",
        "default_format", "user", "password",
    }
)  # fmt: skip
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_INSERT_WITH_DATA = re.compile(rb"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)[ \t]*\r?\n?", re.IGNORECASE | re.DOTALL)
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")


class QueryFailed(Exception):
    """A ClickHouse error, sent back the way a server does (HTTP 500, code header, message body)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        match = _ERROR_CODE.search(message)
        self.code = match.group(1) if match else "1001"


@dataclass
class Session:
    """One client's chDB connection with its own settings and current database."""

    connection: object
    database: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    used_at: float = field(default_factory=time.monotonic)


def decompress(body: bytes, encoding: str | None) -> bytes:
    """Undo an lz4 request body (clickhouse-connect's favourite); aiohttp already undid gzip, deflate, br, zstd."""
    if not encoding or encoding in ("identity", "gzip", "deflate", "br", "zstd"):
        return body
    if encoding == "lz4":  # one LZ4 frame per block, concatenated
        import lz4.frame

        parts = []
        while body:
            frame = lz4.frame.LZ4FrameDecompressor()
            parts.append(frame.decompress(body))
            body = frame.unused_data
        return b"".join(parts)
    raise QueryFailed(f"Code: 1001. unsupported Content-Encoding {encoding!r}")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class EmbeddedEngine:
    """Runs statements on the chDB directory, one session at a time (chDB calls are serialised)."""

    def __init__(self, data_dir: Path, session_ttl: float = 3600.0) -> None:
        import chdb

        data_dir.mkdir(parents=True, exist_ok=True)
        self._chdb = chdb
        self._dsn = str(data_dir)
        self._default = chdb.connect(self._dsn)  # keeps the engine open while sessions come and go
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._session_ttl = session_ttl

    def close(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session.connection.close()
            self._sessions.clear()
            self._default.close()

    def _session(self, session_id: str) -> Session:
        now = time.monotonic()
        for stale in [key for key, s in self._sessions.items() if now - s.used_at > self._session_ttl]:
            self._sessions.pop(stale).connection.close()
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = Session(self._chdb.connect(self._dsn))
        session.used_at = now
        return session

    def execute(self, params: Mapping[str, str], body: bytes) -> tuple[bytes, str]:
        """Run one HTTP request's statement; returns (response body, output format)."""
        query = params.get("query", "")
        bound = {key.removeprefix("param_"): value for key, value in params.items() if key.startswith("param_")}
        settings = {key: value for key, value in params.items() if key not in TRANSPORT_PARAMETERS and not key.startswith("param_")}
        for key in settings:
            if not _SETTING_NAME.match(key):
                raise QueryFailed(f"Code: 115. unknown setting {key!r}")
        # ClickHouse reads the statement from the ``query`` parameter followed by the body; an INSERT's
        # data follows its FORMAT clause, in the body.
        statement_bytes = query.encode("utf-8") + b"\n" + body if query else body
        insert = _INSERT_WITH_DATA.match(statement_bytes)
        if insert:
            data = statement_bytes[insert.end() :]
            statement, fmt = insert.group(1).decode("utf-8"), insert.group(2).decode("ascii")
        else:
            query = statement_bytes.decode("utf-8")
        with self._lock:
            session = self._session(params.get("session_id", ""))
            self._prepare(session, params.get("database", ""), settings)
            if insert:
                return self._insert(session, statement, fmt, data), "TabSeparated"
            match = _TRAILING_FORMAT.search(query)
            fmt = match.group(1) if match else params.get("default_format", "TabSeparated")
            return self._run(session, query[: match.start()] if match else query, fmt, bound), fmt

    def _prepare(self, session: Session, database: str, settings: Mapping[str, str]) -> None:
        if database and database != session.database:
            self._run(session, f"USE `{database.replace('`', '')}`", "TabSeparated")
            session.database = database
        for key, value in settings.items():
            if session.settings.get(key) != value:
                self._run(session, f"SET {key} = {_quote(value)}", "TabSeparated")
                session.settings[key] = value

    def _insert(self, session: Session, statement: str, fmt: str, data: bytes) -> bytes:
        with tempfile.NamedTemporaryFile(suffix=".insert", delete=False) as spool:
            spool.write(data)
        try:
            return self._run(session, f"{statement} FROM INFILE {_quote(spool.name)} FORMAT {fmt}", "TabSeparated")
        finally:
            os.unlink(spool.name)

    def _run(self, session: Session, statement: str, fmt: str, bound: Mapping[str, str] | None = None) -> bytes:
        try:
            result = session.connection.query(statement, fmt, params=dict(bound or {}))
        except Exception as error:  # chDB raises RuntimeError carrying ClickHouse's message
            raise QueryFailed(str(error)) from error
        return result.bytes() or b""


def create_server_app(engine: EmbeddedEngine) -> web.Application:
    """The aiohttp application: ``/`` and ``/ping`` as on a server, statements on ``/``."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chdb")

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def statement(request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            # Long bound parameters (e.g. thousands of ids) travel as form fields, the query with them.
            form = await request.post()
            params.update({key: value for key, value in form.items() if isinstance(value, str)})
            body = b""
        else:
            body = await request.read()
        if not params.get("query") and not body:
            return web.Response(text="Ok.\n")
        try:
            body = decompress(body, request.headers.get("Content-Encoding"))
            loop = asyncio.get_running_loop()
            payload, fmt = await loop.run_in_executor(executor, engine.execute, params, body)
        except QueryFailed as failure:
            log.info("query failed: %s", failure)
            return _error(failure)
        return web.Response(body=payload, headers={"X-ClickHouse-Format": fmt})

    async def shutdown(app: web.Application) -> None:
        executor.shutdown(wait=True)
        engine.close()

    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/ping", ping)
    app.router.add_route("*", "/", statement)
    app.on_cleanup.append(shutdown)
    return app


def _error(failure: QueryFailed) -> web.Response:
    return web.Response(status=500, text=str(failure) + "\n", headers={"X-ClickHouse-Exception-Code": failure.code})


def serve(data_dir: Path, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (aiohttp's run_app handles both)."""
    web.run_app(create_server_app(EmbeddedEngine(data_dir)), host=host, port=port, print=None, handle_signals=True)


class StoreServerProcess:
    """``riskwatch store-server`` as a child process (tests, demo): start, wait for /ping, stop or kill."""

    def __init__(self, data_dir: Path, host: str, port: int, log_file: Path) -> None:
        self.data_dir, self.host, self.port, self.log_file = data_dir, host, port, log_file
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "store-server", "--listen", f"{self.host}:{self.port}"],
                env={**os.environ, "RISKWATCH_DATA_DIR": str(self.data_dir), "RISKWATCH_CLICKHOUSE_URL": ""},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"store server exited with {self.process.returncode}: {self.log_file.read_text(errors='replace')[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as response:  # noqa: S310 - loopback
                    if response.read() == b"Ok.\n":
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"store server not answering after {timeout:.0f} s; see {self.log_file}")

    def stop(self, timeout: float = 30.0) -> None:
        terminate(self.process, timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
