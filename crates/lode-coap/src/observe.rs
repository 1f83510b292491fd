//! Observe (RFC 7641) on the server side: registration, deregistration and notification
//! sequence numbers, so a device can wait for its downlinks on a resource it observes.
//!
//! Sequence numbers are 24-bit, per observation, and increase by one per notification; a
//! re-registration with the same peer and token keeps its sequence, so the client's freshness
//! check (RFC 7641 section 3.4) keeps working. A notification must be confirmable at least
//! once every 24 hours (section 4.5); [`Observers::notify`] says when.
//!
//! The number of observations is bounded; over the bound a registration is refused and the
//! request is answered without an Observe option, which tells the client it is not registered
//! (section 4.1).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::message::{Code, Message, OptionError, Token};

/// How often a notification must be confirmable (RFC 7641 section 4.5).
pub const CONFIRMABLE_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

const SEQ_MASK: u32 = 0x00ff_ffff;

/// What a request asks of Observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObserveAction {
    /// A GET with Observe 0: register (or refresh) an observation.
    Register,
    /// A GET with Observe 1: remove the observation.
    Deregister,
    /// No Observe option, another value, or not a GET: an ordinary request.
    None,
}

/// The Observe action of a request.
pub fn observe_action(request: &Message) -> Result<ObserveAction, OptionError> {
    if request.code != Code::GET {
        return Ok(ObserveAction::None);
    }
    Ok(match request.observe()? {
        Some(0) => ObserveAction::Register,
        Some(1) => ObserveAction::Deregister,
        _ => ObserveAction::None,
    })
}

/// What to send for one notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    /// The Observe option value.
    pub observe: u32,
    /// Whether it must go as CON.
    pub confirmable: bool,
}

/// The observation limit was reached: answer without Observe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many observations ({0})")]
pub struct TooManyObservations(pub usize);

#[derive(Debug)]
struct Observation {
    path: String,
    seq: u32,
    last_confirmable: Instant,
}

/// The observations of every peer, keyed by peer and token.
#[derive(Debug)]
pub struct Observers<P> {
    max: usize,
    observations: HashMap<(P, Token), Observation>,
}

impl<P: Eq + Hash + Clone> Observers<P> {
    /// No observations; at most `max` at once.
    pub fn new(max: usize) -> Self {
        Observers {
            max,
            observations: HashMap::new(),
        }
    }

    /// Registers (or refreshes) the observation of `path` by `peer` with `token`; returns the
    /// Observe value for the response that confirms it.
    pub fn register(
        &mut self,
        peer: &P,
        token: Token,
        path: &str,
        now: Instant,
    ) -> Result<u32, TooManyObservations> {
        let key = (peer.clone(), token);
        if let Some(o) = self.observations.get_mut(&key) {
            o.seq = (o.seq + 1) & SEQ_MASK;
            path.clone_into(&mut o.path);
            o.last_confirmable = now;
            return Ok(o.seq);
        }
        if self.observations.len() >= self.max {
            return Err(TooManyObservations(self.max));
        }
        self.observations.insert(
            key,
            Observation {
                path: path.to_owned(),
                seq: 1,
                last_confirmable: now,
            },
        );
        Ok(1)
    }

    /// Removes one observation; whether it existed.
    pub fn deregister(&mut self, peer: &P, token: Token) -> bool {
        self.observations.remove(&(peer.clone(), token)).is_some()
    }

    /// Removes every observation of `peer` (it answered a notification with RST, or timed
    /// out); how many were removed.
    pub fn forget_peer(&mut self, peer: &P) -> usize {
        let before = self.observations.len();
        self.observations.retain(|(p, _), _| p != peer);
        before - self.observations.len()
    }

    /// The peers and tokens observing `path`.
    pub fn observers_of<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a P, Token)> + 'a {
        self.observations
            .iter()
            .filter(move |(_, o)| o.path == path)
            .map(|((p, t), _)| (p, *t))
    }

    /// The next notification of an observation at `now`: its Observe value, and whether it
    /// goes as CON (`prefer_confirmable`, or because the last CON is 24 hours old).
    /// `None` if there is no such observation.
    pub fn notify(
        &mut self,
        peer: &P,
        token: Token,
        now: Instant,
        prefer_confirmable: bool,
    ) -> Option<Notification> {
        let o = self.observations.get_mut(&(peer.clone(), token))?;
        o.seq = (o.seq + 1) & SEQ_MASK;
        let due = now.saturating_duration_since(o.last_confirmable) >= CONFIRMABLE_INTERVAL;
        let confirmable = prefer_confirmable || due;
        if confirmable {
            o.last_confirmable = now;
        }
        Some(Notification {
            observe: o.seq,
            confirmable,
        })
    }

    /// Observations in place.
    pub fn len(&self) -> usize {
        self.observations.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.observations.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageType;

    fn tok(b: u8) -> Token {
        Token::new(&[b]).expect("token")
    }

    #[test]
    fn actions() {
        let mut get = Message::new(MessageType::Confirmable, Code::GET, 1);
        assert_eq!(observe_action(&get), Ok(ObserveAction::None));
        get.set_observe(0);
        assert_eq!(observe_action(&get), Ok(ObserveAction::Register));
        get.set_observe(1);
        assert_eq!(observe_action(&get), Ok(ObserveAction::Deregister));
        get.set_observe(2);
        assert_eq!(observe_action(&get), Ok(ObserveAction::None));
        let mut post = Message::new(MessageType::Confirmable, Code::POST, 1);
        post.set_observe(0);
        assert_eq!(observe_action(&post), Ok(ObserveAction::None));
        get.add_option(crate::opt::OBSERVE, vec![0, 0, 0, 0])
            .expect("option");
        assert!(observe_action(&get).is_err());
    }

    #[test]
    fn sequence_increases_and_wraps() {
        let t = Instant::now();
        let mut obs = Observers::new(10);
        assert_eq!(obs.register(&"a", tok(1), "/down/a", t), Ok(1));
        assert_eq!(
            obs.notify(&"a", tok(1), t, false),
            Some(Notification {
                observe: 2,
                confirmable: false
            })
        );
        assert_eq!(
            obs.notify(&"a", tok(1), t, true),
            Some(Notification {
                observe: 3,
                confirmable: true
            })
        );
        // Re-registration continues the sequence.
        assert_eq!(obs.register(&"a", tok(1), "/down/a", t), Ok(4));
        assert_eq!(obs.notify(&"b", tok(1), t, false), None);
        if let Some(o) = obs.observations.get_mut(&("a", tok(1))) {
            o.seq = SEQ_MASK;
        }
        assert_eq!(
            obs.notify(&"a", tok(1), t, false).map(|n| n.observe),
            Some(0)
        );
    }

    #[test]
    fn confirmable_at_least_daily() {
        let t = Instant::now();
        let mut obs = Observers::new(10);
        obs.register(&"a", tok(1), "/x", t).expect("room");
        let later = t + CONFIRMABLE_INTERVAL - Duration::from_secs(1);
        assert_eq!(
            obs.notify(&"a", tok(1), later, false)
                .map(|n| n.confirmable),
            Some(false)
        );
        let day = t + CONFIRMABLE_INTERVAL;
        assert_eq!(
            obs.notify(&"a", tok(1), day, false).map(|n| n.confirmable),
            Some(true)
        );
        // The clock restarts from that CON.
        assert_eq!(
            obs.notify(&"a", tok(1), day + Duration::from_secs(60), false)
                .map(|n| n.confirmable),
            Some(false)
        );
    }

    #[test]
    fn registry_bounds_and_removal() {
        let t = Instant::now();
        let mut obs = Observers::new(2);
        obs.register(&"a", tok(1), "/x", t).expect("room");
        obs.register(&"a", tok(2), "/y", t).expect("room");
        assert_eq!(
            obs.register(&"b", tok(1), "/x", t),
            Err(TooManyObservations(2))
        );
        // Refreshing an existing one is always possible.
        assert!(obs.register(&"a", tok(2), "/x", t).is_ok());
        let mut on_x: Vec<Token> = obs.observers_of("/x").map(|(_, t)| t).collect();
        on_x.sort_by_key(|t| t.as_bytes().to_vec());
        assert_eq!(on_x, [tok(1), tok(2)]);
        assert!(obs.deregister(&"a", tok(1)));
        assert!(!obs.deregister(&"a", tok(1)));
        assert_eq!(obs.forget_peer(&"a"), 1);
        assert!(obs.is_empty());
    }
}
