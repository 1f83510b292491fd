//! Persistence across a broker restart on the embedded store.

use lode_mqtt::{Packet, QoS};

use crate::harness::{Client, TestBroker, V3, V5, connect_packet, publish};

#[tokio::test]
async fn restart_keeps_sessions_queues_and_retained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = TestBroker::embedded(dir.path()).await;
    let mut c = connect_packet(V5, "keeper", false);
    c.properties.session_expiry_interval = Some(3600);
    let (mut sub, _) = Client::connect_with(b.addr, c.clone()).await;
    sub.subscribe(1, "p/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let mut publ = Client::connect(b.addr, V3, "pub").await;
    for i in 0..20u16 {
        publ.publish("p/x", &i.to_be_bytes(), QoS::AtLeastOnce, i + 1)
            .await;
    }
    let mut r = publish("p/retained", b"still here", QoS::AtLeastOnce, Some(99));
    r.retain = true;
    publ.send(Packet::Publish(r)).await;
    assert!(matches!(publ.recv().await, Packet::PubAck(_)));
    b.stop().await;

    let b = TestBroker::embedded(dir.path()).await;
    let (mut sub, ack) = Client::connect_with(b.addr, c).await;
    assert!(ack.session_present, "session survives the restart");
    let mut seen = Vec::new();
    for _ in 0..21 {
        let p = sub.recv_publish().await;
        seen.push(p.payload.to_vec());
    }
    for i in 0..20u16 {
        assert_eq!(seen[i as usize], i.to_be_bytes().to_vec());
    }
    assert_eq!(seen[20], b"still here".to_vec());

    let mut fresh = Client::connect(b.addr, V3, "fresh").await;
    fresh.subscribe(1, "p/retained", QoS::AtLeastOnce).await;
    assert_eq!(&fresh.recv_publish().await.payload[..], b"still here");
    b.stop().await;
}

#[tokio::test]
async fn acknowledged_messages_are_removed_from_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = TestBroker::embedded(dir.path()).await;
    let mut c = connect_packet(V3, "acker", false);
    c.keep_alive = 60;
    let (mut sub, _) = Client::connect_with(b.addr, c.clone()).await;
    sub.subscribe(1, "a", QoS::AtLeastOnce).await;
    let mut publ = Client::connect(b.addr, V3, "pub").await;
    publ.publish("a", b"one", QoS::AtLeastOnce, 1).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"one");
    sub.disconnect().await;
    b.wait_connected(1).await;
    b.stop().await;

    let b = TestBroker::embedded(dir.path()).await;
    let (mut sub, ack) = Client::connect_with(b.addr, c).await;
    assert!(ack.session_present);
    sub.expect_nothing().await;
    b.stop().await;
}
