//! Block-wise transfer (RFC 7959): the Block1/Block2 option value, reassembly of uploads
//! ([`Block1Uploads`]) and slicing of responses ([`block2_slice`]).
//!
//! Upload policy (atomic Block1, RFC 7959 section 2.5): blocks must arrive in order. The byte
//! offset of a block (`NUM << (SZX + 4)`) must equal the bytes received so far, so a client may
//! switch to a smaller block size mid-transfer. A non-final block that repeats, byte for byte, the
//! block accepted last is acknowledged again without being appended (a retransmission under a new
//! message id); otherwise block 0 starts a new body. Any other block (a gap, an earlier block, or a block for a transfer we do not
//! hold) ends the transfer with 4.08 Request Entity Incomplete. A body over the limit (announced
//! in Size1 or reached while appending) ends it with 4.13 Request Entity Too Large and Size1 set
//! to the limit. Transfers idle for longer than their lifetime are forgotten.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::exchange::EXCHANGE_LIFETIME;
use crate::message::{Code, Message};

/// The body limit of the platform: 1 KB (bigger is refused with 4.13).
pub const DEFAULT_MAX_BODY: usize = 1024;

/// A Block1 or Block2 value: block number, more flag, size exponent (block size
/// `2^(SZX + 4)`, 16..=1024 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockOpt {
    num: u32,
    more: bool,
    szx: u8,
}

impl BlockOpt {
    /// The largest block number (20 bits).
    pub const MAX_NUM: u32 = (1 << 20) - 1;
    /// The largest size exponent (1024-byte blocks); 7 is reserved.
    pub const MAX_SZX: u8 = 6;

    /// A block value; `None` if `num` exceeds 20 bits or `szx` exceeds 6.
    pub fn new(num: u32, more: bool, szx: u8) -> Option<BlockOpt> {
        (num <= Self::MAX_NUM && szx <= Self::MAX_SZX).then_some(BlockOpt { num, more, szx })
    }

    /// The value of an option's unsigned integer (at most 3 bytes); `None` for SZX 7.
    pub fn from_uint(value: u32) -> Option<BlockOpt> {
        let szx = u8::try_from(value & 0x7).ok()?;
        BlockOpt::new((value >> 4) & Self::MAX_NUM, value & 0x8 != 0, szx)
    }

    /// The option's unsigned integer.
    pub fn to_uint(self) -> u32 {
        (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx)
    }

    /// The block number.
    pub fn num(self) -> u32 {
        self.num
    }

    /// Whether more blocks follow.
    pub fn more(self) -> bool {
        self.more
    }

    /// The size exponent.
    pub fn szx(self) -> u8 {
        self.szx
    }

    /// The block size in bytes.
    pub fn size(self) -> usize {
        1usize << (self.szx + 4)
    }

    /// The byte offset of this block.
    pub fn offset(self) -> usize {
        // At most 2^20 * 2^10: no overflow on any target with 32-bit usize or wider.
        self.num as usize * self.size()
    }

    /// The size exponent of the largest block not bigger than `size` (16 at least).
    pub fn szx_for(size: usize) -> u8 {
        let mut szx = Self::MAX_SZX;
        while szx > 0 && (1usize << (szx + 4)) > size {
            szx -= 1;
        }
        szx
    }
}

/// Why an upload was refused; the transfer is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadRefusal {
    /// 4.13 Request Entity Too Large; the response carries Size1 = `max`.
    TooLarge {
        /// The body limit.
        max: usize,
    },
    /// 4.08 Request Entity Incomplete: a block out of order, or for an unknown transfer.
    Incomplete,
    /// 4.00 Bad Request: a non-final block whose payload is not exactly one block, or a final
    /// one bigger than a block.
    BadBlockSize,
    /// 5.03 Service Unavailable: too many uploads in progress.
    Busy,
}

impl UploadRefusal {
    /// The response code.
    pub fn code(self) -> Code {
        match self {
            UploadRefusal::TooLarge { .. } => Code::REQUEST_ENTITY_TOO_LARGE,
            UploadRefusal::Incomplete => Code::REQUEST_ENTITY_INCOMPLETE,
            UploadRefusal::BadBlockSize => Code::BAD_REQUEST,
            UploadRefusal::Busy => Code::SERVICE_UNAVAILABLE,
        }
    }

    /// Sets the code of `response` and, for 4.13, its Size1 option (RFC 7959 section 4).
    pub fn apply(self, response: &mut Message) {
        response.code = self.code();
        if let UploadRefusal::TooLarge { max } = self {
            response.set_size1(u32::try_from(max).unwrap_or(u32::MAX));
        }
    }
}

/// Whether a request body that is not block-wise fits the limit.
pub fn check_body_size(len: usize, max: usize) -> Result<(), UploadRefusal> {
    if len > max {
        Err(UploadRefusal::TooLarge { max })
    } else {
        Ok(())
    }
}

/// What to answer to one Block1 block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStep {
    /// 2.31 Continue carrying this Block1 value (M set): send the next block.
    Continue(BlockOpt),
    /// The body is complete; process it and answer with this Block1 value (M clear).
    Complete {
        /// The reassembled body.
        body: Vec<u8>,
        /// The Block1 value for the final response.
        block: BlockOpt,
    },
    /// Refused; the transfer is dropped.
    Refused(UploadRefusal),
}

/// Limits of [`Block1Uploads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// The largest body, in bytes (default 1024).
    pub max_body: usize,
    /// How long a transfer may wait for its next block (default EXCHANGE_LIFETIME).
    pub lifetime: Duration,
    /// How many transfers may be in progress at once (default 1024).
    pub max_transfers: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            max_body: DEFAULT_MAX_BODY,
            lifetime: EXCHANGE_LIFETIME,
            max_transfers: 1024,
        }
    }
}

#[derive(Debug)]
struct Upload {
    body: Vec<u8>,
    expires: Instant,
}

/// Block1 reassembly for every transfer in progress, keyed by whatever identifies a body to the
/// caller (RFC 7959 section 2.5: the peer and the request URI; not the token).
#[derive(Debug)]
pub struct Block1Uploads<K> {
    limits: UploadLimits,
    transfers: HashMap<K, Upload>,
}

impl<K: Eq + Hash + Clone> Block1Uploads<K> {
    /// An empty set of transfers.
    pub fn new(limits: UploadLimits) -> Self {
        Block1Uploads {
            limits,
            transfers: HashMap::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> UploadLimits {
        self.limits
    }

    /// Transfers in progress.
    pub fn len(&self) -> usize {
        self.transfers.len()
    }

    /// Whether no transfer is in progress.
    pub fn is_empty(&self) -> bool {
        self.transfers.is_empty()
    }

    /// Forgets transfers whose lifetime ended at or before `now`.
    pub fn expire(&mut self, now: Instant) {
        self.transfers.retain(|_, u| u.expires > now);
    }

    /// Feeds one block: `block` is the request's Block1 value, `payload` its payload,
    /// `size1` its Size1 option (the announced body size) if any.
    pub fn receive(
        &mut self,
        key: &K,
        block: BlockOpt,
        payload: &[u8],
        size1: Option<u32>,
        now: Instant,
    ) -> UploadStep {
        let max = self.limits.max_body;
        if size1.is_some_and(|s| usize::try_from(s).map_or(true, |s| s > max)) {
            return self.refuse(key, UploadRefusal::TooLarge { max });
        }
        let size = block.size();
        if (block.more() && payload.len() != size) || payload.len() > size {
            return self.refuse(key, UploadRefusal::BadBlockSize);
        }
        let offset = block.offset();
        let expires = now.checked_add(self.limits.lifetime).unwrap_or(now);
        let live = self.transfers.get(key).filter(|u| u.expires > now);
        let repeat = block.more()
            && live.is_some_and(|u| {
                offset.checked_add(payload.len()) == Some(u.body.len())
                    && u.body.get(offset..) == Some(payload)
            });
        if repeat {
            if let Some(u) = self.transfers.get_mut(key) {
                u.expires = expires;
            }
            return UploadStep::Continue(block);
        }
        if offset == 0 && !block.more() {
            // A body in one block needs no state.
            self.transfers.remove(key);
            if payload.len() > max {
                return UploadStep::Refused(UploadRefusal::TooLarge { max });
            }
            return UploadStep::Complete {
                body: payload.to_vec(),
                block,
            };
        }
        let in_order = live.is_some_and(|u| u.body.len() == offset);
        if offset != 0 && !in_order {
            return self.refuse(key, UploadRefusal::Incomplete);
        }
        if offset == 0 {
            if !self.transfers.contains_key(key)
                && self.transfers.len() >= self.limits.max_transfers
            {
                self.expire(now);
                if self.transfers.len() >= self.limits.max_transfers {
                    return UploadStep::Refused(UploadRefusal::Busy);
                }
            }
            self.transfers.insert(
                key.clone(),
                Upload {
                    body: Vec::new(),
                    expires,
                },
            );
        }
        if offset + payload.len() > max {
            return self.refuse(key, UploadRefusal::TooLarge { max });
        }
        let Some(upload) = self.transfers.get_mut(key) else {
            return UploadStep::Refused(UploadRefusal::Incomplete);
        };
        upload.body.extend_from_slice(payload);
        upload.expires = expires;
        if block.more() {
            return UploadStep::Continue(block);
        }
        let body = self
            .transfers
            .remove(key)
            .map(|u| u.body)
            .unwrap_or_default();
        UploadStep::Complete { body, block }
    }

    fn refuse(&mut self, key: &K, why: UploadRefusal) -> UploadStep {
        self.transfers.remove(key);
        UploadStep::Refused(why)
    }
}

/// One block of a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block2Slice<'a> {
    /// The Block2 option for the response; `None` when the whole body fits one block and the
    /// request did not ask for blocks.
    pub block: Option<BlockOpt>,
    /// The bytes to send.
    pub data: &'a [u8],
}

/// A Block2 request for a block past the end of the body: answered 4.02 Bad Option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("block {num} (size {size}) is past the end of a {len}-byte body")]
pub struct BlockOutOfRange {
    /// The requested block number (in the size we answer with).
    pub num: u32,
    /// The block size.
    pub size: usize,
    /// The body length.
    pub len: usize,
}

/// Selects the block of `body` to send for a request carrying `requested` (its Block2 option,
/// if any), with blocks of at most `2^(max_szx + 4)` bytes.
///
/// The size used is the smaller of the requested and our own; when ours is smaller the block
/// number is scaled so the offset stays the one the client asked for (RFC 7959 section 2.4).
pub fn block2_slice(
    body: &[u8],
    requested: Option<BlockOpt>,
    max_szx: u8,
) -> Result<Block2Slice<'_>, BlockOutOfRange> {
    let max_szx = max_szx.min(BlockOpt::MAX_SZX);
    let (szx, num) = match requested {
        None => (max_szx, 0),
        Some(r) if r.szx() <= max_szx => (r.szx(), r.num()),
        Some(r) => (max_szx, r.num() << (r.szx() - max_szx)),
    };
    let size = 1usize << (szx + 4);
    if requested.is_none() && body.len() <= size {
        return Ok(Block2Slice {
            block: None,
            data: body,
        });
    }
    let out_of_range = BlockOutOfRange {
        num,
        size,
        len: body.len(),
    };
    let offset = (num as usize).checked_mul(size).ok_or(out_of_range)?;
    if offset > body.len() || (offset == body.len() && offset != 0) {
        return Err(out_of_range);
    }
    let end = (offset + size).min(body.len());
    let block = BlockOpt::new(num, end < body.len(), szx).ok_or(out_of_range)?;
    Ok(Block2Slice {
        block: Some(block),
        data: &body[offset..end],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(num: u32, more: bool, szx: u8) -> BlockOpt {
        BlockOpt::new(num, more, szx).expect("valid block")
    }

    #[test]
    fn block_value_encoding() {
        // RFC 7959 figure 5 style: NUM=2, M=1, SZX=2 (64 bytes) is 0x2a.
        assert_eq!(b(2, true, 2).to_uint(), 0x2a);
        assert_eq!(BlockOpt::from_uint(0x2a), Some(b(2, true, 2)));
        assert_eq!(BlockOpt::from_uint(0x0f), None);
        assert_eq!(b(0, false, 6).size(), 1024);
        assert_eq!(b(3, false, 0).offset(), 48);
        assert_eq!(BlockOpt::new(BlockOpt::MAX_NUM + 1, false, 0), None);
        assert_eq!(BlockOpt::new(0, false, 7), None);
        assert_eq!(BlockOpt::szx_for(1024), 6);
        assert_eq!(BlockOpt::szx_for(1000), 5);
        assert_eq!(BlockOpt::szx_for(3), 0);
        let max = b(BlockOpt::MAX_NUM, true, 6);
        assert_eq!(BlockOpt::from_uint(max.to_uint()), Some(max));
    }

    fn uploads() -> Block1Uploads<&'static str> {
        Block1Uploads::new(UploadLimits::default())
    }

    #[test]
    fn in_order_upload_completes() {
        let t = Instant::now();
        let mut u = uploads();
        let data: Vec<u8> = (0..=255u8).cycle().take(600).collect();
        for (i, chunk) in data.chunks(256).enumerate() {
            let num = u32::try_from(i).expect("small");
            let more = (i + 1) * 256 < data.len();
            let step = u.receive(&"p", b(num, more, 4), chunk, None, t);
            if more {
                assert_eq!(step, UploadStep::Continue(b(num, true, 4)));
            } else {
                assert_eq!(
                    step,
                    UploadStep::Complete {
                        body: data.clone(),
                        block: b(2, false, 4)
                    }
                );
            }
        }
        assert!(u.is_empty());
    }

    #[test]
    fn duplicate_block_is_acknowledged_once() {
        let t = Instant::now();
        let mut u = uploads();
        let c0 = [1u8; 16];
        let c1 = [2u8; 16];
        assert_eq!(
            u.receive(&"p", b(0, true, 0), &c0, None, t),
            UploadStep::Continue(b(0, true, 0))
        );
        assert_eq!(
            u.receive(&"p", b(1, true, 0), &c1, None, t),
            UploadStep::Continue(b(1, true, 0))
        );
        // The same block again: acknowledged, not appended.
        assert_eq!(
            u.receive(&"p", b(1, true, 0), &c1, None, t),
            UploadStep::Continue(b(1, true, 0))
        );
        let step = u.receive(&"p", b(2, false, 0), &[3], None, t);
        let mut want = c0.to_vec();
        want.extend_from_slice(&c1);
        want.push(3);
        assert_eq!(
            step,
            UploadStep::Complete {
                body: want,
                block: b(2, false, 0)
            }
        );
    }

    #[test]
    fn out_of_order_block_is_incomplete() {
        let t = Instant::now();
        let mut u = uploads();
        // No transfer yet: block 1 is out of order.
        assert_eq!(
            u.receive(&"p", b(1, true, 0), &[0; 16], None, t),
            UploadStep::Refused(UploadRefusal::Incomplete)
        );
        u.receive(&"p", b(0, true, 0), &[0; 16], None, t);
        // A gap ends the transfer.
        assert_eq!(
            u.receive(&"p", b(2, true, 0), &[0; 16], None, t),
            UploadStep::Refused(UploadRefusal::Incomplete)
        );
        assert!(u.is_empty());
        // An earlier block (not the last one accepted) too.
        u.receive(&"p", b(0, true, 0), &[0; 16], None, t);
        u.receive(&"p", b(1, true, 0), &[0; 16], None, t);
        u.receive(&"p", b(2, true, 0), &[0; 16], None, t);
        assert_eq!(
            u.receive(&"p", b(1, true, 0), &[0; 16], None, t),
            UploadStep::Refused(UploadRefusal::Incomplete)
        );
        assert_eq!(
            UploadRefusal::Incomplete.code(),
            Code::REQUEST_ENTITY_INCOMPLETE
        );
    }

    #[test]
    fn block_zero_restarts_and_size_may_shrink() {
        let t = Instant::now();
        let mut u = uploads();
        u.receive(&"p", b(0, true, 1), &[9; 32], None, t);
        // Restart with block 0: the old body is gone.
        u.receive(&"p", b(0, true, 1), &[1; 32], None, t);
        // Switch to 16-byte blocks: block 2 of size 16 is offset 32.
        assert_eq!(
            u.receive(&"p", b(2, true, 0), &[2; 16], None, t),
            UploadStep::Continue(b(2, true, 0))
        );
        let UploadStep::Complete { body, .. } = u.receive(&"p", b(3, false, 0), &[3; 4], None, t)
        else {
            panic!("expected completion");
        };
        assert_eq!(body.len(), 52);
        assert_eq!(&body[..32], &[1; 32]);
    }

    #[test]
    fn oversize_is_refused_with_size1() {
        let t = Instant::now();
        let mut u = uploads();
        // Announced too big.
        assert_eq!(
            u.receive(&"p", b(0, true, 6), &[0; 1024], Some(1025), t),
            UploadStep::Refused(UploadRefusal::TooLarge { max: 1024 })
        );
        // Exactly 1024 is fine.
        assert!(matches!(
            u.receive(&"p", b(0, false, 6), &[0; 1024], Some(1024), t),
            UploadStep::Complete { .. }
        ));
        // Reaching the limit while appending.
        u.receive(&"p", b(0, true, 6), &[0; 1024], None, t);
        let step = u.receive(&"p", b(1, false, 6), &[0; 1], None, t);
        assert_eq!(
            step,
            UploadStep::Refused(UploadRefusal::TooLarge { max: 1024 })
        );
        assert!(u.is_empty());
        let mut resp = Message::new(crate::MessageType::Acknowledgement, Code::EMPTY, 1);
        UploadRefusal::TooLarge { max: 1024 }.apply(&mut resp);
        assert_eq!(resp.code, Code::REQUEST_ENTITY_TOO_LARGE);
        assert_eq!(resp.size1(), Ok(Some(1024)));
        assert_eq!(
            check_body_size(1025, 1024),
            Err(UploadRefusal::TooLarge { max: 1024 })
        );
        assert_eq!(check_body_size(1024, 1024), Ok(()));
    }

    #[test]
    fn wrong_block_payload_size_is_bad_request() {
        let t = Instant::now();
        let mut u = uploads();
        assert_eq!(
            u.receive(&"p", b(0, true, 0), &[0; 15], None, t),
            UploadStep::Refused(UploadRefusal::BadBlockSize)
        );
        assert_eq!(
            u.receive(&"p", b(0, false, 0), &[0; 17], None, t),
            UploadStep::Refused(UploadRefusal::BadBlockSize)
        );
    }

    #[test]
    fn transfers_expire_and_are_bounded() {
        let t = Instant::now();
        let limits = UploadLimits {
            max_transfers: 2,
            lifetime: Duration::from_secs(10),
            ..UploadLimits::default()
        };
        let mut u = Block1Uploads::new(limits);
        u.receive(&"a", b(0, true, 0), &[0; 16], None, t);
        u.receive(&"b", b(0, true, 0), &[0; 16], None, t);
        assert_eq!(
            u.receive(&"c", b(0, true, 0), &[0; 16], None, t),
            UploadStep::Refused(UploadRefusal::Busy)
        );
        // A body in a single block needs no room.
        assert_eq!(
            u.receive(&"c", b(0, false, 0), &[5; 3], None, t),
            UploadStep::Complete {
                body: vec![5; 3],
                block: b(0, false, 0)
            }
        );
        // After the lifetime, "a" is forgotten: its next block is incomplete, and room is free.
        let later = t + Duration::from_secs(10);
        assert_eq!(
            u.receive(&"a", b(1, true, 0), &[0; 16], None, later),
            UploadStep::Refused(UploadRefusal::Incomplete)
        );
        assert_eq!(
            u.receive(&"c", b(0, true, 0), &[0; 16], None, later),
            UploadStep::Continue(b(0, true, 0))
        );
        u.expire(later + Duration::from_secs(11));
        assert!(u.is_empty());
    }

    #[test]
    fn block2_slicing() {
        let body: Vec<u8> = (0..100u8).collect();
        // Fits in one block and no Block2 asked: no option.
        let s = block2_slice(&body, None, 6).expect("slice");
        assert_eq!((s.block, s.data.len()), (None, 100));
        // Too big for our block size: first block with M.
        let s = block2_slice(&body, None, 1).expect("slice");
        assert_eq!(s.block, Some(b(0, true, 1)));
        assert_eq!(s.data, &body[..32]);
        // Last block.
        let s = block2_slice(&body, Some(b(3, false, 1)), 6).expect("slice");
        assert_eq!(s.block, Some(b(3, false, 1)));
        assert_eq!(s.data, &body[96..]);
        // Client asks for 64-byte block 1, we answer with 32-byte block 2 (same offset).
        let s = block2_slice(&body, Some(b(1, false, 2)), 1).expect("slice");
        assert_eq!(s.block, Some(b(2, true, 1)));
        assert_eq!(s.data, &body[64..96]);
        // Past the end.
        assert_eq!(
            block2_slice(&body, Some(b(4, false, 1)), 6),
            Err(BlockOutOfRange {
                num: 4,
                size: 32,
                len: 100
            })
        );
        // Block 0 of an empty body is an empty last block.
        let s = block2_slice(&[], Some(b(0, false, 2)), 6).expect("slice");
        assert_eq!((s.block, s.data.len()), (Some(b(0, false, 2)), 0));
        // Exact multiple: the last block has no M, and the next is out of range.
        let s = block2_slice(&body[..64], Some(b(1, false, 1)), 6).expect("slice");
        assert_eq!(s.block, Some(b(1, false, 1)));
        assert!(block2_slice(&body[..64], Some(b(2, false, 1)), 6).is_err());
        // Scaling never overflows.
        assert!(block2_slice(&body, Some(b(BlockOpt::MAX_NUM, false, 6)), 0).is_err());
    }

    proptest::proptest! {
        #[test]
        fn in_order_blocks_with_repeats_rebuild_the_body(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..=1024),
            szx in 0u8..=6,
            repeats in proptest::collection::vec(proptest::bool::ANY, 64),
        ) {
            let t = Instant::now();
            let mut u = uploads();
            let size = 1usize << (szx + 4);
            let n_blocks = body.len().div_ceil(size).max(1);
            let mut last = None;
            for i in 0..n_blocks {
                let chunk = body.get(i * size..((i + 1) * size).min(body.len())).unwrap_or(&[]);
                let more = i + 1 < n_blocks;
                let block = b(u32::try_from(i).expect("small"), more, szx);
                let times = if more && repeats[i % repeats.len()] { 2 } else { 1 };
                for _ in 0..times {
                    last = Some(u.receive(&"p", block, chunk, None, t));
                    if more {
                        proptest::prop_assert_eq!(last.clone(), Some(UploadStep::Continue(block)));
                    }
                }
            }
            proptest::prop_assert_eq!(
                last,
                Some(UploadStep::Complete { body: body.clone(), block: b(u32::try_from(n_blocks - 1).expect("small"), false, szx) })
            );
            proptest::prop_assert!(u.is_empty());
        }

        #[test]
        fn arbitrary_blocks_never_exceed_the_limit(
            steps in proptest::collection::vec((0u32..8, proptest::bool::ANY, 0u8..=6, 0usize..=1024), 0..32),
        ) {
            let t = Instant::now();
            let mut u = uploads();
            for (num, more, szx, len) in steps {
                let payload = vec![1u8; len];
                if let UploadStep::Complete { body, .. } = u.receive(&"p", b(num, more, szx), &payload, None, t) {
                    proptest::prop_assert!(body.len() <= DEFAULT_MAX_BODY);
                }
            }
        }
    }
}
