//! OTA: firmware packages, signed downloads, upgrade jobs and per-device progress.
//!
//! The OTA runtime ([`Ota`]) is installed by the server as a request extension; without
//! it these routes answer 503. Firmware is uploaded as the raw request body (up to
//! [`UPLOAD_LIMIT`] bytes, the signature covering its hash like any body) with its
//! metadata in the query string.

use axum::Json;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use lode_ota::{
    FirmwareUpload, FirmwareView, JobDeviceView, JobSpec, JobStats, JobView, ModuleVersionView,
    Ota, OtaError,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};

/// Largest firmware upload (the body limit of the upload route).
pub(crate) const UPLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// Path of the firmware upload route.
const FIRMWARE_PATH: &str = "/api/v1/ota/firmware";

/// The body limit of a signed request to `path`, when it is not the API's default.
pub(crate) fn body_limit(method: &axum::http::Method, path: &str) -> Option<usize> {
    (method == axum::http::Method::POST && path == FIRMWARE_PATH).then_some(UPLOAD_LIMIT)
}

/// The routes of this module, merged into the signed API.
pub(crate) fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(upload_firmware, list_firmware))
        .routes(routes!(get_firmware, delete_firmware))
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(job_devices))
        .routes(routes!(job_stats))
        .routes(routes!(module_versions))
}

/// The running OTA service, installed by the server as a request extension.
pub(crate) struct Service(Ota);

impl<S: Send + Sync> FromRequestParts<S> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Ota>()
            .cloned()
            .map(Service)
            .ok_or_else(|| ApiError::Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: "ServiceUnavailable",
                message: "OTA is not enabled on this server".into(),
            })
    }
}

impl From<OtaError> for ApiError {
    fn from(e: OtaError) -> ApiError {
        let message = e.to_string();
        let (status, code) = match e {
            OtaError::Registry(r) => return ApiError::Registry(r),
            OtaError::InvalidParameter { field, reason } => {
                return ApiError::invalid(field, reason);
            }
            OtaError::Storage(io) => return ApiError::Internal(io.to_string()),
            OtaError::FirmwareNotFound(_) => (StatusCode::NOT_FOUND, "FirmwareNotFound"),
            OtaError::JobNotFound(_) => (StatusCode::NOT_FOUND, "OtaJobNotFound"),
            OtaError::InvalidJobState { .. } => (StatusCode::CONFLICT, "InvalidJobState"),
            OtaError::Groups(_) => (StatusCode::BAD_REQUEST, "GroupLookupFailed"),
        };
        ApiError::Refused {
            status,
            code,
            message,
        }
    }
}

/// Metadata of an uploaded firmware.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadQuery {
    /// The product the firmware is for.
    product_key: String,
    /// Its version (1…64 printable characters).
    version: String,
    /// The device module (`default` when absent).
    module: Option<String>,
    /// A signature of the package, passed to devices as `digestsign`.
    signature: Option<String>,
    /// How `signature` was made.
    sign_method: Option<String>,
    description: Option<String>,
}

/// Filter of the firmware list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct FirmwareFilter {
    product_key: Option<String>,
}

/// A firmware with a signed download URL.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FirmwareDto {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    firmware: FirmwareView,
    /// Valid for 24 hours.
    download_url: String,
}

/// A list of firmware.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FirmwareList {
    #[schema(value_type = Vec<Object>)]
    items: Vec<FirmwareView>,
}

/// A list of jobs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobList {
    #[schema(value_type = Vec<Object>)]
    items: Vec<JobView>,
}

/// The devices of a job.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobDeviceList {
    #[schema(value_type = Vec<Object>)]
    items: Vec<JobDeviceView>,
}

/// The module versions a device reported.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ModuleList {
    #[schema(value_type = Vec<Object>)]
    items: Vec<ModuleVersionView>,
}

/// Uploads a firmware: the raw body is the package; MD5 and SHA-256 are computed here.
#[utoipa::path(post, path = "/api/v1/ota/firmware", tag = "ota", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "The firmware package, up to 64 MB"),
    responses(
        (status = 201, body = FirmwareDto),
        (status = 400, body = ErrorBody, description = "InvalidParameter (version, module, body: empty; a version the product already has)"),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
        (status = 413, body = ErrorBody, description = "PayloadTooLarge"),
    ))]
pub(crate) async fn upload_firmware(
    Service(ota): Service,
    caller: Caller,
    ApiQuery(q): ApiQuery<UploadQuery>,
    body: Body,
) -> ApiResult<(StatusCode, Json<FirmwareDto>)> {
    let bytes = axum::body::to_bytes(body, UPLOAD_LIMIT)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(UPLOAD_LIMIT))?;
    let firmware = ota
        .upload_firmware(
            &caller.account_id,
            FirmwareUpload {
                product_key: q.product_key,
                module: q.module,
                version: q.version,
                signature: q.signature,
                sign_method: q.sign_method,
                description: q.description,
            },
            bytes,
        )
        .await?;
    let download_url = ota.download_url(&firmware.id);
    Ok((
        StatusCode::CREATED,
        Json(FirmwareDto {
            firmware,
            download_url,
        }),
    ))
}

/// Lists the caller's firmware, optionally of one product.
#[utoipa::path(get, path = "/api/v1/ota/firmware", tag = "ota", params(FirmwareFilter),
    responses((status = 200, body = FirmwareList)))]
pub(crate) async fn list_firmware(
    Service(ota): Service,
    caller: Caller,
    ApiQuery(q): ApiQuery<FirmwareFilter>,
) -> ApiResult<Json<FirmwareList>> {
    let items = ota
        .list_firmware(&caller.account_id, q.product_key.as_deref())
        .await?;
    Ok(Json(FirmwareList { items }))
}

/// One firmware, with a fresh signed download URL.
#[utoipa::path(get, path = "/api/v1/ota/firmware/{firmwareId}", tag = "ota",
    params(("firmwareId" = String, Path)),
    responses(
        (status = 200, body = FirmwareDto),
        (status = 404, body = ErrorBody, description = "FirmwareNotFound"),
    ))]
pub(crate) async fn get_firmware(
    Service(ota): Service,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<FirmwareDto>> {
    let firmware = ota.get_firmware(&caller.account_id, &id).await?;
    let download_url = ota.download_url(&firmware.id);
    Ok(Json(FirmwareDto {
        firmware,
        download_url,
    }))
}

/// Deletes a firmware that no job uses.
#[utoipa::path(delete, path = "/api/v1/ota/firmware/{firmwareId}", tag = "ota",
    params(("firmwareId" = String, Path)),
    responses(
        (status = 204),
        (status = 400, body = ErrorBody, description = "InvalidParameter (firmware used by a job)"),
        (status = 404, body = ErrorBody, description = "FirmwareNotFound"),
    ))]
pub(crate) async fn delete_firmware(
    Service(ota): Service,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    ota.delete_firmware(&caller.account_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates an upgrade job.
#[utoipa::path(post, path = "/api/v1/ota/jobs", tag = "ota",
    request_body(content = Object, description = "{firmwareId, kind: static|dynamic, deviceNames, \
        sourceVersions, groupId, startAt (ms), ratePerMinute, maxRetries, timeoutSecs, \
        failureThreshold (0…1), minSample, signMethod: Md5|SHA256}"),
    responses(
        (status = 201, body = Object, description = "The job with its statistics"),
        (status = 400, body = ErrorBody, description = "InvalidParameter, GroupLookupFailed"),
        (status = 404, body = ErrorBody, description = "FirmwareNotFound, DeviceNotFound"),
    ))]
pub(crate) async fn create_job(
    Service(ota): Service,
    caller: Caller,
    ApiJson(spec): ApiJson<JobSpec>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let job = ota.create_job(&caller.account_id, spec).await?;
    Ok((StatusCode::CREATED, Json(job)))
}

/// Lists the caller's jobs.
#[utoipa::path(get, path = "/api/v1/ota/jobs", tag = "ota",
    responses((status = 200, body = JobList)))]
pub(crate) async fn list_jobs(Service(ota): Service, caller: Caller) -> ApiResult<Json<JobList>> {
    let items = ota.list_jobs(&caller.account_id).await?;
    Ok(Json(JobList { items }))
}

/// One job with its state and statistics.
#[utoipa::path(get, path = "/api/v1/ota/jobs/{jobId}", tag = "ota",
    params(("jobId" = String, Path)),
    responses(
        (status = 200, body = Object),
        (status = 404, body = ErrorBody, description = "OtaJobNotFound"),
    ))]
pub(crate) async fn get_job(
    Service(ota): Service,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(ota.get_job(&caller.account_id, &id).await?))
}

/// Cancels a scheduled or running job; devices not finished become `canceled`.
#[utoipa::path(post, path = "/api/v1/ota/jobs/{jobId}/cancel", tag = "ota",
    params(("jobId" = String, Path)),
    responses(
        (status = 200, body = Object),
        (status = 404, body = ErrorBody, description = "OtaJobNotFound"),
        (status = 409, body = ErrorBody, description = "InvalidJobState (already finished)"),
    ))]
pub(crate) async fn cancel_job(
    Service(ota): Service,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobView>> {
    Ok(Json(ota.cancel_job(&caller.account_id, &id).await?))
}

/// The devices of a job: status, attempts, last step, detail.
#[utoipa::path(get, path = "/api/v1/ota/jobs/{jobId}/devices", tag = "ota",
    params(("jobId" = String, Path)),
    responses(
        (status = 200, body = JobDeviceList),
        (status = 404, body = ErrorBody, description = "OtaJobNotFound"),
    ))]
pub(crate) async fn job_devices(
    Service(ota): Service,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobDeviceList>> {
    let items = ota.job_devices(&caller.account_id, &id).await?;
    Ok(Json(JobDeviceList { items }))
}

/// Counts of a job's devices by status.
#[utoipa::path(get, path = "/api/v1/ota/jobs/{jobId}/stats", tag = "ota",
    params(("jobId" = String, Path)),
    responses(
        (status = 200, body = Object),
        (status = 404, body = ErrorBody, description = "OtaJobNotFound"),
    ))]
pub(crate) async fn job_stats(
    Service(ota): Service,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<JobStats>> {
    Ok(Json(ota.get_job(&caller.account_id, &id).await?.stats))
}

/// The module versions a device reported on `/ota/device/inform`.
#[utoipa::path(get, path = "/api/v1/products/{productKey}/devices/{deviceName}/ota/modules",
    tag = "ota",
    params(("productKey" = String, Path), ("deviceName" = String, Path)),
    responses(
        (status = 200, body = ModuleList),
        (status = 404, body = ErrorBody, description = "ProductNotFound"),
    ))]
pub(crate) async fn module_versions(
    Service(ota): Service,
    caller: Caller,
    ApiPath((product_key, device_name)): ApiPath<(String, String)>,
) -> ApiResult<Json<ModuleList>> {
    let items = ota
        .module_versions(&caller.account_id, &product_key, &device_name)
        .await?;
    Ok(Json(ModuleList { items }))
}
