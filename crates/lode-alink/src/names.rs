//! Device identity: ProductKey and DeviceName rules, and the MQTT username `${dn}&${pk}`.
//!
//! | name | rule |
//! |---|---|
//! | DeviceName | 4 to 32 characters from `A-Z a-z 0-9 - _ @ . :` |
//! | ProductKey | 1 to 32 ASCII letters and digits (generated keys are 11: `a1` + 9) |
//!
//! Neither may contain `&`, `/`, `+`, `#`, `$`, `{`, `}`, `|` or whitespace, which is what makes
//! the username split unambiguous and the topic templates safe to expand.

use thiserror::Error;

/// Shortest DeviceName.
pub const DEVICE_NAME_MIN_LEN: usize = 4;
/// Longest DeviceName.
pub const DEVICE_NAME_MAX_LEN: usize = 32;
/// Longest ProductKey.
pub const PRODUCT_KEY_MAX_LEN: usize = 32;

/// Whether `name` is a valid DeviceName: 4–32 characters of `[A-Za-z0-9-_@.:]`.
pub fn valid_device_name(name: &str) -> bool {
    (DEVICE_NAME_MIN_LEN..=DEVICE_NAME_MAX_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@' | b'.' | b':'))
}

/// Whether `key` is a valid ProductKey: 1–32 ASCII letters and digits.
pub fn valid_product_key(key: &str) -> bool {
    (1..=PRODUCT_KEY_MAX_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Why a name or username was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    /// The username has no `&` between DeviceName and ProductKey.
    #[error("username is not `deviceName&productKey`: no `&`")]
    MissingSeparator,
    /// The DeviceName breaks the naming rule.
    #[error("invalid device name {0:?}: 4-32 characters of A-Z a-z 0-9 - _ @ . :")]
    InvalidDeviceName(String),
    /// The ProductKey breaks the naming rule.
    #[error("invalid product key {0:?}: 1-32 ASCII letters and digits")]
    InvalidProductKey(String),
}

/// Checks a DeviceName, naming it in the error.
pub fn check_device_name(name: &str) -> Result<(), NameError> {
    if valid_device_name(name) {
        Ok(())
    } else {
        Err(NameError::InvalidDeviceName(name.to_owned()))
    }
}

/// Checks a ProductKey, naming it in the error.
pub fn check_product_key(key: &str) -> Result<(), NameError> {
    if valid_product_key(key) {
        Ok(())
    } else {
        Err(NameError::InvalidProductKey(key.to_owned()))
    }
}

/// A device's identity: (ProductKey, DeviceName), both validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    /// The ProductKey.
    pub product_key: String,
    /// The DeviceName, unique within the product (compared case-sensitively).
    pub device_name: String,
}

/// The key that names one device's connection to the broker (its unique identity):
/// `"{productKey}/{deviceName}"`. The device hook registers connections under it and
/// the management API ends them by it.
pub fn identity_key(product_key: &str, device_name: &str) -> String {
    format!("{product_key}/{device_name}")
}

impl DeviceIdentity {
    /// This device's [`identity_key`].
    pub fn key(&self) -> String {
        identity_key(&self.product_key, &self.device_name)
    }

    /// Builds an identity from its two names, validating both.
    pub fn new(product_key: &str, device_name: &str) -> Result<Self, NameError> {
        check_product_key(product_key)?;
        check_device_name(device_name)?;
        Ok(Self {
            product_key: product_key.to_owned(),
            device_name: device_name.to_owned(),
        })
    }

    /// Parses the MQTT username `${dn}&${pk}` that every SDK sends, in every auth mode.
    ///
    /// Splits on the first `&` (neither name may contain one, so first and last agree on any
    /// valid username) and validates both halves.
    pub fn from_username(username: &str) -> Result<Self, NameError> {
        let (dn, pk) = username
            .split_once('&')
            .ok_or(NameError::MissingSeparator)?;
        Self::new(pk, dn)
    }

    /// The username this identity signs in with: `${dn}&${pk}`.
    pub fn username(&self) -> String {
        format!("{}&{}", self.device_name, self.product_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        for ok in [
            "dev01",
            "a-b_c@d.e:f",
            "abcd",
            &"x".repeat(32),
            "....",
            "DEV1",
        ] {
            assert!(valid_device_name(ok), "{ok}");
        }
        for bad in [
            "",
            "abc",
            &"x".repeat(33),
            "dev 1",
            "dev&1",
            "dev/1",
            "dev+",
            "dev#",
            "${deviceName}",
            "dev|1",
            "dévice",
            "dev\0x",
        ] {
            assert!(!valid_device_name(bad), "{bad}");
        }
    }

    #[test]
    fn product_keys() {
        for ok in ["a1TestPK001", "a", &"Z9".repeat(16)] {
            assert!(valid_product_key(ok), "{ok}");
        }
        for bad in [
            "",
            &"a".repeat(33),
            "a1-b",
            "a1.b",
            "a1&b",
            "a/b",
            "${productKey}",
            "a b",
        ] {
            assert!(!valid_product_key(bad), "{bad}");
        }
    }

    #[test]
    fn username() {
        let id = DeviceIdentity::from_username("dev01&a1TestPK001").unwrap();
        assert_eq!(id.device_name, "dev01");
        assert_eq!(id.product_key, "a1TestPK001");
        assert_eq!(id.username(), "dev01&a1TestPK001");

        assert_eq!(
            DeviceIdentity::from_username("dev01a1TestPK001"),
            Err(NameError::MissingSeparator)
        );
        assert_eq!(
            DeviceIdentity::from_username("dev01&a1&b"),
            Err(NameError::InvalidProductKey("a1&b".into()))
        );
        assert_eq!(
            DeviceIdentity::from_username("&a1TestPK001"),
            Err(NameError::InvalidDeviceName(String::new()))
        );
        assert_eq!(
            DeviceIdentity::from_username("dev01&"),
            Err(NameError::InvalidProductKey(String::new()))
        );
        // The clientId-style `pk&dn` order is not a username: `a1TestPK001` is a fine
        // device name, but `dev01`... is a fine product key too, so the order is simply taken
        // as written. Identity always comes from the username.
        let swapped = DeviceIdentity::from_username("a1TestPK001&dev01").unwrap();
        assert_eq!(swapped.device_name, "a1TestPK001");
        assert!(DeviceIdentity::from_username("dev/+&a1TestPK001").is_err());
    }
}
