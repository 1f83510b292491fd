"""Gateways with Alibaba's official Python device SDK (aliyun-iot-linkkit 1.2.13),
unmodified: a LinkKit gateway adds two sub-devices to its topology, logs both in, posts a
property for each over its own connection, receives a property set for one of them, and
logs them out. Everything is checked through the signed management API."""

import json
import logging
import queue
import time

from linkkit import linkkit

from test_linkkit import Events, unique

TIMEOUT = 10
TSL = {
    "schema": "https://iotx-tsl.oss-ap-southeast-1.aliyuncs.com/schema.json",
    "profile": {"productKey": "any"},
    "properties": [
        {"identifier": "Temperature", "name": "Temperature", "accessMode": "rw",
         "required": False,
         "dataType": {"type": "float", "specs": {"min": "-40", "max": "120", "step": "0.1"}}},
    ],
    "events": [],
    "services": [],
}


def ok(result):
    status, body = result
    assert 200 <= status < 300, f"HTTP {status}: {body}"
    return body


def eventually(fetch, check, timeout=TIMEOUT):
    """Polls `fetch()` until `check(value)` holds; returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition never held; last value {value}")
        time.sleep(0.1)


class Messages:
    """Messages the SDK hands to `on_topic_message` (a sub-device's downlinks)."""

    def __init__(self):
        self.q = queue.Queue()

    def hook(self, topic, payload, qos, userdata):
        self.q.put((topic, payload))

    def on(self, topic, timeout=TIMEOUT):
        """The payload of the next message on `topic`, as JSON (others are skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"nothing on {topic} within {timeout}s")
            try:
                got, payload = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if got == topic:
                return json.loads(payload)


def product(server, name, node_type):
    return ok(server.api("POST", "/api/v1/products",
                         {"name": unique(name), "nodeType": node_type}))["productKey"]


def test_gateway_with_two_sub_devices(server, devices):
    gpk = product(server, "sdk-gw", "Gateway")
    spk = product(server, "sdk-sub", "SubDevice")
    ok(server.api("PUT", f"/api/v1/products/{spk}/thing-model", TSL))
    ok(server.api("POST", f"/api/v1/products/{spk}/thing-model/publish", {}))
    gdn = unique("gw")
    gds = server.device(gpk, gdn)["deviceSecret"]
    subs = [(spk, unique("sub"), None), (spk, unique("sub"), None)]
    subs = [(pk, dn, server.device(pk, dn)["deviceSecret"]) for pk, dn, _ in subs]

    events = Events()
    topics = Messages()
    lk = linkkit.LinkKit(host_name="127.0.0.1", product_key=gpk, device_name=gdn,
                         device_secret=gds)
    devices.append(lk)
    lk.enable_logger(logging.DEBUG)
    lk.on_connect = events.hook("connect")
    lk.on_gateway_add_subdev_topo_reply = events.hook("topo_add")
    lk.on_gateway_login_subdev_reply = events.hook("login")
    lk.on_gateway_logout_subdev_reply = events.hook("logout")
    lk.on_topic_message = topics.hook
    lk.config_mqtt(port=server.mqtt_port, secure="", keep_alive=60)
    lk.connect_async()
    _, rc, _ = events.wait("connect")
    assert rc == 0

    # Topology: the SDK signs each sub-device with its DeviceSecret.
    rc, request_id = lk.gateway_add_subdev_topo([list(s) for s in subs])
    assert rc == 0
    reply_id, code, data, message, _ = events.wait("topo_add")
    assert (reply_id, code) == (request_id, 200), (code, data, message)
    topo = ok(server.api("GET", f"/api/v1/products/{gpk}/devices/{gdn}/topology"))
    assert sorted(i["deviceName"] for i in topo["items"]) == sorted(dn for _, dn, _ in subs)

    # Login of both (batch_login): both online.
    rc, request_id = lk.gateway_login_subdev([list(s) for s in subs])
    assert rc == 0
    reply_id, code, data, message, _ = events.wait("login")
    assert (reply_id, code) == (request_id, 200), (code, data, message)
    for pk, dn, _ in subs:
        eventually(lambda: ok(server.api("GET", f"/api/v1/products/{pk}/devices/{dn}/status")),
                   lambda s: s["online"])

    # Each sub-device posts a property over the gateway's connection: stored under it.
    for n, (pk, dn, _) in enumerate(subs):
        post = {"id": str(100 + n), "version": "1.0", "params": {"Temperature": 20.5 + n},
                "method": "thing.event.property.post"}
        rc, _ = lk.publish_topic(f"/sys/{pk}/{dn}/thing/event/property/post", json.dumps(post))
        assert rc == 0
        reply = topics.on(f"/sys/{pk}/{dn}/thing/event/property/post_reply")
        assert (reply["id"], reply["code"]) == (str(100 + n), 200), reply
        latest = ok(server.api("GET", f"/api/v1/products/{pk}/devices/{dn}/properties"))
        assert latest["items"][0]["value"] == 20.5 + n

    # A property set for the first one reaches the gateway on that sub-device's topic.
    pk, dn, _ = subs[0]
    ok(server.api("POST", f"/api/v1/products/{pk}/devices/{dn}/properties/set",
                  {"items": {"Temperature": 30.0}}))
    set_topic = f"/sys/{pk}/{dn}/thing/service/property/set"
    request = topics.on(set_topic)
    assert request["params"] == {"Temperature": 30.0}
    lk.publish_topic(set_topic + "_reply",
                     json.dumps({"id": request["id"], "code": 200, "data": {}}))

    # Logout of both: both offline.
    rc, request_id = lk.gateway_logout_subdev([[pk, dn] for pk, dn, _ in subs])
    assert rc == 0
    reply_id, code, data, message, _ = events.wait("logout")
    assert (reply_id, code) == (request_id, 200), (code, data, message)
    for pk, dn, _ in subs:
        eventually(lambda: ok(server.api("GET", f"/api/v1/products/{pk}/devices/{dn}/status")),
                   lambda s: not s["online"])
