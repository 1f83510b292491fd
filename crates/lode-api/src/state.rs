//! `ApiState`, the router and the outermost middleware.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lode_broker::Broker;
use lode_registry::{Product, RegistryStore};
use lode_thing::ThingEngine;
use rand::Rng;

use crate::auth::{self, Caller, Replay};
use crate::config::ApiConfig;
use crate::error::PendingError;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::jobs::Jobs;
use crate::routes;
use crate::throttle::Throttle;

/// Response header naming the request.
pub const REQUEST_ID_HEADER: &str = "x-lode-request-id";

/// What the management API works on. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub(crate) registry: Arc<dyn RegistryStore>,
    pub(crate) broker: Broker,
    pub(crate) config: ApiConfig,
    pub(crate) shared: Arc<Shared>,
    /// The thing-model runtime; without it the thing-model routes answer 503.
    pub(crate) thing: Option<ThingEngine>,
}

/// State shared by every request: replay protection, tokens, throttling, jobs.
pub(crate) struct Shared {
    pub(crate) replay: Replay,
    pub(crate) throttle: Throttle,
    pub(crate) jobs: Jobs,
    pub(crate) last_housekeeping_ms: AtomicI64,
    /// The OpenAPI document, rendered once.
    pub(crate) openapi: std::sync::OnceLock<String>,
}

impl ApiState {
    /// The API over `registry` and `broker`.
    pub fn new(registry: Arc<dyn RegistryStore>, broker: Broker, config: ApiConfig) -> ApiState {
        let shared = Arc::new(Shared {
            replay: Replay::default(),
            throttle: Throttle::new(&config.throttle),
            jobs: Jobs::default(),
            last_housekeeping_ms: AtomicI64::new(auth::now_ms()),
            openapi: std::sync::OnceLock::new(),
        });
        ApiState {
            registry,
            broker,
            config,
            shared,
            thing: None,
        }
    }

    /// The API with the thing-model routes served by `engine`.
    pub fn with_thing(mut self, engine: ThingEngine) -> ApiState {
        self.thing = Some(engine);
        self
    }

    /// The thing-model runtime, when attached.
    pub fn thing(&self) -> Option<&ThingEngine> {
        self.thing.as_ref()
    }

    /// The thing-model runtime, or `ServiceUnavailable`.
    pub(crate) fn engine(&self) -> ApiResult<&ThingEngine> {
        self.thing.as_ref().ok_or(ApiError::ThingUnavailable)
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<dyn RegistryStore> {
        &self.registry
    }

    /// The broker.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    /// Drops expired nonces, tokens and jobs and idle rate-limiter keys, at most
    /// once per `housekeeping_interval`, on whichever request comes first.
    pub(crate) fn housekeeping(&self) {
        let now = auth::now_ms();
        let interval =
            i64::try_from(self.config.housekeeping_interval.as_millis()).unwrap_or(i64::MAX);
        let last = self.shared.last_housekeeping_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) < interval
            || self
                .shared
                .last_housekeeping_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.shared.replay.expire(now);
        self.shared.throttle.retain_recent();
        let ttl = i64::try_from(self.config.job_ttl.as_millis()).unwrap_or(i64::MAX);
        self.shared.jobs.expire(now.saturating_sub(ttl));
    }

    /// The caller's product `product_key`; another account's is `ProductNotFound`.
    pub(crate) async fn owned_product(
        &self,
        caller: &Caller,
        product_key: &str,
    ) -> ApiResult<Product> {
        match self.registry.get_product(product_key).await? {
            Some(p) if p.account_id == caller.account_id => Ok(p),
            _ => Err(lode_registry::RegistryError::ProductNotFound(product_key.to_owned()).into()),
        }
    }
}

/// The management API's routes, ready to merge into the server's router.
pub fn router(state: ApiState) -> Router {
    let limit = state.config.max_body_bytes;
    routes::build(state)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(request_id))
}

fn new_request_id() -> String {
    let mut b = [0u8; 12];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Outermost middleware: names every response with a request id and turns
/// pending errors (and axum's own 405s) into the JSON error body.
async fn request_id(req: Request, next: Next) -> Response {
    let id = new_request_id();
    let mut resp = next.run(req).await;
    let pending = resp.extensions_mut().remove::<PendingError>().or_else(|| {
        (resp.status() == StatusCode::METHOD_NOT_ALLOWED).then(|| PendingError {
            code: "MethodNotAllowed",
            message: ApiError::MethodNotAllowed.to_string(),
            details: None,
        })
    });
    if let Some(p) = pending {
        let status = resp.status();
        let body = ErrorBody {
            code: p.code.to_owned(),
            message: p.message,
            request_id: id.clone(),
            errors: p.details,
        };
        let mut json = (status, axum::Json(body)).into_response();
        // Keep headers such as Allow on a 405.
        for (name, value) in resp.headers() {
            if name != axum::http::header::CONTENT_TYPE
                && name != axum::http::header::CONTENT_LENGTH
            {
                json.headers_mut().insert(name.clone(), value.clone());
            }
        }
        resp = json;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}
