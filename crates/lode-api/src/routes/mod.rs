//! The route table and the OpenAPI document built from it.

pub(crate) mod devconfig;
pub(crate) mod devices;
pub(crate) mod groups;
pub(crate) mod keys;
pub(crate) mod messaging;
pub(crate) mod ota;
pub(crate) mod products;
pub(crate) mod register;
pub(crate) mod rrpc;
pub(crate) mod rules;
pub(crate) mod shadow;
pub(crate) mod thing;
pub(crate) mod topology;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::auth::{authenticate, throttle_ip};
use crate::error::{ApiError, ErrorBody};

/// Path of the OpenAPI document.
pub(crate) const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Lodestone management API",
        description = "Signed with an AccessKey: headers X-Lode-Access-Key-Id, X-Lode-Timestamp \
            (unix ms, within 5 minutes), X-Lode-Nonce (single use) and X-Lode-Signature = \
            hex(HMAC-SHA256(secret, METHOD\\nPATH\\nSORTED_QUERY\\nHEX(SHA256(body))\\nTIMESTAMP\\nNONCE)); \
            or Authorization: Bearer <token> from POST /api/v1/tokens. Every error is \
            {code, message, requestId}. Authentication errors: MissingSignature (401), \
            AccessKeyNotFound (401), InvalidToken (401), RequestExpired (403), RequestReplayed (403), \
            AccessKeyDisabled (403), SignatureDoesNotMatch (403); Throttling (429)."
    ),
    paths(
        devices::enable_device,
        devices::disable_device,
        devices::reset_device_secret,
        openapi_json,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security),
    security(("accessKeySignature" = []), ("bearerToken" = [])),
    tags(
        (name = "accessKeys", description = "Access keys and bearer tokens of the caller's account"),
        (name = "products", description = "Products, product tags, topic categories"),
        (name = "devices", description = "Devices, batch registration jobs, device tags, status, lifecycle log"),
        (name = "messaging", description = "Cloud-side publish and broadcast"),
        (name = "thingModel", description = "Thing model and data parsing script of products; \
            property set, service calls, latest values, history, desired values and message log of devices. \
            Times are ms since the Unix epoch. Without the thing-model runtime these answer 503 ServiceUnavailable"),
        (name = "rules", description = "Rules engine: rules, tests on samples, counters, traces, and forwarding destinations"),
        (name = "groups", description = "Device groups with subgroups, group members, and tag search over products, devices and groups"),
        (name = "shadow", description = "Device shadows: reported and desired state, versions, deltas"),
        (name = "ota", description = "OTA: firmware packages, signed downloads, upgrade jobs and per-device progress"),
        (name = "remoteConfig", description = "Remote configuration files of products: versions, push, signed downloads"),
        (name = "gateways", description = "Gateways and sub-devices: topology, sub-device sessions"),
        (name = "rrpc", description = "Synchronous cloud-to-device requests (RRPC) on system and custom topics"),
        (name = "deviceAuth", description = "Device-facing endpoints (not AccessKey-signed)"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "accessKeySignature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Lode-Signature",
                "HMAC-SHA256 request signature, with X-Lode-Access-Key-Id, X-Lode-Timestamp and X-Lode-Nonce",
            ))),
        );
        components.add_security_scheme(
            "bearerToken",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "deviceAuth", security(()),
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub(crate) async fn openapi_json(State(s): State<ApiState>) -> Response {
    let doc = s.shared.openapi.get().cloned().unwrap_or_default();
    ([(CONTENT_TYPE, "application/json")], doc).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Documents the authentication and throttling errors on every signed operation.
fn add_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    const COMMON: [(&str, &str); 3] = [
        ("401", "MissingSignature, AccessKeyNotFound, InvalidToken"),
        (
            "403",
            "RequestExpired, RequestReplayed, AccessKeyDisabled, SignatureDoesNotMatch",
        ),
        ("429", "Throttling"),
    ];
    for (path, item) in doc.paths.paths.iter_mut() {
        // Every response object needs a description (OpenAPI 3.1).
        let all = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in all.into_iter().flatten() {
            for (status, resp) in op.responses.responses.iter_mut() {
                if let RefOr::T(resp) = resp
                    && resp.description.is_empty()
                {
                    resp.description = status
                        .parse::<u16>()
                        .ok()
                        .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                        .and_then(|s| s.canonical_reason())
                        .unwrap_or("Success")
                        .to_owned();
                }
            }
        }
        if !path.starts_with("/api/v1/") || path == OPENAPI_PATH {
            continue;
        }
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            for (status, codes) in COMMON {
                match op.responses.responses.get_mut(status) {
                    Some(RefOr::T(resp)) => {
                        resp.description = format!("{}; {codes}", resp.description);
                    }
                    Some(RefOr::Ref(_)) => {}
                    None => {
                        let resp = ResponseBuilder::new()
                            .description(codes)
                            .content(
                                "application/json",
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                                    .build(),
                            )
                            .build();
                        op.responses
                            .responses
                            .insert(status.to_owned(), RefOr::T(resp));
                    }
                }
            }
        }
    }
}

pub(crate) fn build(state: ApiState) -> Router {
    let (signed, mut doc) = OpenApiRouter::<ApiState>::with_openapi(ApiDoc::openapi())
        .routes(routes!(keys::create_access_key, keys::list_access_keys))
        .routes(routes!(keys::update_access_key, keys::delete_access_key))
        .routes(routes!(keys::create_token))
        .routes(routes!(products::create_product, products::list_products))
        .routes(routes!(
            products::get_product,
            products::update_product,
            products::delete_product
        ))
        .routes(routes!(
            products::put_product_tags,
            products::delete_product_tags
        ))
        .routes(routes!(products::list_topics, products::create_topic))
        .routes(routes!(products::update_topic, products::delete_topic))
        .routes(routes!(devices::create_device, devices::list_devices))
        .routes(routes!(devices::batch_register))
        .routes(routes!(devices::get_job))
        .routes(routes!(devices::get_device, devices::delete_device))
        .route(
            "/api/v1/products/{productKey}/devices/{deviceName}",
            post(devices::device_action),
        )
        .routes(routes!(
            devices::put_device_tags,
            devices::delete_device_tags
        ))
        .routes(routes!(devices::device_status))
        .routes(routes!(devices::device_events))
        .routes(routes!(messaging::publish))
        .routes(routes!(messaging::broadcast))
        .routes(routes!(messaging::device_broadcast))
        .merge(groups::routes())
        .merge(shadow::routes())
        .merge(ota::routes())
        .merge(devconfig::routes())
        .merge(topology::routes())
        .merge(rrpc::routes())
        .routes(routes!(thing::get_thing_model, thing::put_thing_model))
        .routes(routes!(thing::publish_thing_model))
        .routes(routes!(thing::get_script, thing::put_script))
        .routes(routes!(thing::publish_script))
        .routes(routes!(thing::test_script))
        .routes(routes!(thing::set_properties))
        .routes(routes!(thing::batch_set_properties))
        .routes(routes!(thing::invoke_service))
        .routes(routes!(thing::latest_properties))
        .routes(routes!(thing::property_history))
        .routes(routes!(thing::event_history))
        .routes(routes!(thing::service_calls))
        .routes(routes!(thing::service_call))
        .routes(routes!(thing::get_desired, thing::set_desired))
        .routes(routes!(thing::delete_desired))
        .routes(routes!(thing::device_log))
        .routes(routes!(rules::create_rule, rules::list_rules))
        .routes(routes!(rules::test_rule))
        .routes(routes!(
            rules::get_rule,
            rules::update_rule,
            rules::delete_rule
        ))
        .routes(routes!(rules::enable_rule))
        .routes(routes!(rules::disable_rule))
        .routes(routes!(rules::rule_counters))
        .routes(routes!(rules::start_trace, rules::get_trace))
        .routes(routes!(rules::create_destination, rules::list_destinations))
        .routes(routes!(
            rules::get_destination,
            rules::update_destination,
            rules::delete_destination
        ))
        .layer(from_fn_with_state(state.clone(), authenticate))
        .split_for_parts();

    let (public, public_doc) = OpenApiRouter::<ApiState>::new()
        .routes(routes!(register::register_device))
        .route(OPENAPI_PATH, axum::routing::get(openapi_json))
        .route("/api/v1/{*rest}", any(not_found))
        .layer(from_fn_with_state(state.clone(), throttle_ip))
        .split_for_parts();
    doc.merge(public_doc);
    add_common_errors(&mut doc);
    let json = doc.to_json().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot render the OpenAPI document");
        String::from("{}")
    });
    let _ = state.shared.openapi.set(json);

    signed.merge(public).with_state(state)
}
