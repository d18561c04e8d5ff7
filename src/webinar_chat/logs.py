"""Structured logging: one pipeline for structlog, the standard library and uvicorn.

Every record — `structlog.get_logger(__name__).info("event", key=value)` in our code, and the
stdlib records of uvicorn, asyncio and the libraries — ends in one `logging` handler on the root
logger, whose `structlog.stdlib.ProcessorFormatter` renders it as `key=value` text (default) or
as one JSON object per line (`LOG_FORMAT=json`). Context (request id, webinar_id, user_id,
client_msg_id) comes from keyword arguments and from `structlog.contextvars` (the request id,
bound by server/middleware.py).

A log call must never raise into the code that logs: a heartbeat loop or a gap fetch that dies
because a log line could not be written takes the whole room or process down with it (this
happened: docs/operations.md, "Logging"). So both ends are guarded: the bound logger catches any
error in the structlog processors, the handler any error while formatting or writing. Each such
failure is counted in `failures()` (tests assert it stays empty; `/metrics` exports it as
`webinar_chat_log_failures_total`) and reported by one plain fallback line on stderr.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextvars
import logging
import re
import sys
import threading
import time
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger


class LogFailures:
    """Log calls that failed in this process (process-wide, like `logging` itself)."""

    def __init__(self) -> None:
        self.count = 0
        self.recent: collections.deque[str] = collections.deque(maxlen=20)
        self._lock = threading.Lock()  # logging may be called from the database threads

    def record(self, where: str, error: BaseException | None, event: object) -> None:
        with self._lock:
            self.count += 1
            self.recent.append(f"{where}: {error!r} while logging {_short(event)}")
        _fallback_line(f"logging_failed where={where} error={error!r} event={_short(event)}")


_FAILURES = LogFailures()


def detached() -> contextvars.Context:
    """A context with no request's log fields bound, for timers that serve everybody (a room's
    flush, a long-poll answer): scheduled with the current context, they would log with the
    request id, user and client_msg_id of whichever request happened to schedule them.
    Use: `loop.call_soon(callback, context=detached())`."""
    return contextvars.Context()


def failures() -> LogFailures:
    return _FAILURES


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<unprintable {type(value).__name__}>"
    return text[:300]


def _fallback_line(text: str) -> None:
    """Last resort when the pipeline itself failed: a plain line on the real stderr."""
    try:
        stream = sys.stderr or sys.__stderr__
        if stream is not None:
            stream.write(text + "\n")
            stream.flush()
    except Exception:
        pass  # nowhere left to write; the failure is still counted


class _SafeProcessing:
    """Mixed into structlog's filtering bound logger: a processor or handler that raises is
    counted and reported instead of raising into the caller."""

    def _proxy_to_logger(self, method_name: str, event: str | None = None,
                         **event_kw: Any) -> Any:
        try:
            return super()._proxy_to_logger(method_name, event, **event_kw)  # type: ignore[misc]
        except Exception as exc:
            _FAILURES.record("structlog", exc, event)
            return None


def _safe_bound_logger(level: int) -> type[Any]:
    base = structlog.make_filtering_bound_logger(level)
    return type(f"Safe{base.__name__}", (_SafeProcessing, base), {})


class PipelineHandler(logging.Handler):
    """Writes formatted records to `sys.stderr` as it is *at the time of the write* (or to a
    fixed stream): a stream captured at configuration time may be closed later (test capture,
    a replaced stderr)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self._stream = stream

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = self.stream
            stream.write(line + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # Instead of logging's "--- Logging error ---" dump: count it, one fallback line.
        _FAILURES.record("handler", sys.exc_info()[1], record.msg)


def _resolve_exc_info(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """`exc_info=True` / an exception instance → the (type, value, traceback) tuple, at the call
    site, while the exception is still being handled."""
    exc_info = event_dict.get("exc_info")
    if exc_info is True:
        event_dict["exc_info"] = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        event_dict["exc_info"] = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not exc_info and "exc_info" in event_dict:
        del event_dict["exc_info"]
    return event_dict


def _add_level(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """The level from structlog's method name, or from the stdlib record for foreign records
    (`add_log_level` would report "exception" for uvicorn's `logger.exception`)."""
    record = event_dict.get("_record")
    if record is not None and not event_dict.get("_from_structlog"):
        event_dict["level"] = record.levelname.lower()
    else:
        event_dict.setdefault("level", "error" if method_name == "exception" else method_name)
    return event_dict


def _add_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
    else:
        name = getattr(logger, "name", None)
        if name:
            event_dict.setdefault("logger", name)
    return event_dict


_TIMESTAMP = structlog.processors.TimeStamper(fmt="iso", utc=True)
_OUR_HANDLER_ATTR = "_webinar_chat_pipeline"


class HotLines:
    """Info lines written at rates the pipeline cannot afford: the access log, one line per
    long-poll answer — 10,000 of them per chat message at 10,000 fallback pollers. Through
    structlog and the stdlib handler a line costs 100–170 µs (renderer, record, a flush per
    line); here ~5 µs: the same line (same fields, format and stream, filtered by the same
    level), rendered directly and written once per event-loop pass. `configure_logging` sets it
    up with the rest of the pipeline; failures are counted like the pipeline's."""

    def __init__(self) -> None:
        self.enabled = True
        self.json = False
        self.stream: TextIO | None = None  # None: sys.stderr at the time of the write
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        self._second = -1
        self._second_text = ""
        self._layouts: dict[tuple[str, ...], tuple[str, tuple[tuple[str, str], ...]]] = {}

    def configure(self, level: int, json: bool, stream: TextIO | None) -> None:
        self.flush()
        self.enabled = level <= logging.INFO
        self.json = json
        self.stream = stream

    def info(self, logger: str, event: str, fields: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            line = self._render(logger, event, fields)
        except Exception as exc:
            _FAILURES.record("hot_line", exc, event)
            return
        self._pending.append(line)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no event loop (a thread, a script): at once
            return
        if self._flush_loop is not loop:
            # A flush scheduled on an earlier loop (one that closed before running it: tests
            # run one loop per test) would never come.
            self._flush_loop = loop
            self._flush_scheduled = False
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self.flush, context=detached())

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            stream = self.stream if self.stream is not None else sys.stderr
            stream.write("".join(lines))
            stream.flush()
        except Exception as exc:
            _FAILURES.record("hot_line_write", exc, f"{len(lines)} line(s)")

    def _timestamp(self) -> str:
        """structlog's ISO timestamp (UTC, microseconds, `Z`), the date part made once a second."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}Z"

    def _render(self, logger: str, event: str, fields: dict[str, Any]) -> str:
        now = self._timestamp()
        if self.json:
            record = {**fields, "event": event, "level": "info", "logger": logger,
                      "timestamp": now}
            return _json_line(record) + "\n"
        # structlog's ConsoleRenderer(colors=False) layout: keys sorted, strings bare unless
        # they need quotes. The head and the sorted "key=" prefixes of a shape of line are made
        # once (an access line has one of a handful of shapes).
        shape = (logger, event, *fields)
        layout = self._layouts.get(shape)
        if layout is None:
            head = f" [info     ] {event:<30} [{logger}] "
            layout = self._layouts[shape] = (head, tuple((key, key + "=")
                                                         for key in sorted(fields)))
        head, keys = layout
        return "".join((now, head, " ".join([prefix + _console_value(fields[key])
                                            for key, prefix in keys]), "\n"))


def _json_line(record: dict[str, Any], **_: Any) -> str:
    """JSON lines by orjson (compact, and ~5× faster than the standard library's): the same
    serializer as the hot lines', so every JSON line of the process looks alike."""
    return orjson.dumps(record, default=repr).decode()


_NEEDS_QUOTES = re.compile(r"[\s'\"]")


def _console_value(value: object) -> str:
    kind = type(value)
    if kind is str:
        text = str(value)
        return text if text and not _NEEDS_QUOTES.search(text) else repr(text)
    if kind is int or kind is float:
        return str(value)
    return repr(value)  # True, None, lists …


_HOT = HotLines()
atexit.register(_HOT.flush)  # lines of the last loop pass before the process exits


def hot_lines() -> HotLines:
    return _HOT


class _HandshakeLines(logging.Filter):
    """uvicorn's line per WebSocket handshake (`<addr> - "WebSocket <path?query>" [accepted]`,
    or a status for a refused one), and the websockets library's `connection open` after it.
    The query string is where a client's `?token=` is, so it is never written. An accepted
    socket's lines are dropped: its `realtime_session` line says more when it ends, and at a
    webinar's start, rendering 10,000 of them took ~10 % of the server's CPU. A refused handshake
    keeps its line, with the path alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg
        if msg == "connection open":  # the websockets library's, on the same logger
            return False
        if not isinstance(msg, str) or not msg.startswith('%s - "WebSocket %s"'):
            return True
        if msg.endswith("[accepted]"):
            return False
        args = record.args
        if isinstance(args, tuple) and len(args) >= 2 and isinstance(args[1], str):
            record.args = (args[0], args[1].split("?", 1)[0], *args[2:])
        return True


def configure_logging(level: str = "INFO", *, json: bool = False,
                      stream: TextIO | None = None) -> None:
    """Install the one pipeline for this process (idempotent: a second call replaces the first).
    `webinar-chat serve` calls it through `server.runner.build_server`, and so does every test
    server. uvicorn must then be configured with `log_config=None` so that its loggers propagate
    to the root logger instead of getting handlers of their own."""
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown LOG_LEVEL {level!r}")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_level,
        _add_logger_name,
        _TIMESTAMP,
    ]
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer(serializer=_json_line)
        render_chain: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        # ConsoleRenderer formats exc_info itself: a plain traceback under the line, named here
        # because its default is rich's boxed traceback whenever rich happens to be installed
        # (a test or dev dependency must not change what production writes).
        renderer = structlog.dev.ConsoleRenderer(colors=False,
                                                 exception_formatter=structlog.dev.plain_traceback)
        render_chain = [renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render_chain],
    )
    handler = PipelineHandler(stream)
    handler.setFormatter(formatter)
    setattr(handler, _OUR_HANDLER_ATTR, True)

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OUR_HANDLER_ATTR, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    _HOT.configure(numeric_level, json, stream)
    # uvicorn's own default configuration (or an earlier server in this process) may have given
    # its loggers handlers and turned propagation off: they must reach the root handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.asgi"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    uvicorn_error = logging.getLogger("uvicorn.error")
    for old_filter in [f for f in uvicorn_error.filters if isinstance(f, _HandshakeLines)]:
        uvicorn_error.removeFilter(old_filter)
    uvicorn_error.addFilter(_HandshakeLines())
    # Our own `http_request` line (server/middleware.py) replaces uvicorn's access log, which
    # knows neither the request id nor the user, and would double every line.
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers.clear()
    uvicorn_access.propagate = False

    structlog.configure(
        processors=[*shared, _resolve_exc_info,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=_safe_bound_logger(numeric_level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        # Cached (a filtered-out call costs ~0.1 µs instead of ~4 µs). A later reconfiguration
        # still reaches loggers made earlier for the format, which lives in the handler; only a
        # changed LOG_LEVEL would not (one process has one).
        cache_logger_on_first_use=True,
    )
