//! Alink over HTTP (protocol reference section 10): `POST /auth` and `POST /topic/${topic}`.
//!
//! Every answer is HTTP 200 with the reference's envelope
//! `{"code":0,"message":"success","info":{...}}`; failures carry the reference's codes:
//! 10000 common error, 10001 parameter error, 20000 auth check error, 20001 token expired,
//! 20002 token missing, 20003 token check error, 30001 publish error, 40000 too many requests.
//! HTTP is uplink only: each message is published as QoS 0.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use lode_alink::SignMethod;
use serde_json::{Map, Value, json};

use crate::{Channel, Edge, EdgeError, SignIn};

/// The sign method when the body names none (the C SDK's documented default).
const DEFAULT_SIGN_METHOD: SignMethod = SignMethod::HmacMd5;

/// The device routes, to merge into the HTTP listener's router (which must be served with
/// `into_make_service_with_connect_info::<SocketAddr>()` for per-address limits).
pub fn router(edge: Edge) -> Router {
    Router::new()
        .route("/auth", post(auth))
        .route("/topic/{*topic}", post(topic))
        .with_state(edge)
}

/// The client's address, when the server provides it.
fn peer(request: &Request) -> SocketAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |ConnectInfo(a)| *a)
}

/// The body, within the configured limit.
async fn body(edge: &Edge, request: Request) -> Result<Bytes, EdgeError> {
    axum::body::to_bytes(request.into_body(), edge.config().http_max_body)
        .await
        .map_err(|_| EdgeError::BadRequest("the body is too large or incomplete".to_owned()))
}

fn success(info: Value) -> Response {
    Json(json!({"code": 0, "message": "success", "info": info})).into_response()
}

fn failure(error: &EdgeError) -> Response {
    let message = match error.http_code() {
        10000 => "common error",
        10001 => "param error",
        20000 => "auth check error",
        20001 => "token is expired",
        20002 => "token is null",
        20003 => "check token error",
        30001 => "publish message error",
        _ => "request too many",
    };
    Json(json!({"code": error.http_code(), "message": message, "info": {}})).into_response()
}

/// The fields of an `/auth` body.
#[derive(Debug, PartialEq, Eq)]
struct AuthBody {
    product_key: String,
    device_name: String,
    client_id: String,
    sign: String,
    method: SignMethod,
    timestamp: Option<String>,
}

fn parse_auth(body: &[u8]) -> Result<AuthBody, EdgeError> {
    let obj: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| EdgeError::BadRequest("the body is not a JSON object".to_owned()))?;
    let text = |key: &str| -> Result<String, EdgeError> {
        match obj.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Err(EdgeError::BadRequest(format!("{key} is missing"))),
        }
    };
    let method = match obj.get("signmethod").or_else(|| obj.get("signMethod")) {
        None | Some(Value::Null) => DEFAULT_SIGN_METHOD,
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| EdgeError::BadRequest(format!("unknown signmethod {s:?}")))?,
        Some(_) => {
            return Err(EdgeError::BadRequest(
                "signmethod is not a string".to_owned(),
            ));
        }
    };
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => {
            return Err(EdgeError::BadRequest(
                "timestamp is not a string".to_owned(),
            ));
        }
    };
    Ok(AuthBody {
        product_key: text("productKey")?,
        device_name: text("deviceName")?,
        client_id: text("clientId")?,
        sign: text("sign")?,
        method,
        timestamp,
    })
}

async fn auth(State(edge): State<Edge>, request: Request) -> Response {
    let peer = peer(&request);
    let req = match body(&edge, request).await.and_then(|b| parse_auth(&b)) {
        Ok(req) => req,
        Err(error) => return failure(&error),
    };
    let content = lode_alink::mqtt_sign_content(
        &req.client_id,
        &req.device_name,
        &req.product_key,
        req.timestamp.as_deref(),
    );
    let sign_in = SignIn {
        product_key: &req.product_key,
        device_name: &req.device_name,
        method: req.method,
        content: &content,
        sign: &req.sign,
    };
    match edge.sign_in(Channel::Http, &sign_in, None, peer).await {
        Ok(grant) => success(json!({"token": grant.token})),
        Err(error) => failure(&error),
    }
}

async fn topic(State(edge): State<Edge>, Path(topic): Path<String>, request: Request) -> Response {
    let peer = peer(&request);
    let token = request
        .headers()
        .get("password")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let session = match edge.session(&token, Channel::Http).await {
        Ok(session) => session,
        Err(error) => return failure(&error),
    };
    let payload = match body(&edge, request).await {
        Ok(payload) => payload,
        Err(error) => return failure(&error),
    };
    let topic = format!("/{topic}");
    match edge.publish(&session, &topic, payload, peer).await {
        Ok(id) => success(json!({"messageId": id})),
        Err(error) => failure(&error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sdk_shapes_parse() {
        let c3 = br#"{"version":"default","clientId":"pk.dn","signmethod":"hmacsha1","sign":"AB","productKey":"pk","deviceName":"dn","timestamp":"1700000000000"}"#;
        let got = parse_auth(c3).expect("parses");
        assert_eq!(got.method, SignMethod::HmacSha1);
        assert_eq!(got.timestamp.as_deref(), Some("1700000000000"));
        assert_eq!(got.client_id, "pk.dn");
        let c4 = br#"{"clientId":"pk.dn","signmethod":"hmacsha256","deviceName":"dn","productKey":"pk","sign":"ab"}"#;
        let got = parse_auth(c4).expect("parses");
        assert_eq!(got.method, SignMethod::HmacSha256);
        assert_eq!(got.timestamp, None);
        let plain =
            br#"{"clientId":"c","deviceName":"dn","productKey":"pk","sign":"ab","timestamp":17}"#;
        let got = parse_auth(plain).expect("parses");
        assert_eq!(got.method, SignMethod::HmacMd5);
        assert_eq!(got.timestamp.as_deref(), Some("17"));
    }

    #[test]
    fn bad_bodies_are_parameter_errors() {
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"clientId":"c","deviceName":"dn","productKey":"pk"}"#,
            br#"{"clientId":"c","deviceName":"","productKey":"pk","sign":"a"}"#,
            br#"{"clientId":"c","deviceName":"dn","productKey":"pk","sign":"a","signmethod":"rot13"}"#,
            br#"{"clientId":"c","deviceName":"dn","productKey":"pk","sign":"a","signmethod":5}"#,
            br#"{"clientId":"c","deviceName":"dn","productKey":"pk","sign":"a","timestamp":[]}"#,
        ] {
            let err = parse_auth(bad).expect_err("refused");
            assert_eq!(err.http_code(), 10001, "{}", String::from_utf8_lossy(bad));
        }
    }
}
