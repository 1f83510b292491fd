"""Lodestone against an independent client library (paho-mqtt), MQTT 3.1.1 and 5.0."""

import shutil
import subprocess
import threading
import time

import pytest
from paho.mqtt.packettypes import PacketTypes

from conftest import report
from mqttc import V311, V5, Client, props

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_pubsub(server, version, qos):
    sub = Client(server, version)
    assert [rc.value for rc in sub.subscribe("ps/+", qos=qos)] == [qos]
    pub = Client(server, version)
    for i in range(5):
        pub.publish("ps/x", f"m{i}".encode(), qos=qos)
    got = [sub.get() for _ in range(5)]
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(5)]
    assert all(m.qos == qos and m.topic == "ps/x" and not m.retain for m in got)
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_retained(server, version):
    pub = Client(server, version)
    pub.publish("ret/a", b"kept", qos=1, retain=True)
    sub = Client(server, version)
    sub.subscribe("ret/#", qos=1)
    m = sub.get()
    assert (m.topic, m.payload, m.retain) == ("ret/a", b"kept", True)
    # A live publish to the subscriber is not flagged retained.
    pub.publish("ret/a", b"live", qos=1, retain=True)
    m = sub.get()
    assert (m.payload, m.retain) == (b"live", False)
    # Clearing it: later subscribers get nothing.
    pub.publish("ret/a", b"", qos=1, retain=True)
    sub.drain(0.3)
    late = Client(server, version)
    late.subscribe("ret/#", qos=1)
    assert late.drain(0.5) == []
    for c in (pub, sub, late):
        c.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_will_on_abnormal_close(server, version):
    watcher = Client(server, version)
    watcher.subscribe("will/#", qos=1)
    polite = Client(server, version, will=("will/polite", b"should not be sent", 1))
    polite.disconnect()
    rude = Client(server, version, will=("will/rude", b"gone", 1))
    rude.drop()
    m = watcher.get()
    assert (m.topic, m.payload) == ("will/rude", b"gone")
    assert watcher.drain(0.5) == []
    watcher.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_receives_while_offline(server, version):
    sub = Client(server, version, client_id=f"persist-{version}", clean=False, session_expiry=300)
    sub.subscribe("off/t", qos=1)
    sub.disconnect()
    pub = Client(server, version)
    for i in range(10):
        pub.publish("off/t", f"o{i}".encode(), qos=1)
    sub = Client(server, version, client_id=f"persist-{version}", clean=False, session_expiry=300)
    assert sub.session_present
    got = [sub.get().payload for _ in range(10)]
    assert got == [f"o{i}".encode() for i in range(10)]
    sub.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_shared_subscription(server, version):
    a = Client(server, version)
    b = Client(server, version)
    a.subscribe("$share/grp/sh/t", qos=1)
    b.subscribe("$share/grp/sh/t", qos=1)
    pub = Client(server, version)
    n = 40
    for i in range(n):
        pub.publish("sh/t", f"{i}".encode(), qos=1)
    got_a = [m.payload for m in a.drain(0.7)]
    got_b = [m.payload for m in b.drain(0.2)]
    assert sorted(got_a + got_b, key=int) == [f"{i}".encode() for i in range(n)]
    assert got_a and got_b, f"one member got everything: {len(got_a)}/{len(got_b)}"
    for c in (a, b, pub):
        c.disconnect()


def test_v5_properties(server):
    sub = Client(server, V5)
    sub.subscribe("prop/req", qos=1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42))
    sub.subscribe("prop/#", qos=1, properties=props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=7))
    pub = Client(server, V5)
    p = props(UserProperty=[("k1", "v1"), ("k2", "v2")], ResponseTopic="prop/reply",
              CorrelationData=b"\x00corr\xff", MessageExpiryInterval=120,
              ContentType="text/plain", PayloadFormatIndicator=1)
    pub.publish("prop/req", b"hello", qos=1, properties=p)
    m = sub.get()
    got = m.properties
    assert got.UserProperty == [("k1", "v1"), ("k2", "v2")]
    assert got.ResponseTopic == "prop/reply"
    assert got.CorrelationData == b"\x00corr\xff"
    assert got.ContentType == "text/plain"
    assert got.PayloadFormatIndicator == 1
    assert 118 <= got.MessageExpiryInterval <= 120
    assert sorted(got.SubscriptionIdentifier) == [7, 42]
    sub.disconnect()
    pub.disconnect()


def test_v5_message_expiry_while_offline(server):
    sub = Client(server, V5, client_id="expiry-sub", clean=False, session_expiry=300)
    sub.subscribe("exp/t", qos=1)
    sub.disconnect()
    pub = Client(server, V5)
    pub.publish("exp/t", b"short", qos=1, properties=props(MessageExpiryInterval=1))
    pub.publish("exp/t", b"long", qos=1, properties=props(MessageExpiryInterval=60))
    time.sleep(2.2)
    sub = Client(server, V5, client_id="expiry-sub", clean=False, session_expiry=300)
    got = sub.drain(0.7)
    assert [m.payload for m in got] == [b"long"]
    assert got[0].properties.MessageExpiryInterval <= 58
    sub.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_websocket(server, version):
    sub = Client(server, version, transport="websockets", port=server.ws_port)
    sub.subscribe("ws/t", qos=1)
    pub = Client(server, version)  # across transports: TCP publisher, WebSocket subscriber
    pub.publish("ws/t", b"over websocket", qos=1)
    assert sub.get().payload == b"over websocket"
    sub.publish("ws/back", b"x", qos=2)
    sub.disconnect()
    pub.disconnect()


def make_cert(dirpath):
    """Self-signed certificate for 127.0.0.1/localhost: openssl CLI, else `cryptography`."""
    cert, key = dirpath / "cert.pem", dirpath / "key.pem"
    if shutil.which("openssl"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True)
        return cert, key
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        pytest.skip("neither the openssl CLI nor the cryptography package is available")
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.SubjectAlternativeName(
             [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
             critical=False)
         .sign(k, hashes.SHA256()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert, key


@pytest.mark.parametrize("version", VERSIONS)
def test_tls(server_factory, tmp_path, version):
    cert, key = make_cert(tmp_path)
    server = server_factory(tls=(cert, key))
    sub = Client(server, version, port=server.mqtts_port, tls_ca=cert)
    sub.subscribe("tls/t", qos=2)
    pub = Client(server, version, port=server.mqtts_port, tls_ca=cert)
    pub.publish("tls/t", b"secret", qos=2)
    assert sub.get().payload == b"secret"
    sub.disconnect()
    pub.disconnect()


@pytest.mark.parametrize("version", VERSIONS)
def test_restart_keeps_queued_messages(server, version):
    cid = f"restart-{version}"
    sub = Client(server, version, client_id=cid, clean=False, session_expiry=3600)
    sub.subscribe("rs/t", qos=1)
    sub.disconnect()
    pub = Client(server, version)
    for i in range(20):
        pub.publish("rs/t", f"q{i}".encode(), qos=1)
    pub.disconnect()
    server.restart()
    sub = Client(server, version, client_id=cid, clean=False, session_expiry=3600)
    assert sub.session_present
    got = [m.payload for m in sub.drain(1.0)]
    assert got == [f"q{i}".encode() for i in range(20)]
    sub.disconnect()


def test_kill9_under_qos1_load(server_factory, tmp_path):
    """Every PUBACKed message survives `kill -9` and reaches persistent subscribers.

    The per-session queue limit is raised so that the offline subscriber's queue
    cannot fill (a full offline queue drops messages by design).
    """
    config = tmp_path / "kill9.toml"
    config.write_text("[mqtt]\nmax_queued_messages = 200000\n")
    server = server_factory(config=config)
    offline = Client(server, V5, client_id="k9-offline", clean=False, session_expiry=3600)
    offline.subscribe("load/#", qos=1)
    offline.disconnect()
    online = Client(server, V5, client_id="k9-online", clean=False, session_expiry=3600)
    online.subscribe("load/#", qos=1)

    n_pub = 4
    pubs = [Client(server, V5 if i % 2 else V311, max_inflight=50) for i in range(n_pub)]
    sent = [dict() for _ in range(n_pub)]  # mid -> payload
    stop = threading.Event()

    def run(i):
        c = pubs[i]
        n = 0
        while not stop.is_set() and n < 20000:
            payload = f"p{i}-{n}".encode()
            info = c.c.publish(f"load/{i}", payload, qos=1)
            if info.rc != 0:
                break
            sent[i][info.mid] = payload
            n += 1
            if n % 50 == 0:
                time.sleep(0.005)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n_pub)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    server.kill9()
    stop.set()
    for t in threads:
        t.join(5)
    for c in pubs:
        c.c.loop_stop()
    acked = set()
    attempted = 0
    for i, c in enumerate(pubs):
        attempted += len(sent[i])
        with c._lock:
            mids = list(c.acks)
        # mids are recycled after 65535; take the payloads of acknowledged mids only
        # (each run is short enough that no mid wraps).
        acked.update(sent[i][m] for m in mids if m in sent[i])
    online_before = {m.payload for m in online.drain(0.01)}
    online.c.loop_stop()

    server.start()
    results = {}
    for name, cid in (("offline", "k9-offline"), ("online", "k9-online")):
        c = Client(server, V5, client_id=cid, clean=False, session_expiry=3600)
        assert c.session_present, f"{name} subscriber lost its session"
        got = {m.payload for m in c.drain(2.0)}
        if name == "online":
            got |= online_before
        c.disconnect()
        results[name] = got
    missing = {name: len(acked - got) for name, got in results.items()}
    report(f"kill -9 under QoS 1 load: {n_pub} publishers, {attempted} published, "
           f"{len(acked)} PUBACKed before the kill; offline subscriber received "
           f"{len(results['offline'] & acked)}/{len(acked)} acknowledged "
           f"({len(results['offline'])} total), online subscriber "
           f"{len(results['online'] & acked)}/{len(acked)} ({len(results['online'])} total); "
           f"missing: {missing}")
    assert len(acked) > 100, "load too small to mean anything"
    assert missing == {"offline": 0, "online": 0}
