//! A platform on a loopback port (registry, device sign-in, broker, shadow runtime) and
//! devices of one product.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lode_broker::Broker;
use lode_device::{DeviceAuth, DeviceAuthConfig};
use lode_registry::{NewDevice, NewProduct};
use lode_sdk::{Credential, Device, DeviceConfig, Event, Events, QoS};
use lode_shadow::{ShadowConfig, ShadowService};
use lode_testkit::TestRegistry;
use serde_json::Value;

pub(crate) struct Platform {
    pub(crate) registry: TestRegistry,
    pub(crate) auth: Arc<DeviceAuth>,
    pub(crate) shadows: ShadowService,
    pub(crate) product_key: String,
    pub(crate) addr: SocketAddr,
    _broker: Broker,
}

/// A connected device and the messages it receives.
pub(crate) struct TestDevice {
    pub(crate) name: String,
    pub(crate) device: Device,
    pub(crate) events: Events,
    update_topic: String,
}

impl Platform {
    pub(crate) async fn start() -> Platform {
        Self::start_with(ShadowConfig::default()).await
    }

    pub(crate) async fn start_with(config: ShadowConfig) -> Platform {
        let registry = TestRegistry::new().await;
        let product_key = registry.product(NewProduct::new("lamp")).await;
        let (broker, auth) = lode_testkit::device_broker(
            &registry.registry,
            DeviceAuthConfig {
                connects_per_minute: 1000,
                ..DeviceAuthConfig::default()
            },
        )
        .await;
        let shadows = ShadowService::new(
            registry.registry.clone(),
            broker.clone(),
            auth.clone(),
            config,
        );
        broker.add_message_hook(shadows.hook());
        auth.add_status_listener(shadows.status_listener());
        let addr = lode_testkit::serve_tcp(broker.clone()).await;
        Platform {
            registry,
            auth,
            shadows,
            product_key,
            addr,
            _broker: broker,
        }
    }

    /// Registers a device; returns its secret.
    pub(crate) async fn register(&self, name: &str) -> String {
        self.registry
            .registry
            .create_device(&self.product_key, NewDevice::new(name))
            .await
            .expect("device created")
            .device_secret
    }

    /// Signs a registered device in.
    pub(crate) async fn connect(&self, name: &str, secret: &str) -> TestDevice {
        let config = DeviceConfig::new(
            self.addr.ip().to_string(),
            self.addr.port(),
            &self.product_key,
            name,
            Credential::DeviceSecret(secret.to_owned()),
        );
        let (device, events) = Device::connect(config).await.expect("device signs in");
        TestDevice {
            name: name.to_owned(),
            device,
            events,
            update_topic: format!("/shadow/update/{}/{name}", self.product_key),
        }
    }

    /// Registers a device and signs it in.
    pub(crate) async fn device(&self, name: &str) -> TestDevice {
        let secret = self.register(name).await;
        self.connect(name, &secret).await
    }

    /// Waits until the sign-in layer has `name` online (or offline).
    pub(crate) async fn wait_status(&self, name: &str, online: bool) {
        for _ in 0..500 {
            if self.auth.online(&self.product_key, name).is_some() == online {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} did not become online={online}");
    }
}

impl TestDevice {
    /// Publishes a shadow request (QoS 1) without waiting for the reply.
    pub(crate) async fn send(&self, request: &Value) {
        self.device
            .publish(&self.update_topic, request.to_string(), QoS::AtLeastOnce)
            .await
            .expect("request acknowledged");
    }

    /// Publishes raw bytes as a shadow request (QoS 1).
    pub(crate) async fn send_raw(&self, payload: &'static [u8]) {
        self.device
            .publish(&self.update_topic, payload, QoS::AtLeastOnce)
            .await
            .expect("request acknowledged");
    }

    /// The next message on the device's shadow topic.
    pub(crate) async fn next(&mut self) -> Value {
        let wanted = self
            .update_topic
            .replacen("/shadow/update/", "/shadow/get/", 1);
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match self.events.recv().await {
                    Some(Event::Message(m)) if m.topic == wanted => {
                        return serde_json::from_slice::<Value>(&m.payload).expect("JSON");
                    }
                    Some(Event::Message(_)) => {}
                    other => panic!("unexpected event {other:?}"),
                }
            }
        })
        .await;
        got.unwrap_or_else(|_| panic!("no shadow message for {}", self.name))
    }

    /// Whether a shadow message arrives within `wait`.
    pub(crate) async fn nothing_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.next()).await.is_err()
    }

    /// Sends a request and returns the reply.
    pub(crate) async fn request(&mut self, request: Value) -> Value {
        self.send(&request).await;
        self.next().await
    }
}

/// The error code of an error reply, `None` for a success.
pub(crate) fn error_code(reply: &Value) -> Option<String> {
    assert_eq!(reply["method"], "reply", "{reply}");
    match reply["payload"]["status"].as_str() {
        Some("success") => None,
        Some("error") => Some(
            reply["payload"]["content"]["errorcode"]
                .as_str()
                .expect("errorcode")
                .to_owned(),
        ),
        _ => panic!("no status in {reply}"),
    }
}
