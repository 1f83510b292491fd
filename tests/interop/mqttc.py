"""A thin synchronous wrapper over paho-mqtt 2.x for tests."""

import queue
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5
TIMEOUT = 5.0


def props(packet_type=PacketTypes.PUBLISH, **values):
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


class Client:
    """Connects on construction; collects received messages in a queue."""

    def __init__(self, server, version=V5, client_id=None, clean=True, session_expiry=None,
                 will=None, transport="tcp", port=None, tls_ca=None, keepalive=30,
                 connect=True, max_inflight=20):
        self.version = version
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:10]}"
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.connack = None
        self.acks = {}
        self.acked = queue.Queue()
        self._subacks = {}
        self._lock = threading.Lock()
        kwargs = {}
        if version == V311:
            kwargs["clean_session"] = clean
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=version, transport=transport, **kwargs)
        self.c.max_inflight_messages_set(max_inflight)
        self.c.max_queued_messages_set(0)
        if transport == "websockets":
            self.c.ws_set_options(path="/mqtt")
        if tls_ca:
            self.c.tls_set(ca_certs=str(tls_ca))
        if will:
            topic, payload, qos = will
            self.c.will_set(topic, payload, qos=qos)
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.put(m)
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.server = server
        self.port = port or server.mqtt_port
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        if connect:
            self.connect()

    def _on_connect(self, c, userdata, flags, reason_code, properties):
        self.connack = (flags, reason_code, properties)
        self.connected.set()

    def _on_subscribe(self, c, userdata, mid, reason_codes, properties):
        with self._lock:
            self._subacks[mid] = reason_codes

    def _on_publish(self, c, userdata, mid, reason_code, properties):
        with self._lock:
            self.acks[mid] = reason_code
        self.acked.put(mid)

    def connect(self):
        self.connected.clear()
        kwargs = {}
        if self.version == V5:
            kwargs["clean_start"] = self.clean
            if self.session_expiry is not None:
                kwargs["properties"] = props(PacketTypes.CONNECT,
                                             SessionExpiryInterval=self.session_expiry)
        self.c.connect(self.server.host, self.port, keepalive=self.keepalive, **kwargs)
        self.c.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        assert not self.connack[1].is_failure, f"connect refused: {self.connack[1]}"
        return self.connack

    @property
    def session_present(self):
        return self.connack[0].session_present

    def subscribe(self, topic, qos=1, **kwargs):
        if self.version == V5:
            options = mqtt.SubscribeOptions(qos=qos, **{k: v for k, v in kwargs.items()
                                                        if k != "properties"})
            result, mid = self.c.subscribe(topic, options=options,
                                           properties=kwargs.get("properties"))
        else:
            result, mid = self.c.subscribe(topic, qos)
        assert result == mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with self._lock:
                if mid in self._subacks:
                    return self._subacks[mid]
            time.sleep(0.01)
        raise AssertionError("no SUBACK")

    def publish(self, topic, payload, qos=0, retain=False, properties=None, wait=True):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if wait and qos > 0:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()
        return info

    def get(self, timeout=TIMEOUT):
        return self.messages.get(timeout=timeout)

    def drain(self, quiet=0.5):
        """Every message that arrives until none has come for `quiet` seconds."""
        out = []
        while True:
            try:
                out.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return out

    def disconnect(self):
        self.c.disconnect()
        self.c.loop_stop()

    def drop(self):
        """Ends the connection without DISCONNECT (an abnormal close)."""
        self.c.loop_stop()
        sock = self.c.socket()
        if sock is not None:
            sock.close()
