"""Lodestone driven by the Eclipse Mosquitto command-line clients."""

import subprocess
import time

import pytest

from conftest import need_tool
from mqttc import V5, Client

VERSIONS = [pytest.param("mqttv311", id="v311"), pytest.param("mqttv5", id="v5")]


def common(server, version):
    return ["-h", server.host, "-p", str(server.mqtt_port), "-V", version]


def pub(server, version, *args):
    subprocess.run([need_tool("mosquitto_pub"), *common(server, version), *args],
                   check=True, capture_output=True, timeout=10)


def start_sub(server, version, *args):
    """Starts mosquitto_sub and waits until its subscription is in place."""
    exe = need_tool("mosquitto_sub")
    before = server_subscribers(server)
    proc = subprocess.Popen([exe, *common(server, version), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 5
    while server_subscribers(server) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


def server_subscribers(server):
    """Subscriptions held by the broker, from the metrics endpoint (0 if unavailable)."""
    import urllib.request
    try:
        body = urllib.request.urlopen(f"http://{server.host}:{server.http_port}/metrics",
                                      timeout=2).read().decode()
    except OSError:
        return 0
    for line in body.splitlines():
        if line.startswith("lode_mqtt_subscriptions "):
            return float(line.split()[-1])
    return 0


def finish(proc):
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    return out.splitlines()


@pytest.mark.parametrize("version", VERSIONS)
def test_pub_sub_qos1_count(server, version):
    sub = start_sub(server, version, "-q", "1", "-C", "3", "-t", "mos/t", "-v")
    time.sleep(0.3)
    for i in range(3):
        pub(server, version, "-q", "1", "-t", "mos/t", "-m", f"hello {i}")
    assert finish(sub) == [f"mos/t hello {i}" for i in range(3)]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained(server, version):
    pub(server, version, "-q", "1", "-r", "-t", "mos/ret", "-m", "kept")
    sub = start_sub(server, version, "-q", "1", "-C", "1", "-t", "mos/#", "-v", "-F", "%r %t %p")
    assert finish(sub) == ["1 mos/ret kept"]
    # Clearing with an empty retained message: a later subscriber gets nothing.
    pub(server, version, "-q", "1", "-r", "-t", "mos/ret", "-n")
    sub = subprocess.run([need_tool("mosquitto_sub"), *common(server, version), "-t", "mos/#",
                          "-W", "1"], capture_output=True, text=True, timeout=10)
    assert sub.stdout == ""


def test_v5_user_property_from_mosquitto_to_paho(server):
    need_tool("mosquitto_pub")
    c = Client(server, V5)
    c.subscribe("mos/props", qos=1)
    pub(server, "mqttv5", "-q", "1", "-t", "mos/props", "-m", "p",
        "-D", "publish", "user-property", "origin", "mosquitto_pub",
        "-D", "publish", "response-topic", "mos/reply")
    m = c.get()
    assert m.properties.UserProperty == [("origin", "mosquitto_pub")]
    assert m.properties.ResponseTopic == "mos/reply"
    c.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_paho_to_mosquitto_sub(server, version):
    sub = start_sub(server, version, "-q", "1", "-C", "5", "-t", "mix/+")
    time.sleep(0.3)
    c = Client(server, V5)
    for i in range(5):
        c.publish(f"mix/{i}", f"m{i}".encode(), qos=1)
    c.disconnect()
    assert finish(sub) == [f"m{i}" for i in range(5)]
