//! Query validation, page bounds and the opaque cursor.
//!
//! Every backend orders records by a position `(time, seq)`: the record's
//! time, then a sequence number that grows with insertion and is at least 1.
//! A query becomes an exclusive range of positions; a cursor is the position
//! of the last record of a page, with the order it was produced in.

use crate::{HistoryError, MAX_PAGE_SIZE, Order, Query};

/// A record's place in its device's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub(crate) time: i64,
    pub(crate) seq: u64,
}

/// A validated query: positions strictly between `lower` and `upper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) lower: Position,
    pub(crate) upper: Position,
    pub(crate) order: Order,
    /// Records per page, within `1..=MAX_PAGE_SIZE`.
    pub(crate) limit: usize,
}

impl Window {
    /// Validates `query` and narrows its time range by its cursor.
    pub(crate) fn from_query(query: &Query) -> Result<Window, HistoryError> {
        if query.start > query.end {
            return Err(HistoryError::InvalidQuery(format!(
                "start {} is after end {}",
                query.start, query.end
            )));
        }
        if query.limit == 0 {
            return Err(HistoryError::InvalidQuery("limit is 0".into()));
        }
        let limit = usize::try_from(query.limit.min(MAX_PAGE_SIZE)).unwrap_or(1);
        // Sequence numbers start at 1, so `(t, 0)` sorts before every record
        // of time `t`: an exclusive bound on it includes them all from below
        // and excludes them all from above.
        let mut lower = Position {
            time: query.start,
            seq: 0,
        };
        let mut upper = Position {
            time: query.end,
            seq: 0,
        };
        if let Some(cursor) = &query.cursor {
            let after = decode(cursor, query.order)?;
            match query.order {
                Order::OldestFirst => lower = lower.max(after),
                Order::NewestFirst => upper = upper.min(after),
            }
        }
        Ok(Window {
            lower,
            upper,
            order: query.order,
            limit,
        })
    }

    /// Whether no position lies strictly between the bounds.
    pub(crate) fn is_empty(&self) -> bool {
        self.lower >= self.upper
    }

    /// Turns up to `limit + 1` records, in query order, into a page.
    pub(crate) fn page<T>(&self, mut items: Vec<(Position, T)>) -> crate::Page<T> {
        let next_cursor = if items.len() > self.limit {
            items.truncate(self.limit);
            items.last().map(|(pos, _)| encode(*pos, self.order))
        } else {
            None
        };
        crate::Page {
            items: items.into_iter().map(|(_, item)| item).collect(),
            next_cursor,
        }
    }
}

fn order_tag(order: Order) -> char {
    match order {
        Order::NewestFirst => 'n',
        Order::OldestFirst => 'o',
    }
}

pub(crate) fn encode(pos: Position, order: Order) -> String {
    // The time's sign bit is flipped so that the text sorts like the number.
    let time = (pos.time as u64) ^ (1 << 63);
    format!("{}{time:016x}{:016x}", order_tag(order), pos.seq)
}

fn decode(cursor: &str, order: Order) -> Result<Position, HistoryError> {
    let mut chars = cursor.chars();
    if chars.next() != Some(order_tag(order)) || cursor.len() != 33 {
        return Err(HistoryError::InvalidCursor);
    }
    let digits = &cursor[1..];
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HistoryError::InvalidCursor);
    }
    let time = u64::from_str_radix(&digits[..16], 16).map_err(|_| HistoryError::InvalidCursor)?;
    let seq = u64::from_str_radix(&digits[16..], 16).map_err(|_| HistoryError::InvalidCursor)?;
    if seq == 0 {
        return Err(HistoryError::InvalidCursor);
    }
    Ok(Position {
        time: (time ^ (1 << 63)) as i64,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceKey;

    fn query(start: i64, end: i64, order: Order, limit: u32, cursor: Option<String>) -> Query {
        Query {
            device: DeviceKey::new("pk", "dn"),
            identifier: None,
            start,
            end,
            order,
            limit,
            cursor,
        }
    }

    #[test]
    fn cursor_round_trips_with_negative_and_extreme_times() {
        for time in [i64::MIN, -1, 0, 1, 1_700_000_000_000, i64::MAX] {
            for order in [Order::NewestFirst, Order::OldestFirst] {
                let pos = Position { time, seq: 42 };
                assert_eq!(decode(&encode(pos, order), order).ok(), Some(pos));
            }
        }
    }

    #[test]
    fn cursor_of_the_other_order_or_garbage_is_refused() {
        let cursor = encode(Position { time: 5, seq: 1 }, Order::NewestFirst);
        assert!(matches!(
            decode(&cursor, Order::OldestFirst),
            Err(HistoryError::InvalidCursor)
        ));
        for bad in [
            "",
            "n",
            "nzz",
            "é",
            &format!("n{}", "g".repeat(32)),
            &format!("n{}", "0".repeat(32)),
        ] {
            assert!(
                matches!(
                    decode(bad, Order::NewestFirst),
                    Err(HistoryError::InvalidCursor)
                ),
                "{bad:?}"
            );
        }
        let multibyte = format!("n{}é", "0".repeat(30));
        assert!(matches!(
            decode(&multibyte, Order::NewestFirst),
            Err(HistoryError::InvalidCursor)
        ));
    }

    #[test]
    fn invalid_queries_are_refused() {
        assert!(matches!(
            Window::from_query(&query(10, 5, Order::OldestFirst, 10, None)),
            Err(HistoryError::InvalidQuery(_))
        ));
        assert!(matches!(
            Window::from_query(&query(0, 5, Order::OldestFirst, 0, None)),
            Err(HistoryError::InvalidQuery(_))
        ));
    }

    #[test]
    fn limit_is_capped_and_cursor_narrows_the_window() {
        let w = Window::from_query(&query(0, 100, Order::OldestFirst, 10_000, None)).ok();
        assert_eq!(w.map(|w| w.limit), Some(MAX_PAGE_SIZE as usize));

        let after = Position { time: 50, seq: 7 };
        let oldest = Window::from_query(&query(
            0,
            100,
            Order::OldestFirst,
            10,
            Some(encode(after, Order::OldestFirst)),
        ))
        .ok();
        assert_eq!(oldest.map(|w| (w.lower, w.upper.time)), Some((after, 100)));

        let newest = Window::from_query(&query(
            0,
            100,
            Order::NewestFirst,
            10,
            Some(encode(after, Order::NewestFirst)),
        ))
        .ok();
        assert_eq!(newest.map(|w| (w.lower.time, w.upper)), Some((0, after)));
    }

    #[test]
    fn page_sets_a_cursor_only_when_more_follow() {
        let w = Window::from_query(&query(0, 100, Order::OldestFirst, 2, None)).ok();
        let Some(w) = w else { panic!("valid query") };
        let at = |time| Position { time, seq: 1 };
        let page = w.page(vec![(at(1), 'a'), (at(2), 'b')]);
        assert_eq!((page.items, page.next_cursor), (vec!['a', 'b'], None));
        let page = w.page(vec![(at(1), 'a'), (at(2), 'b'), (at(3), 'c')]);
        assert_eq!(page.items, vec!['a', 'b']);
        assert_eq!(page.next_cursor, Some(encode(at(2), Order::OldestFirst)));
    }
}
