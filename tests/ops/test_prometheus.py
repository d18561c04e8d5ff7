"""A real Prometheus scraping the real `webinar-chat serve` process (tests/serve.py) with the
alerting rules of deploy/prometheus/alerts.yml loaded: the metrics the rules are written against
arrive under the names and labels they use, every rule evaluates without an error against real
data, and a healthy server raises no alert. The rules' thresholds themselves are unit-tested by
promtool (deploy/prometheus/alerts.test.yml, scripts/check-alerts).

Prometheus (Debian package `prometheus`, installed by scripts/install-system-deps) runs on a free
port with a generated configuration and its storage in the test's tmp_path; no system service is
used. Without the binary the test is skipped — except on CI, where it must run.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import CliServerFactory
from ..helpers import PASSWORD, Person, World, eventually, free_port, new_id, send

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERT_NAMES = set(re.findall(r"^\s*- alert: (\S+)\s*$", ALERTS.read_text(), re.MULTILINE))


@pytest.fixture
def backend() -> str:
    return "sqlite"


class PrometheusProcess:
    """`prometheus` on 127.0.0.1:`port`, scraping `targets` every second (job webinar-chat, as
    deploy/prometheus/prometheus.yml) and evaluating `rule_file` every second."""

    def __init__(self, workdir: Path, targets: list[str], rule_file: Path) -> None:
        self.workdir = workdir
        self.targets = targets
        self.rule_file = rule_file
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    async def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        targets = ", ".join(f'"{t}"' for t in self.targets)
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "  evaluation_interval: 1s\n"
            "rule_files:\n"
            f'  - "{self.rule_file}"\n'
            "scrape_configs:\n"
            "  - job_name: webinar-chat\n"
            "    metrics_path: /metrics\n"
            f"    static_configs: [{{targets: [{targets}]}}]\n")
        with self.log_path.open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(  # noqa: ASYNC220 - returns once forked
                [PROMETHEUS, f"--config.file={config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n"
                                       + self.log_tail())
                try:
                    if (await http.get(self.base_url + "/-/ready")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("prometheus did not become ready:\n" + self.log_tail())
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.process.wait, 10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)


@pytest.fixture
def prometheus_binary() -> str:
    if not os.path.exists(PROMETHEUS):
        if os.environ.get("CI"):
            pytest.fail(f"{PROMETHEUS} not found on CI: scripts/install-system-deps installs it "
                        "(Debian package prometheus)")
        pytest.skip(f"{PROMETHEUS} not found: run scripts/install-system-deps (Debian package "
                    "prometheus) to run the test with a real Prometheus")
    return PROMETHEUS


async def _api(prom: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await prom.get(path, params=params)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


async def _query(prom: httpx.AsyncClient, promql: str) -> list[dict[str, Any]]:
    data = await _api(prom, "/api/v1/query", query=promql)
    assert data["resultType"] == "vector", data
    return list(data["result"])


async def test_prometheus_scrapes_the_server_and_evaluates_the_alerts(
        prometheus_binary: str, cli_server: CliServerFactory, world: World,
        tmp_path: Path) -> None:
    assert ALERT_NAMES == {"ChatFallbackRate", "ChatReconnectsPerSession", "ChatSendTimeouts",
                           "ChatServerErrors", "ChatAuthRateLimited", "ChatRateLimiterErrors",
                           "ChatBusProbeTimeouts", "ChatBusNotReady", "ChatFanoutSlow",
                           "ChatBackgroundErrors", "ChatLogFailures"}
    server = await cli_server()
    target = f"127.0.0.1:{server.port}"
    prometheus = PrometheusProcess(tmp_path / "prometheus", [target], ALERTS)
    try:
        await prometheus.start()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
            login = await http.post("/api/auth/login",
                                    json={"email": world.alice.email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            alice = Person(world.alice.user_id, world.alice.email, world.alice.display_name,
                           login.json()["access_token"])
            created = await send(http, alice, world.webinar.id, "hello, Prometheus", new_id())
            assert created.status_code == 200, created.text

        async with httpx.AsyncClient(base_url=prometheus.base_url, timeout=5) as prom:
            # the message, counted by the server and scraped under the names the rules use
            async def scraped() -> bool:
                ok = await _query(prom, 'sum(webinar_chat_message_creates_total{outcome="ok"})')
                http_ok = await _query(prom, 'webinar_chat_http_requests_total{'
                                             'route="/api/messages/create",status="200"}')
                return bool(ok) and float(ok[0]["value"][1]) >= 1 and bool(http_ok)

            await eventually(scraped, timeout=20, interval=0.2,
                             message="the message create never reached Prometheus:\n"
                             + prometheus.log_tail())
            [create] = await _query(prom, 'webinar_chat_http_requests_total{'
                                          'route="/api/messages/create",status="200"}')
            assert create["metric"]["method"] == "POST"
            assert create["metric"]["job"] == "webinar-chat"
            assert create["metric"]["instance"] == target
            assert float(create["value"][1]) >= 1

            # the target: up, scraped without an error
            targets = (await _api(prom, "/api/v1/targets"))["activeTargets"]
            assert [(t["labels"]["instance"], t["health"], t["lastError"]) for t in targets] \
                == [(target, "up", "")], targets

            # every alert of alerts.yml loaded, in group webinar-chat; after an evaluation that
            # saw the data above, every rule evaluated without an error and none is pending or
            # firing: a healthy server raises no alert
            async def group() -> dict[str, Any]:
                groups = (await _api(prom, "/api/v1/rules", type="alert"))["groups"]
                assert [g["name"] for g in groups] == ["webinar-chat"], groups
                return dict(groups[0])

            first = (await group())["lastEvaluation"]

            async def evaluated_again() -> bool:
                return bool((await group())["lastEvaluation"] != first)

            await eventually(evaluated_again, timeout=10, interval=0.1,
                             message="the alerting rules were not evaluated again")
            rules = (await group())["rules"]
            assert {r["name"] for r in rules} == ALERT_NAMES
            assert [(r["name"], r["health"], r.get("lastError", ""), r["state"])
                    for r in rules if (r["health"], r["state"]) != ("ok", "inactive")] == []
            ready = await _query(prom, "webinar_chat_bus_ready")
            assert [float(s["value"][1]) for s in ready] == [1.0], ready
    finally:
        await prometheus.stop()
