//! Key encoding of the embedded store.
//!
//! * sessions and retained messages: `b'k'` followed by the id's UTF-8 bytes
//!   (the tag keeps the empty id a valid, non-empty key);
//! * queued messages: client id length (u32 big-endian), the client id bytes,
//!   a `0x00` separator, then the sequence number (u64 big-endian).
//!
//! The length prefix makes the queue prefix of one client never a prefix of
//! another client's keys, even when one client id is a prefix of the other.

const ID_TAG: u8 = b'k';

pub(crate) fn id_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(ID_TAG);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(crate) fn id_from_key(key: &[u8]) -> Result<String, String> {
    match key.split_first() {
        Some((&ID_TAG, rest)) => String::from_utf8(rest.to_vec())
            .map_err(|e| format!("key {} is not UTF-8: {e}", hex(key))),
        _ => Err(format!("key {} lacks the id tag", hex(key))),
    }
}

/// Prefix shared by every queued message of `client_id`, and only by those.
pub(crate) fn queue_prefix(client_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + client_id.len() + 1 + 8);
    // Ids are validated to be at most `MAX_ID_LEN` bytes, far below u32::MAX.
    let len = u32::try_from(client_id.len()).unwrap_or(u32::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(client_id.as_bytes());
    key.push(0);
    key
}

pub(crate) fn queue_key(client_id: &str, seq: u64) -> Vec<u8> {
    let mut key = queue_prefix(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn decode_queue_key(key: &[u8]) -> Result<(String, u64), String> {
    let bad = |why: &str| format!("queue key {}: {why}", hex(key));
    let (len, rest) = key
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("too short"))?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| bad("length overflow"))?;
    if rest.len() != len + 1 + 8 {
        return Err(bad("length does not match"));
    }
    let (id, rest) = rest.split_at(len);
    let (sep, seq) = rest.split_at(1);
    if sep != [0] {
        return Err(bad("missing separator"));
    }
    let seq: [u8; 8] = seq.try_into().map_err(|_| bad("bad sequence number"))?;
    let id = String::from_utf8(id.to_vec()).map_err(|e| bad(&e.to_string()))?;
    Ok((id, u64::from_be_bytes(seq)))
}

fn hex(key: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for b in key.iter().take(48) {
        let _ = write!(s, "{b:02x}");
    }
    if key.len() > 48 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_round_trip_and_do_not_collide() {
        for (id, seq) in [("", 0), ("a", 1), ("ab", u64::MAX), ("é\0x", 7)] {
            assert_eq!(
                decode_queue_key(&queue_key(id, seq)).unwrap(),
                (id.to_owned(), seq)
            );
        }
        assert!(!queue_key("ab", 1).starts_with(&queue_prefix("a")));
        assert!(!queue_key("a\0", 1).starts_with(&queue_prefix("a")));
        assert!(queue_key("a", 1) < queue_key("a", 256));
        assert_eq!(id_from_key(&id_key("")).unwrap(), "");
        assert_eq!(id_from_key(&id_key("x/y")).unwrap(), "x/y");
    }
}
