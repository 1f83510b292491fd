"""Alibaba Cloud's official Python device SDK (aliyun-iot-linkkit 1.2.13), unmodified,
against `lodestone serve`: sign-in over TCP and TLS, a property post seen by an
application, a property set from the platform, and dynamic registration over HTTPS
and over MQTT (`register`, `regnwl` then token login).

The SDK is pointed at the server only through its public options: `config_mqtt(port,
secure, endpoint, cadata)` and, for HTTPS registration (whose URL the SDK fixes to
`https://iot-auth.<host_name>.aliyuncs.com/auth/register/device` on port 443), a name
resolution override in this process that sends that host and port to the HTTPS listener.
"""

import json
import logging
import queue
import socket
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from linkkit import linkkit

from conftest import AUTH_HOST, REGION

TSL = str(Path(__file__).with_name("tsl.json"))
TIMEOUT = 10


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Events:
    """SDK callbacks as a queue of (name, args) the test waits on."""

    def __init__(self):
        self.q = queue.Queue()
        self.seen = []

    def hook(self, name):
        def callback(*args):
            self.q.put((name, args))
        return callback

    def wait(self, name, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for i, (n, args) in enumerate(self.seen):
                if n == name:
                    del self.seen[i]
                    return args
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {name} callback within {timeout}s; got {self.seen}")
            try:
                self.seen.append(self.q.get(timeout=left))
            except queue.Empty:
                pass


def linkkit_device(events, **kwargs):
    """A LinkKit with every callback used here recorded in `events`."""
    lk = linkkit.LinkKit(**kwargs)
    lk.enable_logger(logging.DEBUG)
    lk.on_connect = events.hook("connect")
    lk.on_disconnect = events.hook("disconnect")
    lk.on_thing_enable = events.hook("thing_enable")
    lk.on_thing_prop_post = events.hook("prop_post")
    lk.on_thing_prop_changed = events.hook("prop_changed")
    lk.on_device_dynamic_register = events.hook("dynamic_register")
    lk.on_device_dynamic_register_nwl_reply = events.hook("dynamic_register_nwl")
    return lk


class Application:
    """A plain MQTT client (no username: accepted in anonymous mode) watching topics."""

    def __init__(self, server, topic):
        self.messages = queue.Queue()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(client_id=unique("app"), protocol=mqtt.MQTTv311)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_connect = lambda c, u, flags, rc: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, granted: self.subscribed.set()
        self.client.connect(server.host, server.mqtt_port, keepalive=60)
        self.client.loop_start()
        assert self.subscribed.wait(TIMEOUT), "application subscription not acknowledged"

    def next(self, timeout=TIMEOUT):
        return self.messages.get(timeout=timeout)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def assert_connected(events):
    session_flag, rc, _ = events.wait("connect")
    assert rc == 0, f"CONNACK return code {rc}"
    events.wait("thing_enable")


def post_and_set(server, lk, events, pk, dn, set_property=True, attempts=3):
    """The device posts a property an application sees; the platform sets one the device gets.

    The SDK is not safe over TLS when two threads publish: it runs paho-mqtt 1.x's `loop()`
    in its own thread, and paho then writes every publish (the application's, and the SDK's
    automatic `property/set_reply` from its handler thread, while the loop thread writes the
    PUBACK) to the socket from the calling thread, so two threads use one `ssl.SSLSocket` at
    once. The TLS stream then breaks now and then (client side: "[SSL] internal error", the
    server answers the garbled record with a decode_error alert); the SDK reports
    `on_disconnect(7)` and reconnects, or its loop thread spins on the error for ever.
    So the property set, which always makes the SDK write from two threads, is checked on
    plain TCP connections only, and a post is repeated after a reconnect (at most
    `attempts` times); a message that never arrives still fails the test.
    """
    app = Application(server, f"/sys/{pk}/{dn}/thing/event/property/post")
    try:
        for attempt in range(attempts):
            rc, request_id = lk.thing_post_property({"Temperature": 21.5})
            if rc == 0:
                try:
                    topic, payload = app.next(timeout=3 if attempt + 1 < attempts else TIMEOUT)
                    break
                except queue.Empty:
                    pass
            reconnected(events)
        else:
            raise AssertionError("the application never saw the property post")
        assert topic == f"/sys/{pk}/{dn}/thing/event/property/post"
        body = json.loads(payload)
        assert body["params"] == {"Temperature": 21.5}
        assert body["method"] == "thing.event.property.post"
        assert body["id"] == request_id
    finally:
        app.close()

    if not set_property:
        return
    # Delivered thanks to the server-side subscription (`_ss=1`): the SDK never subscribes.
    message = json.dumps({"id": "42", "version": "1.0", "params": {"Switch": 1},
                          "method": "thing.service.property.set"})
    for attempt in range(attempts):
        server.cli("pub", "--topic", f"/sys/{pk}/{dn}/thing/service/property/set",
                   "--message", message, "--qos", "1")
        try:
            params, _ = events.wait("prop_changed", timeout=3 if attempt + 1 < attempts else TIMEOUT)
            break
        except AssertionError:
            reconnected(events)
    else:
        raise AssertionError("the device never got the property set")
    assert params == {"Switch": 1}


def reconnected(events):
    """Waits for the SDK to come back after it lost its connection."""
    try:
        events.wait("disconnect")
    except AssertionError:
        raise AssertionError("a message did not arrive and the SDK reported no disconnect "
                             "(its network loop is stuck; see post_and_set)") from None
    assert_connected(events)


def test_tcp_sign_in_property_post_and_set(server, devices):
    """(a) Plain TCP, securemode=3: host_name "127.0.0.1" is used verbatim as the endpoint."""
    pk = server.product(unique("sdk-tcp"))["productKey"]
    dn = unique("dev")
    ds = server.device(pk, dn)["deviceSecret"]
    events = Events()
    lk = linkkit_device(events, host_name="127.0.0.1", product_key=pk, device_name=dn,
                        device_secret=ds)
    devices.append(lk)
    lk.config_mqtt(port=server.mqtt_port, secure="", keep_alive=60)
    assert lk.thing_setup(TSL) == 0
    lk.connect_async()
    assert_connected(events)
    status = server.cli("device", "status", "--product-key", pk, "--name", dn)
    deadline = time.monotonic() + TIMEOUT
    while status.get("online") is not True and time.monotonic() < deadline:
        time.sleep(0.05)
        status = server.cli("device", "status", "--product-key", pk, "--name", dn)
    assert status.get("online") is True, status
    post_and_set(server, lk, events, pk, dn)


def test_tls_sign_in(server, pki, devices):
    """(b) TLS, securemode=2, trusting our CA through `cadata`."""
    pk = server.product(unique("sdk-tls"))["productKey"]
    dn = unique("dev")
    ds = server.device(pk, dn)["deviceSecret"]
    events = Events()
    lk = linkkit_device(events, host_name="cn-shanghai", product_key=pk, device_name=dn,
                        device_secret=ds)
    devices.append(lk)
    lk.config_mqtt(port=server.mqtts_port, secure="TLS", endpoint="127.0.0.1",
                   cadata=pki["ca_pem"], keep_alive=60)
    assert lk.thing_setup(TSL) == 0
    lk.connect_async()
    assert_connected(events)
    post_and_set(server, lk, events, pk, dn, set_property=False)


def test_tls_sign_in_with_wrong_secret_is_refused(server, pki, devices):
    """A wrong DeviceSecret gets a refusing CONNACK. The SDK reports only successful
    CONNACKs to `on_connect`, so the test checks that none comes and the device stays offline."""
    pk = server.product(unique("sdk-bad"))["productKey"]
    dn = unique("dev")
    server.device(pk, dn)
    events = Events()
    lk = linkkit_device(events, host_name="cn-shanghai", product_key=pk, device_name=dn,
                        device_secret="not-the-secret")
    devices.append(lk)
    lk.config_mqtt(port=server.mqtts_port, secure="TLS", endpoint="127.0.0.1",
                   cadata=pki["ca_pem"], auto_reconnect_min_sec=1, auto_reconnect_max_sec=1)
    lk.connect_async()
    with pytest.raises(AssertionError, match="no connect callback"):
        events.wait("connect", timeout=3)
    status = server.cli("device", "status", "--product-key", pk, "--name", dn)
    assert status.get("online") is not True, status


@pytest.fixture
def auth_host_on_loopback(server, monkeypatch):
    """Resolves the SDK's registration host (port 443) to the HTTPS listener."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host == AUTH_HOST:
            return real(server.host, server.https_port if port in (443, "443") else port,
                        *args, **kwargs)
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_https_dynamic_registration(server, pki, devices, auth_host_on_loopback):
    """(c) ProductSecret only: the SDK gets its DeviceSecret over HTTPS (trusting our CA
    through `cadata`, which the SDK also uses for registration), then signs in over TCP."""
    product = server.product(unique("sdk-https"), dynamic_registration=True)
    pk, ps = product["productKey"], product["productSecret"]
    dn = unique("dev")
    ds = server.device(pk, dn)["deviceSecret"]
    events = Events()
    lk = linkkit_device(events, host_name=REGION, product_key=pk, device_name=dn,
                        device_secret="", product_secret=ps)
    devices.append(lk)
    lk.config_mqtt(port=server.mqtt_port, secure="", endpoint="127.0.0.1",
                   cadata=pki["ca_pem"])
    assert lk.thing_setup(TSL) == 0
    lk.connect_async()
    rc, value, _ = events.wait("dynamic_register")
    assert rc == 0, f"registration failed: {value}"
    assert value == ds
    assert_connected(events)
    post_and_set(server, lk, events, pk, dn)


def test_mqtt_dynamic_registration_register(server, pki, devices):
    """(d) `register`: a pre-registered device gets its DeviceSecret on /ext/register."""
    product = server.product(unique("sdk-reg"), dynamic_registration=True)
    pk, ps = product["productKey"], product["productSecret"]
    dn = unique("dev")
    ds = server.device(pk, dn)["deviceSecret"]
    events = Events()
    lk = linkkit_device(events, host_name=REGION, product_key=pk, device_name=dn,
                        device_secret="", product_secret=ps, auth_type="register")
    devices.append(lk)
    lk.config_mqtt(port=server.mqtts_port, secure="TLS", endpoint="127.0.0.1",
                   cadata=pki["ca_pem"])
    lk.connect_async()
    _, rc, _ = events.wait("connect")
    assert rc == 0
    rc, secret, _ = events.wait("dynamic_register")
    assert rc == 0
    assert secret == ds

    # The device then signs in with the secret it was given.
    events = Events()
    lk = linkkit_device(events, host_name=REGION, product_key=pk, device_name=dn,
                        device_secret=secret)
    devices.append(lk)
    lk.config_mqtt(port=server.mqtts_port, secure="TLS", endpoint="127.0.0.1",
                   cadata=pki["ca_pem"])
    assert lk.thing_setup(TSL) == 0
    lk.connect_async()
    assert_connected(events)


def test_mqtt_dynamic_registration_regnwl_then_token_login(server, pki, devices):
    """(d) `regnwl`: a device unknown to the server gets a token on /ext/regnwl, then logs in."""
    product = server.product(unique("sdk-nwl"), dynamic_registration=True)
    pk, ps = product["productKey"], product["productSecret"]
    dn = unique("dev")
    events = Events()
    lk = linkkit_device(events, host_name=REGION, product_key=pk, device_name=dn,
                        device_secret="", product_secret=ps, auth_type="regnwl")
    devices.append(lk)
    lk.config_mqtt(port=server.mqtts_port, secure="TLS", endpoint="127.0.0.1",
                   cadata=pki["ca_pem"])
    lk.connect_async()
    _, rc, _ = events.wait("connect")
    assert rc == 0
    rc, client_id, username, password = events.wait("dynamic_register_nwl")
    assert rc == 0
    assert username == f"{dn}&{pk}"
    assert "authType=connwl" in client_id and "securemode=-2" in client_id

    events = Events()
    lk = linkkit_device(events, host_name=REGION, product_key=pk, device_name=dn,
                        device_secret="", username=username, client_id=client_id,
                        password=password)
    devices.append(lk)
    lk.config_mqtt(port=server.mqtts_port, secure="TLS", endpoint="127.0.0.1",
                   cadata=pki["ca_pem"])
    assert lk.thing_setup(TSL) == 0
    lk.connect_async()
    assert_connected(events)
    post_and_set(server, lk, events, pk, dn, set_property=False)
    device = server.cli("device", "get", "--product-key", pk, "--name", dn)
    assert device["deviceName"] == dn
