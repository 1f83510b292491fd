//! Alink over CoAP (protocol reference section 9): the `/auth` exchange, the token of later
//! requests, `/topic/${topic}` paths, and the symmetric-key (encrypted payload) mode with its
//! session key, cipher and `seq` replay window.

mod auth;
mod crypto;
mod seq;

pub use auth::{
    AuthError, AuthReply, AuthRequest, DEFAULT_SIGN_METHOD, EncryptedGrant, sign_content,
};
pub use crypto::{CryptoError, IV, SessionKey};
pub use seq::{SeqError, SeqWindow};

use crate::message::{Code, Message, OptionError};

/// The Uri-Path of the sign-in resource.
pub const AUTH_PATH: &str = "/auth";

/// Whether a request targets `/auth`.
pub fn is_auth(request: &Message) -> bool {
    request.code == Code::POST && request.uri_path().is_ok_and(|p| p == ["auth"])
}

/// The topic of a `/topic/${topic}` request, with its leading `/`
/// (`/topic/sys/pk/dn/thing/event/property/post` → `/sys/pk/dn/thing/event/property/post`);
/// `None` for any other path.
pub fn topic_of(request: &Message) -> Result<Option<String>, OptionError> {
    let path = request.uri_path()?;
    let [first, rest @ ..] = path.as_slice() else {
        return Ok(None);
    };
    if *first != "topic" || rest.is_empty() {
        return Ok(None);
    }
    let mut topic = String::new();
    for seg in rest {
        topic.push('/');
        topic.push_str(seg);
    }
    Ok(Some(topic))
}

/// The auth token a request carries (option 2088, else 61); 4.01 Unauthorized when it is
/// missing, repeated or not UTF-8. Whether the token is known and unexpired is the caller's
/// check, also answered 4.01.
pub fn request_token(request: &Message) -> Result<&str, Code> {
    match request.alink_token() {
        Ok(Some(t)) if !t.is_empty() => Ok(t),
        _ => Err(Code::UNAUTHORIZED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageType, opt};

    #[test]
    fn paths() {
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
        m.set_uri_path(AUTH_PATH).expect("path");
        assert!(is_auth(&m));
        assert_eq!(topic_of(&m), Ok(None));
        m.code = Code::GET;
        assert!(!is_auth(&m));
        m.set_uri_path("/topic/sys/a1pk/dev/thing/event/property/post")
            .expect("path");
        assert_eq!(
            topic_of(&m).ok().flatten().as_deref(),
            Some("/sys/a1pk/dev/thing/event/property/post")
        );
        m.set_uri_path("/topic").expect("path");
        assert_eq!(topic_of(&m), Ok(None));
        m.set_uri_path("/other/x").expect("path");
        assert_eq!(topic_of(&m), Ok(None));
    }

    #[test]
    fn token_required() {
        let mut m = Message::new(MessageType::Confirmable, Code::POST, 1);
        assert_eq!(request_token(&m), Err(Code::UNAUTHORIZED));
        m.add_option(opt::ALINK_AUTH_TOKEN_61, b"".to_vec())
            .expect("option");
        assert_eq!(request_token(&m), Err(Code::UNAUTHORIZED));
        m.set_option(opt::ALINK_AUTH_TOKEN_61, b"t61".to_vec())
            .expect("option");
        assert_eq!(request_token(&m), Ok("t61"));
        m.add_option(opt::ALINK_AUTH_TOKEN, vec![0xff])
            .expect("option");
        assert_eq!(request_token(&m), Err(Code::UNAUTHORIZED));
    }
}
