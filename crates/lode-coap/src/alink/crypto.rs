//! The symmetric-key payload encryption of Alink CoAP (`coap-psk://`, port 5682).
//!
//! After `/auth` the server hands out `random`; both sides derive the session key
//! `SHA256(${ds} + "," + random)[8..24]` ([`SessionKey::derive`]). Payloads and the decimal
//! `seq` in option 2089 are AES-128-CBC encrypted with the fixed IV `543yhjy97ae7fyfg` and
//! PKCS#7 padding (a whole pad block when the plaintext is aligned), as the C SDK does.
//!
//! The mode gives confidentiality only: CBC has no integrity check, so a tampered ciphertext
//! mostly fails padding or the `seq` parse, but not always. The `seq` window
//! ([`super::SeqWindow`]) is what stops replays.

use std::fmt;

use aes::Aes128;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The fixed initialisation vector of the Alink CoAP cipher.
pub const IV: [u8; 16] = *b"543yhjy97ae7fyfg";

/// A ciphertext or sequence number that does not decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CryptoError {
    /// The ciphertext is empty or not a whole number of 16-byte blocks.
    #[error("ciphertext of {0} bytes is not a positive multiple of 16")]
    Length(usize),
    /// The PKCS#7 padding is wrong (wrong key, or tampered data).
    #[error("bad padding")]
    Padding,
    /// The decrypted `seq` is not a decimal number that fits 32 bits.
    #[error("decrypted seq is not a decimal number")]
    SeqNotDecimal,
}

/// The 16-byte AES key of one authenticated CoAP session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; 16]);

impl SessionKey {
    /// `SHA256(device_secret + "," + random)`, bytes 8 to 23.
    pub fn derive(device_secret: &str, random: &str) -> SessionKey {
        let mut h = Sha256::new();
        h.update(device_secret.as_bytes());
        h.update(b",");
        h.update(random.as_bytes());
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[8..24]);
        SessionKey(key)
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> SessionKey {
        SessionKey(bytes)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// AES-128-CBC with the fixed IV and PKCS#7 padding; the output is 1 to 16 bytes longer.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        cbc::Encryptor::<Aes128>::new(&self.0.into(), &IV.into())
            .encrypt_padded_vec::<Pkcs7>(plaintext)
    }

    /// The inverse of [`SessionKey::encrypt`]; the padding is checked strictly.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(16) {
            return Err(CryptoError::Length(ciphertext.len()));
        }
        cbc::Decryptor::<Aes128>::new(&self.0.into(), &IV.into())
            .decrypt_padded_vec::<Pkcs7>(ciphertext)
            .map_err(|_| CryptoError::Padding)
    }

    /// The option 2089 value for `seq`: its decimal text, encrypted.
    pub fn encrypt_seq(&self, seq: u32) -> Vec<u8> {
        self.encrypt(seq.to_string().as_bytes())
    }

    /// The `seq` carried in an option 2089 value.
    pub fn decrypt_seq(&self, value: &[u8]) -> Result<u32, CryptoError> {
        let text = self.decrypt(value)?;
        parse_decimal(&text).ok_or(CryptoError::SeqNotDecimal)
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// 1 to 10 ASCII digits that fit 32 bits.
pub(crate) fn parse_decimal(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    // Expected values computed independently with Python's hashlib and `openssl enc`:
    //   hashlib.sha256(b"DeviceSecretForTest0123456789abc,a1b2c3d4e5f6").digest()[8:24].hex()
    //   printf '7' | openssl enc -aes-128-cbc -K <key> -iv 35343379686a79393761653766796667
    const DS: &str = "DeviceSecretForTest0123456789abc";
    const RANDOM: &str = "a1b2c3d4e5f6";
    const KEY: &str = "a7b2dacf581cb7c4354336bedc1963bf";

    #[test]
    fn session_key_known_answer() {
        let key = SessionKey::derive(DS, RANDOM);
        assert_eq!(key.as_bytes().to_vec(), hex(KEY));
        assert_eq!(format!("{key:?}"), "SessionKey(..)");
    }

    #[test]
    fn aes_cbc_known_answers() {
        let key = SessionKey::derive(DS, RANDOM);
        for (plain, cipher) in [
            (&b"7"[..], "3edaad4e55cd886a426a22d4eef624a8"),
            (
                b"0123456789abcdef",
                "23a2c05f2fe5862764a3301a3f95bc1cb8ed9017c7bd75a16667f50efd8f9b3c",
            ),
            (
                br#"{"id":"1","params":{"Temp":23.5},"method":"thing.event.property.post"}"#,
                "9634b8486f55e7b0f69439a17a9f9089b118f074fe7403dc7996c501745c6c8ac90ea4d8f2a0af82c1e95b2463d6a018af92d5cf276ba35f02b721251673a985ac6b7d4c1a19536f84e614c2a5fe3e93",
            ),
        ] {
            assert_eq!(key.encrypt(plain), hex(cipher), "{plain:?}");
            assert_eq!(key.decrypt(&hex(cipher)).as_deref(), Ok(plain));
        }
        // Aligned plaintext gets a whole pad block.
        assert_eq!(key.encrypt(&[0; 16]).len(), 32);
        assert_eq!(key.encrypt(&[]).len(), 16);
    }

    #[test]
    fn seq_option_roundtrip_and_vector() {
        let key = SessionKey::derive(DS, RANDOM);
        assert_eq!(key.encrypt_seq(7), hex("3edaad4e55cd886a426a22d4eef624a8"));
        assert_eq!(
            key.decrypt_seq(&hex("3edaad4e55cd886a426a22d4eef624a8")),
            Ok(7)
        );
        for seq in [0, 1, 9999, u32::MAX] {
            assert_eq!(key.decrypt_seq(&key.encrypt_seq(seq)), Ok(seq));
        }
        assert_eq!(
            key.decrypt_seq(&key.encrypt(b"12a")),
            Err(CryptoError::SeqNotDecimal)
        );
        assert_eq!(
            key.decrypt_seq(&key.encrypt(b"-1")),
            Err(CryptoError::SeqNotDecimal)
        );
        assert_eq!(
            key.decrypt_seq(&key.encrypt(b"4294967296")),
            Err(CryptoError::SeqNotDecimal)
        );
        assert_eq!(
            key.decrypt_seq(&key.encrypt(b"")),
            Err(CryptoError::SeqNotDecimal)
        );
    }

    #[test]
    fn bad_ciphertexts_are_errors() {
        let key = SessionKey::derive(DS, RANDOM);
        assert_eq!(key.decrypt(&[]), Err(CryptoError::Length(0)));
        assert_eq!(key.decrypt(&[0; 15]), Err(CryptoError::Length(15)));
        // The wrong key almost always breaks the padding; this vector does.
        let other = SessionKey::derive(DS, "other");
        assert_eq!(
            other.decrypt(&hex("3edaad4e55cd886a426a22d4eef624a8")),
            Err(CryptoError::Padding)
        );
    }
}
