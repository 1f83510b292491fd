//! The device named by an X.509 client certificate.
//!
//! **Mapping rule.** The certificate's subject names the device with exactly one
//! common name and exactly one organizational unit:
//!
//! | subject attribute | holds |
//! |---|---|
//! | `CN` (2.5.4.3) | `${deviceName}` |
//! | `OU` (2.5.4.11) | `${productKey}` |
//!
//! for example `CN=meter-0001, OU=a1B2c3D4e5F, O=Acme`. Other attributes (`O`, `C`, ...)
//! are ignored. A subject with no or several `CN`s or `OU`s, or with names that are not
//! a valid DeviceName/ProductKey, names no device. The certificate chain is verified by
//! the TLS listener against the configured client CA before the hook sees it; this
//! module only reads the subject of the end-entity certificate (DER).

use lode_alink::DeviceIdentity;
use thiserror::Error;
use x509_parser::prelude::{AttributeTypeAndValue, FromDer, X509Certificate};

/// Why a certificate names no device.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertificateIdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(String),
    /// The subject lacks the attribute, or has it more than once.
    #[error("the subject must have exactly one {attribute} (it has {count})")]
    AttributeCount {
        /// `CN` or `OU`.
        attribute: &'static str,
        /// How many the subject has.
        count: usize,
    },
    /// The attribute's value is not a UTF-8 string.
    #[error("the subject's {0} is not a string")]
    NotAString(&'static str),
    /// The names are not a valid DeviceName/ProductKey.
    #[error("the subject does not name a device: {0}")]
    InvalidName(String),
}

/// The device a client certificate (DER) names, by the rule in the module docs.
pub fn certificate_identity(der: &[u8]) -> Result<DeviceIdentity, CertificateIdentityError> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| CertificateIdentityError::Malformed(e.to_string()))?;
    let subject = cert.subject();
    let one = |attribute: &'static str, values: Vec<&AttributeTypeAndValue<'_>>| match values
        .as_slice()
    {
        [value] => Ok(value
            .as_str()
            .map_err(|_| CertificateIdentityError::NotAString(attribute))?
            .to_owned()),
        other => Err(CertificateIdentityError::AttributeCount {
            attribute,
            count: other.len(),
        }),
    };
    let device_name = one("CN", subject.iter_common_name().collect())?;
    let product_key = one("OU", subject.iter_organizational_unit().collect())?;
    DeviceIdentity::new(&product_key, &device_name)
        .map_err(|e| CertificateIdentityError::InvalidName(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn cert(attrs: &[(DnType, &str)]) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in attrs {
            params.distinguished_name.push(t.clone(), *v);
        }
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn common_name_and_unit_name_the_device() {
        let der = cert(&[
            (DnType::CommonName, "meter-0001"),
            (DnType::OrganizationalUnitName, "a1B2c3D4e5F"),
            (DnType::OrganizationName, "Acme"),
        ]);
        let id = certificate_identity(&der).unwrap();
        assert_eq!(id.device_name, "meter-0001");
        assert_eq!(id.product_key, "a1B2c3D4e5F");
    }

    #[test]
    fn missing_attributes_name_no_device() {
        let no_ou = cert(&[(DnType::CommonName, "meter-0001")]);
        assert_eq!(
            certificate_identity(&no_ou),
            Err(CertificateIdentityError::AttributeCount {
                attribute: "OU",
                count: 0
            })
        );
        let no_cn = cert(&[(DnType::OrganizationalUnitName, "a1B2c3D4e5F")]);
        assert!(matches!(
            certificate_identity(&no_cn),
            Err(CertificateIdentityError::AttributeCount {
                attribute: "CN",
                count: 0
            })
        ));
    }

    #[test]
    fn invalid_names_and_garbage_are_refused() {
        let bad = cert(&[
            (DnType::CommonName, "meter&0001"),
            (DnType::OrganizationalUnitName, "a1B2c3D4e5F"),
        ]);
        assert!(matches!(
            certificate_identity(&bad),
            Err(CertificateIdentityError::InvalidName(_))
        ));
        assert!(matches!(
            certificate_identity(b"not a certificate"),
            Err(CertificateIdentityError::Malformed(_))
        ));
    }
}
