//! HTTP endpoints: liveness, readiness and Prometheus metrics. The management API is merged
//! into the same router later (see [`crate::Server::merge_routes`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use lode_broker::Broker;
use metrics_exporter_prometheus::PrometheusHandle;

/// What the built-in HTTP endpoints need.
#[derive(Clone)]
pub struct HttpState {
    /// The broker, for gauges.
    pub broker: Broker,
    /// True once every listener is up and storage is open; false again during shutdown.
    pub ready: Arc<AtomicBool>,
    /// Renders the metrics registry.
    pub prometheus: PrometheusHandle,
    /// HTTP and CoAP device access, for its counters.
    pub edge: lode_edge::Edge,
    /// The rules engine, for its counters.
    pub forward: lode_forward::Forwarder,
}

/// The router of the built-in endpoints: `GET /healthz`, `GET /readyz`, `GET /metrics`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    metrics::gauge!(crate::metrics::CLIENTS_CONNECTED).set(state.broker.connected_clients() as f64);
    state.prometheus.run_upkeep();
    let mut body = state.prometheus.render();
    state.broker.stats().render_prometheus(&mut body);
    state.edge.stats().render_prometheus(&mut body);
    state.forward.counters().render_prometheus(&mut body);
    crate::metrics::render_process(&mut body);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
