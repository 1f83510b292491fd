//! Replay and reorder protection for the `seq` of the symmetric-key mode.
//!
//! Policy: the device numbers its messages `seqOffset`, `seqOffset + 1`, … (the C SDK
//! increments once per message sent, whatever its type). A session accepts each number once:
//! anything above the highest seen so far is accepted and moves the window; a number up to
//! [`SeqWindow::WIDTH`] − 1 below the highest is accepted if not seen yet (UDP may reorder);
//! older numbers, numbers below `seqOffset`, and numbers seen before are refused, and the server
//! drops the message and counts it. A CON retransmission repeats its `seq`, so message-id
//! deduplication must run before this check: the retransmission is then answered from the
//! deduplication cache and never reaches the window.

use thiserror::Error;

/// Why a `seq` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SeqError {
    /// Seen before in this session.
    #[error("seq {0} was already used")]
    Replayed(u32),
    /// Too far below the highest seen to tell whether it was used.
    #[error("seq {seq} is older than the window below {highest}")]
    TooOld {
        /// The refused number.
        seq: u32,
        /// The highest accepted so far.
        highest: u32,
    },
    /// Below the `seqOffset` the session started with.
    #[error("seq {seq} is below the session's offset {offset}")]
    BelowOffset {
        /// The refused number.
        seq: u32,
        /// The session's `seqOffset`.
        offset: u32,
    },
}

/// The accepted `seq` numbers of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqWindow {
    offset: u32,
    highest: Option<u32>,
    /// Bit `i` set: `highest - i` was accepted.
    seen: u64,
}

impl SeqWindow {
    /// How far below the highest number a late message is still accepted (exclusive).
    pub const WIDTH: u32 = 64;

    /// A session whose device starts counting at `seq_offset`.
    pub fn new(seq_offset: u32) -> SeqWindow {
        SeqWindow {
            offset: seq_offset,
            highest: None,
            seen: 0,
        }
    }

    /// The highest number accepted so far.
    pub fn highest(&self) -> Option<u32> {
        self.highest
    }

    /// Accepts `seq` once, or says why not.
    pub fn accept(&mut self, seq: u32) -> Result<(), SeqError> {
        if seq < self.offset {
            return Err(SeqError::BelowOffset {
                seq,
                offset: self.offset,
            });
        }
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.seen = 1;
            return Ok(());
        };
        if seq > highest {
            let shift = seq - highest;
            self.seen = if shift >= Self::WIDTH {
                1
            } else {
                (self.seen << shift) | 1
            };
            self.highest = Some(seq);
            return Ok(());
        }
        let back = highest - seq;
        if back >= Self::WIDTH {
            return Err(SeqError::TooOld { seq, highest });
        }
        let bit = 1u64 << back;
        if self.seen & bit != 0 {
            return Err(SeqError::Replayed(seq));
        }
        self.seen |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_and_replay() {
        let mut w = SeqWindow::new(100);
        assert_eq!(
            w.accept(99),
            Err(SeqError::BelowOffset {
                seq: 99,
                offset: 100
            })
        );
        for s in 100..200 {
            assert_eq!(w.accept(s), Ok(()));
        }
        assert_eq!(w.highest(), Some(199));
        assert_eq!(w.accept(199), Err(SeqError::Replayed(199)));
        assert_eq!(w.accept(150), Err(SeqError::Replayed(150)));
        assert_eq!(
            w.accept(135),
            Err(SeqError::TooOld {
                seq: 135,
                highest: 199
            })
        );
    }

    #[test]
    fn reordered_within_window() {
        let mut w = SeqWindow::new(0);
        assert_eq!(w.accept(5), Ok(()));
        // Earlier numbers that never arrived are still welcome, once.
        assert_eq!(w.accept(3), Ok(()));
        assert_eq!(w.accept(3), Err(SeqError::Replayed(3)));
        assert_eq!(w.accept(0), Ok(()));
        assert_eq!(w.accept(70), Ok(()));
        // 70 - 63 = 7 is the oldest still in the window.
        assert_eq!(w.accept(7), Ok(()));
        assert_eq!(
            w.accept(6),
            Err(SeqError::TooOld {
                seq: 6,
                highest: 70
            })
        );
        // A big jump clears the window.
        assert_eq!(w.accept(1_000), Ok(()));
        assert_eq!(w.accept(999), Ok(()));
        assert_eq!(
            w.accept(70),
            Err(SeqError::TooOld {
                seq: 70,
                highest: 1_000
            })
        );
    }

    #[test]
    fn extremes() {
        let mut w = SeqWindow::new(u32::MAX);
        assert_eq!(w.accept(u32::MAX), Ok(()));
        assert_eq!(w.accept(u32::MAX), Err(SeqError::Replayed(u32::MAX)));
        let mut w = SeqWindow::new(0);
        assert_eq!(w.accept(u32::MAX), Ok(()));
        assert_eq!(
            w.accept(0),
            Err(SeqError::TooOld {
                seq: 0,
                highest: u32::MAX
            })
        );
    }
}
