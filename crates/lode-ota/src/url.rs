//! Time-limited download URLs: `…/ota/download/{firmwareId}?expires={unix s}&signature={hex}`,
//! where the signature is HMAC-SHA256 over `"{firmwareId}\n{expires}"` with a server key.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Path prefix of firmware downloads on the HTTP listener.
pub const DOWNLOAD_PREFIX: &str = "/ota/download";

/// Signs and checks download URLs.
#[derive(Clone)]
pub struct UrlSigner {
    key: [u8; 32],
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UrlSigner(..)")
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

impl UrlSigner {
    /// A signer whose key is derived from a server secret (so the OTA key is not the
    /// secret itself, and URLs survive restarts when the secret does).
    pub fn derive(secret: &[u8]) -> UrlSigner {
        UrlSigner {
            key: hmac(secret, b"lodestone ota download url"),
        }
    }

    /// A signer with a random key (URLs die with the process).
    pub fn random() -> UrlSigner {
        UrlSigner {
            key: rand::random(),
        }
    }

    fn signature(&self, firmware_id: &str, expires: i64) -> [u8; 32] {
        hmac(&self.key, format!("{firmware_id}\n{expires}").as_bytes())
    }

    /// The path and query of a URL for `firmware_id` valid until `expires` (unix seconds).
    pub fn path_and_query(&self, firmware_id: &str, expires: i64) -> String {
        format!(
            "{DOWNLOAD_PREFIX}/{firmware_id}?expires={expires}&signature={}",
            hex::encode(self.signature(firmware_id, expires))
        )
    }

    /// Whether a URL's parts are genuine and not expired at `now` (unix seconds).
    pub fn verify(&self, firmware_id: &str, expires: i64, signature: &str, now: i64) -> bool {
        if expires < now {
            return false;
        }
        let Ok(given) = hex::decode(signature) else {
            return false;
        };
        bool::from(given.ct_eq(&self.signature(firmware_id, expires)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let s = UrlSigner::derive(b"secret");
        let url = s.path_and_query("f1", 1000);
        let sig = url.rsplit('=').next().unwrap();
        assert!(s.verify("f1", 1000, sig, 999));
        assert!(s.verify("f1", 1000, &sig.to_uppercase(), 1000));
        assert!(!s.verify("f1", 1000, sig, 1001), "expired");
        assert!(!s.verify("f2", 1000, sig, 0), "other firmware");
        assert!(!s.verify("f1", 1001, sig, 0), "other expiry");
        assert!(!s.verify("f1", 1000, "zz", 0));
        assert!(!UrlSigner::derive(b"other").verify("f1", 1000, sig, 0));
    }
}
