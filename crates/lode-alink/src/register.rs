//! HTTPS dynamic registration (section 5.1): the `application/x-www-form-urlencoded` body of
//! `POST /auth/register/device`.
//!
//! Body: `productKey=..&deviceName=..&random=..&sign=..&signMethod=hmacsha256`. Fields may come
//! in any order; unknown fields are ignored; `+` decodes to a space and `%XX` to its byte; a
//! repeated known field, a bad escape or non-UTF-8 text is an error. `signMethod` defaults to
//! [`SignMethod::REGISTER_DEFAULT`] (`hmacsha256`) when absent. The signature is checked with
//! [`RegisterRequest::verify`] against the product's ProductSecret.

use thiserror::Error;

use crate::names::{NameError, check_device_name, check_product_key};
use crate::sign::{
    SignMethod, UnknownSignMethod, hex_nibble, register_sign_content, verify_signature,
};

/// A parsed dynamic-registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRequest {
    /// `productKey`, validated.
    pub product_key: String,
    /// `deviceName`, validated.
    pub device_name: String,
    /// `random`, as sent (signed).
    pub random: String,
    /// `sign`, hex in either case.
    pub sign: String,
    /// `signMethod`, or `hmacsha256` when absent.
    pub sign_method: SignMethod,
}

/// Why a registration body was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegisterFormError {
    /// A `%` not followed by two hex digits.
    #[error("form field {0:?}: bad percent escape")]
    BadEscape(String),
    /// Decoded text is not UTF-8.
    #[error("form field {0:?}: not UTF-8 after decoding")]
    NotUtf8(String),
    /// A required field is missing.
    #[error("form field {0} is missing")]
    Missing(&'static str),
    /// A known field is given twice.
    #[error("form field {0} is given more than once")]
    Duplicate(&'static str),
    /// A name is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// `signMethod` is unknown.
    #[error("form field signMethod: {0}")]
    SignMethod(#[from] UnknownSignMethod),
}

impl RegisterRequest {
    /// Parses the form body.
    pub fn parse_form(body: &str) -> Result<RegisterRequest, RegisterFormError> {
        let mut pk = None;
        let mut dn = None;
        let mut random = None;
        let mut sign = None;
        let mut method = None;
        for pair in body.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k)?;
            let (slot, name) = match key.as_str() {
                "productKey" => (&mut pk, "productKey"),
                "deviceName" => (&mut dn, "deviceName"),
                "random" => (&mut random, "random"),
                "sign" => (&mut sign, "sign"),
                "signMethod" => (&mut method, "signMethod"),
                _ => continue,
            };
            if slot.replace(percent_decode(v)?).is_some() {
                return Err(RegisterFormError::Duplicate(name));
            }
        }
        let product_key = pk.ok_or(RegisterFormError::Missing("productKey"))?;
        let device_name = dn.ok_or(RegisterFormError::Missing("deviceName"))?;
        check_product_key(&product_key)?;
        check_device_name(&device_name)?;
        let sign_method = match method.as_deref() {
            None | Some("") => SignMethod::REGISTER_DEFAULT,
            Some(m) => m.parse()?,
        };
        Ok(RegisterRequest {
            product_key,
            device_name,
            random: random.ok_or(RegisterFormError::Missing("random"))?,
            sign: sign.ok_or(RegisterFormError::Missing("sign"))?,
            sign_method,
        })
    }

    /// The signed content: [`register_sign_content`] of this request.
    pub fn sign_content(&self) -> String {
        register_sign_content(&self.device_name, &self.product_key, &self.random)
    }

    /// Whether `sign` is right for `product_secret` (constant-time, hex in either case).
    pub fn verify(&self, product_secret: &str) -> bool {
        verify_signature(
            self.sign_method,
            product_secret,
            &self.sign_content(),
            &self.sign,
        )
    }
}

/// Decodes one `application/x-www-form-urlencoded` component.
pub fn percent_decode(s: &str) -> Result<String, RegisterFormError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| Some(hex_nibble(h[0])? << 4 | hex_nibble(h[1])?))
                    .ok_or_else(|| RegisterFormError::BadEscape(s.to_owned()))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| RegisterFormError::NotUtf8(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: &str = "ProductSecret012";

    #[test]
    fn python_shaped_body() {
        let body = "productKey=a1TestPK001&deviceName=newdev01&random=px8kGEXcGFHYcAS\
                    &sign=9e4727691317bf4066080dbaf8607a14feff25e10f4addb3cb26bb15e04e3441&signMethod=hmacsha256";
        let r = RegisterRequest::parse_form(body).unwrap();
        assert_eq!(r.product_key, "a1TestPK001");
        assert_eq!(r.device_name, "newdev01");
        assert_eq!(r.random, "px8kGEXcGFHYcAS");
        assert_eq!(r.sign_method, SignMethod::HmacSha256);
        assert!(r.verify(PS));
        assert!(!r.verify("ProductSecret013"));
    }

    #[test]
    fn encoded_name_uppercase_sign_any_order() {
        // `@` and `:` percent-encoded, as a form encoder would; C SDK uppercase hex.
        let body = "signMethod=HmacSha256&sign=619875A753AF8A4D95DD4E48B348F7B7463EAE0364685E3D8692765EAC864B9F\
                    &random=8Ygb7ULYh53B6OA&deviceName=dev.01%40x%3Ay&productKey=a1TestPK001&extra=1";
        let r = RegisterRequest::parse_form(body).unwrap();
        assert_eq!(r.device_name, "dev.01@x:y");
        assert!(r.verify(PS));
        // Without signMethod the default is hmacsha256.
        let body = "productKey=a1TestPK001&deviceName=dev.01@x:y&random=8Ygb7ULYh53B6OA\
                    &sign=619875a753af8a4d95dd4e48b348f7b7463eae0364685e3d8692765eac864b9f";
        assert!(RegisterRequest::parse_form(body).unwrap().verify(PS));
    }

    #[test]
    fn refusals() {
        let base = "productKey=a1TestPK001&deviceName=newdev01&random=r&sign=00";
        assert!(RegisterRequest::parse_form(base).is_ok());
        assert_eq!(
            RegisterRequest::parse_form("deviceName=newdev01&random=r&sign=00"),
            Err(RegisterFormError::Missing("productKey"))
        );
        assert_eq!(
            RegisterRequest::parse_form("productKey=a1TestPK001&deviceName=newdev01&sign=00"),
            Err(RegisterFormError::Missing("random"))
        );
        assert_eq!(
            RegisterRequest::parse_form(&format!("{base}&deviceName=other01")),
            Err(RegisterFormError::Duplicate("deviceName"))
        );
        assert!(matches!(
            RegisterRequest::parse_form(&format!("{base}&signMethod=sha1")),
            Err(RegisterFormError::SignMethod(_))
        ));
        assert!(matches!(
            RegisterRequest::parse_form(
                "productKey=a1TestPK001&deviceName=new%2Fdev&random=r&sign=0"
            ),
            Err(RegisterFormError::Name(NameError::InvalidDeviceName(_)))
        ));
        assert!(matches!(
            RegisterRequest::parse_form("productKey=a1%ZZ&deviceName=newdev01&random=r&sign=0"),
            Err(RegisterFormError::BadEscape(_))
        ));
        // A random that decodes to other text changes the signature.
        let r = RegisterRequest::parse_form(
            "productKey=a1TestPK001&deviceName=newdev01&random=a+b%26c&sign=0",
        )
        .unwrap();
        assert_eq!(r.random, "a b&c");
    }

    #[test]
    fn decoder() {
        assert_eq!(percent_decode("a+b%20c%2b%2B").unwrap(), "a b c++");
        assert_eq!(percent_decode("%E4%B8%80").unwrap(), "一");
        assert_eq!(percent_decode("").unwrap(), "");
        for bad in ["%", "%2", "%g0", "%+1", "%-1", "a%"] {
            assert!(
                matches!(percent_decode(bad), Err(RegisterFormError::BadEscape(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            percent_decode("%FF"),
            Err(RegisterFormError::NotUtf8(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = RegisterRequest::parse_form(&s);
            let _ = percent_decode(&s);
        }

        #[test]
        fn form_like_never_panics(s in "[a-zA-Z=&%0-9+]{0,80}") {
            let _ = RegisterRequest::parse_form(&s);
        }
    }
}
