//! Downlinks for CoAP observers: an in-process MQTT session of the device, signed in with
//! its own secret through the device hook like any MQTT connection, so the broker applies
//! the device's subscribe permissions, counts it online, and delivers what the platform
//! publishes to it. While a device observes, it holds this session (one per device, as for
//! MQTT).

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use lode_broker::{Broker, ConnInfo};
use lode_mqtt::{
    Connect, ConnectProperties, Packet, ProtocolVersion, PubResp, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

const V3: ProtocolVersion = ProtocolVersion::V311;
/// Keep alive of the session, in seconds (the longest the device hook accepts).
const KEEP_ALIVE: u16 = 1200;

/// A message for the device: topic and payload.
pub(crate) type Downlink = (String, Bytes);

/// A running session; dropping it ends the session.
#[derive(Debug)]
pub(crate) struct Feed {
    subscribe: mpsc::UnboundedSender<String>,
}

impl Feed {
    /// Adds a topic to the session's subscriptions.
    pub(crate) fn subscribe(&self, topic: &str) -> bool {
        self.subscribe.send(topic.to_owned()).is_ok()
    }
}

/// The device's identity and secret.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) product_key: String,
    pub(crate) device_name: String,
    pub(crate) secret: String,
}

/// Starts the session of `device`; downlinks go to `out`.
pub(crate) fn open(
    broker: Broker,
    device: Credentials,
    peer: SocketAddr,
    out: mpsc::UnboundedSender<Downlink>,
) -> Feed {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        if let Err(why) = run(broker, &device, peer, rx, out).await {
            tracing::debug!(device = %device.device_name, why, "observer session ended");
        }
    });
    Feed { subscribe: tx }
}

async fn send(stream: &mut DuplexStream, packet: &Packet) -> Result<(), &'static str> {
    let mut out = BytesMut::new();
    lode_mqtt::encode(packet, V3, &mut out);
    stream.write_all(&out).await.map_err(|_| "write failed")
}

async fn run(
    broker: Broker,
    device: &Credentials,
    peer: SocketAddr,
    mut topics: mpsc::UnboundedReceiver<String>,
    out: mpsc::UnboundedSender<Downlink>,
) -> Result<(), &'static str> {
    let (mut stream, server) = tokio::io::duplex(64 * 1024);
    let info = ConnInfo {
        peer,
        listener: "coap",
        client_cert: None,
    };
    tokio::spawn(async move { broker.serve_connection(server, info).await });
    let (pk, dn) = (&device.product_key, &device.device_name);
    let client_id = format!("{pk}.{dn}");
    let content = lode_alink::mqtt_sign_content(&client_id, dn, pk, None);
    let password = lode_alink::sign(lode_alink::SignMethod::HmacSha256, &device.secret, &content);
    let connect = Connect {
        protocol: V3,
        clean_start: true,
        keep_alive: KEEP_ALIVE,
        client_id: format!("{client_id}|securemode=3,signmethod=hmacsha256|"),
        will: None,
        username: Some(format!("{dn}&{pk}")),
        password: Some(password.into_bytes().into()),
        properties: ConnectProperties::default(),
    };
    send(&mut stream, &Packet::Connect(Box::new(connect))).await?;
    let mut buf = BytesMut::new();
    let mut packet_id: u16 = 0;
    let mut ping = tokio::time::interval(std::time::Duration::from_secs(u64::from(KEEP_ALIVE) / 2));
    ping.tick().await;
    loop {
        tokio::select! {
            topic = topics.recv() => {
                let Some(topic) = topic else {
                    let _ = send(&mut stream, &Packet::Disconnect(Default::default())).await;
                    return Ok(());
                };
                packet_id = packet_id.wrapping_add(1).max(1);
                let subscribe = Subscribe {
                    packet_id,
                    filters: vec![(topic, SubscriptionOptions {
                        qos: QoS::AtMostOnce,
                        ..Default::default()
                    })],
                    subscription_identifier: None,
                    user_properties: Vec::new(),
                };
                send(&mut stream, &Packet::Subscribe(subscribe)).await?;
            }
            _ = ping.tick() => send(&mut stream, &Packet::PingReq).await?,
            read = stream.read_buf(&mut buf) => {
                if read.map_err(|_| "read failed")? == 0 {
                    return Err("closed by the broker");
                }
                while let Some(decoded) =
                    lode_mqtt::decode(&mut buf, V3, u32::MAX).map_err(|_| "bad packet")?
                {
                    match decoded.packet {
                        Packet::ConnAck(ack) if ack.code != ReasonCode::Success => {
                            return Err("sign-in refused");
                        }
                        Packet::Publish(p) => {
                            if let Some(id) = p.packet_id {
                                send(&mut stream, &Packet::PubAck(PubResp::new(id, ReasonCode::Success)))
                                    .await?;
                            }
                            let topic = String::from_utf8_lossy(&p.topic).into_owned();
                            if out.send((topic, p.payload)).is_err() {
                                return Ok(());
                            }
                        }
                        Packet::Disconnect(_) => return Err("disconnected by the broker"),
                        _ => {}
                    }
                }
            }
        }
    }
}
