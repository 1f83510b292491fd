//! Tokens across restarts and expiry, and the CoAP message layer's separate responses, over
//! a real registry, broker and UDP socket.

use lode_testkit::{TestRegistry, device_broker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lode_device::DeviceAuthConfig;
use lode_edge::coap::{CoapServer, Mode};
use lode_edge::lode_coap::{Code, Message, MessageType, Token, decode, encode};
use lode_edge::{Channel, Edge, EdgeConfig, EdgeError, SignIn, TokenKey};
use lode_registry::{NewDevice, NewProduct, RegistryStore};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

struct Platform {
    registry: Arc<dyn RegistryStore>,
    pk: String,
    secret: String,
    _dir: tempfile::TempDir,
}

async fn platform() -> Platform {
    let r = TestRegistry::new().await;
    let pk = r.product(NewProduct::new("meters")).await;
    let device = r
        .registry
        .create_device(&pk, NewDevice::new("meter-0001"))
        .await
        .expect("device");
    Platform {
        registry: r.registry,
        pk,
        secret: device.device_secret,
        _dir: r.dir,
    }
}

/// A fresh device hook, broker and [`Edge`] over the same registry: a restarted server.
async fn edge(p: &Platform, key: TokenKey, config: EdgeConfig) -> Edge {
    let (broker, auth) = device_broker(&p.registry, DeviceAuthConfig::default()).await;
    Edge::new(auth, broker, key, config)
}

fn peer() -> SocketAddr {
    "192.0.2.1:40000".parse().expect("addr")
}

async fn sign_in(edge: &Edge, p: &Platform, channel: Channel) -> Result<String, EdgeError> {
    let content = format!(
        "clientId{pk}.meter-0001deviceNamemeter-0001productKey{pk}",
        pk = p.pk
    );
    let sign = lode_alink::sign(lode_alink::SignMethod::HmacMd5, &p.secret, &content);
    let req = SignIn {
        product_key: &p.pk,
        device_name: "meter-0001",
        method: lode_alink::SignMethod::HmacMd5,
        content: &content,
        sign: &sign,
    };
    edge.sign_in(channel, &req, None, peer())
        .await
        .map(|g| g.token)
}

#[tokio::test]
async fn tokens_outlive_a_restart_with_the_same_key_only() {
    let p = platform().await;
    let key = TokenKey::generate();
    let first = edge(&p, key.clone(), EdgeConfig::default()).await;
    let token = sign_in(&first, &p, Channel::Http).await.expect("token");
    drop(first);

    let restarted = edge(&p, key, EdgeConfig::default()).await;
    let session = restarted
        .session(&token, Channel::Http)
        .await
        .expect("still valid");
    assert_eq!(session.claims.device_name, "meter-0001");
    assert!(matches!(
        restarted.session(&token, Channel::Coap).await,
        Err(EdgeError::TokenInvalid)
    ));
    let topic = format!("/{}/meter-0001/user/update", p.pk);
    restarted
        .publish(&session, &topic, "hi".into(), peer())
        .await
        .expect("published");

    let rekeyed = edge(&p, TokenKey::generate(), EdgeConfig::default()).await;
    assert!(matches!(
        rekeyed.session(&token, Channel::Http).await,
        Err(EdgeError::TokenInvalid)
    ));
    assert!(matches!(
        rekeyed.session("", Channel::Http).await,
        Err(EdgeError::TokenMissing)
    ));

    // Deleted and created again under the same name: the old token is revoked.
    p.registry
        .delete_device(&p.pk, "meter-0001")
        .await
        .expect("delete");
    let fresh = edge(&p, TokenKey::from_bytes([3; 32]), EdgeConfig::default()).await;
    assert!(matches!(
        fresh.session(&token, Channel::Http).await,
        Err(EdgeError::TokenInvalid | EdgeError::TokenRevoked(_))
    ));
    p.registry
        .create_device(&p.pk, NewDevice::new("meter-0001"))
        .await
        .expect("again");
    let again = edge(&p, TokenKey::from_bytes([3; 32]), EdgeConfig::default()).await;
    let _ = sign_in(&again, &p, Channel::Http).await;
    assert!(matches!(
        again.session(&token, Channel::Http).await,
        Err(EdgeError::TokenInvalid)
    ));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let p = platform().await;
    let config = EdgeConfig {
        token_ttl: Duration::ZERO,
        ..EdgeConfig::default()
    };
    let e = edge(&p, TokenKey::generate(), config).await;
    let token = sign_in(&e, &p, Channel::Coap).await.expect("token");
    let err = e.session(&token, Channel::Coap).await.expect_err("expired");
    assert!(matches!(err, EdgeError::TokenExpired));
    assert_eq!(err.http_code(), 20001);
    assert_eq!(err.coap_code(), Code::UNAUTHORIZED);
}

#[tokio::test]
async fn slow_con_requests_get_an_empty_ack_then_a_separate_response() {
    let p = platform().await;
    let e = edge(&p, TokenKey::generate(), EdgeConfig::default()).await;
    let server = CoapServer::bind("127.0.0.1:0".parse().expect("addr"), e, Mode::Plain)
        .await
        .expect("bind")
        .with_separate_after(Duration::ZERO);
    let addr = server.local_addr().expect("addr");
    let stop = CancellationToken::new();
    tokio::spawn(server.run(stop.clone()));

    let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let content = format!(
        "clientId{pk}&meter-0001deviceNamemeter-0001productKey{pk}",
        pk = p.pk
    );
    let sign = lode_alink::sign(lode_alink::SignMethod::HmacMd5, &p.secret, &content);
    let mut req = Message::new(MessageType::Confirmable, Code::POST, 0x7001);
    req.token = Token::new(&[1, 2, 3, 4]).expect("token");
    req.set_uri_path("/auth").expect("path");
    req.payload = serde_json::json!({"productKey": p.pk, "deviceName": "meter-0001",
        "clientId": format!("{}&meter-0001", p.pk), "sign": sign})
    .to_string()
    .into_bytes();
    client.send_to(&encode(&req), addr).await.expect("send");

    let recv = |within: Duration| {
        let client = &client;
        async move {
            let mut buf = [0u8; 2048];
            match tokio::time::timeout(within, client.recv_from(&mut buf)).await {
                Ok(Ok((n, _))) => Some(decode(&buf[..n]).expect("valid")),
                _ => None,
            }
        }
    };
    let ack = recv(Duration::from_secs(5)).await.expect("empty ACK");
    assert_eq!(ack.message_type, MessageType::Acknowledgement);
    assert_eq!(ack.code, Code::EMPTY);
    assert_eq!(ack.message_id, 0x7001);
    let resp = recv(Duration::from_secs(5))
        .await
        .expect("separate response");
    assert_eq!(resp.message_type, MessageType::Confirmable);
    assert_eq!(resp.code, Code::CONTENT);
    assert_eq!(resp.token, req.token);
    // Not acknowledged: sent again after ACK_TIMEOUT, with the same message id.
    let again = recv(Duration::from_secs(4)).await.expect("retransmission");
    assert_eq!(again.message_id, resp.message_id);
    assert_eq!(again.payload, resp.payload);
    let ack = Message::empty(MessageType::Acknowledgement, resp.message_id);
    client.send_to(&encode(&ack), addr).await.expect("ack");
    assert!(
        recv(Duration::from_millis(2500)).await.is_none(),
        "acknowledged: no more"
    );
    // The request sent again gets the empty ACK from the cache.
    client.send_to(&encode(&req), addr).await.expect("send");
    let replay = recv(Duration::from_secs(5)).await.expect("replayed ACK");
    assert_eq!(
        (replay.message_type, replay.code),
        (MessageType::Acknowledgement, Code::EMPTY)
    );
    stop.cancel();
}
