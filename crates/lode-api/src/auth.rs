//! Authentication of `/api/v1` calls: AccessKey signatures (see [`crate::signing`])
//! with a timestamp window and single-use nonces, or bearer tokens obtained
//! with a signed call; then throttling per client IP and per account.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use rand::Rng;

use crate::ApiState;
use crate::error::ApiError;
use crate::signing;
use crate::throttle::Class;

/// Who is calling: attached to every authenticated request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) account_id: String,
    pub(crate) access_key_id: String,
    /// Authenticated with a bearer token rather than a signature.
    pub(crate) via_token: bool,
}

/// A bearer token's record.
#[derive(Debug, Clone)]
pub(crate) struct TokenEntry {
    pub(crate) account_id: String,
    pub(crate) access_key_id: String,
    pub(crate) expires_at_ms: i64,
}

/// Nonces seen within the window and live bearer tokens.
#[derive(Default)]
pub(crate) struct Replay {
    /// `access key id \0 nonce` → when it may be forgotten (unix ms).
    nonces: parking_lot::Mutex<HashMap<String, i64>>,
    tokens: parking_lot::Mutex<HashMap<String, TokenEntry>>,
}

impl Replay {
    /// Records a nonce; false when it was seen and is still remembered.
    fn use_nonce(&self, key_id: &str, nonce: &str, forget_at_ms: i64, now_ms: i64) -> bool {
        let mut nonces = self.nonces.lock();
        let k = format!("{key_id}\0{nonce}");
        match nonces.get(&k) {
            Some(&until) if until > now_ms => false,
            _ => {
                nonces.insert(k, forget_at_ms);
                true
            }
        }
    }

    pub(crate) fn issue_token(&self, entry: TokenEntry) -> String {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        self.tokens.lock().insert(token.clone(), entry);
        token
    }

    fn token(&self, token: &str, now_ms: i64) -> Option<TokenEntry> {
        let tokens = self.tokens.lock();
        tokens
            .get(token)
            .filter(|t| t.expires_at_ms > now_ms)
            .cloned()
    }

    /// Forgets expired nonces and tokens.
    pub(crate) fn expire(&self, now_ms: i64) {
        self.nonces.lock().retain(|_, until| *until > now_ms);
        self.tokens.lock().retain(|_, t| t.expires_at_ms > now_ms);
    }
}

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub(crate) fn ms_to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The client's address, when the server was built with connect info
/// (`into_make_service_with_connect_info::<SocketAddr>()`); without it there is
/// no per-IP throttling, rather than one quota shared by every client.
pub(crate) fn client_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Middleware of unsigned routes: throttling per client IP only.
pub(crate) async fn throttle_ip(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    state.housekeeping();
    if let Some(ip) = client_ip(&req)
        && let Err(e) = state.shared.throttle.check_ip(Class::Other, ip)
    {
        return e.into_response();
    }
    next.run(req).await
}

/// Middleware of `/api/v1`: authenticates, throttles, and attaches the [`Caller`].
pub(crate) async fn authenticate(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    match check(&state, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn header<'a>(req: &'a Request, name: &'static str) -> Result<&'a str, ApiError> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or(ApiError::MissingSignature(name))
}

async fn check(state: &ApiState, req: Request) -> Result<Request, ApiError> {
    state.housekeeping();
    let class = Class::of_path(req.uri().path());
    if let Some(ip) = client_ip(&req) {
        state.shared.throttle.check_ip(class, ip)?;
    }
    let now = now_ms();

    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let (caller, mut req) = match bearer {
        Some(token) => {
            let entry = state
                .shared
                .replay
                .token(&token, now)
                .ok_or(ApiError::InvalidToken)?;
            // A token lives no longer than its key: disabling or deleting the key ends it.
            match state.registry.get_access_key(&entry.access_key_id).await? {
                Some(k) if k.enabled => {}
                Some(_) => return Err(ApiError::AccessKeyDisabled(entry.access_key_id)),
                None => return Err(ApiError::InvalidToken),
            }
            let caller = Caller {
                account_id: entry.account_id,
                access_key_id: entry.access_key_id,
                via_token: true,
            };
            (caller, req)
        }
        None => verify_signature(state, req, now).await?,
    };
    state
        .shared
        .throttle
        .check_account(class, &caller.account_id)?;
    req.extensions_mut().insert(caller);
    Ok(req)
}

async fn verify_signature(
    state: &ApiState,
    req: Request,
    now: i64,
) -> Result<(Caller, Request), ApiError> {
    let key_id = header(&req, signing::HEADER_ACCESS_KEY_ID)?.to_owned();
    let ts_text = header(&req, signing::HEADER_TIMESTAMP)?.to_owned();
    let nonce = header(&req, signing::HEADER_NONCE)?.to_owned();
    let signature = header(&req, signing::HEADER_SIGNATURE)?.to_owned();

    let window = i64::try_from(state.config.timestamp_window.as_millis()).unwrap_or(i64::MAX);
    let ts: i64 = ts_text
        .parse()
        .map_err(|_| ApiError::RequestExpired(format!("{ts_text:?} is not unix milliseconds")))?;
    if ts.abs_diff(now) > window.unsigned_abs() {
        return Err(ApiError::RequestExpired(format!(
            "timestamp {ts} is more than {} s from the server time {now}",
            window / 1000
        )));
    }
    if nonce.len() > signing::MAX_NONCE_LEN {
        return Err(ApiError::invalid(
            signing::HEADER_NONCE,
            format!("longer than {} bytes", signing::MAX_NONCE_LEN),
        ));
    }

    let key = state
        .registry
        .get_access_key(&key_id)
        .await?
        .ok_or_else(|| ApiError::UnknownAccessKey(key_id.clone()))?;
    if !key.enabled {
        return Err(ApiError::AccessKeyDisabled(key_id));
    }

    let (parts, body) = req.into_parts();
    let limit = crate::routes::ota::body_limit(&parts.method, parts.uri.path())
        .unwrap_or(state.config.max_body_bytes);
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(limit))?;
    let canonical = signing::canonical_request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &body,
        &ts_text,
        &nonce,
    );
    if !signing::verify(&key.secret, &canonical, &signature) {
        return Err(ApiError::SignatureDoesNotMatch(canonical));
    }
    // Remembered until the timestamp can no longer pass the window check.
    if !state.shared.replay.use_nonce(
        &key_id,
        &nonce,
        ts.saturating_add(window).saturating_add(1),
        now,
    ) {
        return Err(ApiError::RequestReplayed);
    }
    let caller = Caller {
        account_id: key.account_id,
        access_key_id: key.id,
        via_token: false,
    };
    Ok((caller, Request::from_parts(parts, Body::from(body))))
}
