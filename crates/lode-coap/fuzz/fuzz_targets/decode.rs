//! Fuzz target: decoding an arbitrary datagram never panics; whatever decodes re-encodes to
//! the same bytes (the wire form is canonical) and its typed options can be read; whatever
//! does not decode gets a Reset exactly when it is a readable CON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lode_coap::{MessageType, decode, encode, encoded_len, exchange, opt, reject_malformed};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(m) => {
            let wire = encode(&m);
            assert_eq!(wire, data);
            assert_eq!(encoded_len(&m), data.len());
            let _ = m.uri_path();
            let _ = m.uri_query();
            let _ = m.content_format();
            let _ = m.block1();
            let _ = m.block2();
            let _ = m.observe();
            let _ = m.size1();
            let _ = m.alink_token();
            let _ = m.alink_seq();
            let _ = exchange::classify(&m);
            let _ = exchange::check_critical_options(&m, opt::KNOWN);
        }
        Err(_) => {
            let rst = reject_malformed(data);
            let readable_con = data.len() >= 4
                && data[0] >> 6 == 1
                && MessageType::from_bits(data[0] >> 4) == MessageType::Confirmable;
            assert_eq!(rst.is_some(), readable_con);
        }
    }
});
