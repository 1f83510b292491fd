//! Sign-in and presence of devices without a connection (HTTP, CoAP).

use lode_testkit::{TestRegistry, device_broker};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lode_alink::SignMethod;
use lode_broker::AuthHook;
use lode_device::{DeviceAuth, DeviceAuthConfig, TransientError};
use lode_registry::{DeviceState, NewDevice, NewProduct, RegistryStore};

struct Platform {
    registry: Arc<dyn RegistryStore>,
    auth: Arc<DeviceAuth>,
    pk: String,
    _dir: tempfile::TempDir,
}

async fn platform() -> Platform {
    let r = TestRegistry::new().await;
    let pk = r.product(NewProduct::new("meters")).await;
    let (_broker, auth) = device_broker(&r.registry, DeviceAuthConfig::default()).await;
    Platform {
        registry: r.registry,
        auth,
        pk,
        _dir: r.dir,
    }
}

fn content(pk: &str, dn: &str) -> String {
    format!("clientId{pk}.{dn}deviceName{dn}productKey{pk}")
}

#[tokio::test]
async fn sign_in_checks_signature_and_device_state() {
    let p = platform().await;
    let device = p
        .registry
        .create_device(&p.pk, NewDevice::new("meter-1".to_owned()))
        .await
        .expect("device");
    let c = content(&p.pk, "meter-1");
    for method in [
        SignMethod::HmacMd5,
        SignMethod::HmacSha1,
        SignMethod::HmacSha256,
    ] {
        let sign = lode_alink::sign(method, &device.device_secret, &c).to_uppercase();
        let ok = p
            .auth
            .transient_sign_in(&p.pk, "meter-1", method, &c, &sign)
            .await
            .expect("signed in");
        assert_eq!(
            ok.principal.unique_key.as_deref(),
            Some(&*format!("{}/meter-1", p.pk))
        );
        assert_eq!(ok.iot_id, device.iot_id);
        let post = format!("/sys/{}/meter-1/thing/event/property/post", p.pk);
        assert!(p.auth.authorize_publish(&ok.principal, &post));
        assert!(!p.auth.authorize_publish(
            &ok.principal,
            "/sys/other/meter-1/thing/event/property/post"
        ));
    }
    let wrong = lode_alink::sign(SignMethod::HmacMd5, "not-the-secret", &c);
    assert!(matches!(
        p.auth
            .transient_sign_in(&p.pk, "meter-1", SignMethod::HmacMd5, &c, &wrong)
            .await,
        Err(TransientError::BadSignature)
    ));
    assert!(matches!(
        p.auth.transient_device(&p.pk, "nobody").await,
        Err(TransientError::UnknownDevice)
    ));
    p.registry
        .set_device_enabled(&p.pk, "meter-1", false, None)
        .await
        .expect("disable");
    assert!(matches!(
        p.auth.transient_device(&p.pk, "meter-1").await,
        Err(TransientError::Disabled)
    ));
    p.registry
        .delete_device(&p.pk, "meter-1")
        .await
        .expect("delete");
    assert!(matches!(
        p.auth.transient_device(&p.pk, "meter-1").await,
        Err(TransientError::UnknownDevice)
    ));
}

#[tokio::test]
async fn transient_device_is_online_for_its_window() {
    let p = platform().await;
    p.registry
        .create_device(&p.pk, NewDevice::new("meter-2".to_owned()))
        .await
        .expect("device");
    let d = p
        .auth
        .transient_device(&p.pk, "meter-2")
        .await
        .expect("device");
    let peer: SocketAddr = "192.0.2.7:5683".parse().expect("addr");
    let window = Duration::from_millis(600);
    p.auth.transient_seen(&d.principal, peer, window);
    assert!(p.auth.transient_online(&p.pk, "meter-2"));
    let state = |registry: Arc<dyn RegistryStore>, pk: String| async move {
        registry
            .get_device(&pk, "meter-2")
            .await
            .expect("get")
            .expect("exists")
    };
    let mut online = None;
    for _ in 0..50 {
        let d = state(p.registry.clone(), p.pk.clone()).await;
        if d.state == DeviceState::Online {
            online = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let online = online.expect("recorded online");
    assert_eq!(online.last_ip.as_deref(), Some("192.0.2.7"));
    // Seen again: still online past the first deadline.
    tokio::time::sleep(Duration::from_millis(400)).await;
    p.auth.transient_seen(&d.principal, peer, window);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.auth.transient_online(&p.pk, "meter-2"));
    // Silent for longer than the window: offline.
    let mut offline = false;
    for _ in 0..100 {
        if state(p.registry.clone(), p.pk.clone()).await.state == DeviceState::Offline {
            offline = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(offline, "offline after the window");
    assert!(!p.auth.transient_online(&p.pk, "meter-2"));
}
