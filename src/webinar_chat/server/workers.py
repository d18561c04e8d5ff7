"""`webinar-chat serve --workers N`: N server processes sharing one listening socket.

The parent binds the socket, forks the workers (each builds the production server with
`runner.build_server` and gets its own node id on the bus), and supervises them: SIGTERM/SIGINT
are forwarded (each worker drains: sockets closed with 1001, long-polls answered), and a worker
that dies unexpectedly is replaced after a second. The kernel spreads new connections over the
workers; nothing needs to be sticky, because every worker serves every request and the bus
carries what one commits to the others (docs/delivery.md, "Several processes").
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from types import FrameType

import structlog

from ..bus import new_node_id
from ..logs import hot_lines
from ..settings import Settings

log = structlog.get_logger(__name__)

# A worker that keeps dying is restarted at most this often.
RESPAWN_DELAY_S = 1.0


def bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(settings.listen_backlog)
    sock.set_inheritable(True)
    return sock


def _run_worker(settings: Settings, sock: socket.socket, number: int) -> None:
    from .runner import build_server, tune_gc

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own handlers
    # The shared port reaches any worker: each serves its own /metrics on a port of its own.
    metrics_port = settings.metrics_port + number if settings.metrics_port else 0
    server = build_server(settings.with_(node_id=settings.node_id or new_node_id(),
                                         metrics_port=metrics_port))
    tune_gc()
    server.run(sockets=[sock])


def serve_workers(settings: Settings, workers: int) -> int:
    if not settings.bus_url:
        print("webinar-chat: --workers needs BUS_URL (redis://…): without a bus between them, "
              "the workers would not see each other's messages", file=sys.stderr)
        return 2
    sock = bind(settings)
    children: dict[int, int] = {}  # pid → worker number
    stopping = False

    def spawn(number: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                _run_worker(settings, sock, number)
            except BaseException:
                code = 1
                log.exception("worker_failed", worker=number)
            finally:
                hot_lines().flush()  # os._exit skips atexit: the last access lines
                os._exit(code)
        children[pid] = number
        log.info("worker_started", worker=number, pid=pid)

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for number in range(workers):
        spawn(number)
    log.info("workers_listening", workers=workers, host=settings.host, port=settings.port)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        number = children.pop(pid)
        if stopping:
            log.info("worker_stopped", worker=number, pid=pid)
            continue
        log.error("worker_died", worker=number, pid=pid, status=status,
                  respawn_in_s=RESPAWN_DELAY_S)
        time.sleep(RESPAWN_DELAY_S)
        if not stopping:
            spawn(number)
    sock.close()
    return 0
