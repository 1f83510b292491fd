//! What kind of messages a rule's FROM topic selects, so the runtime knows what to feed it.

/// The kind of messages a rule reads, from its FROM topic filter.
///
/// Pure classification of the topic filter; nothing is looked up. A product key or device
/// name written as `+` is `None` (any).
///
/// | FROM topic | source |
/// |---|---|
/// | `/sys/{pk}/{dn}/thing/event/property/post` or `/{pk}/{dn}/thing/event/property/post` | [`Source::PropertyPost`]: property posts already checked against the thing model |
/// | `/sys/{pk}/{dn}/thing/event/{id}/post` or `/{pk}/{dn}/thing/event/{id}/post` | [`Source::Event`]: events already checked; `{id}` as `+` is every event, property posts included |
/// | `/as/mqtt/status/{pk}/{dn}` | [`Source::Status`]: online/offline messages |
/// | `/{pk}/{dn}/thing/lifecycle` | [`Source::Lifecycle`]: device created, deleted, enabled, disabled |
/// | anything else | [`Source::Topic`]: messages as devices published them |
///
/// For the thing-model, status and lifecycle sources the runtime feeds the payload in the
/// reference platform's data-forwarding format, so rules written for it keep working:
///
/// - property post: `{"iotId", "productKey", "deviceName", "gmtCreate", "items":
///   {"<identifier>": {"value": …, "time": <ms>}}}`, read as `items.Temp.value`;
/// - event: `{"identifier", "name", "type", "iotId", "productKey", "deviceName", "value":
///   {…output parameters…}, "time": <ms>}`;
/// - status: `{"status": "online" | "offline", "productKey", "deviceName", "time",
///   "utcTime", "lastTime", "utcLastTime", "clientIp"}`;
/// - lifecycle: `{"action": "create" | "delete" | "enable" | "disable", "iotId",
///   "productKey", "deviceName", "deviceSecret", "messageCreateTime"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Messages as published on matching topics (custom topics and anything not below).
    Topic,
    /// Validated property posts, with their TSL identifiers.
    PropertyPost {
        /// The product, or `None` for `+`.
        product_key: Option<String>,
        /// The device, or `None` for `+`.
        device_name: Option<String>,
    },
    /// Validated event posts.
    Event {
        /// The product, or `None` for `+`.
        product_key: Option<String>,
        /// The device, or `None` for `+`.
        device_name: Option<String>,
        /// The event identifier in the thing model, or `None` for `+`.
        identifier: Option<String>,
    },
    /// Device online/offline status.
    Status {
        /// The product, or `None` for `+`.
        product_key: Option<String>,
        /// The device, or `None` for `+`.
        device_name: Option<String>,
    },
    /// Device lifecycle changes.
    Lifecycle {
        /// The product, or `None` for `+`.
        product_key: Option<String>,
        /// The device, or `None` for `+`.
        device_name: Option<String>,
    },
}

/// A level that names one thing or, as `+`, any.
fn level(s: &str) -> Option<Option<String>> {
    match s {
        "+" => Some(None),
        "#" | "" => None,
        s => Some(Some(s.to_owned())),
    }
}

/// Classifies a (valid) topic filter.
pub(crate) fn classify(filter: &str) -> Source {
    let levels: Vec<&str> = filter.split('/').collect();
    let thing = match levels.as_slice() {
        ["", "sys", rest @ ..] if rest.first() != Some(&"") => rest,
        ["", rest @ ..] => rest,
        _ => return Source::Topic,
    };
    let classified = match thing {
        ["as", "mqtt", "status", pk, dn] => {
            level(pk)
                .zip(level(dn))
                .map(|(product_key, device_name)| Source::Status {
                    product_key,
                    device_name,
                })
        }
        [pk, dn, "thing", "event", "property", "post"] => {
            level(pk)
                .zip(level(dn))
                .map(|(product_key, device_name)| Source::PropertyPost {
                    product_key,
                    device_name,
                })
        }
        [pk, dn, "thing", "event", id, "post"] => match (level(pk), level(dn), level(id)) {
            (Some(product_key), Some(device_name), Some(identifier)) => Some(Source::Event {
                product_key,
                device_name,
                identifier,
            }),
            _ => None,
        },
        [pk, dn, "thing", "lifecycle"] if levels.get(1) != Some(&"sys") => level(pk)
            .zip(level(dn))
            .map(|(product_key, device_name)| Source::Lifecycle {
                product_key,
                device_name,
            }),
        _ => None,
    };
    // `/as/mqtt/status` has no `/sys` form.
    match classified {
        Some(Source::Status { .. }) if levels.get(1) == Some(&"sys") => Source::Topic,
        Some(source) => source,
        None => Source::Topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn thing_model_topics() {
        let post = Source::PropertyPost {
            product_key: some("a1xx"),
            device_name: None,
        };
        assert_eq!(classify("/sys/a1xx/+/thing/event/property/post"), post);
        assert_eq!(classify("/a1xx/+/thing/event/property/post"), post);
        assert_eq!(
            classify("/a1xx/dev1/thing/event/alarm/post"),
            Source::Event {
                product_key: some("a1xx"),
                device_name: some("dev1"),
                identifier: some("alarm"),
            }
        );
        assert_eq!(
            classify("/sys/+/+/thing/event/+/post"),
            Source::Event {
                product_key: None,
                device_name: None,
                identifier: None,
            }
        );
    }

    #[test]
    fn status_and_lifecycle() {
        assert_eq!(
            classify("/as/mqtt/status/a1xx/+"),
            Source::Status {
                product_key: some("a1xx"),
                device_name: None,
            }
        );
        assert_eq!(
            classify("/a1xx/+/thing/lifecycle"),
            Source::Lifecycle {
                product_key: some("a1xx"),
                device_name: None,
            }
        );
        assert_eq!(classify("/sys/as/mqtt/status/a1xx/+"), Source::Topic);
        assert_eq!(classify("/sys/a1xx/+/thing/lifecycle"), Source::Topic);
    }

    #[test]
    fn everything_else_is_a_plain_topic() {
        for filter in [
            "/a1xx/+/user/update",
            "/a1xx/#",
            "#",
            "a1xx/dev/thing/event/property/post",
            "/a1xx/#/thing/event/property/post",
            "/a1xx//thing/event/property/post",
            "/as/mqtt/status/#",
        ] {
            assert_eq!(classify(filter), Source::Topic, "{filter}");
        }
    }
}
