//! `Broker::subscriber_count`: how many subscribers a topic would reach, over real clients.

use lode_mqtt::QoS;

use crate::harness::{Client, TestBroker, V3, V5};

#[tokio::test]
async fn subscriber_count_counts_sessions_and_groups() {
    let b = TestBroker::start().await;
    assert_eq!(b.broker.subscriber_count("/broadcast/pk/news"), 0);

    let mut a = Client::connect(b.addr, V3, "a").await;
    a.subscribe(1, "/broadcast/pk/#", QoS::AtMostOnce).await;
    // Two overlapping filters of one session count once.
    a.subscribe(2, "/broadcast/pk/news", QoS::AtLeastOnce).await;
    let mut c = Client::connect(b.addr, V5, "c").await;
    c.subscribe(1, "/broadcast/+/news", QoS::AtMostOnce).await;
    // A shared group counts once, however many members it has.
    let mut g1 = Client::connect(b.addr, V5, "g1").await;
    g1.subscribe(1, "$share/g//broadcast/pk/news", QoS::AtMostOnce)
        .await;
    let mut g2 = Client::connect(b.addr, V5, "g2").await;
    g2.subscribe(1, "$share/g//broadcast/pk/news", QoS::AtMostOnce)
        .await;

    assert_eq!(b.broker.subscriber_count("/broadcast/pk/news"), 3);
    assert_eq!(b.broker.subscriber_count("/broadcast/pk/other"), 1);
    assert_eq!(b.broker.subscriber_count("/broadcast/pk2/news"), 1);
    assert_eq!(b.broker.subscriber_count("/elsewhere"), 0);

    // Counting publishes nothing.
    a.expect_nothing().await;
    c.disconnect().await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(b.broker.subscriber_count("/broadcast/pk/news"), 2);
    b.stop().await;
}
