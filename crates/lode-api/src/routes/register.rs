//! Alink HTTPS dynamic registration (`POST /auth/register/device`, protocol
//! reference section 5.1): a pre-registered device of a product with dynamic
//! registration on obtains its DeviceSecret once, proving it knows the
//! ProductSecret.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use lode_alink::RegisterRequest;
use lode_registry::{DeviceState, RegistryError};

use crate::ApiState;
use crate::dto::{RegisterData, RegisterReply};

/// Why a registration was refused; the number is both the HTTP status and the
/// `code` of the reply.
#[derive(Debug, thiserror::Error)]
enum RegisterError {
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("signature check failed")]
    BadSign,
    #[error("dynamic registration is off for product {0}")]
    Disabled(String),
    #[error("device {0} is disabled")]
    DeviceDisabled(String),
    #[error("product {0} does not exist")]
    ProductNotFound(String),
    #[error("device {0} does not exist; it must be registered in advance")]
    DeviceNotFound(String),
    #[error("device {0} was already registered or has already connected")]
    AlreadyRegistered(String),
    #[error("internal error")]
    Internal,
}

impl RegisterError {
    fn status(&self) -> StatusCode {
        match self {
            RegisterError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RegisterError::BadSign => StatusCode::UNAUTHORIZED,
            RegisterError::Disabled(_) | RegisterError::DeviceDisabled(_) => StatusCode::FORBIDDEN,
            RegisterError::ProductNotFound(_) | RegisterError::DeviceNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            RegisterError::AlreadyRegistered(_) => StatusCode::CONFLICT,
            RegisterError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for RegisterError {
    fn into_response(self) -> Response {
        let status = self.status();
        let reply = RegisterReply {
            code: status.as_u16(),
            data: None,
            message: self.to_string(),
        };
        (status, Json(reply)).into_response()
    }
}

impl From<lode_registry::RegistryError> for RegisterError {
    fn from(e: lode_registry::RegistryError) -> Self {
        tracing::error!(error = %e, "dynamic registration: registry failure");
        RegisterError::Internal
    }
}

/// Dynamic registration over HTTPS. Form body
/// `productKey=..&deviceName=..&random=..&sign=..&signMethod=hmacsha256`, where
/// `sign = hex(HMAC-SHA256(ProductSecret, "deviceName"+dn+"productKey"+pk+"random"+random))`.
#[utoipa::path(post, path = "/auth/register/device", tag = "deviceAuth", security(()),
    request_body(content = String, content_type = "application/x-www-form-urlencoded",
        description = "productKey, deviceName, random, sign, signMethod=hmacsha256"),
    responses(
        (status = 200, body = RegisterReply, description = r#"{"code":200,"data":{"productKey","deviceName","deviceSecret"},"message":"success"}"#),
        (status = 400, body = RegisterReply, description = "Malformed form"),
        (status = 401, body = RegisterReply, description = "Signature check failed"),
        (status = 403, body = RegisterReply, description = "Dynamic registration off for the product, or device disabled"),
        (status = 404, body = RegisterReply, description = "Unknown product or device"),
        (status = 409, body = RegisterReply, description = "Device already registered or activated"),
    ))]
pub(crate) async fn register_device(State(s): State<ApiState>, body: Bytes) -> Response {
    match register(&s, &body).await {
        Ok(data) => Json(RegisterReply {
            code: 200,
            data: Some(data),
            message: "success".to_owned(),
        })
        .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn register(s: &ApiState, body: &[u8]) -> Result<RegisterData, RegisterError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| RegisterError::BadRequest("body is not UTF-8".to_owned()))?;
    let req =
        RegisterRequest::parse_form(text).map_err(|e| RegisterError::BadRequest(e.to_string()))?;
    let pk = req.product_key.as_str();
    let dn = req.device_name.as_str();
    let product = s
        .registry
        .get_product(pk)
        .await?
        .ok_or_else(|| RegisterError::ProductNotFound(pk.to_owned()))?;
    if !product.dynamic_registration {
        return Err(RegisterError::Disabled(pk.to_owned()));
    }
    if !req.verify(&product.product_secret) {
        return Err(RegisterError::BadSign);
    }
    let device = s
        .registry
        .get_device(pk, dn)
        .await?
        .ok_or_else(|| RegisterError::DeviceNotFound(format!("{pk}/{dn}")))?;
    if device.state == DeviceState::Disabled {
        return Err(RegisterError::DeviceDisabled(format!("{pk}/{dn}")));
    }
    // Atomic in the registry: of two concurrent requests, one wins.
    let device = match s.registry.mark_dynamically_registered(pk, dn).await {
        Ok(d) => d,
        Err(RegistryError::DeviceAlreadyRegistered(id)) => {
            return Err(RegisterError::AlreadyRegistered(id));
        }
        Err(RegistryError::DeviceNotFound(id)) => return Err(RegisterError::DeviceNotFound(id)),
        Err(e) => return Err(e.into()),
    };
    Ok(RegisterData {
        product_key: device.product_key,
        device_name: device.device_name,
        device_secret: device.device_secret,
    })
}
