"""The thing model with Alibaba's official Python device SDK (aliyun-iot-linkkit 1.2.13),
unmodified: the device posts properties and events that the platform validates and
stores, and answers a sync (RRPC) and an async service call made through the
management API. Everything is checked through the signed management API."""

import json
import logging
import time
import uuid
from pathlib import Path

from linkkit import linkkit

from test_linkkit import Events, assert_connected, unique

TSL_FILE = Path(__file__).with_name("tsl_services.json")
TIMEOUT = 10


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


def test_properties_events_and_service_calls(server, devices):
    pk = server.product(unique("sdk-thing"))["productKey"]
    tsl = json.loads(TSL_FILE.read_text())
    ok(server.api("PUT", f"/api/v1/products/{pk}/thing-model", tsl))
    ok(server.api("POST", f"/api/v1/products/{pk}/thing-model/publish", {}))
    dn = unique("dev")
    ds = server.device(pk, dn)["deviceSecret"]
    base = f"/api/v1/products/{pk}/devices/{dn}"

    events = Events()
    lk = linkkit.LinkKit(host_name="127.0.0.1", product_key=pk, device_name=dn,
                         device_secret=ds)
    devices.append(lk)
    lk.enable_logger(logging.DEBUG)
    lk.on_connect = events.hook("connect")
    lk.on_disconnect = events.hook("disconnect")
    lk.on_thing_enable = events.hook("thing_enable")
    lk.on_thing_prop_post = events.hook("prop_post")
    lk.on_thing_event_post = events.hook("event_post")
    lk.on_thing_prop_changed = events.hook("prop_changed")

    def call_service(identifier, request_id, params, userdata):
        if identifier == "Echo":
            lk.thing_answer_service(identifier, request_id, 200, {"Msg": params["Msg"]})
        elif identifier == "Reboot":
            lk.thing_answer_service(identifier, request_id, 200, {"Ok": 1})
        else:
            lk.thing_answer_service(identifier, request_id, 460, {})

    lk.on_thing_call_service = call_service
    lk.config_mqtt(port=server.mqtt_port, secure="", keep_alive=60)
    assert lk.thing_setup(str(TSL_FILE)) == 0
    lk.connect_async()
    assert_connected(events)

    # A valid property post: the platform's reply reaches the SDK with code 200.
    rc, request_id = lk.thing_post_property({"Temperature": 23.5, "Switch": 1})
    assert rc == 0
    reply_id, code, data, message, _ = events.wait("prop_post")
    assert (reply_id, code) == (request_id, 200), (code, data, message)

    # An out-of-range value is refused with a TSL code and not stored.
    rc, request_id = lk.thing_post_property({"Temperature": 999.0})
    assert rc == 0
    reply_id, code, data, message, _ = events.wait("prop_post")
    assert reply_id == request_id
    assert code != 200 and "Temperature" in message, (code, message)

    latest = ok(server.api("GET", f"{base}/properties"))["items"]
    by_id = {p["identifier"]: p for p in latest}
    assert by_id["Temperature"]["value"] == 23.5
    assert by_id["Switch"]["value"] == 1
    history = ok(server.api("GET", f"{base}/properties/Temperature/history",
                            query="start=0&order=asc"))
    assert [p["value"] for p in history["items"]] == [23.5]

    # An event with the SDK's {"value": {...}} shape.
    rc, request_id = lk.thing_trigger_event(("Overheat", {"Level": 4}))
    assert rc == 0
    _, reply_id, code, _, _, _ = events.wait("event_post")
    assert (reply_id, code) == (request_id, 200)
    stored = ok(server.api("GET", f"{base}/event-history", query="start=0"))["items"]
    assert [(e["identifier"], e["eventType"], e["output"]) for e in stored] == \
        [("Overheat", "alert", {"Level": 4})]

    # A sync service: the API call returns the device's answer (over /ext/rrpc).
    answer = ok(server.api("POST", f"{base}/services/Echo",
                           {"args": {"Msg": "hello"}, "timeoutMs": 5000}))
    assert answer["callType"] == "sync"
    assert (answer["code"], answer["data"]) == (200, {"Msg": "hello"})

    # An async service: an id at once, the device's answer recorded with the call.
    answer = ok(server.api("POST", f"{base}/services/Reboot", {"args": {"Delay": 1}}))
    assert answer["callType"] == "async"
    message_id = answer["messageId"]
    call = eventually(
        lambda: ok(server.api("GET", f"{base}/service-calls/{message_id}")),
        lambda c: c["status"] != "pending")
    assert call["status"] == "succeeded", call
    assert call["output"] == {"Ok": 1}

    # A property set from the API reaches the SDK's property handler.
    ok(server.api("POST", f"{base}/properties/set", {"items": {"Switch": 0}}))
    params, _ = events.wait("prop_changed")
    assert params == {"Switch": 0}

    # Arguments outside the model are refused before anything is sent.
    status, body = server.api("POST", f"{base}/services/Reboot", {"args": {"Delay": 600}})
    assert status == 400 and body["code"] == "InvalidParameter", body

    # The device log shows the traffic both ways.
    log = ok(server.api("GET", f"{base}/log", query="start=0"))["items"]
    topics = {e["topic"] for e in log}
    assert f"/sys/{pk}/{dn}/thing/event/property/post" in topics
    assert f"/sys/{pk}/{dn}/thing/event/property/post_reply" in topics
    assert any(t.startswith("/ext/rrpc/") for t in topics), topics
