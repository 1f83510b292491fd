//! Key encoding of the embedded backend.
//!
//! A device prefix is `len(pk) u16 BE | pk | len(dn) u16 BE | dn`; the length
//! prefixes make one device's prefix never a prefix of another's. Names are
//! at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes, so lengths fit a u16.
//!
//! | keyspace | key | value |
//! |---|---|---|
//! | `props` | device, identifier (u16 length + bytes), time, seq | [`StoredPoint`](super::codec::StoredPoint) |
//! | `events`, `calls`, `log` | device, time, seq | the stored record |
//! | `call_ids` | device, call id bytes | time, seq of the call |
//! | `latest`, `desired` | device, identifier (u16 length + bytes) | the stored value |
//! | `devices` | device | empty |
//!
//! Times are i64 with the sign bit flipped, big-endian, so byte order is
//! numeric order; sequence numbers are u64 big-endian.

use crate::DeviceKey;
use crate::cursor::Position;
use crate::error::corrupt;

pub(crate) fn push_name(key: &mut Vec<u8>, name: &str) {
    // Callers check names against `MAX_NAME_LEN` first.
    let len = u16::try_from(name.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
}

pub(crate) fn device_prefix(device: &DeviceKey) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + device.product_key.len() + device.device_name.len() + 40);
    push_name(&mut key, &device.product_key);
    push_name(&mut key, &device.device_name);
    key
}

/// `device | identifier`, the key of `latest` and `desired` and the prefix
/// of a property's history.
pub(crate) fn name_key(device_prefix: &[u8], name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(device_prefix.len() + 2 + name.len() + 16);
    key.extend_from_slice(device_prefix);
    push_name(&mut key, name);
    key
}

/// `prefix | time | seq`.
pub(crate) fn position_key(prefix: &[u8], pos: Position) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 16);
    key.extend_from_slice(prefix);
    push_position(&mut key, pos);
    key
}

pub(crate) fn push_position(key: &mut Vec<u8>, pos: Position) {
    key.extend_from_slice(&((pos.time as u64) ^ (1 << 63)).to_be_bytes());
    key.extend_from_slice(&pos.seq.to_be_bytes());
}

/// The position at the end of a key (or a `call_ids` value).
pub(crate) fn position_of(key: &[u8]) -> Result<Position, crate::HistoryError> {
    let tail = key
        .len()
        .checked_sub(16)
        .and_then(|at| key.get(at..))
        .ok_or_else(|| corrupt("history key shorter than a position"))?;
    let (time, seq) = tail.split_at(8);
    let time: [u8; 8] = time
        .try_into()
        .map_err(|_| corrupt("bad time in history key"))?;
    let seq: [u8; 8] = seq
        .try_into()
        .map_err(|_| corrupt("bad sequence in history key"))?;
    Ok(Position {
        time: (u64::from_be_bytes(time) ^ (1 << 63)) as i64,
        seq: u64::from_be_bytes(seq),
    })
}

/// Splits a length-prefixed name off the front of `bytes`.
fn take_name(bytes: &[u8]) -> Result<(String, &[u8]), crate::HistoryError> {
    let (len, rest) = bytes
        .split_first_chunk::<2>()
        .ok_or_else(|| corrupt("key too short for a name length"))?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(corrupt("key too short for its name"));
    }
    let (name, rest) = rest.split_at(len);
    let name = String::from_utf8(name.to_vec()).map_err(|_| corrupt("name is not UTF-8"))?;
    Ok((name, rest))
}

/// The identifier of a `latest`/`desired` key, after the device prefix.
pub(crate) fn name_after(prefix: &[u8], key: &[u8]) -> Result<String, crate::HistoryError> {
    let rest = key
        .strip_prefix(prefix)
        .ok_or_else(|| corrupt("key outside its device prefix"))?;
    let (name, rest) = take_name(rest)?;
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes after a name key"));
    }
    Ok(name)
}

/// Decodes a `devices` key back into the device.
#[cfg(test)]
pub(crate) fn device_of(key: &[u8]) -> Result<DeviceKey, crate::HistoryError> {
    let (product_key, rest) = take_name(key)?;
    let (device_name, rest) = take_name(rest)?;
    if !rest.is_empty() {
        return Err(corrupt("trailing bytes after a device key"));
    }
    Ok(DeviceKey {
        product_key,
        device_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_sort_like_numbers() {
        let prefix = b"p".to_vec();
        let times = [i64::MIN, -5, -1, 0, 1, 7, i64::MAX];
        let keys: Vec<Vec<u8>> = times
            .iter()
            .map(|&time| position_key(&prefix, Position { time, seq: 1 }))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for (key, &time) in keys.iter().zip(&times) {
            assert_eq!(position_of(key).ok(), Some(Position { time, seq: 1 }));
        }
        let a = position_key(&prefix, Position { time: 3, seq: 2 });
        let b = position_key(&prefix, Position { time: 3, seq: 10 });
        assert!(a < b);
    }

    #[test]
    fn device_prefixes_do_not_nest() {
        let a = device_prefix(&DeviceKey::new("pk", "dev"));
        let b = device_prefix(&DeviceKey::new("pk", "dev1"));
        let c = device_prefix(&DeviceKey::new("pkd", "ev"));
        assert!(!b.starts_with(&a));
        assert!(!c.starts_with(&a) && !a.starts_with(&c));
        assert_eq!(device_of(&b).ok(), Some(DeviceKey::new("pk", "dev1")));
    }

    #[test]
    fn names_round_trip_and_garbage_is_an_error() {
        let prefix = device_prefix(&DeviceKey::new("pk", "dn"));
        let key = name_key(&prefix, "temperature");
        assert_eq!(
            name_after(&prefix, &key).ok().as_deref(),
            Some("temperature")
        );
        assert!(name_after(&prefix, b"xx").is_err());
        assert!(device_of(&[0, 9, b'a']).is_err());
        assert!(device_of(&[]).is_err());
        assert!(position_of(&[1, 2, 3]).is_err());
    }
}
