//! Topic names, topic filters, shared subscriptions and matching.
//!
//! Everything here works on borrowed `&str` and never allocates: the broker
//! calls [`matches`] for every (subscription, message) pair it considers.

/// The longest topic a packet can carry: its length is a two-byte prefix.
const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// Checks a topic name of a PUBLISH: non-empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_LEN
        && !topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0))
}

/// Checks a topic filter of a SUBSCRIBE: `+` and `#` occupy whole levels, `#` last.
pub fn valid_topic_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > MAX_TOPIC_LEN || filter.as_bytes().contains(&0) {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "+" => {}
            // `#` must be the whole level and the last one.
            "#" => return levels.peek().is_none(),
            _ if level.bytes().any(|b| b == b'+' || b == b'#') => return false,
            _ => {}
        }
    }
    true
}

/// Whether `filter` matches `topic`, with the rule that wildcards at the first
/// level never match topics that start with `$`.
///
/// Both arguments are assumed valid (see [`valid_topic_filter`] and
/// [`valid_topic_name`]); invalid input gives an unspecified but non-panicking answer.
pub fn matches(filter: &str, topic: &str) -> bool {
    // [MQTT-4.7.2-1]: `$SYS/...` and similar must not be caught by `#` or `+/...`.
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            // `#` also matches the parent level: `a/#` matches `a`.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A `$share/{group}/{filter}` subscription split into group and filter.
/// Returns `None` for a plain filter, `Some(Err)` for a malformed share.
pub fn parse_shared(filter: &str) -> Option<Result<(&str, &str), &'static str>> {
    let rest = filter.strip_prefix("$share/")?;
    let Some((group, inner)) = rest.split_once('/') else {
        return Some(Err("shared subscription without a topic filter"));
    };
    if group.is_empty() {
        return Some(Err("empty shared subscription group"));
    }
    // `/` cannot occur in `group` since we split at the first one.
    if group.bytes().any(|b| b == b'+' || b == b'#') {
        return Some(Err("wildcard in shared subscription group"));
    }
    if inner.is_empty() {
        return Some(Err("shared subscription without a topic filter"));
    }
    if !valid_topic_filter(inner) {
        return Some(Err("invalid topic filter in shared subscription"));
    }
    Some(Ok((group, inner)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(valid_topic_name("a"));
        assert!(valid_topic_name("a/b/c"));
        assert!(valid_topic_name("/"));
        assert!(valid_topic_name("$SYS/x"));
        assert!(!valid_topic_name(""));
        assert!(!valid_topic_name("a/+"));
        assert!(!valid_topic_name("a/#"));
        assert!(!valid_topic_name("a+b"));
        assert!(!valid_topic_name("a\0b"));
        assert!(!valid_topic_name(&"x".repeat(65536)));
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#", "+", "a/#", "a/+/b", "+/+", "/+", "a//b", "$SYS/#", "+/#", "a/b",
        ] {
            assert!(valid_topic_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a/b+", "+a", "##", "a/++", "a\0", "#/"] {
            assert!(!valid_topic_filter(bad), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let yes = [
            ("a/b", "a/b"),
            ("a/+", "a/b"),
            ("a/#", "a"),
            ("a/#", "a/b/c"),
            ("#", "a/b"),
            ("+/+", "/x"),
            ("+", ""),
            ("a/+/c", "a//c"),
            ("$SYS/#", "$SYS/x"),
            ("$SYS/+", "$SYS/x"),
            ("+/#", "a"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f} should match {t}");
        }
        let no = [
            ("a/b", "a"),
            ("a/+", "a"),
            ("a/+", "a/b/c"),
            ("a", "a/b"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
            ("a/#", "ab"),
            ("b/#", "a"),
        ];
        for (f, t) in no {
            assert!(!matches(f, t), "{f} should not match {t}");
        }
    }

    #[test]
    fn shared() {
        assert_eq!(parse_shared("a/b"), None);
        assert_eq!(parse_shared("$share"), None);
        assert_eq!(parse_shared("$share/g/a/#"), Some(Ok(("g", "a/#"))));
        assert_eq!(parse_shared("$share/g/+"), Some(Ok(("g", "+"))));
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g/",
            "$share/g+/a",
            "$share/#/a",
            "$share/g/a#",
        ] {
            assert!(matches!(parse_shared(bad), Some(Err(_))), "{bad}");
        }
    }
}
