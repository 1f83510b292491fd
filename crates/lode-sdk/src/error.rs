//! The one error type of the SDK.

use thiserror::Error;

/// Why an SDK operation failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The configuration cannot produce a valid sign-in (bad names, keep alive out of range…).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server answered the CONNECT with a non-zero MQTT 3.1.1 return code.
    #[error("connection refused by the server: CONNACK return code {code} ({})", connack_meaning(*code))]
    ConnectRefused {
        /// The MQTT 3.1.1 CONNACK return code (1 to 5).
        code: u8,
    },
    /// A socket operation failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// TLS could not be set up (bad CA, bad server name, handshake failure).
    #[error("TLS error: {0}")]
    Tls(String),
    /// Nothing arrived in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The server sent something the protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server refused a subscription (SUBACK return code 0x80).
    #[error("subscription to {filter:?} refused by the server")]
    SubscribeRefused {
        /// The refused filter.
        filter: String,
    },
    /// The connection is closed: lost, or ended by [`crate::Device::disconnect`].
    #[error("the connection is closed")]
    Closed,
}

/// What an MQTT 3.1.1 CONNACK return code means.
pub(crate) fn connack_meaning(code: u8) -> &'static str {
    match code {
        0 => "accepted",
        1 => "unacceptable protocol version",
        2 => "identifier rejected",
        3 => "server unavailable",
        4 => "bad user name or password",
        5 => "not authorized",
        _ => "unknown return code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_the_code_and_its_meaning() {
        let e = SdkError::ConnectRefused { code: 4 };
        assert_eq!(
            e.to_string(),
            "connection refused by the server: CONNACK return code 4 (bad user name or password)"
        );
        assert_eq!(connack_meaning(9), "unknown return code");
    }
}
