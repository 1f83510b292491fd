//! The rules engine: rules, their counters and traces, tests of a rule on a sample, and
//! the destinations rules forward to. Every object belongs to the caller's account.

use axum::Json;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use lode_forward::{
    DestinationSpec, DestinationView, ForwardError, Forwarder, RuleCounters, RuleSpec, RuleView,
    TestResult, Trace,
};
use lode_registry::RegistryError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};

/// The running rules engine, installed by the server as a request extension.
pub(crate) struct Rules(Forwarder);

impl<S: Send + Sync> FromRequestParts<S> for Rules {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Forwarder>()
            .cloned()
            .map(Rules)
            .ok_or_else(|| ApiError::Internal("the rules engine is not running".into()))
    }
}

impl From<ForwardError> for ApiError {
    fn from(e: ForwardError) -> ApiError {
        match e {
            ForwardError::Registry(r) => ApiError::Registry(r),
            ForwardError::RuleNotFound(id) => ApiError::Registry(RegistryError::RuleNotFound(id)),
            ForwardError::DestinationNotFound(id) => {
                ApiError::Registry(RegistryError::DestinationNotFound(id))
            }
            ForwardError::InvalidSql(p) => ApiError::invalid("sql", p.to_string()),
            ForwardError::UnsupportedSource(m) => ApiError::invalid("sql", m),
            e @ (ForwardError::InvalidAction { .. } | ForwardError::TooManyActions { .. }) => {
                ApiError::invalid("actions", e.to_string())
            }
            e @ (ForwardError::InvalidDestination(_) | ForwardError::DestinationCheckFailed(_)) => {
                ApiError::invalid("config", e.to_string())
            }
            e => ApiError::Internal(e.to_string()),
        }
    }
}

/// A list of rules.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RuleList {
    #[schema(value_type = Vec<Object>)]
    items: Vec<RuleView>,
}

/// A list of destinations.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DestinationList {
    #[schema(value_type = Vec<Object>)]
    items: Vec<DestinationView>,
}

/// A sample message to test a rule on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RuleTest {
    /// The rule's SQL.
    sql: String,
    /// The topic the sample was published on.
    topic: String,
    /// The payload as text (usually JSON).
    #[serde(default)]
    payload: Option<String>,
    /// The payload as base64, for binary samples.
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    product_key: Option<String>,
    #[serde(default)]
    device_name: Option<String>,
}

/// How many messages to trace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TraceRequest {
    /// The next `count` messages matching the rule's FROM clause.
    count: u32,
}

/// Creates a rule; it runs at once when `enabled`.
#[utoipa::path(post, path = "/api/v1/rules", tag = "rules",
    request_body(content = Object, description = "{name, sql, enabled, actions: [{type: republish|webhook, …}], errorAction}"),
    responses(
        (status = 201, body = Object, description = "The rule, with its id"),
        (status = 400, body = ErrorBody, description = "InvalidParameter (sql, actions), QuotaExceeded.RulesPerAccount"),
    ))]
pub(crate) async fn create_rule(
    Rules(fw): Rules,
    caller: Caller,
    ApiJson(spec): ApiJson<RuleSpec>,
) -> ApiResult<(StatusCode, Json<RuleView>)> {
    let rule = fw.create_rule(&caller.account_id, spec).await?;
    Ok((StatusCode::CREATED, Json(rule)))
}

/// Lists the caller's rules.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules",
    responses((status = 200, body = RuleList)))]
pub(crate) async fn list_rules(Rules(fw): Rules, caller: Caller) -> ApiResult<Json<RuleList>> {
    let items = fw.list_rules(&caller.account_id).await?;
    Ok(Json(RuleList { items }))
}

/// One rule.
#[utoipa::path(get, path = "/api/v1/rules/{ruleId}", tag = "rules",
    params(("ruleId" = String, Path)),
    responses(
        (status = 200, body = Object),
        (status = 404, body = ErrorBody, description = "RuleNotFound"),
    ))]
pub(crate) async fn get_rule(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RuleView>> {
    Ok(Json(fw.get_rule(&caller.account_id, &id).await?))
}

/// Replaces a rule; the running version changes at once.
#[utoipa::path(put, path = "/api/v1/rules/{ruleId}", tag = "rules",
    params(("ruleId" = String, Path)),
    request_body(content = Object, description = "As for creation"),
    responses(
        (status = 200, body = Object),
        (status = 400, body = ErrorBody, description = "InvalidParameter"),
        (status = 404, body = ErrorBody, description = "RuleNotFound"),
    ))]
pub(crate) async fn update_rule(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(spec): ApiJson<RuleSpec>,
) -> ApiResult<Json<RuleView>> {
    Ok(Json(fw.update_rule(&caller.account_id, &id, spec).await?))
}

/// Deletes a rule.
#[utoipa::path(delete, path = "/api/v1/rules/{ruleId}", tag = "rules",
    params(("ruleId" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "RuleNotFound"),
    ))]
pub(crate) async fn delete_rule(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    fw.delete_rule(&caller.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Enables a rule, without a restart.
#[utoipa::path(post, path = "/api/v1/rules/{ruleId}/enable", tag = "rules",
    params(("ruleId" = String, Path)),
    responses(
        (status = 200, body = Object),
        (status = 404, body = ErrorBody, description = "RuleNotFound"),
    ))]
pub(crate) async fn enable_rule(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RuleView>> {
    Ok(Json(fw.set_enabled(&caller.account_id, &id, true).await?))
}

/// Disables a rule, without a restart.
#[utoipa::path(post, path = "/api/v1/rules/{ruleId}/disable", tag = "rules",
    params(("ruleId" = String, Path)),
    responses(
        (status = 200, body = Object),
        (status = 404, body = ErrorBody, description = "RuleNotFound"),
    ))]
pub(crate) async fn disable_rule(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RuleView>> {
    Ok(Json(fw.set_enabled(&caller.account_id, &id, false).await?))
}

/// Tests a rule on a sample message without storing or enabling it: the output row, or
/// why the WHERE clause was not true.
#[utoipa::path(post, path = "/api/v1/rules/test", tag = "rules",
    request_body = RuleTest,
    responses(
        (status = 200, body = Object, description = "{outcome: row|filtered|topicMismatch, row, reason}"),
        (status = 400, body = ErrorBody, description = "InvalidParameter (sql, payloadBase64)"),
    ))]
pub(crate) async fn test_rule(
    _caller: Caller,
    ApiJson(t): ApiJson<RuleTest>,
) -> ApiResult<Json<TestResult>> {
    use base64::Engine as _;
    let payload = match (&t.payload, &t.payload_base64) {
        (_, Some(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .map_err(|e| ApiError::invalid("payloadBase64", e.to_string()))?,
        (Some(p), None) => p.as_bytes().to_vec(),
        (None, None) => Vec::new(),
    };
    let (pk, dn) = sample_device(&t);
    let result = lode_forward::test_rule(&t.sql, &t.topic, &payload, &pk, &dn)?;
    Ok(Json(result))
}

/// The sample's device: as given, else read from a `/{pk}/{dn}/…` or `/sys/{pk}/{dn}/…`
/// topic.
fn sample_device(t: &RuleTest) -> (String, String) {
    let mut levels = t.topic.split('/').skip(1);
    let mut first = levels.next();
    if first == Some("sys") {
        first = levels.next();
    }
    let second = levels.next();
    (
        t.product_key
            .clone()
            .unwrap_or_else(|| first.unwrap_or_default().to_owned()),
        t.device_name
            .clone()
            .unwrap_or_else(|| second.unwrap_or_default().to_owned()),
    )
}

/// Counters of a rule and its actions since the server started.
#[utoipa::path(get, path = "/api/v1/rules/{ruleId}/counters", tag = "rules",
    params(("ruleId" = String, Path)),
    responses(
        (status = 200, body = Object, description = "{matched, passed, filtered, throttled, errors, lastError, actions: [{forwarded, failed, dropped, retried, lastError}], errorAction}"),
        (status = 404, body = ErrorBody, description = "RuleNotFound"),
    ))]
pub(crate) async fn rule_counters(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<RuleCounters>> {
    Ok(Json(fw.rule_counters(&caller.account_id, &id).await?))
}

/// Starts tracing the next messages through a rule (clearing the previous trace).
#[utoipa::path(post, path = "/api/v1/rules/{ruleId}/trace", tag = "rules",
    params(("ruleId" = String, Path)),
    request_body = TraceRequest,
    responses(
        (status = 204, description = "Tracing"),
        (status = 404, body = ErrorBody, description = "RuleNotFound"),
    ))]
pub(crate) async fn start_trace(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TraceRequest>,
) -> ApiResult<StatusCode> {
    fw.start_trace(&caller.account_id, &id, body.count).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The messages traced so far: topic, payload, and the row or why there was none.
#[utoipa::path(get, path = "/api/v1/rules/{ruleId}/trace", tag = "rules",
    params(("ruleId" = String, Path)),
    responses(
        (status = 200, body = Object, description = "{remaining, entries: [{time, messageId, topic, payload, outcome, row, reason}]}"),
        (status = 404, body = ErrorBody, description = "RuleNotFound"),
    ))]
pub(crate) async fn get_trace(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Trace>> {
    Ok(Json(fw.trace(&caller.account_id, &id).await?))
}

/// Creates a destination, after checking its settings and that it answers.
#[utoipa::path(post, path = "/api/v1/destinations", tag = "rules",
    request_body(content = Object, description = "{name, kind: http, config: {url, headers, timeoutMs}}"),
    responses(
        (status = 201, body = Object),
        (status = 400, body = ErrorBody, description = "InvalidParameter (config)"),
        (status = 409, body = ErrorBody, description = "DestinationAlreadyExists"),
    ))]
pub(crate) async fn create_destination(
    Rules(fw): Rules,
    caller: Caller,
    ApiJson(spec): ApiJson<DestinationSpec>,
) -> ApiResult<(StatusCode, Json<DestinationView>)> {
    let d = fw.create_destination(&caller.account_id, spec).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// Lists the caller's destinations.
#[utoipa::path(get, path = "/api/v1/destinations", tag = "rules",
    responses((status = 200, body = DestinationList)))]
pub(crate) async fn list_destinations(
    Rules(fw): Rules,
    caller: Caller,
) -> ApiResult<Json<DestinationList>> {
    let items = fw.list_destinations(&caller.account_id).await?;
    Ok(Json(DestinationList { items }))
}

/// One destination.
#[utoipa::path(get, path = "/api/v1/destinations/{destinationId}", tag = "rules",
    params(("destinationId" = String, Path)),
    responses(
        (status = 200, body = Object),
        (status = 404, body = ErrorBody, description = "DestinationNotFound"),
    ))]
pub(crate) async fn get_destination(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<DestinationView>> {
    Ok(Json(fw.get_destination(&caller.account_id, &id).await?))
}

/// Replaces a destination after checking it; buffered messages use the new settings.
#[utoipa::path(put, path = "/api/v1/destinations/{destinationId}", tag = "rules",
    params(("destinationId" = String, Path)),
    request_body(content = Object, description = "As for creation"),
    responses(
        (status = 200, body = Object),
        (status = 400, body = ErrorBody, description = "InvalidParameter (config)"),
        (status = 404, body = ErrorBody, description = "DestinationNotFound"),
    ))]
pub(crate) async fn update_destination(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(spec): ApiJson<DestinationSpec>,
) -> ApiResult<Json<DestinationView>> {
    Ok(Json(
        fw.update_destination(&caller.account_id, &id, spec).await?,
    ))
}

/// Deletes a destination.
#[utoipa::path(delete, path = "/api/v1/destinations/{destinationId}", tag = "rules",
    params(("destinationId" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody, description = "DestinationNotFound"),
    ))]
pub(crate) async fn delete_destination(
    Rules(fw): Rules,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    fw.delete_destination(&caller.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(topic: &str) -> RuleTest {
        RuleTest {
            sql: String::new(),
            topic: topic.into(),
            payload: None,
            payload_base64: None,
            product_key: None,
            device_name: None,
        }
    }

    #[test]
    fn the_sample_device_comes_from_the_topic() {
        assert_eq!(
            sample_device(&sample("/pk/dn/user/up")),
            ("pk".into(), "dn".into())
        );
        assert_eq!(
            sample_device(&sample("/sys/pk/dn/thing/event/property/post")),
            ("pk".into(), "dn".into())
        );
        let mut t = sample("x");
        t.device_name = Some("d".into());
        assert_eq!(sample_device(&t), (String::new(), "d".into()));
    }

    #[test]
    fn forwarding_errors_map_to_api_codes() {
        let e: ApiError = ForwardError::RuleNotFound("r1".into()).into();
        assert_eq!(e.status_and_code(), (StatusCode::NOT_FOUND, "RuleNotFound"));
        let e: ApiError = ForwardError::TooManyActions { len: 11, limit: 10 }.into();
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, "InvalidParameter")
        );
        let e: ApiError = ForwardError::Registry(RegistryError::RulesPerAccountExceeded {
            account_id: "a".into(),
            limit: 1,
        })
        .into();
        assert_eq!(
            e.status_and_code(),
            (StatusCode::BAD_REQUEST, "QuotaExceeded.RulesPerAccount")
        );
    }
}
