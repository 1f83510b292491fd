//! Delivery of one job to its target: the broker (republish) or an HTTP destination.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lode_broker::{Broker, PublishError};
use lode_mqtt::QoS;

use crate::action::HttpDestination;
use crate::buffer::Job;

/// Header carrying the stable message id, so receivers can drop duplicates.
pub const MESSAGE_ID_HEADER: &str = "x-lode-message-id";
/// Header naming the rule that produced the message.
pub const RULE_ID_HEADER: &str = "x-lode-rule-id";

/// Why a delivery failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Worth retrying (connection refused, timeout, 5xx, 429).
    Transient(String),
    /// Will fail again (invalid topic, 4xx, destination missing).
    Permanent(String),
}

impl Failure {
    pub(crate) fn message(&self) -> &str {
        match self {
            Failure::Transient(m) | Failure::Permanent(m) => m,
        }
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The HTTP client shared by every webhook (connection pooling per host).
#[derive(Clone)]
pub(crate) struct Http {
    client: HttpsClient,
}

impl Http {
    pub(crate) fn new() -> Result<Http, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Http {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Sends one request; 2xx is success.
    pub(crate) async fn send(
        &self,
        dest: &HttpDestination,
        job: &Job,
        method: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Result<(), Failure> {
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|_| Failure::Permanent(format!("{method:?} is not an HTTP method")))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(dest.url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(MESSAGE_ID_HEADER, job.id.as_str())
            .header(RULE_ID_HEADER, job.rule.as_str());
        for (name, value) in dest
            .headers
            .iter()
            .chain(headers.iter().map(|(n, v)| (n, v)))
        {
            req = req.header(name.as_str(), value.as_str());
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|e| Failure::Permanent(format!("invalid request: {e}")))?;
        let sent = tokio::time::timeout(dest.timeout(), async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            // Read the body so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        })
        .await;
        match sent {
            Err(_) => Err(Failure::Transient(format!(
                "no answer within {} ms",
                dest.timeout().as_millis()
            ))),
            Ok(Err(e)) => Err(Failure::Transient(format!("request failed: {e}"))),
            Ok(Ok(status)) if status.is_success() => Ok(()),
            Ok(Ok(status))
                if status.is_server_error()
                    || status == hyper::StatusCode::TOO_MANY_REQUESTS
                    || status == hyper::StatusCode::REQUEST_TIMEOUT =>
            {
                Err(Failure::Transient(format!("HTTP status {status}")))
            }
            Ok(Ok(status)) => Err(Failure::Permanent(format!("HTTP status {status}"))),
        }
    }
}

/// Republishes a payload through the broker.
pub(crate) async fn republish(
    broker: &Broker,
    topic: &str,
    payload: &str,
    qos: u8,
) -> Result<(), Failure> {
    let qos = if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    match broker
        .publish(
            topic,
            Bytes::copy_from_slice(payload.as_bytes()),
            qos,
            false,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(PublishError::InvalidTopic(t)) => {
            Err(Failure::Permanent(format!("{t:?} is not a valid topic")))
        }
        Err(e) => Err(Failure::Transient(e.to_string())),
    }
}
