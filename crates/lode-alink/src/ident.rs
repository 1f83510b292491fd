//! Generation of ProductKey, ProductSecret and DeviceSecret from caller-supplied randomness.
//!
//! Nothing here owns a randomness source: the caller passes a [`RandomSource`] (any
//! `FnMut(&mut [u8])` is one), normally backed by the operating system's CSPRNG. Characters are
//! drawn uniformly from `[0-9A-Za-z]` by rejection sampling (bytes ≥ 248 are discarded), so the
//! output is unbiased whatever the byte source's quality beyond uniformity.
//!
//! | identifier | shape |
//! |---|---|
//! | ProductKey | `a1` + 9 alphanumerics (11 characters, like Alibaba's) |
//! | ProductSecret | 16 alphanumerics |
//! | DeviceSecret | 32 alphanumerics |

/// A source of random bytes.
pub trait RandomSource {
    /// Fills `buf` with random bytes.
    fn fill_bytes(&mut self, buf: &mut [u8]);
}

impl<F: FnMut(&mut [u8])> RandomSource for F {
    fn fill_bytes(&mut self, buf: &mut [u8]) {
        self(buf)
    }
}

const ALPHANUMERIC: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Largest multiple of 62 that fits in a byte: bytes at or above it are rejected.
const REJECT_FROM: u8 = 248;

/// Prefix of generated ProductKeys.
pub const PRODUCT_KEY_PREFIX: &str = "a1";
/// Length of a generated ProductKey.
pub const PRODUCT_KEY_LEN: usize = 11;
/// Length of a ProductSecret.
pub const PRODUCT_SECRET_LEN: usize = 16;
/// Length of a DeviceSecret.
pub const DEVICE_SECRET_LEN: usize = 32;

/// `len` characters drawn uniformly from `[0-9A-Za-z]`.
pub fn random_alphanumeric(rng: &mut dyn RandomSource, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        let want = (len - out.len()).min(buf.len());
        rng.fill_bytes(&mut buf[..want]);
        for &b in &buf[..want] {
            if b < REJECT_FROM {
                out.push(char::from(ALPHANUMERIC[usize::from(b % 62)]));
            }
        }
    }
    out
}

/// A new ProductKey: `a1` + 9 alphanumerics.
pub fn generate_product_key(rng: &mut dyn RandomSource) -> String {
    let mut key = String::from(PRODUCT_KEY_PREFIX);
    key.push_str(&random_alphanumeric(
        rng,
        PRODUCT_KEY_LEN - PRODUCT_KEY_PREFIX.len(),
    ));
    key
}

/// A new ProductSecret: 16 alphanumerics.
pub fn generate_product_secret(rng: &mut dyn RandomSource) -> String {
    random_alphanumeric(rng, PRODUCT_SECRET_LEN)
}

/// A new DeviceSecret: 32 alphanumerics.
pub fn generate_device_secret(rng: &mut dyn RandomSource) -> String {
    random_alphanumeric(rng, DEVICE_SECRET_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::valid_product_key;

    /// A deterministic byte source: a counter.
    fn counter() -> impl FnMut(&mut [u8]) {
        let mut n = 0u8;
        move |buf: &mut [u8]| {
            for b in buf {
                *b = n;
                n = n.wrapping_add(1);
            }
        }
    }

    #[test]
    fn shapes() {
        let mut rng = counter();
        let pk = generate_product_key(&mut rng);
        assert_eq!(pk.len(), PRODUCT_KEY_LEN);
        assert!(pk.starts_with("a1"));
        assert!(valid_product_key(&pk));
        let ps = generate_product_secret(&mut rng);
        assert_eq!(ps.len(), 16);
        let ds = generate_device_secret(&mut rng);
        assert_eq!(ds.len(), 32);
        assert!(
            ps.bytes()
                .chain(ds.bytes())
                .all(|b| b.is_ascii_alphanumeric())
        );
    }

    #[test]
    fn deterministic_mapping_and_rejection() {
        // Bytes 0..=61 map to the alphabet in order.
        let mut rng = counter();
        assert_eq!(random_alphanumeric(&mut rng, 62).as_bytes(), ALPHANUMERIC);
        // Only rejected bytes at first, then accepted ones.
        let mut calls = 0;
        let mut rng = |buf: &mut [u8]| {
            calls += 1;
            buf.fill(if calls < 3 { 250 } else { 63 });
        };
        assert_eq!(random_alphanumeric(&mut rng, 4), "1111");
        assert_eq!(random_alphanumeric(&mut counter(), 0), "");
    }

    #[test]
    fn every_byte_value_covered_uniformly() {
        // One pass over all 248 accepted values hits every character exactly 4 times.
        let mut rng = counter();
        let s = random_alphanumeric(&mut rng, 248);
        for c in ALPHANUMERIC {
            assert_eq!(s.bytes().filter(|b| b == c).count(), 4);
        }
    }
}
