//! Generation of keys, secrets and ids, and validation of names.
//!
//! Duplicates a few rules of `lode-alink`'s validators on purpose for now; the
//! two can be folded together later.

use rand::RngExt;
use rand::distr::{Alphanumeric, SampleString};

use crate::error::{RegistryError, Result};

fn alnum(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A new ProductKey: `a1` followed by 9 alphanumerics (11 characters).
pub fn generate_product_key() -> String {
    format!("a1{}", alnum(9))
}

/// A new ProductSecret: 16 alphanumerics.
pub fn generate_product_secret() -> String {
    alnum(16)
}

/// A new DeviceSecret: 32 alphanumerics.
pub fn generate_device_secret() -> String {
    alnum(32)
}

/// A new IotId: 24 alphanumerics, opaque and unique.
pub fn generate_iot_id() -> String {
    alnum(24)
}

/// A new AccessKey id: `LTAI` followed by 16 alphanumerics.
pub fn generate_access_key_id() -> String {
    format!("LTAI{}", alnum(16))
}

/// A new AccessKey secret: 30 alphanumerics.
pub fn generate_access_key_secret() -> String {
    alnum(30)
}

/// A new account id: 16 decimal digits, not starting with 0.
pub fn generate_account_id() -> String {
    let mut rng = rand::rng();
    let first = rng.random_range(1..=9u8);
    let rest: String = (0..15)
        .map(|_| char::from(b'0' + rng.random_range(0..=9u8)))
        .collect();
    format!("{first}{rest}")
}

/// Whether `s` looks like a ProductKey this registry generates or accepts:
/// 11 ASCII alphanumerics.
pub fn is_valid_product_key(s: &str) -> bool {
    s.len() == 11 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks a DeviceName: 4 to 32 characters of `[A-Za-z0-9-_@.:]`.
pub fn validate_device_name(name: &str) -> Result<()> {
    let reason = if name.len() < 4 {
        "shorter than 4 characters"
    } else if name.len() > 32 {
        "longer than 32 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'@' | b'.' | b':'))
    {
        "only letters, digits and - _ @ . : are allowed"
    } else {
        return Ok(());
    };
    Err(RegistryError::InvalidDeviceName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks a product name: 1 to 64 characters, no control characters, not
/// only white space.
pub fn validate_product_name(name: &str) -> Result<()> {
    let reason = if name.trim().is_empty() {
        "empty"
    } else if name.chars().count() > 64 {
        "longer than 64 characters"
    } else if name.chars().any(char::is_control) {
        "control characters are not allowed"
    } else {
        return Ok(());
    };
    Err(RegistryError::InvalidProductName {
        name: name.to_owned(),
        reason,
    })
}

/// Checks a tag: key of 1 to 30 characters of `[A-Za-z0-9_.-]`, value of at
/// most 128 characters without control characters.
pub fn validate_tag(key: &str, value: &str) -> Result<()> {
    let reason = if key.is_empty() || key.len() > 30 {
        "key must have 1 to 30 characters"
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        "key may contain only letters, digits and _ . -"
    } else if value.chars().count() > 128 {
        "value is longer than 128 characters"
    } else if value.chars().any(char::is_control) {
        "value contains control characters"
    } else {
        return Ok(());
    };
    Err(RegistryError::InvalidTag {
        key: key.to_owned(),
        reason,
    })
}

/// Longest topic category template, in characters.
pub const TOPIC_TEMPLATE_MAX_LEN: usize = 128;
/// Most slashes in a topic category template.
pub const TOPIC_TEMPLATE_MAX_SLASHES: usize = 7;
/// The prefix every topic category template starts with.
pub const TOPIC_TEMPLATE_PREFIX: &str = "/${productKey}/${deviceName}/";

/// Checks a topic category template: it starts with
/// `/${productKey}/${deviceName}/`, has at most 128 characters and 7 slashes,
/// and its other levels are non-empty and made of `[A-Za-z0-9_-]`.
pub fn validate_topic_template(template: &str) -> Result<()> {
    let reason = if template.chars().count() > TOPIC_TEMPLATE_MAX_LEN {
        "longer than 128 characters"
    } else if template.matches('/').count() > TOPIC_TEMPLATE_MAX_SLASHES {
        "more than 7 slashes"
    } else if let Some(rest) = template.strip_prefix(TOPIC_TEMPLATE_PREFIX) {
        if rest.split('/').any(|level| {
            level.is_empty()
                || !level
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        }) {
            "levels after the prefix must be non-empty and made of letters, digits, _ and -"
        } else {
            return Ok(());
        }
    } else {
        "must start with /${productKey}/${deviceName}/"
    };
    Err(RegistryError::InvalidTopicTemplate {
        template: template.to_owned(),
        reason,
    })
}

/// Expands a topic category template for one device.
pub fn expand_topic_template(template: &str, product_key: &str, device_name: &str) -> String {
    template
        .replace("${productKey}", product_key)
        .replace("${deviceName}", device_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_have_their_shapes() {
        let pk = generate_product_key();
        assert!(pk.starts_with("a1") && pk.len() == 11 && is_valid_product_key(&pk));
        assert_eq!(generate_product_secret().len(), 16);
        assert_eq!(generate_device_secret().len(), 32);
        let ak = generate_access_key_id();
        assert!(ak.starts_with("LTAI") && ak.len() == 20);
        assert_eq!(generate_access_key_secret().len(), 30);
        let acc = generate_account_id();
        assert!(
            acc.len() == 16 && acc.bytes().all(|b| b.is_ascii_digit()) && !acc.starts_with('0')
        );
        assert_ne!(generate_iot_id(), generate_iot_id());
    }

    #[test]
    fn device_names() {
        for ok in ["abcd", "dev-1_2@x.y:z", &"a".repeat(32)] {
            assert!(validate_device_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "abc",
            "",
            &"a".repeat(33),
            "dev 1",
            "dév1",
            "a/bcd",
            "a+bc",
            "a#bc",
        ] {
            assert!(validate_device_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_templates() {
        for ok in [
            "/${productKey}/${deviceName}/user/update",
            "/${productKey}/${deviceName}/user/a/b/c/d",
        ] {
            assert!(validate_topic_template(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/${productKey}/user/update",
            "/${productKey}/${deviceName}/user/a/b/c/d/e",
            "/${productKey}/${deviceName}/",
            "/${productKey}/${deviceName}/user//x",
            "/${productKey}/${deviceName}/user/+",
        ] {
            assert!(validate_topic_template(bad).is_err(), "{bad}");
        }
        let long = format!("/${{productKey}}/${{deviceName}}/{}", "a".repeat(120));
        assert!(validate_topic_template(&long).is_err());
        assert_eq!(
            expand_topic_template("/${productKey}/${deviceName}/user/get", "a1b", "d1"),
            "/a1b/d1/user/get"
        );
    }
}
