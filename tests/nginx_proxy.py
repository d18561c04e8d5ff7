"""A real nginx (Debian's) in front of several server processes, on a free port, with the
repository's deploy/nginx/webinar-chat.conf included as it is: only the upstream list, the listen
line and nginx's own paths are generated."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from pathlib import Path

from .helpers import LocalServer, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
SITE_CONF = ROOT / "deploy" / "nginx" / "webinar-chat.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class NginxProxy(LocalServer):
    def __init__(self, workdir: Path, upstream_ports: list[int]) -> None:
        self.workdir = workdir
        self.upstream_ports = upstream_ports
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.workdir / sub).mkdir(exist_ok=True)
        (self.workdir / "webinar-chat-upstreams.conf").write_text("".join(
            f"server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n"
            for port in self.upstream_ports))
        (self.workdir / "webinar-chat-listen.conf").write_text(f"listen 127.0.0.1:{self.port};\n")
        shutil.copy(SITE_CONF, self.workdir / "webinar-chat.conf")
        user = "user root;\n" if os.geteuid() == 0 else ""
        w = self.workdir
        conf = w / "nginx.conf"
        conf.write_text(f"""{user}worker_processes 1;
daemon off;
pid {w}/nginx.pid;
error_log {w}/error.log info;
events {{ worker_connections 4096; }}
http {{
    access_log {w}/access.log;
    client_body_temp_path {w}/client_body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    include webinar-chat.conf;
}}
""")
        return conf

    async def start(self) -> None:
        conf = self._write_config()
        check = subprocess.run([NGINX, "-t", "-p", str(self.workdir), "-c", str(conf)],  # noqa: ASYNC221
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        with (self.workdir / "nginx.out").open("ab") as out:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - returns once forked
                [NGINX, "-p", str(self.workdir), "-c", str(conf)], stdout=out, stderr=out)
        try:
            await wait_for_port(self.port, self.process, "nginx")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {(self.workdir / 'error.log').read_text()}") from None

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful
            try:
                await asyncio.wait_for(asyncio.to_thread(self.process.wait), 10)
            except TimeoutError:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
        self.process = None
