//! End-to-end scenario over the public API: a device signs in on the encrypted-payload port the
//! way the C SDK does, then publishes; replays are caught.

use std::time::Instant;

use crate::alink::{self, AuthReply, AuthRequest, EncryptedGrant, SeqError, SeqWindow, SessionKey};
use crate::exchange::{self, DedupCache, EXCHANGE_LIFETIME, Inbound, Seen, Verdict};
use crate::{Code, Message, MessageType, Token, content_format, decode, encode, opt};

const DS: &str = "DeviceSecretForTest0123456789abc";

fn device_auth_datagram() -> Vec<u8> {
    let mut m = Message::new(MessageType::Confirmable, Code::POST, 0x0101);
    // The C SDK's first token: the counter 0x01020304, little-endian.
    m.token = Token::new(&0x0102_0304u32.to_le_bytes()).expect("token");
    m.set_uri_path("/auth").expect("path");
    m.set_content_format(content_format::JSON);
    m.set_accept(content_format::JSON);
    m.payload = br#"{"productKey":"a1TestPK001","deviceName":"dev01","clientId":"a1TestPK001.dev01","sign":"3F9E697517665F05A8DE4DA6FA308777","seq":"1234"}"#.to_vec();
    encode(&m)
}

#[test]
fn encrypted_mode_sign_in_and_publish() {
    let now = Instant::now();
    let peer = "10.0.0.7:40000";
    let mut dedup = DedupCache::new(EXCHANGE_LIFETIME, 1024);

    // Server: /auth.
    let req = decode(&device_auth_datagram()).expect("decodes");
    assert_eq!(exchange::classify(&req), Inbound::Request);
    assert_eq!(
        exchange::check_critical_options(&req, opt::KNOWN),
        Verdict::Accept
    );
    assert_eq!(dedup.check(&peer, req.message_id, now), Seen::New);
    assert!(alink::is_auth(&req));
    let auth = AuthRequest::parse(&req.payload).expect("auth json");
    auth.verify(DS).expect("signature");
    let grant = EncryptedGrant {
        random: "a1b2c3d4e5f6".to_owned(),
        seq_offset: 7,
    };
    let mut reply = exchange::piggybacked(&req, Code::CONTENT);
    reply.set_content_format(content_format::JSON);
    reply.payload = AuthReply {
        token: "tok-1".to_owned(),
        encrypted: Some(grant.clone()),
    }
    .to_json();
    let reply_bytes = encode(&reply);
    dedup.complete(&peer, req.message_id, reply_bytes.clone());
    // A retransmitted /auth gets the same bytes back.
    assert_eq!(
        dedup.check(&peer, req.message_id, now),
        Seen::Replay(&reply_bytes)
    );
    let server_key = SessionKey::derive(DS, &grant.random);
    let mut window = SeqWindow::new(grant.seq_offset);

    // Device: reads the reply, publishes with seq = seqOffset.
    let got = decode(&reply_bytes).expect("reply decodes");
    assert_eq!(
        (got.message_type, got.code, got.token),
        (MessageType::Acknowledgement, Code::CONTENT, req.token)
    );
    let device_key = SessionKey::derive(DS, "a1b2c3d4e5f6");
    let mut publish = Message::new(MessageType::NonConfirmable, Code::POST, 0x0102);
    publish
        .set_uri_path("/topic/a1TestPK001/dev01/user/update")
        .expect("path");
    publish
        .add_option(opt::ALINK_AUTH_TOKEN, b"tok-1".to_vec())
        .expect("token");
    publish
        .add_option(opt::ALINK_SEQ, device_key.encrypt_seq(7))
        .expect("seq");
    publish.payload = device_key.encrypt(br#"{"temp":21}"#);
    let datagram = encode(&publish);

    // Server: the publish.
    let m = decode(&datagram).expect("decodes");
    assert_eq!(
        exchange::check_critical_options(&m, opt::KNOWN),
        Verdict::Accept
    );
    assert_eq!(dedup.check(&peer, m.message_id, now), Seen::New);
    assert_eq!(alink::request_token(&m), Ok("tok-1"));
    assert_eq!(
        alink::topic_of(&m),
        Ok(Some("/a1TestPK001/dev01/user/update".to_owned()))
    );
    let seq = server_key
        .decrypt_seq(m.alink_seq().ok().flatten().expect("seq option"))
        .expect("seq decrypts");
    assert_eq!(window.accept(seq), Ok(()));
    assert_eq!(
        server_key.decrypt(&m.payload).as_deref(),
        Ok(&br#"{"temp":21}"#[..])
    );

    // An attacker replays the same datagram under a fresh message id: the seq gives it away.
    let mut replay = m.clone();
    replay.message_id = 0x0999;
    assert_eq!(dedup.check(&peer, replay.message_id, now), Seen::New);
    let seq = server_key
        .decrypt_seq(replay.alink_seq().ok().flatten().expect("seq option"))
        .expect("seq decrypts");
    assert_eq!(window.accept(seq), Err(SeqError::Replayed(7)));

    // Without the token: 4.01.
    publish.remove_option(opt::ALINK_AUTH_TOKEN);
    assert_eq!(alink::request_token(&publish), Err(Code::UNAUTHORIZED));
}
