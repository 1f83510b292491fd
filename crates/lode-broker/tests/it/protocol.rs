//! Protocol behaviour over real sockets, for MQTT 3.1.1 and 5.0.

use std::time::Duration;

use bytes::Bytes;
use lode_broker::BrokerConfig;
use lode_mqtt::{
    Disconnect, Packet, ProtocolVersion, PubResp, QoS, ReasonCode, RetainHandling, Subscribe,
    SubscriptionOptions,
};
use tokio::io::AsyncWriteExt;

use crate::harness::{Client, TestBroker, V3, V5, connect_packet, publish, will};

/// Runs an async test body once per protocol version.
macro_rules! both_versions {
    ($($name:ident),* $(,)?) => {
        mod per_version {
            $(
                mod $name {
                    #[tokio::test]
                    async fn v311() {
                        super::super::$name(crate::harness::V3).await;
                    }
                    #[tokio::test]
                    async fn v5() {
                        super::super::$name(crate::harness::V5).await;
                    }
                }
            )*
        }
    };
}

both_versions!(
    pubsub_all_qos,
    retained_delivered_and_cleared,
    will_on_abnormal_close_only,
    persistent_session_queues_while_offline,
    wildcards_and_dollar_topics,
    shared_subscription_splits_messages,
    keep_alive_closes_silent_client,
    malformed_packet_closes_only_that_client,
    overlapping_subscriptions_deliver_once,
    unsubscribe_stops_delivery,
    slow_subscriber_pauses_publisher_without_loss,
    qos2_duplicate_is_not_delivered_twice,
    denied_subscription_is_refused_in_suback,
);

async fn pubsub_all_qos(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut sub = Client::connect(b.addr, v, "sub").await;
    assert_eq!(
        sub.subscribe(1, "a/b", QoS::ExactlyOnce).await,
        vec![ReasonCode::GrantedQoS2]
    );
    let mut publ = Client::connect(b.addr, v, "pub").await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.publish("a/b", format!("m{i}").as_bytes(), qos, 10 + i as u16)
            .await;
        let p = sub.recv_publish().await;
        assert_eq!(&p.topic[..], b"a/b");
        assert_eq!(p.payload, Bytes::from(format!("m{i}")));
        assert_eq!(p.qos, qos);
        assert!(!p.retain);
    }
    sub.expect_nothing().await;
    b.stop().await;
}

async fn retained_delivered_and_cleared(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut publ = Client::connect(b.addr, v, "pub").await;
    let mut p = publish("r/1", b"kept", QoS::AtLeastOnce, Some(1));
    p.retain = true;
    publ.send(Packet::Publish(p)).await;
    assert!(matches!(publ.recv().await, Packet::PubAck(_)));

    let mut sub = Client::connect(b.addr, v, "sub").await;
    sub.subscribe(1, "r/+", QoS::AtLeastOnce).await;
    let got = sub.recv_publish().await;
    assert!(got.retain, "retained message carries the retain flag");
    assert_eq!(&got.payload[..], b"kept");

    let mut clear = publish("r/1", b"", QoS::AtMostOnce, None);
    clear.retain = true;
    publ.send(Packet::Publish(clear)).await;
    // Live subscribers get the empty retained publish; a new one gets nothing.
    let _ = sub.recv_publish().await;
    let mut late = Client::connect(b.addr, v, "late").await;
    late.subscribe(1, "r/#", QoS::AtLeastOnce).await;
    late.expect_nothing().await;
    b.stop().await;
}

async fn will_on_abnormal_close_only(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut watcher = Client::connect(b.addr, v, "watcher").await;
    watcher.subscribe(1, "wills/#", QoS::AtLeastOnce).await;

    let mut c = connect_packet(v, "polite", true);
    c.will = Some(will("wills/polite", b"gone"));
    let (polite, _) = Client::connect_with(b.addr, c).await;
    polite.disconnect().await;
    watcher.expect_nothing().await;

    let mut c = connect_packet(v, "rude", true);
    c.will = Some(will("wills/rude", b"gone"));
    let (rude, _) = Client::connect_with(b.addr, c).await;
    drop(rude);
    let p = watcher.recv_publish().await;
    assert_eq!(&p.topic[..], b"wills/rude");
    assert_eq!(&p.payload[..], b"gone");
    b.stop().await;
}

async fn persistent_session_queues_while_offline(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut c = connect_packet(v, "durable", false);
    c.properties.session_expiry_interval = Some(300);
    let (mut sub, ack) = Client::connect_with(b.addr, c.clone()).await;
    assert!(!ack.session_present);
    sub.subscribe(1, "q/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publ = Client::connect(b.addr, v, "pub").await;
    for i in 0..5u16 {
        publ.publish("q/x", &[i as u8], QoS::AtLeastOnce, i + 1)
            .await;
    }
    publ.publish("q/x", b"qos0 is not kept", QoS::AtMostOnce, 0)
        .await;

    let (mut sub, ack) = Client::connect_with(b.addr, c).await;
    assert!(ack.session_present);
    for i in 0..5u8 {
        let p = sub.recv_publish().await;
        assert_eq!(&p.payload[..], &[i]);
    }
    sub.expect_nothing().await;
    b.stop().await;
}

async fn wildcards_and_dollar_topics(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut sub = Client::connect(b.addr, v, "sub").await;
    sub.subscribe(1, "#", QoS::AtMostOnce).await;
    sub.subscribe(2, "+/sys", QoS::AtMostOnce).await;
    let mut publ = Client::connect(b.addr, v, "pub").await;
    publ.publish("$SYS/x", b"hidden", QoS::AtLeastOnce, 1).await;
    publ.publish("$x/sys", b"hidden", QoS::AtLeastOnce, 2).await;
    sub.expect_nothing().await;
    sub.subscribe(3, "$SYS/#", QoS::AtMostOnce).await;
    publ.publish("$SYS/x", b"seen", QoS::AtLeastOnce, 3).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"seen");
    publ.publish("a/b/c", b"deep", QoS::AtLeastOnce, 4).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"deep");
    b.stop().await;
}

async fn shared_subscription_splits_messages(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut s1 = Client::connect(b.addr, v, "s1").await;
    let mut s2 = Client::connect(b.addr, v, "s2").await;
    s1.subscribe(1, "$share/g/jobs/+", QoS::AtLeastOnce).await;
    s2.subscribe(1, "$share/g/jobs/+", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, v, "pub").await;
    for i in 0..10u16 {
        publ.publish("jobs/x", &[i as u8], QoS::AtLeastOnce, i + 1)
            .await;
    }
    let mut got = Vec::new();
    for c in [&mut s1, &mut s2] {
        while let Ok(Some(Packet::Publish(p))) = c.recv_within(Duration::from_millis(300)).await {
            c.ack(&p).await;
            got.push(p.payload[0]);
        }
    }
    got.sort();
    assert_eq!(
        got,
        (0..10u8).collect::<Vec<_>>(),
        "each message reaches exactly one member"
    );
    b.stop().await;
}

async fn keep_alive_closes_silent_client(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut c = connect_packet(v, "sleepy", true);
    c.keep_alive = 1;
    let (mut client, _) = Client::connect_with(b.addr, c).await;
    let started = std::time::Instant::now();
    let end = client
        .recv_within(Duration::from_secs(5))
        .await
        .expect("closed within 5 s");
    if v == V5 {
        assert!(matches!(
            end,
            Some(Packet::Disconnect(Disconnect {
                code: ReasonCode::KeepAliveTimeout,
                ..
            }))
        ));
        assert_eq!(client.try_recv().await, None);
    } else {
        assert_eq!(end, None);
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed too early: {waited:?}"
    );
    b.stop().await;
}

async fn malformed_packet_closes_only_that_client(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut good = Client::connect(b.addr, v, "good").await;
    good.subscribe(1, "t", QoS::AtMostOnce).await;
    let mut bad = Client::connect(b.addr, v, "bad").await;
    // PUBLISH QoS 3 is malformed.
    bad.send_bytes(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01])
        .await;
    let end = bad.try_recv().await;
    if v == V5 {
        assert!(matches!(
            end,
            Some(Packet::Disconnect(Disconnect {
                code: ReasonCode::MalformedPacket,
                ..
            }))
        ));
    }
    let mut publ = Client::connect(b.addr, v, "pub").await;
    publ.publish("t", b"still fine", QoS::AtLeastOnce, 1).await;
    assert_eq!(&good.recv_publish().await.payload[..], b"still fine");
    b.stop().await;
}

async fn overlapping_subscriptions_deliver_once(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut sub = Client::connect(b.addr, v, "sub").await;
    sub.subscribe(1, "o/+", QoS::AtMostOnce).await;
    sub.subscribe(2, "o/#", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, v, "pub").await;
    publ.publish("o/x", b"once", QoS::AtLeastOnce, 1).await;
    let p = sub.recv_publish().await;
    assert_eq!(
        p.qos,
        QoS::AtLeastOnce,
        "highest granted QoS of the overlapping subscriptions"
    );
    sub.expect_nothing().await;
    b.stop().await;
}

async fn unsubscribe_stops_delivery(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut sub = Client::connect(b.addr, v, "sub").await;
    sub.subscribe(1, "u/1", QoS::AtMostOnce).await;
    sub.send(Packet::Unsubscribe(lode_mqtt::Unsubscribe {
        packet_id: 2,
        filters: vec!["u/1".into(), "never".into()],
        user_properties: Vec::new(),
    }))
    .await;
    match sub.recv().await {
        Packet::UnsubAck(ack) => {
            assert_eq!(ack.packet_id, 2);
            if v == V5 {
                assert_eq!(
                    ack.codes,
                    vec![ReasonCode::Success, ReasonCode::NoSubscriptionExisted]
                );
            }
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    let mut publ = Client::connect(b.addr, v, "pub").await;
    publ.publish("u/1", b"x", QoS::AtLeastOnce, 1).await;
    sub.expect_nothing().await;
    b.stop().await;
}

async fn slow_subscriber_pauses_publisher_without_loss(v: ProtocolVersion) {
    let config = BrokerConfig {
        max_queued_messages: 50,
        ..BrokerConfig::default()
    };
    let b = TestBroker::with_config(config).await;
    let mut sub = Client::connect(b.addr, v, "slow").await;
    sub.subscribe(1, "flood", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, v, "fast").await;
    // Pipeline 400 QoS 1 publishes without waiting; the subscriber reads nothing yet.
    let n = 400u16;
    for i in 1..=n {
        publ.send(Packet::Publish(publish(
            "flood",
            &i.to_be_bytes(),
            QoS::AtLeastOnce,
            Some(i),
        )))
        .await;
    }
    let mut acked = 0;
    while let Ok(Some(Packet::PubAck(_))) = publ.recv_within(Duration::from_millis(500)).await {
        acked += 1;
    }
    assert!(
        acked < n as usize,
        "publisher must be paused while the subscriber is stalled (acked {acked})"
    );
    // Now the subscriber reads: every message arrives, in order, and the publisher finishes.
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < n as usize {
            let p = sub.recv_publish().await;
            seen.push(u16::from_be_bytes([p.payload[0], p.payload[1]]));
        }
        seen
    });
    while acked < n as usize {
        match publ.recv().await {
            Packet::PubAck(_) => acked += 1,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let seen = reader.await.expect("reader");
    assert_eq!(seen, (1..=n).collect::<Vec<_>>());
    b.stop().await;
}

async fn qos2_duplicate_is_not_delivered_twice(v: ProtocolVersion) {
    let b = TestBroker::start().await;
    let mut sub = Client::connect(b.addr, v, "sub").await;
    sub.subscribe(1, "x2", QoS::ExactlyOnce).await;
    let mut publ = Client::connect(b.addr, v, "pub").await;
    let p = publish("x2", b"once", QoS::ExactlyOnce, Some(7));
    publ.send(Packet::Publish(p.clone())).await;
    assert!(matches!(publ.recv().await, Packet::PubRec(_)));
    let mut again = p;
    again.dup = true;
    publ.send(Packet::Publish(again)).await;
    assert!(matches!(publ.recv().await, Packet::PubRec(_)));
    publ.send(Packet::PubRel(PubResp::new(7, ReasonCode::Success)))
        .await;
    assert!(matches!(publ.recv().await, Packet::PubComp(_)));
    assert_eq!(&sub.recv_publish().await.payload[..], b"once");
    sub.expect_nothing().await;
    b.stop().await;
}

#[tokio::test]
async fn v5_session_takeover_disconnects_old_with_0x8e() {
    let b = TestBroker::start().await;
    let mut first = Client::connect(b.addr, V5, "same").await;
    let _second = Client::connect(b.addr, V5, "same").await;
    match first.try_recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, ReasonCode::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn v311_session_takeover_closes_old() {
    let b = TestBroker::start().await;
    let mut first = Client::connect(b.addr, V3, "same").await;
    let _second = Client::connect(b.addr, V3, "same").await;
    assert_eq!(first.try_recv().await, None);
    b.stop().await;
}

#[tokio::test]
async fn v5_assigned_client_identifier() {
    let b = TestBroker::start().await;
    let (_c, ack) = Client::connect_with(b.addr, connect_packet(V5, "", true)).await;
    assert_eq!(ack.code, ReasonCode::Success);
    assert!(
        ack.properties
            .assigned_client_identifier
            .is_some_and(|id| !id.is_empty())
    );
    b.stop().await;
}

#[tokio::test]
async fn v311_empty_client_id_needs_clean_session() {
    let b = TestBroker::start().await;
    let (_c, ack) = Client::connect_with(b.addr, connect_packet(V3, "", false)).await;
    assert_eq!(ack.code, ReasonCode::ClientIdentifierNotValid);
    b.stop().await;
}

#[tokio::test]
async fn v5_no_local_and_retain_as_published() {
    let b = TestBroker::start().await;
    let mut c = Client::connect(b.addr, V5, "me").await;
    c.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![
            (
                "nl".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    ..Default::default()
                },
            ),
            (
                "rap".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    retain_as_published: true,
                    ..Default::default()
                },
            ),
        ],
        subscription_identifier: Some(42),
        user_properties: Vec::new(),
    }))
    .await;
    assert!(matches!(c.recv().await, Packet::SubAck(_)));
    c.publish("nl", b"mine", QoS::AtLeastOnce, 1).await;
    let mut p = publish("rap", b"flagged", QoS::AtLeastOnce, Some(2));
    p.retain = true;
    c.send(Packet::Publish(p)).await;
    let mut got_ack = false;
    let mut got_msg = None;
    while !(got_ack && got_msg.is_some()) {
        match c.recv().await {
            Packet::PubAck(_) => got_ack = true,
            Packet::Publish(p) => {
                c.ack(&p).await;
                got_msg = Some(p);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let p = got_msg.expect("message");
    assert_eq!(&p.topic[..], b"rap");
    assert!(p.retain, "retain as published keeps the flag");
    assert_eq!(p.properties.subscription_identifiers, vec![42]);
    c.expect_nothing().await;
    b.stop().await;
}

#[tokio::test]
async fn v5_retain_handling_do_not_send() {
    let b = TestBroker::start().await;
    let mut publ = Client::connect(b.addr, V5, "pub").await;
    let mut p = publish("rh", b"kept", QoS::AtLeastOnce, Some(1));
    p.retain = true;
    publ.send(Packet::Publish(p)).await;
    let _ = publ.recv().await;
    let mut c = Client::connect(b.addr, V5, "sub").await;
    c.send(Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "rh".into(),
            SubscriptionOptions {
                retain_handling: RetainHandling::DoNotSend,
                ..Default::default()
            },
        )],
        subscription_identifier: None,
        user_properties: Vec::new(),
    }))
    .await;
    assert!(matches!(c.recv().await, Packet::SubAck(_)));
    c.expect_nothing().await;
    b.stop().await;
}

#[tokio::test]
async fn v5_topic_alias_from_client() {
    let b = TestBroker::start().await;
    let mut sub = Client::connect(b.addr, V5, "sub").await;
    sub.subscribe(1, "long/topic/name", QoS::AtMostOnce).await;
    let mut publ = Client::connect(b.addr, V5, "pub").await;
    let mut first = publish("long/topic/name", b"1", QoS::AtMostOnce, None);
    first.properties.topic_alias = Some(3);
    publ.send(Packet::Publish(first)).await;
    let mut second = publish("", b"2", QoS::AtMostOnce, None);
    second.properties.topic_alias = Some(3);
    publ.send(Packet::Publish(second)).await;
    for want in [b"1", b"2"] {
        let p = sub.recv_publish().await;
        assert_eq!(&p.topic[..], b"long/topic/name");
        assert_eq!(&p.payload[..], want);
    }
    b.stop().await;
}

#[tokio::test]
async fn v5_unknown_topic_alias_is_a_protocol_error() {
    let b = TestBroker::start().await;
    let mut publ = Client::connect(b.addr, V5, "pub").await;
    let mut p = publish("", b"?", QoS::AtMostOnce, None);
    p.properties.topic_alias = Some(1);
    publ.send(Packet::Publish(p)).await;
    match publ.try_recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, ReasonCode::ProtocolError),
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn v5_message_expiry_drops_stale_queued_messages() {
    let b = TestBroker::start().await;
    let mut c = connect_packet(V5, "offline", false);
    c.properties.session_expiry_interval = Some(60);
    let (mut sub, _) = Client::connect_with(b.addr, c.clone()).await;
    sub.subscribe(1, "e", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publ = Client::connect(b.addr, V5, "pub").await;
    let mut short = publish("e", b"short", QoS::AtLeastOnce, Some(1));
    short.properties.message_expiry_interval = Some(1);
    publ.send(Packet::Publish(short)).await;
    let mut long = publish("e", b"long", QoS::AtLeastOnce, Some(2));
    long.properties.message_expiry_interval = Some(100);
    publ.send(Packet::Publish(long)).await;
    let _ = publ.recv().await;
    let _ = publ.recv().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut sub, _) = Client::connect_with(b.addr, c).await;
    let p = sub.recv_publish().await;
    assert_eq!(&p.payload[..], b"long");
    let left = p
        .properties
        .message_expiry_interval
        .expect("remaining expiry is sent");
    assert!((90..=99).contains(&left), "remaining expiry {left}");
    sub.expect_nothing().await;
    b.stop().await;
}

#[tokio::test]
async fn v5_oversized_packet_gets_0x95() {
    let config = BrokerConfig {
        max_packet_size: 1024,
        ..BrokerConfig::default()
    };
    let b = TestBroker::with_config(config).await;
    let mut c = Client::connect(b.addr, V5, "big").await;
    c.send(Packet::Publish(publish(
        "t",
        &[0u8; 2048],
        QoS::AtMostOnce,
        None,
    )))
    .await;
    match c.try_recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, ReasonCode::PacketTooLarge),
        other => panic!("expected DISCONNECT 0x95, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn v5_receive_maximum_exceeded() {
    let config = BrokerConfig {
        receive_maximum: 2,
        max_queued_messages: 1,
        ..BrokerConfig::default()
    };
    let b = TestBroker::with_config(config).await;
    let mut sub = Client::connect(b.addr, V5, "stalled").await;
    sub.subscribe(1, "rm", QoS::AtLeastOnce).await;
    // QoS 2 publishes never released count against receive maximum.
    let mut c = Client::connect(b.addr, V5, "greedy").await;
    for i in 1..=3u16 {
        c.send(Packet::Publish(publish(
            "other",
            b"x",
            QoS::ExactlyOnce,
            Some(i),
        )))
        .await;
    }
    let mut saw = None;
    while let Some(p) = c.try_recv().await {
        if let Packet::Disconnect(d) = p {
            saw = Some(d.code);
        }
    }
    assert_eq!(saw, Some(ReasonCode::ReceiveMaximumExceeded));
    b.stop().await;
}

/// Each unreleased QoS 2 message counts once against Receive Maximum, even when
/// many arrive in one read; the client gets every PUBREC before the DISCONNECT.
#[tokio::test]
async fn v5_receive_maximum_counts_each_message_once() {
    let config = BrokerConfig {
        receive_maximum: 20,
        ..BrokerConfig::default()
    };
    let b = TestBroker::with_config(config).await;
    let mut c = Client::connect(b.addr, V5, "burst").await;
    let mut out = bytes::BytesMut::new();
    for i in 1..=21u16 {
        let p = publish("burst/t", b"x", QoS::ExactlyOnce, Some(i));
        lode_mqtt::encode(&Packet::Publish(p), V5, &mut out);
    }
    c.send_bytes(&out).await;
    let mut pubrecs = 0;
    let mut saw = None;
    while let Some(p) = c.try_recv().await {
        match p {
            Packet::PubRec(r) => {
                assert_eq!(saw, None, "PUBREC {} after DISCONNECT", r.packet_id);
                pubrecs += 1;
            }
            Packet::Disconnect(d) => saw = Some(d.code),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(pubrecs, 20);
    assert_eq!(saw, Some(ReasonCode::ReceiveMaximumExceeded));
    b.stop().await;
}

/// A client still answering packets when we close it may keep writing for a moment:
/// the broker reads and discards that input instead of resetting the connection,
/// so the client's writes succeed and it can still read our DISCONNECT.
#[tokio::test]
async fn close_lingers_for_client_still_writing() {
    let config = BrokerConfig {
        receive_maximum: 1,
        ..BrokerConfig::default()
    };
    let b = TestBroker::with_config(config).await;
    let mut c = Client::connect(b.addr, V5, "chatty").await;
    let mut out = bytes::BytesMut::new();
    for i in 1..=2u16 {
        let p = publish("chatty/t", b"x", QoS::ExactlyOnce, Some(i));
        lode_mqtt::encode(&Packet::Publish(p), V5, &mut out);
    }
    c.send_bytes(&out).await;
    // The broker has closed by now; the client has not read anything yet and
    // still releases message 1, twice (a reset would fail the second write).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rel = bytes::BytesMut::new();
    lode_mqtt::encode(
        &Packet::PubRel(PubResp::new(1, ReasonCode::Success)),
        V5,
        &mut rel,
    );
    for _ in 0..2 {
        c.stream
            .write_all(&rel)
            .await
            .expect("write after the broker closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut saw = None;
    while let Some(p) = c.try_recv().await {
        if let Packet::Disconnect(d) = p {
            saw = Some(d.code);
        }
    }
    assert_eq!(saw, Some(ReasonCode::ReceiveMaximumExceeded));
    b.stop().await;
}

async fn denied_subscription_is_refused_in_suback(v: ProtocolVersion) {
    let auth = lode_broker::DenySubscribe::new(
        std::sync::Arc::new(lode_broker::AllowAnonymous),
        ["test/nosubscribe"],
    )
    .expect("valid filter");
    let b = TestBroker::with_auth(
        BrokerConfig::default(),
        std::sync::Arc::new(lode_store::MemoryStore::new()),
        std::sync::Arc::new(auth),
    )
    .await;
    let mut c = Client::connect(b.addr, v, "refused").await;
    let refused = if v.is_v5() {
        ReasonCode::NotAuthorized
    } else {
        ReasonCode::UnspecifiedError
    };
    assert_eq!(
        c.subscribe(1, "test/nosubscribe", QoS::ExactlyOnce).await,
        vec![refused]
    );
    assert_eq!(
        c.subscribe(2, "test/allowed", QoS::AtLeastOnce).await,
        vec![ReasonCode::GrantedQoS1]
    );
    b.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_tells_v5_clients() {
    let b = TestBroker::start().await;
    let mut c = Client::connect(b.addr, V5, "c").await;
    let broker = b.broker.clone();
    let stopping = tokio::spawn(async move { broker.shutdown().await });
    match c.try_recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, ReasonCode::ServerShuttingDown),
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    stopping.await.expect("shutdown");
}

#[tokio::test]
async fn garbage_before_connect_is_dropped() {
    let b = TestBroker::start().await;
    let mut c = Client::raw(b.addr, V3).await;
    c.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(c.try_recv().await, None);
    let mut c = Client::raw(b.addr, V3).await;
    // A CONNECT with protocol level 9.
    c.send_bytes(&[
        0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 9, 2, 0, 60, 0, 1, b'x',
    ])
    .await;
    match c.try_recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, ReasonCode::UnsupportedProtocolVersion),
        None => {}
        other => panic!("unexpected {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn subscriber_that_stops_reading_is_disconnected_after_the_timeout() {
    let config = BrokerConfig {
        max_queued_messages: 20,
        slow_subscriber_timeout: Duration::from_millis(500),
        ..BrokerConfig::default()
    };
    let b = TestBroker::with_config(config).await;
    let mut stalled = Client::connect(b.addr, V5, "stalled").await;
    stalled.subscribe(1, "big", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, V5, "pub").await;
    // Large payloads fill the socket buffers quickly, so the backlog builds up.
    let n = 300u16;
    for i in 1..=n {
        publ.send(Packet::Publish(publish(
            "big",
            &[7u8; 16 * 1024],
            QoS::AtLeastOnce,
            Some(i),
        )))
        .await;
    }
    let mut acked = 0;
    while acked < n {
        match publ.recv().await {
            Packet::PubAck(_) => acked += 1,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    b.wait_connected(1).await;
    let dropped = b
        .broker
        .stats()
        .snapshot()
        .into_iter()
        .find(|(name, _)| *name == "lode_mqtt_slow_subscribers_disconnected_total")
        .map(|(_, v)| v);
    assert_eq!(dropped, Some(1));
    drop(stalled);
    b.stop().await;
}

#[tokio::test]
async fn queued_messages_expire_in_offline_sessions() {
    let config = BrokerConfig {
        queued_message_expiry: Duration::from_millis(500),
        ..BrokerConfig::default()
    };
    let b = TestBroker::with_config(config).await;
    let mut c = connect_packet(V3, "away", false);
    c.keep_alive = 60;
    let (mut sub, _) = Client::connect_with(b.addr, c.clone()).await;
    sub.subscribe(1, "ex", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    b.wait_connected(0).await;
    let mut publ = Client::connect(b.addr, V3, "pub").await;
    publ.publish("ex", b"stale", QoS::AtLeastOnce, 1).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    publ.publish("ex", b"fresh", QoS::AtLeastOnce, 2).await;
    let (mut sub, ack) = Client::connect_with(b.addr, c).await;
    assert!(ack.session_present);
    assert_eq!(&sub.recv_publish().await.payload[..], b"fresh");
    sub.expect_nothing().await;
    b.stop().await;
}

#[tokio::test]
async fn own_message_arrives_after_its_puback_even_when_stored() {
    let b = TestBroker::start().await;
    let mut c = connect_packet(V5, "echo", true);
    c.properties.session_expiry_interval = Some(600);
    let (mut me, _) = Client::connect_with(b.addr, c).await;
    me.subscribe(1, "self", QoS::AtLeastOnce).await;
    for i in 1..=20u16 {
        me.send(Packet::Publish(publish(
            "self",
            b"x",
            QoS::AtLeastOnce,
            Some(i),
        )))
        .await;
        match me.recv().await {
            Packet::PubAck(a) => assert_eq!(a.packet_id, i),
            other => panic!("PUBACK must come first, got {other:?}"),
        }
        let _ = me.recv_publish().await;
    }
    b.stop().await;
}
