//! Topic permissions: a device publishes and subscribes only to its own topics.
//!
//! [`DevicePermissions`] is built once per signed-in identity from its ProductKey `P`, its
//! DeviceName `D` and its product's [`TopicCategory`] list, and answers
//! [`DevicePermissions::check_publish`] / [`DevicePermissions::check_subscribe`].
//!
//! # Rules
//!
//! `+` below is one level of any content, `#` any number (zero or more) of further levels.
//!
//! | # | topic pattern | publish | subscribe | source |
//! |---|---|---|---|---|
//! | 1 | `/sys/P/D/#` | yes | yes | system topics (thing model, gateway, RRPC legacy, broadcast request) |
//! | 2 | `/shadow/update/P/D` | yes | no | shadow, up |
//! | 3 | `/shadow/get/P/D` | no | yes | shadow, down |
//! | 4 | `/ota/device/inform/P/D` | yes | no | OTA version report |
//! | 5 | `/ota/device/progress/P/D` | yes | no | OTA progress |
//! | 6 | `/ota/device/request/P/D` | yes | yes | legacy OTA request/answer (up/down, auto-subscribed) |
//! | 7 | `/ota/device/upgrade/P/D` | no | yes | OTA push |
//! | 8 | `/ext/session/P/D/#` | yes | yes | sub-device login/logout and their replies |
//! | 9 | `/ext/ntp/P/D/request` | yes | no | time sync, up |
//! | 10 | `/ext/ntp/P/D/response` | no | yes | time sync, down |
//! | 11 | `/ext/error/P/D` | no | yes | errors for sub-device messages |
//! | 12 | `/ext/rrpc/+/sys/P/D/#` | yes | yes | sync services: the device answers on the request topic |
//! | 13 | each category `/P/D/user/...` expanded | per category | per category | product topic categories |
//! | 14 | each category, as `/ext/rrpc/+/P/D/user/...` | yes | yes | custom-topic RRPC (answered on the same topic) |
//! | 15 | `/broadcast/P/#` | no | yes | product broadcast |
//!
//! Everything else is refused. In particular:
//! - Topics and filters must start with `/` and have no empty level (no `//`, no trailing
//!   `/`); levels are compared exactly and case-sensitively (`Dev01` is not `dev01`).
//! - A topic or filter is at most 128 characters ([`MAX_TOPIC_CHARS`]).
//! - Publish topics contain no `+`, `#` or NUL.
//! - A subscription filter is allowed only if **every** topic it can match is allowed for
//!   subscription. It is checked against each rule on its own (a filter spanning two rules is
//!   refused even if their union would cover it; no such pair exists in the table above that a
//!   device would need). So `/sys/P/D/#`, `/sys/P/D/thing/service/+` and `/ext/rrpc/+/sys/P/D/#`
//!   are fine, while `#`, `/#`, `/sys/#`, `/sys/P/+/...`, `/P/+/user/get`, `/ota/device/+/P/D`
//!   (reaches the publish-only `inform`) and `/broadcast/+/x` are refused.
//! - `$`-prefixed filters and topics (`$share/...`, `$queue/...`, `$SYS/...`) are refused for
//!   devices.
//! - Names cannot smuggle levels or wildcards: `P` and `D` are validated
//!   ([`crate::valid_product_key`], [`crate::valid_device_name`]) before any expansion, so
//!   neither can hold `/`, `+`, `#`, `$`, `{` or `}`.
//! - `/ext/register` and `/ext/regnwl` are not in the table: a dynamic-registration session
//!   receives them from the server without subscribing and may do nothing else.
//! - Rules 1, 8 and 12 let a device publish on its own downlink topics too (for example
//!   `/sys/P/D/thing/service/property/set`): they stay inside its own namespace, and replies such as
//!   `..._reply` and RRPC answers need the same subtrees. Telling uplinks from downlinks, and not
//!   routing a device's publishes back to it through its auto-subscriptions, is the broker's job.
//! - A gateway acting for a logged-in sub-device is checked against the sub-device's own
//!   `DevicePermissions`; combining them is the caller's business.
//!
//! # Topic categories
//!
//! A [`TopicCategory`] template must be `/${productKey}/${deviceName}/user/<level>[/<level>...]`,
//! at most 128 characters and 7 `/`, each custom level non-empty and made of
//! `A-Z a-z 0-9 _ - .`. `+` (a whole level) and `#` (a whole, last level) are allowed only in
//! subscribe-only categories — a publish topic cannot contain a wildcard, and a wildcard
//! category with publish permission would let a device publish to topics nobody declared.

use thiserror::Error;

use crate::names::{NameError, check_device_name, check_product_key};

/// The longest topic or filter a device may use, in characters.
pub const MAX_TOPIC_CHARS: usize = 128;
/// The most `/` a topic category template may hold.
pub const MAX_CATEGORY_SLASHES: usize = 7;
/// Placeholder of the ProductKey in a category template.
pub const PRODUCT_KEY_PLACEHOLDER: &str = "${productKey}";
/// Placeholder of the DeviceName in a category template.
pub const DEVICE_NAME_PLACEHOLDER: &str = "${deviceName}";

/// What a device may do with a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Publish only.
    Pub,
    /// Subscribe only.
    Sub,
    /// Both.
    PubSub,
}

impl Permission {
    /// Whether publishing is allowed.
    pub fn can_publish(self) -> bool {
        matches!(self, Permission::Pub | Permission::PubSub)
    }

    /// Whether subscribing is allowed.
    pub fn can_subscribe(self) -> bool {
        matches!(self, Permission::Sub | Permission::PubSub)
    }
}

/// A product topic category: a template with `${productKey}` and `${deviceName}`, and what
/// devices may do with it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicCategory {
    /// For example `/${productKey}/${deviceName}/user/update`.
    pub template: String,
    /// The devices' permission.
    pub permission: Permission,
}

/// Why a topic category template was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CategoryError {
    /// Longer than [`MAX_TOPIC_CHARS`].
    #[error("topic category is {len} characters long, at most {max} allowed")]
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_CATEGORY_SLASHES`] slashes.
    #[error("topic category has {count} slashes, at most {max} allowed")]
    TooManySlashes {
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Does not start with `/${productKey}/${deviceName}/user/` followed by a level.
    #[error(
        "topic category must start with /${{productKey}}/${{deviceName}}/user/ and name at least one more level"
    )]
    WrongPrefix,
    /// A custom level is empty (`//` or a trailing `/`).
    #[error("topic category has an empty level")]
    EmptyLevel,
    /// A custom level holds a character outside `A-Z a-z 0-9 _ - .`.
    #[error("topic category level {0:?} has a character outside A-Z a-z 0-9 _ - .")]
    InvalidLevel(String),
    /// `+`/`#` not on a whole level, or `#` not last.
    #[error("topic category wildcard misplaced: + and # must fill a level, # must be last")]
    MisplacedWildcard,
    /// A wildcard in a category that allows publishing.
    #[error("wildcards are allowed only in subscribe-only topic categories")]
    WildcardWithPublish,
}

impl TopicCategory {
    /// A validated category.
    pub fn new(template: &str, permission: Permission) -> Result<Self, CategoryError> {
        let cat = TopicCategory {
            template: template.to_owned(),
            permission,
        };
        cat.validate()?;
        Ok(cat)
    }

    /// The three categories every new product gets: `user/update` and `user/update/error`
    /// (publish) and `user/get` (subscribe).
    pub fn defaults() -> Vec<TopicCategory> {
        let cat = |suffix: &str, permission| TopicCategory {
            template: format!("/${{productKey}}/${{deviceName}}/user/{suffix}"),
            permission,
        };
        vec![
            cat("update", Permission::Pub),
            cat("update/error", Permission::Pub),
            cat("get", Permission::Sub),
        ]
    }

    /// Checks the template; see the module documentation.
    pub fn validate(&self) -> Result<(), CategoryError> {
        self.custom_levels().map(|_| ())
    }

    /// The levels after `user`, validated.
    fn custom_levels(&self) -> Result<Vec<Seg>, CategoryError> {
        let t = &self.template;
        let len = t.chars().count();
        if len > MAX_TOPIC_CHARS {
            return Err(CategoryError::TooLong {
                len,
                max: MAX_TOPIC_CHARS,
            });
        }
        let count = t.bytes().filter(|&b| b == b'/').count();
        if count > MAX_CATEGORY_SLASHES {
            return Err(CategoryError::TooManySlashes {
                count,
                max: MAX_CATEGORY_SLASHES,
            });
        }
        let rest = t
            .strip_prefix("/${productKey}/${deviceName}/user/")
            .filter(|r| !r.is_empty())
            .ok_or(CategoryError::WrongPrefix)?;
        let levels: Vec<&str> = rest.split('/').collect();
        let mut segs = Vec::with_capacity(levels.len());
        for (i, level) in levels.iter().enumerate() {
            let seg = match *level {
                "" => return Err(CategoryError::EmptyLevel),
                "+" => Seg::One,
                "#" if i + 1 == levels.len() => Seg::Rest,
                l if l.contains(['+', '#']) => return Err(CategoryError::MisplacedWildcard),
                l if l
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) =>
                {
                    Seg::Lit(l.to_owned())
                }
                l => return Err(CategoryError::InvalidLevel(l.to_owned())),
            };
            segs.push(seg);
        }
        if self.permission.can_publish() && segs.iter().any(|s| !matches!(s, Seg::Lit(_))) {
            return Err(CategoryError::WildcardWithPublish);
        }
        Ok(segs)
    }
}

/// Why [`DevicePermissions::new`] failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PermissionsError {
    /// The ProductKey or DeviceName is invalid.
    #[error(transparent)]
    Name(#[from] NameError),
    /// A topic category is invalid.
    #[error("topic category {template:?}: {error}")]
    Category {
        /// The template.
        template: String,
        /// What is wrong with it.
        error: CategoryError,
    },
}

/// Why a publish or subscribe was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AclError {
    /// Empty topic or filter.
    #[error("empty topic")]
    Empty,
    /// Longer than [`MAX_TOPIC_CHARS`].
    #[error("topic is {len} characters long, at most {max} allowed")]
    TooLong {
        /// Its length in characters.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A `$share/...` shared subscription.
    #[error("shared subscriptions are not available to devices")]
    SharedSubscription,
    /// Another `$`-prefixed topic or filter.
    #[error("$-prefixed topics are not available to devices")]
    DollarTopic,
    /// Does not start with `/`.
    #[error("device topics start with /")]
    NotAbsolute,
    /// An empty level (`//` or a trailing `/`).
    #[error("topic has an empty level")]
    EmptyLevel,
    /// A NUL character.
    #[error("topic contains NUL")]
    Nul,
    /// `+` or `#` in a publish topic.
    #[error("wildcard in a publish topic")]
    WildcardInTopic,
    /// `+`/`#` not filling a level, or `#` not last.
    #[error("malformed wildcard: + and # must fill a level, # must be last")]
    MalformedWildcard,
    /// Well-formed but not one of this device's topics (for a filter: it can match a topic
    /// the device may not subscribe to).
    #[error("not permitted for this device")]
    NotPermitted,
}

/// One level of a permission pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// Exactly this text.
    Lit(String),
    /// Any one level.
    One,
    /// Any number (zero or more) of further levels; always last.
    Rest,
}

/// One level of a topic or filter being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level<'a> {
    Lit(&'a str),
    Plus,
    Hash,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    pattern: Vec<Seg>,
    permission: Permission,
}

/// What one device may publish and subscribe to; see the module documentation for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePermissions {
    product_key: String,
    device_name: String,
    rules: Vec<Rule>,
}

impl DevicePermissions {
    /// Builds the permissions of device `device_name` of product `product_key`, whose product
    /// has `categories`. Both names and every category are validated.
    pub fn new(
        product_key: &str,
        device_name: &str,
        categories: &[TopicCategory],
    ) -> Result<Self, PermissionsError> {
        check_product_key(product_key)?;
        check_device_name(device_name)?;
        let p = || Seg::Lit(product_key.to_owned());
        let d = || Seg::Lit(device_name.to_owned());
        let l = |s: &str| Seg::Lit(s.to_owned());
        let root = || Seg::Lit(String::new());
        use Permission::{Pub, PubSub, Sub};
        let mut rules = vec![
            (vec![root(), l("sys"), p(), d(), Seg::Rest], PubSub),
            (vec![root(), l("shadow"), l("update"), p(), d()], Pub),
            (vec![root(), l("shadow"), l("get"), p(), d()], Sub),
            (
                vec![root(), l("ota"), l("device"), l("inform"), p(), d()],
                Pub,
            ),
            (
                vec![root(), l("ota"), l("device"), l("progress"), p(), d()],
                Pub,
            ),
            (
                vec![root(), l("ota"), l("device"), l("request"), p(), d()],
                PubSub,
            ),
            (
                vec![root(), l("ota"), l("device"), l("upgrade"), p(), d()],
                Sub,
            ),
            (
                vec![root(), l("ext"), l("session"), p(), d(), Seg::Rest],
                PubSub,
            ),
            (
                vec![root(), l("ext"), l("ntp"), p(), d(), l("request")],
                Pub,
            ),
            (
                vec![root(), l("ext"), l("ntp"), p(), d(), l("response")],
                Sub,
            ),
            (vec![root(), l("ext"), l("error"), p(), d()], Sub),
            (
                vec![
                    root(),
                    l("ext"),
                    l("rrpc"),
                    Seg::One,
                    l("sys"),
                    p(),
                    d(),
                    Seg::Rest,
                ],
                PubSub,
            ),
            (vec![root(), l("broadcast"), p(), Seg::Rest], Sub),
        ];
        for cat in categories {
            let custom = cat
                .custom_levels()
                .map_err(|error| PermissionsError::Category {
                    template: cat.template.clone(),
                    error,
                })?;
            let mut own = vec![root(), p(), d(), l("user")];
            own.extend(custom);
            let mut rrpc = vec![root(), l("ext"), l("rrpc"), Seg::One];
            rrpc.extend(own[1..].iter().cloned());
            rules.push((own, cat.permission));
            rules.push((rrpc, PubSub));
        }
        Ok(DevicePermissions {
            product_key: product_key.to_owned(),
            device_name: device_name.to_owned(),
            rules: rules
                .into_iter()
                .map(|(pattern, permission)| Rule {
                    pattern,
                    permission,
                })
                .collect(),
        })
    }

    /// The ProductKey.
    pub fn product_key(&self) -> &str {
        &self.product_key
    }

    /// The DeviceName.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Whether the device may publish to `topic`, with the reason when not.
    pub fn check_publish(&self, topic: &str) -> Result<(), AclError> {
        let levels = parse(topic, false)?;
        self.permitted(&levels, Permission::can_publish)
    }

    /// Whether the device may subscribe to `filter`: every topic it can match must be
    /// subscribable. Gives the reason when not.
    pub fn check_subscribe(&self, filter: &str) -> Result<(), AclError> {
        let levels = parse(filter, true)?;
        self.permitted(&levels, Permission::can_subscribe)
    }

    /// [`DevicePermissions::check_publish`] as a bool.
    pub fn can_publish(&self, topic: &str) -> bool {
        self.check_publish(topic).is_ok()
    }

    /// [`DevicePermissions::check_subscribe`] as a bool.
    pub fn can_subscribe(&self, filter: &str) -> bool {
        self.check_subscribe(filter).is_ok()
    }

    fn permitted(
        &self,
        levels: &[Level<'_>],
        allow: fn(Permission) -> bool,
    ) -> Result<(), AclError> {
        if self
            .rules
            .iter()
            .any(|r| allow(r.permission) && covers(&r.pattern, levels))
        {
            Ok(())
        } else {
            Err(AclError::NotPermitted)
        }
    }
}

/// Splits a topic (no wildcards) or a filter into levels, enforcing the shape rules.
fn parse(s: &str, filter: bool) -> Result<Vec<Level<'_>>, AclError> {
    if s.is_empty() {
        return Err(AclError::Empty);
    }
    let len = s.chars().count();
    if len > MAX_TOPIC_CHARS {
        return Err(AclError::TooLong {
            len,
            max: MAX_TOPIC_CHARS,
        });
    }
    if s.starts_with("$share/") {
        return Err(AclError::SharedSubscription);
    }
    if s.starts_with('$') {
        return Err(AclError::DollarTopic);
    }
    if s.contains('\0') {
        return Err(AclError::Nul);
    }
    let Some(rest) = s.strip_prefix('/') else {
        return Err(AclError::NotAbsolute);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut levels = Vec::with_capacity(parts.len() + 1);
    levels.push(Level::Lit(""));
    for (i, part) in parts.iter().enumerate() {
        let level = match *part {
            "" => return Err(AclError::EmptyLevel),
            "+" | "#" if !filter => return Err(AclError::WildcardInTopic),
            "+" => Level::Plus,
            "#" if i + 1 == parts.len() => Level::Hash,
            p if p.contains(['+', '#']) => {
                return Err(if filter {
                    AclError::MalformedWildcard
                } else {
                    AclError::WildcardInTopic
                });
            }
            p => Level::Lit(p),
        };
        levels.push(level);
    }
    Ok(levels)
}

/// Whether every topic matched by `filter` (MQTT semantics: `#` also matches the parent
/// level) is matched by `pattern`. With a wildcard-free `filter` this is plain matching.
fn covers(pattern: &[Seg], filter: &[Level<'_>]) -> bool {
    let mut p = pattern.iter();
    let mut f = filter.iter();
    loop {
        match (p.next(), f.next()) {
            (Some(Seg::Rest), _) => return true,
            (None, None) => return true,
            // `#` reaches arbitrarily deep (and the parent): only `Rest` covers it.
            (_, Some(Level::Hash)) => return false,
            (Some(Seg::One), Some(_)) => {}
            (Some(Seg::Lit(a)), Some(Level::Lit(b))) if a == b => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests;
