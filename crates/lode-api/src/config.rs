//! `ApiConfig`: every limit and window the management API enforces, in one place.

use std::time::Duration;

/// Requests per second allowed to one account and to one client IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Qps {
    /// Per account (0: unlimited).
    pub per_account: u32,
    /// Per client IP address (0: unlimited).
    pub per_ip: u32,
}

/// Throttling of the management API by operation class (platform limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// `POST /api/v1/pub`.
    pub publish: Qps,
    /// `POST /api/v1/products/{productKey}/broadcast`.
    pub broadcast: Qps,
    /// Service calls to devices (`POST .../devices/{deviceName}/services/{identifier}`)
    /// and raw RRPC (`POST /api/v1/rrpc`).
    pub rrpc: Qps,
    /// Every other call, including unsigned ones (dynamic registration, OpenAPI document).
    pub other: Qps,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            publish: Qps {
                per_account: 1_600,
                per_ip: 100,
            },
            broadcast: Qps {
                per_account: 1,
                per_ip: 100,
            },
            rrpc: Qps {
                per_account: 1_000,
                per_ip: 100,
            },
            other: Qps {
                per_account: 50,
                per_ip: 100,
            },
        }
    }
}

/// Settings of the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// How far a signed request's timestamp may be from the server's clock
    /// (either way); nonces are remembered for twice this long.
    pub timestamp_window: Duration,
    /// Lifetime of a bearer token from `POST /api/v1/tokens`.
    pub token_ttl: Duration,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest payload of a cloud-side publish (the MQTT message size limit).
    pub max_publish_bytes: usize,
    /// How long a finished batch-registration job stays readable.
    pub job_ttl: Duration,
    /// How often expired nonces, tokens, jobs and idle rate-limiter keys are dropped.
    pub housekeeping_interval: Duration,
    /// Throttling quotas.
    pub throttle: ThrottleConfig,
    /// Most subscribers a broadcast topic may have for a broadcast to be sent.
    pub broadcast_subscribers_max: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            timestamp_window: Duration::from_secs(5 * 60),
            token_ttl: Duration::from_secs(12 * 3600),
            max_body_bytes: 2 * 1024 * 1024,
            max_publish_bytes: 256 * 1024,
            job_ttl: Duration::from_secs(24 * 3600),
            housekeeping_interval: Duration::from_secs(60),
            throttle: ThrottleConfig::default(),
            broadcast_subscribers_max: 1_000,
        }
    }
}
