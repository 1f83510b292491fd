//! Applications consuming the device stream (server-side subscription) over MQTT.
//!
//! An application signs in with an AccessKey, in the form the reference platform uses for
//! its AMQP server-side subscription, carried in the MQTT username:
//!
//! ```text
//! username  ${clientId}|authMode=aksign,signMethod=hmacsha256,timestamp=${ms},authId=${accessKeyId}|
//! password  base64(HMAC(${accessKeySecret}, "authId=${accessKeyId}&timestamp=${ms}"))
//! ```
//!
//! `signMethod` is `hmacsha256` (default), `hmacsha1` or `hmacmd5`; the timestamp must be
//! within 5 minutes of the server's clock. The key must be enabled. The application may
//! then subscribe only under `$lode/${productKey}/...` for the products its account owned
//! at sign-in, directly or through a shared subscription
//! (`$share/${group}/$lode/${productKey}/...`): a group is a consumer group, each message
//! going to one member. With a persistent session and QoS 1, messages wait for the
//! application while it is away and are acknowledged one by one. It may not publish.

use std::collections::HashSet;

use base64::Engine;
use lode_alink::SignMethod;
use lode_mqtt::ReasonCode;
use lode_registry::{PageRequest, RegistryStore};

use crate::backend;

/// How far the sign-in timestamp may be from the server's clock.
const MAX_SKEW_MS: i64 = 5 * 60 * 1000;
/// Products listed per page when collecting an account's products.
const PAGE: u32 = 200;

/// An application's AccessKey sign-in, parsed from the username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AkSignIn {
    pub(crate) access_key_id: String,
    pub(crate) timestamp: String,
    pub(crate) method: SignMethod,
}

/// Parses `${clientId}|authMode=aksign,...|`; `None` when the username is not of that form.
pub(crate) fn parse(username: &str) -> Option<Result<AkSignIn, &'static str>> {
    let options = username
        .split_once('|')?
        .1
        .strip_suffix('|')
        .filter(|o| o.contains("authMode=aksign"))?;
    let mut id = None;
    let mut timestamp = None;
    let mut method = Some(SignMethod::HmacSha256);
    for pair in options.split(',') {
        match pair.split_once('=') {
            Some(("authId", v)) => id = Some(v.to_owned()),
            Some(("timestamp", v)) => timestamp = Some(v.to_owned()),
            Some(("signMethod", v)) => method = v.parse().ok(),
            _ => {}
        }
    }
    Some(match (id, timestamp, method) {
        (Some(access_key_id), Some(timestamp), Some(method)) if !access_key_id.is_empty() => {
            Ok(AkSignIn {
                access_key_id,
                timestamp,
                method,
            })
        }
        (_, _, None) => Err("unknown signMethod"),
        _ => Err("authId and timestamp are required"),
    })
}

/// The content an application signs.
pub(crate) fn sign_content(access_key_id: &str, timestamp: &str) -> String {
    format!("authId={access_key_id}&timestamp={timestamp}")
}

/// Checks the sign-in and returns the product keys the application may subscribe to.
pub(crate) async fn verify(
    registry: &dyn RegistryStore,
    sign_in: &AkSignIn,
    password: &[u8],
    now_ms: i64,
) -> Result<HashSet<String>, ReasonCode> {
    let ts: i64 = sign_in
        .timestamp
        .parse()
        .map_err(|_| ReasonCode::BadUserNameOrPassword)?;
    if (now_ms - ts).abs() > MAX_SKEW_MS {
        tracing::debug!(
            access_key = sign_in.access_key_id,
            "sign-in timestamp out of range"
        );
        return Err(ReasonCode::BadUserNameOrPassword);
    }
    let key = registry
        .get_access_key(&sign_in.access_key_id)
        .await
        .map_err(backend)?
        .ok_or(ReasonCode::BadUserNameOrPassword)?;
    if !key.enabled {
        return Err(ReasonCode::NotAuthorized);
    }
    let expected = lode_alink::sign_bytes(
        sign_in.method,
        key.secret.as_bytes(),
        sign_content(&key.id, &sign_in.timestamp).as_bytes(),
    );
    let presented = base64::engine::general_purpose::STANDARD
        .decode(password)
        .map_err(|_| ReasonCode::BadUserNameOrPassword)?;
    if !lode_alink::verify_hex(&expected, &lode_alink::hex_lower(&presented)) {
        return Err(ReasonCode::BadUserNameOrPassword);
    }
    let mut products = HashSet::new();
    let mut page = PageRequest::After {
        cursor: None,
        page_size: PAGE,
    };
    loop {
        let listed = registry
            .list_products(&key.account_id, page)
            .await
            .map_err(backend)?;
        products.extend(listed.items.into_iter().map(|p| p.product_key));
        match listed.next_cursor {
            Some(cursor) => {
                page = PageRequest::After {
                    cursor: Some(cursor),
                    page_size: PAGE,
                }
            }
            None => return Ok(products),
        }
    }
}

/// Whether an application of `products` may subscribe to `filter`.
pub(crate) fn may_subscribe(products: &HashSet<String>, filter: &str) -> bool {
    let filter = match filter.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((group, rest)) if !group.is_empty() => rest,
            _ => return false,
        },
        None => filter,
    };
    let Some(rest) = filter.strip_prefix("$lode/") else {
        return false;
    };
    let pk = rest.split('/').next().unwrap_or_default();
    products.contains(pk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        let s = parse("app-1|authMode=aksign,signMethod=hmacsha1,timestamp=17,authId=LTAIx|")
            .expect("aksign form")
            .expect("valid");
        assert_eq!(
            s,
            AkSignIn {
                access_key_id: "LTAIx".into(),
                timestamp: "17".into(),
                method: SignMethod::HmacSha1
            }
        );
        assert_eq!(
            parse("a|authMode=aksign,timestamp=1,authId=k|")
                .expect("form")
                .expect("valid")
                .method,
            SignMethod::HmacSha256
        );
        assert!(parse("dev1&pk1").is_none());
        assert!(parse("x|securemode=3|").is_none());
        assert!(parse("a|authMode=aksign,authId=k|").expect("form").is_err());
        assert!(
            parse("a|authMode=aksign,timestamp=1,authId=k,signMethod=rot13|")
                .expect("form")
                .is_err()
        );
    }

    #[test]
    fn subscriptions_stay_in_the_accounts_products() {
        let products: HashSet<String> = ["pk1".to_owned()].into();
        for ok in [
            "$lode/pk1/#",
            "$lode/pk1/+/thing/property",
            "$share/g1/$lode/pk1/dev/status",
        ] {
            assert!(may_subscribe(&products, ok), "{ok}");
        }
        for refused in [
            "$lode/pk2/#",
            "$lode/+/#",
            "$lode/#",
            "#",
            "/pk1/dev/user/x",
            "$share//$lode/pk1/#",
            "$share/g1/#",
            "$SYS/#",
        ] {
            assert!(!may_subscribe(&products, refused), "{refused}");
        }
    }
}
