"""`ironbook up --monitoring` for real: a local cluster (NATS, replicas,
gateway, feed) with Prometheus, Alertmanager, node_exporter, the NATS
collector and the alert receiver from their real binaries. Every target
Prometheus scrapes is up (through its HTTP API, bounded wait), the generated
configs pass promtool and amtool, `ironbook status --json` names the URLs, and
an Alertmanager notification posted to the receiver lands in the alerts file
and on NATS, a frozen replica fires a real alert that resolves, and the ops
console works in a real headless Chromium (Selenium with Debian's
chromium-driver). One cluster serves the whole module."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from monitoring_support import (
    EXPECTED_JOBS,
    MonitoredCluster,
    monitored_cluster_in,
    post_notification,
)
from selenium import webdriver
from selenium.webdriver.common.by import By

from ironbook.cli import main as ironbook
from ironbook.services.gateway.auth import local_signing_key, mint_token
from ironbook.services.monitoring import RULES_FILE
from ironbook.services.ops.alerts import ALERTS_SUBJECT

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def monitored_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoredCluster]:
    if shutil.which("prometheus") is None:
        _tool("prometheus")
    yield from monitored_cluster_in(tmp_path_factory.mktemp("monitored"))


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.geteuid() == 0:
            pytest.fail(f"{name} is missing although we run as root: run `make monitoring-tools`")
        pytest.skip(f"{name} is not installed: sudo sh deploy/install-monitoring.sh")
    return found


def test_every_target_is_up_and_alerts_reach_the_receiver(
    monitored_cluster: MonitoredCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = monitored_cluster.cluster
    stack = cluster.monitoring
    assert stack is not None
    targets = monitored_cluster.targets
    assert {t["labels"]["job"] for t in targets} == EXPECTED_JOBS
    names = {t["labels"].get("name") for t in targets}
    assert {"p0-r1", "p0-r2", "p0-r3", "gateway", "history-p0", "feed-ingest"} <= names
    assert all(t["health"] == "up" for t in targets), [
        (t["labels"]["job"], t["lastError"]) for t in targets if t["health"] != "up"
    ]
    # Every port of the stack is on loopback.
    for url in (stack.prometheus_url, stack.alertmanager_url, stack.ops_url):
        assert url.startswith("http://127.0.0.1:")

    subprocess.run(
        [_tool("promtool"), "check", "config", str(stack.dir / "prometheus.yml")], check=True
    )
    subprocess.run(
        [_tool("amtool"), "check-config", str(stack.dir / "alertmanager.yml")], check=True
    )

    capsys.readouterr()
    assert ironbook(["status", "--json", "--data-dir", str(cluster.data_dir)]) in (0, 1)
    status = json.loads(capsys.readouterr().out)
    assert status["monitoring"] == {
        "prometheus_url": stack.prometheus_url,
        "alertmanager_url": stack.alertmanager_url,
        "console_url": stack.console_url,
    }

    async def published_when_posted() -> bytes:
        nc = await cluster.ops.connect("test-alerts")
        try:
            subscription = await nc.subscribe(ALERTS_SUBJECT)
            await nc.flush()
            await asyncio.to_thread(post_notification, stack.ops_url, "firing", "IronbookTestAlert")
            message = await subscription.next_msg(timeout=10)
            return bytes(message.data)
        finally:
            await nc.close()

    published = json.loads(asyncio.run(published_when_posted()))
    assert published["alertname"] == "IronbookTestAlert" and published["status"] == "firing"
    recorded = [
        json.loads(line)
        for line in (stack.dir / "alerts.jsonl").read_text().splitlines()
        if "IronbookTestAlert" in line
    ]
    assert recorded[-1]["status"] == "firing"
    assert recorded[-1]["labels"]["partition"] == "0"

    # Bad input is refused and changes nothing.
    request = urllib.request.Request(
        stack.ops_url + "/alerts/webhook", data=b'{"version": "4"}', method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
    assert len((stack.dir / "alerts.jsonl").read_text().splitlines()) >= len(recorded)


def test_a_real_fault_fires_an_alert_and_its_resolution_is_recorded(
    monitored_cluster: MonitoredCluster,
) -> None:
    """A replica frozen (SIGSTOP) for longer than `IronbookReplicaDown`'s
    `for:` fires through Prometheus and Alertmanager to the receiver, and
    resolves once it runs again."""
    cluster = monitored_cluster.cluster
    stack = cluster.monitoring
    assert stack is not None
    alerts_file = stack.dir / "alerts.jsonl"
    replica = cluster.replicas["p0-r3"]

    def seen(status: str) -> bool:
        return any(
            record["alertname"] == "IronbookReplicaDown"
            and record["labels"].get("name") == "p0-r3"
            and record["status"] == status
            for record in map(json.loads, alerts_file.read_text().splitlines())
        )

    replica.pause()
    try:
        deadline = time.monotonic() + 60
        while not seen("firing"):
            assert time.monotonic() < deadline, "IronbookReplicaDown did not fire"
            time.sleep(0.5)
    finally:
        replica.resume()
    deadline = time.monotonic() + 60
    while not seen("resolved"):
        assert time.monotonic() < deadline, "IronbookReplicaDown did not resolve"
        time.sleep(0.5)


def test_the_generated_configs_scrape_every_job_the_rules_use() -> None:
    """Each `job="..."` the rules name is a job of the generated scrape config
    (the blackbox readiness probe aside: the local stack has no blackbox
    exporter, so `IronbookGatewayNotReady` cannot fire there)."""
    rules = RULES_FILE.read_text()
    assert set(re.findall(r'job="([^"]+)"', rules)) - {"ironbook-readyz"} <= EXPECTED_JOBS


def _chromium() -> Any:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        if os.geteuid() == 0:
            pytest.fail("chromium/chromium-driver missing although we run as root: run `make`")
        pytest.skip("chromium is not installed: sudo sh deploy/install-monitoring.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=driver)
    return webdriver.Chrome(options=options, service=service)


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"the console did not show {what}"
        time.sleep(0.2)


def test_the_ops_console_in_a_real_browser(
    monitored_cluster: MonitoredCluster, tmp_path: Path
) -> None:
    """Log in with an auditor token (a bettor's is refused), see every
    replica and NATS server with the partition's leader, see the page update
    by itself, and see an alert appear and resolve as the receiver gets it."""
    cluster = monitored_cluster.cluster
    stack = cluster.monitoring
    assert stack is not None
    secret = local_signing_key(cluster.data_dir)
    browser = _chromium()
    try:
        browser.get(stack.console_url)
        assert browser.find_element(By.ID, "app").get_attribute("hidden") is not None

        def log_in(token: str) -> None:
            field = browser.find_element(By.ID, "token")
            field.clear()
            field.send_keys(token)
            browser.find_element(By.ID, "login-button").click()

        log_in(mint_token(secret, role="bettor", account_id="a1"))
        _wait("the refusal", lambda: "admin and auditor" in browser.find_element(
            By.ID, "login-error").text)  # fmt: skip
        log_in(mint_token(secret, role="auditor"))
        _wait("the app", lambda: browser.find_element(By.ID, "app").is_displayed())

        def read(selector: str, attribute: str) -> list[tuple[str, str]]:
            """(attribute, text) of each element, read in one script: the page
            replaces its elements on every update, so a found element may be
            gone by the time it is read."""
            found = browser.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]))"
                ".map((e) => [e.getAttribute(arguments[1]), e.textContent]);",
                selector,
                attribute,
            )
            return [(str(key), str(text)) for key, text in found]

        def rows(selector: str) -> dict[str, str]:
            return dict(read(selector, "data-name"))

        _wait("every replica", lambda: set(rows("#replicas tr.replica")) == set(
            cluster.replicas))  # fmt: skip
        _wait("every NATS server", lambda: set(rows("#nats li.nats")) == {"n1", "n2", "n3"})
        _wait("a leader", lambda: "leader" in " ".join(rows("#replicas tr.replica").values()))
        _wait(
            "partition 0's leader",
            lambda: "p0-r" in dict(read("#partitions tr", "data-partition")).get("0", ""),
        )

        def version() -> int:
            return int(read("#updated", "data-version")[0][0])

        first = version()
        _wait("a live update", lambda: version() >= first + 2)

        def firing() -> list[str]:
            return [name for name, _ in read("#firing li.alert", "data-alertname")]

        post_notification(stack.ops_url, "firing", "IronbookBrowserAlert")
        _wait("the alert firing", lambda: "IronbookBrowserAlert" in firing())
        browser.save_screenshot(str(tmp_path / "console-firing.png"))
        post_notification(stack.ops_url, "resolved", "IronbookBrowserAlert")
        _wait("the alert resolved", lambda: "IronbookBrowserAlert" not in firing())
        assert read('#recent li[data-alertname="IronbookBrowserAlert"]', "data-status")[0][0] == (
            "resolved"
        )
        browser.save_screenshot(str(tmp_path / "console.png"))
        assert (tmp_path / "console.png").stat().st_size > 0
    finally:
        browser.quit()
