//! The subscription trie: topic filters by level, with `+`, `#` and shared groups.
//!
//! Filters are stored level by level; `+` and `#` are ordinary child keys, so a
//! topic is matched by walking, at each level, the literal child, the `+` child
//! and the `#` child. Shared subscriptions sit at their filter's node, grouped by
//! share name; [`Trie::matches`] picks one member per group, round robin,
//! preferring members that are connected.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use lode_mqtt::SubscriptionOptions;

use crate::session::Session;

/// One subscription of one session.
#[derive(Clone)]
pub(crate) struct SubEntry {
    pub(crate) session: Arc<Session>,
    pub(crate) options: SubscriptionOptions,
    pub(crate) identifier: Option<u32>,
}

#[derive(Default)]
struct SharedGroup {
    members: Vec<SubEntry>,
    next: AtomicUsize,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subs: Vec<SubEntry>,
    shared: HashMap<Box<str>, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.shared.is_empty()
    }
}

/// A matched subscriber of a topic.
pub(crate) struct Target {
    pub(crate) session: Arc<Session>,
    pub(crate) options: SubscriptionOptions,
    pub(crate) identifiers: Vec<u32>,
}

#[derive(Default)]
pub(crate) struct Trie {
    root: Node,
    n_subscriptions: usize,
}

impl Trie {
    /// Adds or replaces the subscription of `entry.session` to `filter` (in `group` when shared).
    /// Returns whether the subscription already existed.
    pub(crate) fn insert(&mut self, group: Option<&str>, filter: &str, entry: SubEntry) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        let list = match group {
            Some(group) => &mut node.shared.entry(group.into()).or_default().members,
            None => &mut node.subs,
        };
        match list
            .iter_mut()
            .find(|e| Arc::ptr_eq(&e.session, &entry.session))
        {
            Some(existing) => {
                *existing = entry;
                true
            }
            None => {
                list.push(entry);
                self.n_subscriptions += 1;
                false
            }
        }
    }

    /// Removes the subscription of `session` to `filter`. Returns whether it existed.
    pub(crate) fn remove(
        &mut self,
        group: Option<&str>,
        filter: &str,
        session: &Arc<Session>,
    ) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_rec(&mut self.root, &levels, group, session);
        if removed {
            self.n_subscriptions -= 1;
        }
        removed
    }

    pub(crate) fn len(&self) -> usize {
        self.n_subscriptions
    }

    /// How many deliveries a message on `topic` would make: sessions with a matching
    /// subscription, each counted once, plus one per matching shared group.
    pub(crate) fn count_matches(&self, topic: &str) -> usize {
        let mut hits: Vec<&SubEntry> = Vec::new();
        let mut groups: Vec<&SharedGroup> = Vec::new();
        let levels: Vec<&str> = topic.split('/').collect();
        collect(
            &self.root,
            &levels,
            topic.starts_with('$'),
            &mut hits,
            &mut groups,
        );
        let mut sessions: Vec<&Arc<Session>> = Vec::with_capacity(hits.len());
        for entry in hits {
            if !sessions.iter().any(|s| Arc::ptr_eq(s, &entry.session)) {
                sessions.push(&entry.session);
            }
        }
        sessions.len() + groups.len()
    }

    /// Every subscriber whose filter matches `topic`, one entry per session, with the
    /// highest QoS and all subscription identifiers of its overlapping subscriptions.
    pub(crate) fn matches(&self, topic: &str) -> Vec<Target> {
        let mut hits: Vec<&SubEntry> = Vec::new();
        let mut groups: Vec<&SharedGroup> = Vec::new();
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        collect(&self.root, &levels, dollar, &mut hits, &mut groups);

        let mut targets: Vec<Target> = Vec::with_capacity(hits.len() + groups.len());
        for entry in hits {
            merge(&mut targets, entry);
        }
        for group in groups {
            if let Some(entry) = pick(group) {
                // A shared delivery is its own delivery even if the session also
                // subscribes directly, so it is not merged.
                targets.push(Target {
                    session: entry.session.clone(),
                    options: entry.options,
                    identifiers: entry.identifier.into_iter().collect(),
                });
            }
        }
        targets
    }
}

fn remove_rec(
    node: &mut Node,
    levels: &[&str],
    group: Option<&str>,
    session: &Arc<Session>,
) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        return match group {
            Some(group) => {
                let Some(shared) = node.shared.get_mut(group) else {
                    return false;
                };
                let before = shared.members.len();
                shared.members.retain(|e| !Arc::ptr_eq(&e.session, session));
                let removed = shared.members.len() != before;
                if shared.members.is_empty() {
                    node.shared.remove(group);
                }
                removed
            }
            None => {
                let before = node.subs.len();
                node.subs.retain(|e| !Arc::ptr_eq(&e.session, session));
                node.subs.len() != before
            }
        };
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove_rec(child, rest, group, session);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn collect<'a>(
    node: &'a Node,
    levels: &[&str],
    dollar_first: bool,
    hits: &mut Vec<&'a SubEntry>,
    groups: &mut Vec<&'a SharedGroup>,
) {
    let Some((level, rest)) = levels.split_first() else {
        hits.extend(node.subs.iter());
        groups.extend(node.shared.values());
        // `a/#` also matches `a`.
        if let Some(hash) = node.children.get("#") {
            hits.extend(hash.subs.iter());
            groups.extend(hash.shared.values());
        }
        return;
    };
    if let Some(child) = node.children.get(*level) {
        collect(child, rest, false, hits, groups);
    }
    if dollar_first {
        // Wildcards at the first level never match topics starting with `$`.
        return;
    }
    if let Some(plus) = node.children.get("+") {
        collect(plus, rest, false, hits, groups);
    }
    if let Some(hash) = node.children.get("#") {
        hits.extend(hash.subs.iter());
        groups.extend(hash.shared.values());
    }
}

fn merge(targets: &mut Vec<Target>, entry: &SubEntry) {
    if let Some(t) = targets
        .iter_mut()
        .find(|t| Arc::ptr_eq(&t.session, &entry.session))
    {
        if entry.options.qos > t.options.qos {
            t.options.qos = entry.options.qos;
        }
        // Retain-as-published and no-local of overlapping subscriptions: keep the most
        // permissive delivery (a message must reach the client if any subscription wants it).
        t.options.retain_as_published |= entry.options.retain_as_published;
        t.options.no_local &= entry.options.no_local;
        t.identifiers.extend(entry.identifier);
        return;
    }
    targets.push(Target {
        session: entry.session.clone(),
        options: entry.options,
        identifiers: entry.identifier.into_iter().collect(),
    });
}

fn pick(group: &SharedGroup) -> Option<&SubEntry> {
    let n = group.members.len();
    if n == 0 {
        return None;
    }
    let start = group.next.fetch_add(1, Ordering::Relaxed);
    (0..n)
        .map(|i| &group.members[(start + i) % n])
        .find(|e| e.session.is_online())
        .or_else(|| group.members.get(start % n))
}
