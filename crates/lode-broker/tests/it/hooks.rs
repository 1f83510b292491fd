//! The hook surface a device platform builds on: one connection per identity,
//! server-side subscriptions, greetings, and connect/disconnect notices.

use std::sync::Arc;

use bytes::Bytes;
use lode_broker::{AuthHook, BoxFuture, BrokerConfig, CloseReason, ConnectRequest, Principal};
use lode_mqtt::{Packet, QoS, ReasonCode};
use parking_lot::Mutex;

use crate::harness::{Client, TestBroker, V3, V5, connect_packet, publish};

/// Username `dev/<name>`: identity `<name>` (no username: an application), auto-subscribed to `down/<name>/+`,
/// greeted on `hello/<name>`. Records connects and disconnects.
#[derive(Default)]
struct DeviceHook {
    events: Mutex<Vec<String>>,
}

impl AuthHook for DeviceHook {
    fn authenticate<'a>(
        &'a self,
        req: &'a ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Principal, ReasonCode>> {
        Box::pin(async move {
            let Some(username) = req.username else {
                // Applications connect without credentials.
                return Ok(Principal::named("app"));
            };
            let name = username
                .strip_prefix("dev/")
                .ok_or(ReasonCode::BadUserNameOrPassword)?;
            Ok(Principal {
                name: name.to_owned(),
                unique_key: Some(name.to_owned()),
                auto_subscriptions: vec![(format!("down/{name}/+"), QoS::AtLeastOnce)],
                greetings: vec![(format!("hello/{name}"), Bytes::from_static(b"hi"))],
                ext: None,
                proxied: None,
            })
        })
    }

    fn authorize_publish(&self, _: &Principal, _: &str) -> bool {
        true
    }

    fn authorize_subscribe(&self, _: &Principal, _: &str) -> bool {
        true
    }

    fn connected(&self, principal: &Principal, client_id: &str, _: std::net::SocketAddr) {
        self.events
            .lock()
            .push(format!("up {} {client_id}", principal.name));
    }

    fn disconnected(&self, principal: &Principal, client_id: &str, reason: CloseReason) {
        self.events
            .lock()
            .push(format!("down {} {client_id} {reason:?}", principal.name));
    }
}

async fn start(hook: Arc<DeviceHook>) -> TestBroker {
    TestBroker::with_auth(
        BrokerConfig::default(),
        Arc::new(lode_store::MemoryStore::new()),
        hook,
    )
    .await
}

fn device(version: lode_mqtt::ProtocolVersion, client_id: &str, name: &str) -> lode_mqtt::Connect {
    let mut c = connect_packet(version, client_id, true);
    c.username = Some(format!("dev/{name}"));
    c
}

#[tokio::test]
async fn greeting_then_server_side_subscription_without_echo() {
    let hook = Arc::new(DeviceHook::default());
    let b = start(hook.clone()).await;
    let (mut d, ack) = Client::connect_with(b.addr, device(V3, "c1", "d1")).await;
    assert_eq!(ack.code, ReasonCode::Success);
    let hello = d.recv_publish().await;
    assert_eq!(&hello.topic[..], b"hello/d1");
    assert_eq!(&hello.payload[..], b"hi");

    // The device publishes under its own auto-subscribed filter: no echo.
    d.publish("down/d1/reply", b"mine", QoS::AtLeastOnce, 1)
        .await;
    d.expect_nothing().await;

    // The platform side publishes to it: delivered without any SUBSCRIBE.
    let mut app = Client::connect(b.addr, V3, "app").await;
    app.publish("down/d1/set", b"cmd", QoS::AtLeastOnce, 1)
        .await;
    let got = d.recv_publish().await;
    assert_eq!(&got.payload[..], b"cmd");
    assert_eq!(got.qos, QoS::AtLeastOnce);
    b.stop().await;
}

#[tokio::test]
async fn one_connection_per_identity_across_client_ids() {
    let hook = Arc::new(DeviceHook::default());
    let b = start(hook.clone()).await;
    let (mut first, _) = Client::connect_with(b.addr, device(V5, "pk.d2", "d2")).await;
    let _ = first.recv_publish().await;
    let (mut second, ack) = Client::connect_with(b.addr, device(V5, "pk&d2", "d2")).await;
    assert_eq!(ack.code, ReasonCode::Success);
    match first.try_recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.code, ReasonCode::SessionTakenOver),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    let _ = second.recv_publish().await;
    // The second connection alone receives downlinks.
    let mut app = Client::connect(b.addr, V3, "app").await;
    app.send(Packet::Publish(publish(
        "down/d2/x",
        b"only you",
        QoS::AtMostOnce,
        None,
    )))
    .await;
    assert_eq!(&second.recv_publish().await.payload[..], b"only you");
    b.stop().await;
    let events = hook.events.lock().clone();
    assert_eq!(events[0], "up d2 pk.d2");
    assert!(events.contains(&"up d2 pk&d2".to_owned()));
    assert!(
        events.contains(&"down d2 pk.d2 Server(SessionTakenOver)".to_owned()),
        "{events:?}"
    );
}

#[tokio::test]
async fn broker_side_publish_and_kick() {
    let hook = Arc::new(DeviceHook::default());
    let b = start(hook.clone()).await;
    let (mut d, _) = Client::connect_with(b.addr, device(V5, "c3", "d3")).await;
    let _ = d.recv_publish().await;
    let matched = b
        .broker
        .publish(
            "down/d3/cmd",
            Bytes::from_static(b"from api"),
            QoS::AtLeastOnce,
            false,
        )
        .await
        .expect("publish");
    assert_eq!(matched, 1);
    assert_eq!(&d.recv_publish().await.payload[..], b"from api");
    assert!(
        b.broker
            .disconnect_identity("d3", ReasonCode::AdministrativeAction)
    );
    match d.try_recv().await {
        Some(Packet::Disconnect(x)) => assert_eq!(x.code, ReasonCode::AdministrativeAction),
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    b.stop().await;
}
