"""Remote configuration and custom-topic RRPC against `lodestone serve`.

RRPC: Alibaba's official Python device SDK (aliyun-iot-linkkit 1.2.13), unmodified,
subscribes a custom RRPC topic (`subscribe_rrpc_topic`, which subscribes
`/ext/rrpc/+/${pk}/${dn}/user/get`) and answers with `thing_answer_rrpc` on the request
topic; the API call returns its answer, and the answer is not routed back to the device
(the SDK would answer itself again: its RRPC callback must fire once).

Remote configuration: the Python SDK 1.2.13 has no remote-configuration support (no
`thing/config/*` topic anywhere in `linkkit.py`), so the device side is a plain paho-mqtt
client speaking the Alink topics the C SDKs use (section 7.1 of the Alink reference):
`thing/config/get` → `get_reply` with `data` {configId, configSize, sign, signMethod
"Sha256", url, getType "file"}, the download at `url`, its SHA-256 checked against `sign`,
and a push on `thing/config/push` (descriptor in `params`) answered on `push_reply`.
"""

import hashlib
import hmac
import json
import queue
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt

from test_linkkit import TIMEOUT, TSL, Events, assert_connected, linkkit_device, unique


class AlinkDevice:
    """A device signed in with its secret over plain MQTT 3.1.1 (`_ss=1`), recording every
    message it receives."""

    def __init__(self, server, pk, dn, secret):
        self.messages = queue.Queue()
        connected = threading.Event()
        content = f"clientId{dn}deviceName{dn}productKey{pk}"
        password = hmac.new(secret.encode(), content.encode(), hashlib.sha256).hexdigest()
        self.client = mqtt.Client(
            client_id=f"{dn}|securemode=3,signmethod=hmacsha256,_ss=1|",
            protocol=mqtt.MQTTv311)
        self.client.username_pw_set(f"{dn}&{pk}", password)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.on_connect = lambda c, u, flags, rc: rc == 0 and connected.set()
        self.client.connect(server.host, server.mqtt_port, keepalive=60)
        self.client.loop_start()
        assert connected.wait(TIMEOUT), "device did not connect"

    def publish(self, topic, body):
        self.client.publish(topic, json.dumps(body), qos=1).wait_for_publish()

    def expect(self, topic, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            t, payload = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if t == topic:
                return json.loads(payload)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_remote_config_get_download_and_push(server):
    pk = server.product(unique("cfg"))["productKey"]
    dn = unique("dev")
    secret = server.device(pk, dn)["deviceSecret"]
    status, saved = server.api("PUT", f"/api/v1/products/{pk}/config",
                               {"reportInterval": 15, "mode": "eco"})
    assert status == 200, saved
    # JSON only, 64 KB at most.
    status, body = server.api("PUT", f"/api/v1/products/{pk}/config", {"x": "y" * 70000})
    assert (status, body["code"]) == (413, "ConfigTooLarge")

    device = AlinkDevice(server, pk, dn, secret)
    try:
        base = f"/sys/{pk}/{dn}/thing/config"
        device.publish(f"{base}/get", {"id": "7", "version": "1.0", "method": "thing.config.get",
                                       "params": {"configScope": "product", "getType": "file"}})
        reply = device.expect(f"{base}/get_reply")
        assert (reply["id"], reply["code"], reply["message"]) == ("7", 200, "success")
        data = reply["data"]
        assert data["configId"] == saved["configId"]
        assert (data["signMethod"], data["getType"]) == ("Sha256", "file")
        with urllib.request.urlopen(data["url"], timeout=TIMEOUT) as resp:
            content = resp.read()
        assert len(content) == data["configSize"]
        assert hashlib.sha256(content).hexdigest() == data["sign"]
        assert json.loads(content) == {"reportInterval": 15, "mode": "eco"}

        # A push to the online device, answered on push_reply.
        result = {}
        push = threading.Thread(target=lambda: result.update(
            answer=server.api("POST", f"/api/v1/products/{pk}/config/push",
                              {"deviceNames": [dn], "waitMs": 5000})))
        push.start()
        pushed = device.expect(f"{base}/push")
        assert pushed["method"] == "thing.config.push"
        assert pushed["params"]["configId"] == saved["configId"]
        assert pushed["params"]["sign"] == data["sign"]
        device.publish(f"{base}/push_reply", {"id": pushed["id"], "code": 200, "data": {}})
        push.join(TIMEOUT)
        status, report = result["answer"]
        assert status == 200, report
        assert report["results"] == [{"deviceName": dn, "status": "acknowledged", "code": 200}]
    finally:
        device.close()


def test_custom_topic_rrpc_answered_by_the_sdk(server, devices):
    pk = server.product(unique("rrpc"))["productKey"]
    dn = unique("dev")
    secret = server.device(pk, dn)["deviceSecret"]
    events = Events()
    lk = linkkit_device(events, host_name="cn-shanghai", product_key=pk, device_name=dn,
                        device_secret=secret)
    devices.append(lk)
    calls = []

    def on_rrpc(rrpc_id, topic, payload, qos, userdata):
        calls.append((rrpc_id, topic, payload))
        lk.thing_answer_rrpc(rrpc_id, b"pong:" + payload)

    lk.on_topic_rrpc_message = on_rrpc
    lk.config_mqtt(port=server.mqtt_port, secure="", endpoint=server.host)
    assert lk.thing_setup(TSL) == 0
    lk.connect_async()
    assert_connected(events)
    rc, _ = lk.subscribe_rrpc_topic(lk.to_full_topic("user/get"))
    assert rc == 0
    # The SDK has no public callback for its RRPC SUBACK: until the subscription is in
    # place the platform answers DeviceNotSubscribed.
    deadline = time.monotonic() + TIMEOUT
    while True:
        status, answer = server.api("POST", "/api/v1/rrpc", {
            "productKey": pk, "deviceName": dn, "payloadText": "ping", "topic": "user/get"})
        if status != 409 or time.monotonic() > deadline:
            break
        assert answer["code"] == "DeviceNotSubscribed", answer
        time.sleep(0.1)
    assert status == 200, answer
    assert answer["payloadText"] == "pong:ping"
    rrpc_id, topic, payload = calls[0]
    assert topic == f"/ext/rrpc/{rrpc_id}/{pk}/{dn}/user/get"
    assert payload == b"ping"
    # The answer is consumed by the platform: the SDK never hears (and answers) it again.
    time.sleep(1)
    assert len(calls) == 1, calls
