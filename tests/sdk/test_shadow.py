"""The device shadow with Alibaba Cloud's official Python device SDK (aliyun-iot-linkkit
1.2.13), unmodified, against `lodestone serve`.

The SDK publishes `thing_update_shadow(reported, version)` and `thing_get_shadow()` on
`/shadow/update/${pk}/${dn}` and hands every message of `/shadow/get/${pk}/${dn}` (which the
server subscribes it to, `_ss=1`) to `on_thing_shadow_get`, after storing `version`,
`timestamp`, `state` and `metadata` in `local_get_latest_shadow()`. Desired state is set
through the signed management API.
"""

import logging

from linkkit import linkkit

from test_linkkit import TSL, Events, assert_connected, unique


def wait_shadow(events, method):
    """The next `on_thing_shadow_get` payload whose `method` is `method`."""
    while True:
        payload, _ = events.wait("shadow")
        if payload.get("method") == method:
            return payload


def test_shadow_control_report_and_get(server, devices):
    pk = server.product(unique("sdk-shadow"))["productKey"]
    dn = unique("dev")
    ds = server.device(pk, dn)["deviceSecret"]
    events = Events()
    lk = linkkit.LinkKit(host_name="127.0.0.1", product_key=pk, device_name=dn, device_secret=ds)
    lk.enable_logger(logging.DEBUG)
    lk.on_connect = events.hook("connect")
    lk.on_thing_enable = events.hook("thing_enable")
    lk.on_thing_shadow_get = events.hook("shadow")
    devices.append(lk)
    lk.config_mqtt(port=server.mqtt_port, secure="", keep_alive=60)
    assert lk.thing_setup(TSL) == 0
    lk.connect_async()
    assert_connected(events)

    # The device reports; the reply carries the new version.
    rc, _ = lk.thing_update_shadow({"color": "red", "brightness": 10}, 1)
    assert rc == 0
    reply = wait_shadow(events, "reply")
    assert reply["payload"] == {"status": "success", "version": 1}, reply
    assert lk.local_get_latest_shadow().get_version() == 1

    # The application sets desired state: the SDK gets a `control` with the difference.
    path = f"/api/v1/products/{pk}/devices/{dn}/shadow/desired"
    status, doc = server.api("PUT", path, {"desired": {"color": "green", "brightness": 10},
                                           "version": 2})
    assert status == 200, doc
    control = wait_shadow(events, "control")
    assert control["payload"]["status"] == "success"
    assert control["payload"]["state"]["desired"] == {"color": "green"}
    latest = lk.local_get_latest_shadow()
    assert latest.get_version() == 2
    assert latest.get_state()["desired"] == {"color": "green"}

    # A second writer with the same version loses.
    status, body = server.api("PUT", path, {"desired": {"color": "blue"}, "version": 2})
    assert (status, body["code"]) == (409, "VersionConflict"), body

    # The device applies it and reports with the next version, then reads the document.
    rc, _ = lk.thing_update_shadow({"color": "green"}, latest.get_version() + 1)
    assert rc == 0
    reply = wait_shadow(events, "reply")
    assert reply["payload"] == {"status": "success", "version": 3}, reply
    rc, _ = lk.thing_get_shadow()
    assert rc == 0
    got = wait_shadow(events, "reply")
    assert got["payload"]["status"] == "success", got
    assert got["payload"]["state"]["reported"] == {"color": "green", "brightness": 10}
    assert got["payload"]["state"]["desired"] == {"color": "green", "brightness": 10}
    assert "timestamp" in got["payload"]["metadata"]["reported"]["color"]
    assert got["version"] == 3
    latest = lk.local_get_latest_shadow()
    assert latest.get_state()["reported"]["color"] == "green"
    assert latest.get_version() == 3

    # A stale report is refused with the shadow's error format.
    rc, _ = lk.thing_update_shadow({"color": "red"}, 2)
    assert rc == 0
    refused = wait_shadow(events, "reply")
    assert refused["payload"]["status"] == "error"
    assert refused["payload"]["content"]["errorcode"] == "409", refused

    status, doc = server.api("GET", f"/api/v1/products/{pk}/devices/{dn}/shadow")
    assert status == 200, doc
    assert doc["version"] == 3
    assert doc["state"]["reported"]["color"] == "green"
