"""OTA with Alibaba Cloud's official Python device SDK (aliyun-iot-linkkit 1.2.13), unmodified,
against `lodestone serve`.

The SDK reports its version with `ota_report_version` on `/ota/device/inform/${pk}/${dn}`, hands
every message of `/ota/device/upgrade/${pk}/${dn}` and `.../thing/ota/firmware/get_reply` to
`on_ota_message_arrived(type, version, size, url, signMethod, sign, module, extData)` (it
ignores a message whose `url`, `version`, `size`, `signMethod` or `sign` is empty), and
`download_ota_firmware` fetches the URL and compares the file's lowercase hex digest with
`sign` (`Md5` or `SHA256`). Progress goes up on `/ota/device/progress/${pk}/${dn}`, which the
SDK has no helper for, so the test publishes it with `publish_topic`. The firmware is
uploaded and the job created with the `lodestone` CLI.
"""

import hashlib
import json
import logging
import os
import time

from linkkit import linkkit

from test_linkkit import TSL, Events, assert_connected, unique


def wait_for(predicate, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def job_device(server, job_id, dn):
    status, body = server.api("GET", f"/api/v1/ota/jobs/{job_id}/devices")
    assert status == 200, body
    return next((d for d in body["items"] if d["deviceName"] == dn), None)


def test_ota_report_push_download_progress_success(server, devices, tmp_path):
    pk = server.product(unique("sdk-ota"))["productKey"]
    dn = unique("dev")
    ds = server.device(pk, dn)["deviceSecret"]
    events = Events()
    lk = linkkit.LinkKit(host_name="127.0.0.1", product_key=pk, device_name=dn, device_secret=ds)
    lk.enable_logger(logging.DEBUG)
    lk.on_connect = events.hook("connect")
    lk.on_thing_enable = events.hook("thing_enable")
    lk.on_ota_message_arrived = events.hook("ota")
    devices.append(lk)
    lk.config_mqtt(port=server.mqtt_port, secure="", keep_alive=60)
    assert lk.thing_setup(TSL) == 0
    lk.connect_async()
    assert_connected(events)

    # The version report (the SDK's return code is not meaningful: it compares paho's
    # tuple with an int) is recorded as the device's module version.
    lk.ota_report_version("default", "1.0.0")

    def reported():
        status, body = server.api("GET", f"/api/v1/products/{pk}/devices/{dn}/ota/modules")
        assert status == 200, body
        return [m for m in body["items"] if m["version"] == "1.0.0"]

    wait_for(reported, "the version report")

    firmware = os.urandom(150_000)
    path = tmp_path / "firmware-2.0.0.bin"
    path.write_bytes(firmware)
    fw = server.cli("ota", "firmware", "upload", "--product-key", pk,
                    "--firmware-version", "2.0.0", "--file", str(path))
    assert fw["md5"] == hashlib.md5(firmware).hexdigest()
    job = server.cli("ota", "job", "create", "--firmware-id", fw["id"], "--devices", dn,
                     "--timeout-secs", "120")

    # The push: the SDK's callback gets every field it needs.
    notice, version, size, url, sign_method, sign, module, _extra = events.wait("ota")
    assert notice == 1
    assert (version, size, sign_method, module) == ("2.0.0", len(firmware), "Md5", "default")
    assert sign == hashlib.md5(firmware).hexdigest()
    assert url.startswith(f"http://127.0.0.1:{server.http_port}/ota/download/")

    # Asking for it (firmware/get) answers the same upgrade.
    lk.query_ota_firmware("default")
    notice, version, _, url2, _, sign2, _, _ = events.wait("ota")
    assert (notice, version, sign2) == (2, "2.0.0", sign)
    assert url2.split("?")[0] == url.split("?")[0]

    # The SDK downloads and checks the digest itself.
    target = tmp_path / "downloaded.bin"
    rc = lk.download_ota_firmware(url, str(target), sign_method, sign)
    assert rc == linkkit.LinkKit.ErrorCode.SUCCESS, rc
    assert target.read_bytes() == firmware

    progress_topic = f"/ota/device/progress/{pk}/{dn}"
    for step in ("50", "100"):
        rc, _ = lk.publish_topic(progress_topic, json.dumps(
            {"id": 2, "params": {"step": step, "desc": "downloading"}}), 0)
        assert rc == 0
    wait_for(lambda: (job_device(server, job["id"], dn) or {}).get("step") == 100,
             "the progress report")

    # The device runs the new version and says so: the job records success.
    lk.ota_report_version("default", "2.0.0")
    row = wait_for(lambda: (lambda d: d if d and d["status"] == "succeeded" else None)(
        job_device(server, job["id"], dn)), "the device to succeed")
    assert row["attempts"] == 1
    done = wait_for(lambda: (lambda j: j if j["state"] == "completed" else None)(
        server.cli("ota", "job", "get", job["id"])), "the job to complete")
    assert done["stats"]["succeeded"] == 1
