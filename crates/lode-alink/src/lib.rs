//! Alink device protocol logic for Alibaba-compatible device sign-in and authorization.
//!
//! Pure functions and plain data: no I/O, no clock, no async, no randomness source of its own.
//! The device-auth layer feeds it what arrived on the wire (username, clientId, password,
//! HTTPS form bodies, topics) plus what the registry knows (secrets, topic categories) and
//! acts on the answers. Section numbers refer to the Alink protocol reference.
//!
//! - [`ClientId`] and [`DeviceIdentity`]: the MQTT CONNECT of an Alink device (section 3).
//! - [`SignMethod`], [`mqtt_sign_content`], [`sign`], [`verify_hex`]: the password (3.3);
//!   [`register_sign_content`] and [`RegisterRequest`]: dynamic registration (5).
//! - [`DevicePermissions`]: which topics a device may publish and subscribe to (the rule table
//!   is in the [`acl`] module documentation).
//! - [`auto_subscriptions`]: the filters of server-side subscription for `_ss=1` (4).
//! - [`generate_product_key`] and friends: identifiers from caller-supplied random bytes.
//!
//! A typical MQTT sign-in with a DeviceSecret:
//!
//! ```
//! use lode_alink::{ClientId, DeviceIdentity, LoginKind, mqtt_sign_content, verify_signature};
//!
//! let id = DeviceIdentity::from_username("dev01&a1TestPK001").unwrap();
//! let cid = ClientId::parse(
//!     "a1TestPK001&dev01|securemode=3,signmethod=hmacsha1,ext=1,_ss=1,timestamp=1795827149|",
//! )
//! .unwrap();
//! assert_eq!(cid.login_kind(), LoginKind::DeviceSecret);
//! let content = mqtt_sign_content(
//!     &cid.prefix,
//!     &id.device_name,
//!     &id.product_key,
//!     cid.timestamp.as_deref(),
//! );
//! assert!(verify_signature(
//!     cid.effective_sign_method(),
//!     "DeviceSecretForTest0123456789abc",
//!     &content,
//!     "4B43C1BF44C7F160CD1A3C1890674A5DCE9CCEE6",
//! ));
//! ```

pub mod acl;
mod autosub;
mod client_id;
mod ident;
mod names;
mod register;
mod sign;

pub use acl::{
    AclError, CategoryError, DevicePermissions, Permission, PermissionsError, TopicCategory,
};
pub use autosub::auto_subscriptions;
pub use client_id::{AuthType, ClientId, ClientIdError, EXT_NOTIFY, EXT_RRPC, LoginKind};
pub use ident::{
    DEVICE_SECRET_LEN, PRODUCT_KEY_LEN, PRODUCT_KEY_PREFIX, PRODUCT_SECRET_LEN, RandomSource,
    generate_device_secret, generate_product_key, generate_product_secret, random_alphanumeric,
};
pub use names::{
    DEVICE_NAME_MAX_LEN, DEVICE_NAME_MIN_LEN, DeviceIdentity, NameError, PRODUCT_KEY_MAX_LEN,
    check_device_name, check_product_key, identity_key, valid_device_name, valid_product_key,
};
pub use register::{RegisterFormError, RegisterRequest, percent_decode};
pub use sign::{
    SignMethod, UnknownSignMethod, hex_lower, mqtt_sign_content, register_sign_content, sign,
    sign_bytes, verify_hex, verify_signature,
};
