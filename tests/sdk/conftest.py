"""Fixtures for the official Python device SDK suite.

One `lodestone serve` process (binary from `LODESTONE_BIN`, default
`target/debug/lodestone`) runs for the whole session on free loopback ports, with
a temporary data directory, a configured admin AccessKey, anonymous mode (so a
plain paho client can watch device traffic as an application) and TLS from a test
CA made with the `openssl` command-line tool. Products and devices are created
with the `lodestone` CLI, as an operator would.
"""

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from urllib.parse import parse_qsl, quote
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from lodestone_process import free_port, lodestone_bin, stop_gracefully, wait_listening  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY_ID = "LTAIsdksuiteadmin01"
ACCESS_KEY_SECRET = "sdk-suite-admin-secret-0123456789"
# The SDK posts HTTPS dynamic registration to https://iot-auth.<host_name>.aliyuncs.com
# (port 443); the server certificate names this host and the tests resolve it to loopback.
REGION = "lodestone-test"
AUTH_HOST = f"iot-auth.{REGION}.aliyuncs.com"




def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """A test CA and a server certificate for 127.0.0.1, localhost and AUTH_HOST."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command-line tool is not installed")
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", "/CN=Lodestone Test Root CA", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
            "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext.cnf").write_text(
        f"subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{AUTH_HOST}\n"
        "basicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)
    return {"ca": d / "ca.pem", "ca_pem": (d / "ca.pem").read_text(),
            "cert": d / "srv.pem", "key": d / "srv.key"}


class Server:
    """A running `lodestone serve` and the CLI pointed at it."""

    def __init__(self, bin_path, data_dir, pki):
        self.bin = bin_path
        self.data_dir = data_dir
        self.host = "127.0.0.1"
        self.mqtt_port = free_port()
        self.mqtts_port = free_port()
        self.http_port = free_port()
        self.https_port = free_port()
        self.ws_port = free_port()
        self.wss_port = free_port()
        self.log_path = data_dir.parent / "lodestone.log"
        self.pki = pki
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("LODESTONE_")}
        env["LODESTONE_ADMIN_ACCESS_KEY_ID"] = ACCESS_KEY_ID
        env["LODESTONE_ADMIN_ACCESS_KEY_SECRET"] = ACCESS_KEY_SECRET
        args = [
            str(self.bin), "serve", "--allow-anonymous",
            "--data-dir", str(self.data_dir),
            "--mqtt-addr", f"{self.host}:{self.mqtt_port}",
            "--mqtts-addr", f"{self.host}:{self.mqtts_port}",
            "--ws-addr", f"{self.host}:{self.ws_port}",
            "--wss-addr", f"{self.host}:{self.wss_port}",
            "--http-addr", f"{self.host}:{self.http_port}",
            # CoAP listeners on free ports: other servers may run beside this one.
            "--coap-addr", f"{self.host}:0", "--coap-psk-addr", f"{self.host}:0",
            "--coap-dtls-addr", f"{self.host}:0",
            "--https-addr", f"{self.host}:{self.https_port}",
            "--tls-cert", str(self.pki["cert"]), "--tls-key", str(self.pki["key"]),
            "--log", os.environ.get("SDK_SUITE_SERVER_LOG", "info"),
        ]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        ports = (self.mqtt_port, self.mqtts_port, self.http_port, self.https_port)
        wait_listening(self.proc, self.host, ports, 20, self.read_log)
        return self

    def read_log(self):
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self):
        stop_gracefully(self.proc)
        self.log.close()

    def cli(self, *args):
        """Runs a management command with `--json` and returns its parsed output."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LODESTONE_")}
        env.update({
            "LODESTONE_URL": f"http://{self.host}:{self.http_port}",
            "LODESTONE_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "LODESTONE_ACCESS_KEY_SECRET": ACCESS_KEY_SECRET,
        })
        out = subprocess.run([str(self.bin), *args, "--json"], env=env, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, f"lodestone {args} failed: {out.stderr}"
        return json.loads(out.stdout) if out.stdout.strip() else None

    def api(self, method, path, body=None, query=""):
        """Calls the management API directly, signing the request as any HTTP client
        would (HMAC-SHA256 over the six-line canonical string), and returns
        `(status, parsed JSON body)`."""
        data = b"" if body is None else json.dumps(body).encode()
        timestamp = str(int(time.time() * 1000))
        nonce = uuid.uuid4().hex
        pairs = sorted(
            (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
            for k, v in parse_qsl(query, keep_blank_values=True)
        )
        canonical = "\n".join([
            method, path, "&".join(f"{k}={v}" for k, v in pairs),
            hashlib.sha256(data).hexdigest(), timestamp, nonce,
        ])
        signature = hmac.new(ACCESS_KEY_SECRET.encode(), canonical.encode(),
                             hashlib.sha256).hexdigest()
        url = f"http://{self.host}:{self.http_port}{path}" + (f"?{query}" if query else "")
        request = urllib.request.Request(url, data=data if body is not None else None,
                                         method=method, headers={
            "Content-Type": "application/json",
            "X-Lode-Access-Key-Id": ACCESS_KEY_ID,
            "X-Lode-Timestamp": timestamp,
            "X-Lode-Nonce": nonce,
            "X-Lode-Signature": signature,
        })
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, json.loads(raw) if raw else None

    def product(self, name, dynamic_registration=False):
        args = ["product", "create", "--name", name]
        if dynamic_registration:
            args.append("--dynamic-registration")
        return self.cli(*args)

    def device(self, product_key, name):
        return self.cli("device", "register", "--product-key", product_key, "--name", name)


@pytest.fixture
def devices():
    """Destroys every LinkKit a test made, connected or not. `destroy()` can block for ever
    when the SDK's network loop is stuck (see `post_and_set`), so it runs in a daemon thread
    given a few seconds; the SDK's own threads are daemons and do not keep pytest alive."""
    made = []
    yield made
    for lk in made:
        t = threading.Thread(target=lambda: lk.destroy(), daemon=True)
        t.start()
        t.join(5)


@pytest.fixture(scope="session")
def server(tmp_path_factory, pki):
    s = Server(lodestone_bin(), tmp_path_factory.mktemp("lodestone") / "data", pki).start()
    yield s
    s.stop()


def pytest_runtest_makereport(item, call):
    """Attaches the server's log to failed tests."""
    if call.when == "call" and call.excinfo is not None:
        srv = item.funcargs.get("server")
        if srv is not None:
            item.add_report_section("call", "lodestone log", srv.read_log())
