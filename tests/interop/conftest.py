"""Fixtures that run the `lodestone` binary on free loopback ports.

The binary is taken from `LODESTONE_BIN` (default `target/debug/lodestone` at the
repository root); nothing is built here. Every server gets its own temporary data
directory and its own ports, so tests do not share state.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from lodestone_process import free_port, lodestone_bin, stop_gracefully, wait_listening  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
REPORT_LINES = []


def report(line):
    """Adds a line to the summary printed at the end of the run."""
    REPORT_LINES.append(line)
    print(line)


def pytest_terminal_summary(terminalreporter):
    if REPORT_LINES:
        terminalreporter.section("lodestone interop report")
        for line in REPORT_LINES:
            terminalreporter.write_line(line)




class Server:
    """One `lodestone serve` process; restartable on the same ports and data dir."""

    def __init__(self, data_dir, tls=None, config=None):
        self.bin = lodestone_bin()
        self.data_dir = Path(data_dir)
        self.tls = tls
        self.config = config
        self.host = "127.0.0.1"
        self.mqtt_port = free_port()
        self.ws_port = free_port()
        self.http_port = free_port()
        self.mqtts_port = free_port()
        self.wss_port = free_port()
        self.proc = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.log = None

    def args(self):
        a = [
            str(self.bin), "serve", "--allow-anonymous",
            "--data-dir", str(self.data_dir),
            "--mqtt-addr", f"{self.host}:{self.mqtt_port}",
            "--ws-addr", f"{self.host}:{self.ws_port}",
            "--http-addr", f"{self.host}:{self.http_port}",
            # CoAP listeners on free ports: other servers may run beside this one.
            "--coap-addr", f"{self.host}:0", "--coap-psk-addr", f"{self.host}:0",
            "--coap-dtls-addr", f"{self.host}:0",
            "--mqtts-addr", f"{self.host}:{self.mqtts_port}",
            "--wss-addr", f"{self.host}:{self.wss_port}",
            "--log", "warn",
        ]
        if self.tls:
            a += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        if self.config:
            a += ["--config", str(self.config)]
        return a

    def start(self):
        self.log = open(self.log_path, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("LODESTONE_")}
        self.proc = subprocess.Popen(self.args(), stdout=self.log, stderr=subprocess.STDOUT, env=env)
        ports = [self.mqtt_port, self.ws_port] + ([self.mqtts_port] if self.tls else [])
        wait_listening(self.proc, self.host, ports, 15, self.read_log)
        return self

    def read_log(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        """Graceful stop (SIGTERM), waiting for the process to exit."""
        stop_gracefully(self.proc)
        self._close_log()

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def restart(self):
        self.stop()
        return self.start()

    def _close_log(self):
        if self.log:
            self.log.close()
            self.log = None


@pytest.fixture
def server_factory(tmp_path):
    servers = []

    def make(**kwargs):
        s = Server(tmp_path / f"data{len(servers)}", **kwargs)
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.kill9()


@pytest.fixture
def server(server_factory):
    return server_factory()


def need_tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (not found on PATH)")
    return path
