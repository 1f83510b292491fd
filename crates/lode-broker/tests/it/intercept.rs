//! Publishes taken by the platform: not routed, acknowledged once accepted.

use std::sync::Arc;
use std::time::Duration;

use lode_broker::{Intercept, MessageHook, NotAccepted, Uplink};
use lode_mqtt::{Packet, QoS, ReasonCode};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::harness::{Client, TestBroker, V3, V5, publish};

/// Topic, payload, QoS and client id of a taken message.
type Seen = (String, Vec<u8>, QoS, String);

/// Takes every topic under `platform/`; each taken message waits for a release.
#[derive(Default)]
struct Taker {
    seen: Mutex<Vec<Seen>>,
    releases: Mutex<Vec<oneshot::Sender<Result<(), NotAccepted>>>>,
}

impl MessageHook for Taker {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept {
        if !uplink.topic.starts_with("platform/") {
            return Intercept::Route;
        }
        self.seen.lock().push((
            uplink.topic.to_owned(),
            uplink.payload.to_vec(),
            uplink.qos,
            uplink.client_id.to_owned(),
        ));
        let (tx, rx) = oneshot::channel();
        self.releases.lock().push(tx);
        Intercept::Take(Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(NotAccepted("dropped".into())))
        }))
    }
}

async fn wait_taken(taker: &Taker, n: usize) {
    for _ in 0..200 {
        if taker.releases.lock().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} taken messages");
}

#[tokio::test]
async fn taken_publish_is_acked_after_acceptance_and_not_routed() {
    let b = TestBroker::start().await;
    let taker = Arc::new(Taker::default());
    b.broker.add_message_hook(taker.clone());

    let mut sub = Client::connect(b.addr, V5, "sub").await;
    sub.subscribe(1, "#", QoS::AtLeastOnce).await;
    let mut dev = Client::connect(b.addr, V5, "dev").await;

    dev.send(Packet::Publish(publish(
        "platform/in",
        b"data",
        QoS::AtLeastOnce,
        Some(7),
    )))
    .await;
    wait_taken(&taker, 1).await;
    // Not accepted yet: no PUBACK.
    dev.expect_nothing().await;
    let release = taker.releases.lock().remove(0);
    release.send(Ok(())).expect("connection waits");
    match dev.recv().await {
        Packet::PubAck(ack) => {
            assert_eq!(ack.packet_id, 7);
            assert_eq!(ack.code, ReasonCode::Success);
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let seen = taker.seen.lock().clone();
    assert_eq!(
        seen,
        vec![(
            "platform/in".to_owned(),
            b"data".to_vec(),
            QoS::AtLeastOnce,
            "dev".to_owned()
        )]
    );
    // Other topics are routed as before.
    assert_eq!(
        dev.publish("other", b"x", QoS::AtLeastOnce, 8).await,
        ReasonCode::Success
    );
    let p = sub.recv_publish().await;
    assert_eq!(&p.topic[..], b"other");
    sub.expect_nothing().await;
    b.stop().await;
}

#[tokio::test]
async fn taken_qos0_and_qos2_keep_their_order_and_flows() {
    let b = TestBroker::start().await;
    let taker = Arc::new(Taker::default());
    b.broker.add_message_hook(taker.clone());
    let mut dev = Client::connect(b.addr, V3, "dev").await;
    dev.send(Packet::Publish(publish(
        "platform/a",
        b"0",
        QoS::AtMostOnce,
        None,
    )))
    .await;
    dev.send(Packet::Publish(publish(
        "platform/b",
        b"2",
        QoS::ExactlyOnce,
        Some(3),
    )))
    .await;
    wait_taken(&taker, 2).await;
    // The QoS 0 message is released last, and the PUBREC waits behind it.
    let second = taker.releases.lock().remove(1);
    second.send(Ok(())).expect("waiting");
    dev.expect_nothing().await;
    let first = taker.releases.lock().remove(0);
    first.send(Ok(())).expect("waiting");
    match dev.recv().await {
        Packet::PubRec(r) => assert_eq!(r.packet_id, 3),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    b.stop().await;
}

#[tokio::test]
async fn refused_acceptance_closes_without_ack() {
    let b = TestBroker::start().await;
    let taker = Arc::new(Taker::default());
    b.broker.add_message_hook(taker.clone());
    let mut dev = Client::connect(b.addr, V5, "dev").await;
    dev.send(Packet::Publish(publish(
        "platform/x",
        b"1",
        QoS::AtLeastOnce,
        Some(1),
    )))
    .await;
    wait_taken(&taker, 1).await;
    let release = taker.releases.lock().remove(0);
    release
        .send(Err(NotAccepted("store down".into())))
        .expect("waiting");
    match dev.try_recv().await {
        Some(Packet::Disconnect(d)) => {
            assert_eq!(d.code, ReasonCode::ImplementationSpecificError)
        }
        None => {}
        other => panic!("expected DISCONNECT 0x83, got {other:?}"),
    }
    b.stop().await;
}

/// Takes and routes every topic under `watched/`, accepting at once.
struct Watcher;

impl MessageHook for Watcher {
    fn on_publish(&self, uplink: Uplink<'_>) -> Intercept {
        if uplink.topic.starts_with("watched/") {
            Intercept::TakeAndRoute(Box::pin(async { Ok(()) }))
        } else {
            Intercept::Route
        }
    }
}

#[tokio::test]
async fn taken_and_routed_reaches_subscribers_and_is_acked_as_taken() {
    let b = TestBroker::start().await;
    b.broker.add_message_hook(Arc::new(Watcher));
    let mut dev = Client::connect(b.addr, V5, "dev").await;
    // Nobody subscribed, yet the platform took it: success, not 0x10.
    assert_eq!(
        dev.publish("watched/a", b"1", QoS::AtLeastOnce, 1).await,
        ReasonCode::Success
    );
    let mut app = Client::connect(b.addr, V5, "app").await;
    app.subscribe(1, "watched/#", QoS::AtLeastOnce).await;
    assert_eq!(
        dev.publish("watched/b", b"2", QoS::AtLeastOnce, 2).await,
        ReasonCode::Success
    );
    let p = app.recv_publish().await;
    assert_eq!(
        (&p.topic[..], &p.payload[..]),
        (&b"watched/b"[..], &b"2"[..])
    );
    b.stop().await;
}

#[tokio::test]
async fn other_transports_publish_through_the_same_checks_and_hook() {
    let b = TestBroker::start().await;
    let taker = Arc::new(Taker::default());
    b.broker.add_message_hook(taker.clone());
    let mut app = Client::connect(b.addr, V5, "app").await;
    app.subscribe(1, "other/#", QoS::AtLeastOnce).await;
    let principal = lode_broker::Principal::named("coap-device");
    let peer: std::net::SocketAddr = "127.0.0.1:5683".parse().expect("addr");

    let reached = b
        .broker
        .publish_as(
            &principal,
            "coap-1",
            peer,
            "other/x",
            "v".into(),
            QoS::AtLeastOnce,
        )
        .await
        .expect("routed");
    assert_eq!(reached, 1);
    let p = app.recv_publish().await;
    assert_eq!(&p.payload[..], b"v");

    // A taken message resolves once the platform accepted it.
    let broker = b.broker.clone();
    let pending = tokio::spawn(async move {
        broker
            .publish_as(
                &principal,
                "coap-1",
                peer,
                "platform/y",
                "w".into(),
                QoS::AtMostOnce,
            )
            .await
    });
    wait_taken(&taker, 1).await;
    assert!(!pending.is_finished());
    let release = taker.releases.lock().remove(0);
    release.send(Ok(())).expect("waiting");
    pending.await.expect("task").expect("accepted");
    assert_eq!(taker.seen.lock()[0].3, "coap-1");

    let err = b
        .broker
        .publish_as(
            &lode_broker::Principal::named("x"),
            "c",
            peer,
            "bad/+",
            "z".into(),
            QoS::AtMostOnce,
        )
        .await
        .expect_err("wildcard in a topic name");
    assert!(matches!(err, lode_broker::PublishAsError::InvalidTopic(_)));
    b.stop().await;
}

/// Topic, payload and the publisher's client id (None for the platform) of a tapped message.
type Tapped = (String, Vec<u8>, Option<String>);

/// Records what the tap sees.
#[derive(Default)]
struct Recorder(Mutex<Vec<Tapped>>);

impl lode_broker::Tap for Recorder {
    fn on_message(&self, msg: lode_broker::Tapped<'_>) {
        self.0.lock().push((
            msg.topic.to_owned(),
            msg.payload.to_vec(),
            msg.client.map(|c| c.client_id.to_owned()),
        ));
    }
}

#[tokio::test]
async fn the_tap_sees_routed_messages_but_not_taken_ones() {
    let b = TestBroker::start().await;
    let taker = Arc::new(Taker::default());
    b.broker.add_message_hook(taker.clone());
    let tap = Arc::new(Recorder::default());
    b.broker.add_tap(tap.clone());

    let mut dev = Client::connect(b.addr, V5, "dev").await;
    dev.send(Packet::Publish(publish(
        "platform/in",
        b"taken",
        QoS::AtMostOnce,
        None,
    )))
    .await;
    wait_taken(&taker, 1).await;
    taker
        .releases
        .lock()
        .remove(0)
        .send(Ok(()))
        .expect("waiting");
    dev.send(Packet::Publish(publish(
        "room/1",
        b"routed",
        QoS::AtLeastOnce,
        Some(1),
    )))
    .await;
    assert!(matches!(dev.recv().await, Packet::PubAck(_)));
    b.broker
        .publish("room/2", "internal".into(), QoS::AtMostOnce, false)
        .await
        .expect("published");
    let seen = tap.0.lock().clone();
    assert_eq!(
        seen,
        vec![
            (
                "room/1".to_owned(),
                b"routed".to_vec(),
                Some("dev".to_owned())
            ),
            ("room/2".to_owned(), b"internal".to_vec(), None),
        ]
    );
    b.stop().await;
}

/// Holds the acknowledgement of every message until released, and routes it.
#[derive(Default)]
struct Holder {
    releases: Mutex<Vec<oneshot::Sender<Result<(), NotAccepted>>>>,
}

impl MessageHook for Holder {
    fn on_publish(&self, _uplink: Uplink<'_>) -> Intercept {
        let (tx, rx) = oneshot::channel();
        self.releases.lock().push(tx);
        Intercept::TakeAndRoute(Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(NotAccepted("dropped".into())))
        }))
    }
}

#[tokio::test]
async fn every_hook_sees_the_message_and_the_ack_waits_for_all() {
    let b = TestBroker::start().await;
    let holder = Arc::new(Holder::default());
    let taker = Arc::new(Taker::default());
    b.broker.add_message_hook(holder.clone());
    b.broker.add_message_hook(taker.clone());
    let mut sub = Client::connect(b.addr, V5, "sub").await;
    sub.subscribe(1, "#", QoS::AtLeastOnce).await;
    let mut dev = Client::connect(b.addr, V5, "dev").await;
    dev.send(Packet::Publish(publish(
        "platform/x",
        b"1",
        QoS::AtLeastOnce,
        Some(1),
    )))
    .await;
    wait_taken(&taker, 1).await;
    assert_eq!(holder.releases.lock().len(), 1, "the first hook saw it too");
    // The second hook accepts; the first still holds the acknowledgement.
    let release = taker.releases.lock().pop().expect("taken");
    let _ = release.send(Ok(()));
    dev.expect_nothing().await;
    let hold = holder.releases.lock().pop().expect("held");
    let _ = hold.send(Ok(()));
    match dev.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id, 1),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // Taken by one hook: routed to nobody, although the other would route it.
    sub.expect_nothing().await;
    // A topic no hook takes is routed, its acknowledgement held by the first hook.
    dev.send(Packet::Publish(publish(
        "other",
        b"2",
        QoS::AtLeastOnce,
        Some(2),
    )))
    .await;
    for _ in 0..200 {
        if !holder.releases.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hold = holder.releases.lock().pop().expect("held");
    let _ = hold.send(Ok(()));
    match dev.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id, 2),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let p = sub.recv_publish().await;
    assert_eq!(&p.topic[..], b"other");
    b.stop().await;
}
