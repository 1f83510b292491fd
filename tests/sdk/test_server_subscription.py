"""Server-side subscription: applications consume the validated device stream with a
standard MQTT 5 client (paho-mqtt), signing in with an AccessKey as the reference
platform's AMQP consumers do, sharing the stream in a consumer group (a shared
subscription) and keeping what arrives while they are away (persistent sessions, QoS 1).
The device is Alibaba's official Python SDK."""

import base64
import hashlib
import hmac
import json
import logging
import queue
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from linkkit import linkkit

from conftest import ACCESS_KEY_ID, ACCESS_KEY_SECRET
from test_linkkit import Events, assert_connected, unique

TSL_FILE = Path(__file__).with_name("tsl_services.json")
TIMEOUT = 10


class Consumer:
    """An application session: AccessKey sign-in, persistent session, QoS 1."""

    def __init__(self, server, client_id, secret=ACCESS_KEY_SECRET):
        self.messages = queue.Queue()
        self.acks = queue.Queue()
        self.client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
        ts = str(int(time.time() * 1000))
        username = (f"{client_id}|authMode=aksign,signMethod=hmacsha256,"
                    f"timestamp={ts},authId={ACCESS_KEY_ID}|")
        mac = hmac.new(secret.encode(), f"authId={ACCESS_KEY_ID}&timestamp={ts}".encode(),
                       hashlib.sha256).digest()
        self.client.username_pw_set(username, base64.b64encode(mac).decode())
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, json.loads(m.payload)))
        self.client.on_connect = lambda c, u, flags, rc, props=None: self.acks.put(("connack", rc))
        self.client.on_subscribe = lambda c, u, mid, codes, props=None: self.acks.put(("suback", codes))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(server.host, server.mqtt_port, keepalive=60, clean_start=False,
                            properties=props)
        self.client.loop_start()
        kind, self.rc = self.acks.get(timeout=TIMEOUT)
        assert kind == "connack"

    def subscribe(self, topic):
        self.client.subscribe(topic, qos=1)
        kind, codes = self.acks.get(timeout=TIMEOUT)
        assert kind == "suback"
        return [c.value for c in codes]

    def drain(self, wait=1.0):
        out = []
        deadline = time.monotonic() + wait
        while True:
            try:
                out.append(self.messages.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return out

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_applications_share_the_validated_stream(server, devices):
    pk = server.product(unique("sdk-stream"))["productKey"]
    status, _ = server.api("PUT", f"/api/v1/products/{pk}/thing-model",
                           json.loads(TSL_FILE.read_text()))
    assert status == 200
    status, _ = server.api("POST", f"/api/v1/products/{pk}/thing-model/publish", {})
    assert status == 200
    dn = unique("dev")
    ds = server.device(pk, dn)["deviceSecret"]

    # A wrong secret is refused; so are topics outside the account's products (the
    # rule per product is unit-tested in lode-device).
    bad = Consumer(server, unique("app"), secret="not-the-secret")
    assert bad.rc != 0
    bad.close()
    group = f"$share/g1/$lode/{pk}/+/thing/property"
    a = Consumer(server, "app-a-" + uuid.uuid4().hex[:6])
    b = Consumer(server, "app-b-" + uuid.uuid4().hex[:6])
    assert a.rc == 0 and b.rc == 0
    assert a.subscribe(group) == [1]
    assert b.subscribe(group) == [1]
    assert a.subscribe("#")[0] >= 0x80
    assert a.subscribe("$lode/a1NoSuchProd/#")[0] >= 0x80

    events = Events()
    lk = linkkit.LinkKit(host_name="127.0.0.1", product_key=pk, device_name=dn,
                         device_secret=ds)
    devices.append(lk)
    lk.enable_logger(logging.WARNING)
    lk.on_connect = events.hook("connect")
    lk.on_disconnect = events.hook("disconnect")
    lk.on_thing_enable = events.hook("thing_enable")
    lk.on_thing_prop_post = events.hook("prop_post")
    lk.config_mqtt(port=server.mqtt_port, secure="", keep_alive=60)
    assert lk.thing_setup(str(TSL_FILE)) == 0
    lk.connect_async()
    assert_connected(events)

    def post(n, start):
        for i in range(start, start + n):
            rc, _ = lk.thing_post_property({"Temperature": float(i)})
            assert rc == 0
            events.wait("prop_post")

    post(10, 0)
    # An invalid value is refused by the thing model and never reaches the stream.
    rc, _ = lk.thing_post_property({"Temperature": 999.0})
    assert rc == 0
    events.wait("prop_post")
    got = a.drain() + b.drain()
    temps = sorted(m["items"]["Temperature"]["value"] for _, m in got)
    assert temps == [float(i) for i in range(10)], got
    assert all(t == f"$lode/{pk}/{dn}/thing/property" for t, _ in got)
    assert all(m["deviceName"] == dn for _, m in got)

    # Both members away: what arrives meanwhile waits in their sessions.
    a_id, b_id = a.client._client_id.decode(), b.client._client_id.decode()
    a.close()
    b.close()
    post(3, 100)
    a = Consumer(server, a_id)
    b = Consumer(server, b_id)
    got = a.drain(2.0) + b.drain(1.0)
    temps = sorted(m["items"]["Temperature"]["value"] for _, m in got)
    assert temps == [100.0, 101.0, 102.0], got
    a.close()
    b.close()
