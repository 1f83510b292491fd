//! Topic names, topic filters, shared subscriptions and matching.

/// Checks a topic name of a PUBLISH: non-empty, no wildcards, no NUL.
pub fn valid_topic_name(topic: &str) -> bool {
    let _ = topic;
    unimplemented!()
}

/// Checks a topic filter of a SUBSCRIBE: `+` and `#` occupy whole levels, `#` last.
pub fn valid_topic_filter(filter: &str) -> bool {
    let _ = filter;
    unimplemented!()
}

/// Whether `filter` matches `topic`, with the rule that wildcards at the first
/// level never match topics that start with `$`.
pub fn matches(filter: &str, topic: &str) -> bool {
    let _ = (filter, topic);
    unimplemented!()
}

/// A `$share/{group}/{filter}` subscription split into group and filter.
/// Returns `None` for a plain filter, `Some(Err)` for a malformed share.
pub fn parse_shared(filter: &str) -> Option<Result<(&str, &str), &'static str>> {
    let _ = filter;
    unimplemented!()
}
