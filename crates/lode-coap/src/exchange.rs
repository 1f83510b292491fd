//! Message-layer rules of a CoAP server (RFC 7252 sections 4 and 5): what an incoming message
//! is ([`classify`]), how to answer it ([`piggybacked`], [`separate`], [`response_to`],
//! [`reset`]), refusing unknown critical options ([`check_critical_options`]), and duplicate
//! detection by message id ([`DedupCache`]).
//!
//! Time is always an argument: nothing here reads a clock.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::message::{Code, Message, MessageType};

/// EXCHANGE_LIFETIME with the default transmission parameters (RFC 7252 section 4.8.2):
/// how long a CON message id must be remembered.
pub const EXCHANGE_LIFETIME: Duration = Duration::from_secs(247);

/// NON_LIFETIME with the default transmission parameters: how long a NON message id must be
/// remembered.
pub const NON_LIFETIME: Duration = Duration::from_secs(145);

/// What an incoming message is, and what the message layer does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// A CON or NON request: deduplicate, then process.
    Request,
    /// A CON, NON or ACK carrying a response (to a request or notification of ours).
    Response,
    /// An Empty CON ("CoAP ping"): answer [`reset`] with its message id.
    Ping,
    /// An Empty ACK: acknowledges our CON with this message id.
    Ack,
    /// An Empty RST: our CON or NON with this message id was refused (for a notification:
    /// the observer is gone).
    Reset,
    /// A CON that is a format error (reserved code class): answer [`reset`].
    Reject,
    /// Dropped silently: an Empty NON, an ACK or RST carrying a request, a RST carrying a
    /// response, or a NON/ACK with a reserved code.
    Ignore,
}

/// Classifies a decoded message (RFC 7252 sections 1.2, 4.1–4.3).
pub fn classify(message: &Message) -> Inbound {
    let code = message.code;
    match message.message_type {
        MessageType::Confirmable if code.is_empty() => Inbound::Ping,
        MessageType::Confirmable if code.is_reserved() => Inbound::Reject,
        MessageType::Confirmable | MessageType::NonConfirmable if code.is_request() => {
            Inbound::Request
        }
        MessageType::Confirmable | MessageType::NonConfirmable | MessageType::Acknowledgement
            if code.is_response() =>
        {
            Inbound::Response
        }
        MessageType::Acknowledgement if code.is_empty() => Inbound::Ack,
        MessageType::Reset if code.is_empty() => Inbound::Reset,
        _ => Inbound::Ignore,
    }
}

/// The Empty RST for a message id.
pub fn reset(message_id: u16) -> Message {
    Message::empty(MessageType::Reset, message_id)
}

/// The Empty ACK that acknowledges a CON request whose response will come separately.
pub fn empty_ack(request: &Message) -> Message {
    Message::empty(MessageType::Acknowledgement, request.message_id)
}

/// A response piggybacked on the ACK of a CON request: same message id and token.
pub fn piggybacked(request: &Message, code: Code) -> Message {
    let mut m = Message::new(MessageType::Acknowledgement, code, request.message_id);
    m.token = request.token;
    m
}

/// A separate response (RFC 7252 section 5.2.2): a new CON or NON exchange with a fresh
/// message id, carrying the request's token.
pub fn separate(request: &Message, code: Code, confirmable: bool, message_id: u16) -> Message {
    let ty = if confirmable {
        MessageType::Confirmable
    } else {
        MessageType::NonConfirmable
    };
    let mut m = Message::new(ty, code, message_id);
    m.token = request.token;
    m
}

/// The immediate response to a request: piggybacked on the ACK of a CON, or a NON with
/// `fresh_message_id` for a NON request (RFC 7252 section 5.2.3).
pub fn response_to(request: &Message, code: Code, fresh_message_id: u16) -> Message {
    match request.message_type {
        MessageType::NonConfirmable => separate(request, code, false, fresh_message_id),
        _ => piggybacked(request, code),
    }
}

/// The outcome of a message-layer check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on processing.
    Accept,
    /// Send this message and stop.
    Reply(Message),
    /// Drop the message (count it).
    Drop,
}

/// Refuses a message carrying a critical option not in `known` (RFC 7252 section 5.4.1):
/// a CON request gets 4.02 Bad Option piggybacked (its payload names the option); a CON
/// response is rejected with RST; any other message is dropped.
pub fn check_critical_options(message: &Message, known: &[u16]) -> Verdict {
    let Some(number) = message.first_unknown_critical(known) else {
        return Verdict::Accept;
    };
    match (message.message_type, classify(message)) {
        (MessageType::Confirmable, Inbound::Request) => {
            let mut m = piggybacked(message, Code::BAD_OPTION);
            m.payload = format!("unrecognized critical option {number}").into_bytes();
            Verdict::Reply(m)
        }
        (MessageType::Confirmable, _) => Verdict::Reply(reset(message.message_id)),
        _ => Verdict::Drop,
    }
}

/// What [`DedupCache::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen<'a> {
    /// First time: process it (and call [`DedupCache::complete`] with the answer).
    New,
    /// A duplicate still being processed: drop it (RFC 7252 section 4.5).
    Pending,
    /// A duplicate already answered: send these bytes again.
    Replay(&'a [u8]),
    /// A duplicate that was deliberately not answered (e.g. a NON): drop it.
    Unanswered,
}

#[derive(Debug)]
struct Entry {
    expires: Instant,
    answer: Answer,
}

#[derive(Debug)]
enum Answer {
    Pending,
    Sent(Vec<u8>),
    None,
}

/// Message ids seen per peer, each remembered for a lifetime (EXCHANGE_LIFETIME for CON)
/// together with the answer sent, so a retransmitted CON gets the same answer without being
/// processed twice (RFC 7252 section 4.5).
///
/// Bounded: when `capacity` ids are remembered, the oldest is forgotten to make room (and
/// counted in [`DedupCache::evicted`]).
#[derive(Debug)]
pub struct DedupCache<P> {
    lifetime: Duration,
    capacity: usize,
    entries: HashMap<(P, u16), Entry>,
    order: VecDeque<((P, u16), Instant)>,
    evicted: u64,
}

impl<P: Eq + Hash + Clone> DedupCache<P> {
    /// A cache remembering each id for `lifetime`, at most `capacity` ids (at least 1).
    pub fn new(lifetime: Duration, capacity: usize) -> Self {
        DedupCache {
            lifetime,
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// Looks up `(peer, message_id)` at time `now`; a new id is recorded as pending.
    pub fn check(&mut self, peer: &P, message_id: u16, now: Instant) -> Seen<'_> {
        self.expire(now);
        let key = (peer.clone(), message_id);
        if self.entries.contains_key(&key) {
            return match self.entries.get(&key).map(|e| &e.answer) {
                Some(Answer::Sent(bytes)) => Seen::Replay(bytes),
                Some(Answer::None) => Seen::Unanswered,
                _ => Seen::Pending,
            };
        }
        while self.entries.len() >= self.capacity {
            let Some((old, stamp)) = self.order.pop_front() else {
                break;
            };
            if self.entries.get(&old).is_some_and(|e| e.expires == stamp) {
                self.entries.remove(&old);
                self.evicted += 1;
            }
        }
        let expires = now.checked_add(self.lifetime).unwrap_or(now);
        self.order.push_back((key.clone(), expires));
        self.entries.insert(
            key,
            Entry {
                expires,
                answer: Answer::Pending,
            },
        );
        Seen::New
    }

    /// Records the encoded answer to `(peer, message_id)`, to be replayed to duplicates.
    /// Ignored if the id is no longer remembered.
    pub fn complete(&mut self, peer: &P, message_id: u16, answer: Vec<u8>) {
        if let Some(e) = self.entries.get_mut(&(peer.clone(), message_id)) {
            e.answer = Answer::Sent(answer);
        }
    }

    /// Records that `(peer, message_id)` was processed and deliberately not answered.
    pub fn complete_silently(&mut self, peer: &P, message_id: u16) {
        if let Some(e) = self.entries.get_mut(&(peer.clone(), message_id)) {
            e.answer = Answer::None;
        }
    }

    /// Forgets ids whose lifetime ended at or before `now`.
    pub fn expire(&mut self, now: Instant) {
        while let Some((key, stamp)) = self.order.front() {
            if *stamp > now {
                break;
            }
            if self.entries.get(key).is_some_and(|e| e.expires == *stamp) {
                self.entries.remove(key);
            }
            self.order.pop_front();
        }
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Ids forgotten before their lifetime ended, to make room.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Token, opt};

    fn msg(ty: MessageType, code: Code) -> Message {
        let mut m = Message::new(ty, code, 0x1234);
        m.token = Token::new(&[1, 2, 3, 4]).expect("token");
        m
    }

    #[test]
    fn classification() {
        use MessageType::*;
        let cases = [
            (Message::empty(Confirmable, 1), Inbound::Ping),
            (Message::empty(NonConfirmable, 1), Inbound::Ignore),
            (Message::empty(Acknowledgement, 1), Inbound::Ack),
            (Message::empty(Reset, 1), Inbound::Reset),
            (msg(Confirmable, Code::POST), Inbound::Request),
            (msg(NonConfirmable, Code::GET), Inbound::Request),
            (msg(Acknowledgement, Code::GET), Inbound::Ignore),
            (msg(Reset, Code::GET), Inbound::Ignore),
            (msg(Acknowledgement, Code::CONTENT), Inbound::Response),
            (msg(Confirmable, Code::CHANGED), Inbound::Response),
            (msg(NonConfirmable, Code::NOT_FOUND), Inbound::Response),
            (msg(Reset, Code::CONTENT), Inbound::Ignore),
            (msg(Confirmable, Code::new(7, 1)), Inbound::Reject),
            (msg(NonConfirmable, Code::new(1, 0)), Inbound::Ignore),
        ];
        for (m, want) in cases {
            assert_eq!(classify(&m), want, "{m:?}");
        }
    }

    #[test]
    fn responses_match_requests() {
        let con = msg(MessageType::Confirmable, Code::POST);
        let ack = piggybacked(&con, Code::CHANGED);
        assert_eq!(
            (ack.message_type, ack.message_id, ack.token, ack.code),
            (
                MessageType::Acknowledgement,
                0x1234,
                con.token,
                Code::CHANGED
            )
        );
        assert_eq!(
            empty_ack(&con),
            Message::empty(MessageType::Acknowledgement, 0x1234)
        );
        let sep = separate(&con, Code::CONTENT, true, 7);
        assert_eq!(
            (sep.message_type, sep.message_id, sep.token),
            (MessageType::Confirmable, 7, con.token)
        );
        assert_eq!(response_to(&con, Code::CHANGED, 9), ack);
        let non = msg(MessageType::NonConfirmable, Code::POST);
        let r = response_to(&non, Code::CHANGED, 9);
        assert_eq!(
            (r.message_type, r.message_id, r.token),
            (MessageType::NonConfirmable, 9, non.token)
        );
        assert_eq!(reset(5), Message::empty(MessageType::Reset, 5));
    }

    #[test]
    fn unknown_critical_options() {
        let mut con = msg(MessageType::Confirmable, Code::POST);
        con.set_uri_path("/auth").expect("path");
        assert_eq!(check_critical_options(&con, opt::KNOWN), Verdict::Accept);
        con.add_option(9, vec![1]).expect("option");
        let Verdict::Reply(r) = check_critical_options(&con, opt::KNOWN) else {
            panic!("expected a reply");
        };
        assert_eq!(
            (r.code, r.message_type, r.message_id),
            (Code::BAD_OPTION, MessageType::Acknowledgement, 0x1234)
        );
        assert_eq!(r.token, con.token);
        assert_eq!(r.payload, b"unrecognized critical option 9");
        // Known when declared so.
        assert_eq!(
            check_critical_options(&con, &[9, opt::URI_PATH]),
            Verdict::Accept
        );
        // NON request: dropped.
        con.message_type = MessageType::NonConfirmable;
        assert_eq!(check_critical_options(&con, opt::KNOWN), Verdict::Drop);
        // CON response: RST.
        let mut resp = msg(MessageType::Confirmable, Code::CONTENT);
        resp.add_option(9, vec![]).expect("option");
        assert_eq!(
            check_critical_options(&resp, opt::KNOWN),
            Verdict::Reply(reset(0x1234))
        );
        resp.message_type = MessageType::Acknowledgement;
        assert_eq!(check_critical_options(&resp, opt::KNOWN), Verdict::Drop);
    }

    #[test]
    fn dedup_replays_until_expiry() {
        let t = Instant::now();
        let mut c = DedupCache::new(EXCHANGE_LIFETIME, 100);
        assert_eq!(c.check(&"a", 1, t), Seen::New);
        assert_eq!(c.check(&"a", 1, t), Seen::Pending);
        // Other peer, same id: independent.
        assert_eq!(c.check(&"b", 1, t), Seen::New);
        c.complete(&"a", 1, vec![0x60, 0x44, 0, 1]);
        assert_eq!(
            c.check(&"a", 1, t + Duration::from_secs(246)),
            Seen::Replay(&[0x60, 0x44, 0, 1])
        );
        c.complete_silently(&"b", 1);
        assert_eq!(c.check(&"b", 1, t), Seen::Unanswered);
        // At EXCHANGE_LIFETIME the id is forgotten and new again.
        assert_eq!(c.check(&"a", 1, t + EXCHANGE_LIFETIME), Seen::New);
        assert_eq!(c.len(), 1);
        c.expire(t + EXCHANGE_LIFETIME * 2);
        assert!(c.is_empty());
        // Completing a forgotten id does nothing.
        c.complete(&"a", 1, vec![]);
        assert!(c.is_empty());
    }

    #[test]
    fn dedup_is_bounded() {
        let t = Instant::now();
        let mut c = DedupCache::new(NON_LIFETIME, 2);
        assert_eq!(c.check(&"a", 1, t), Seen::New);
        assert_eq!(c.check(&"a", 2, t), Seen::New);
        assert_eq!(c.check(&"a", 3, t), Seen::New);
        assert_eq!((c.len(), c.evicted()), (2, 1));
        // The oldest went first.
        assert_eq!(c.check(&"a", 2, t), Seen::Pending);
        assert_eq!(c.check(&"a", 1, t), Seen::New);
        assert_eq!(c.evicted(), 2);
    }

    #[test]
    fn dedup_survives_far_future_time() {
        let t = Instant::now();
        let mut c = DedupCache::new(Duration::MAX, 4);
        assert_eq!(c.check(&"a", 1, t), Seen::New);
        assert_eq!(c.len(), 1);
    }
}
