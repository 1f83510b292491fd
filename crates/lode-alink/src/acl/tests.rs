//! Tests of the topic permissions: the rule table, escape attempts and properties.

use proptest::prelude::*;

use super::*;
use crate::auto_subscriptions;

const PK: &str = "a1TestPK001";
const DN: &str = "dev01";

fn perms() -> DevicePermissions {
    DevicePermissions::new(PK, DN, &TopicCategory::defaults()).unwrap()
}

fn with(categories: &[(&str, Permission)]) -> DevicePermissions {
    let cats: Vec<_> = categories
        .iter()
        .map(|(t, p)| TopicCategory::new(t, *p).unwrap())
        .collect();
    DevicePermissions::new(PK, DN, &cats).unwrap()
}

#[test]
fn rule_table() {
    let a = perms();
    // (topic, publish, subscribe)
    let table: &[(&str, bool, bool)] = &[
        (
            "/sys/a1TestPK001/dev01/thing/event/property/post",
            true,
            true,
        ),
        (
            "/sys/a1TestPK001/dev01/thing/event/property/batch/post",
            true,
            true,
        ),
        (
            "/sys/a1TestPK001/dev01/thing/service/property/set",
            true,
            true,
        ),
        ("/sys/a1TestPK001/dev01/rrpc/response/42", true, true),
        ("/shadow/update/a1TestPK001/dev01", true, false),
        ("/shadow/get/a1TestPK001/dev01", false, true),
        ("/ota/device/inform/a1TestPK001/dev01", true, false),
        ("/ota/device/progress/a1TestPK001/dev01", true, false),
        ("/ota/device/request/a1TestPK001/dev01", true, true),
        ("/ota/device/upgrade/a1TestPK001/dev01", false, true),
        (
            "/ext/session/a1TestPK001/dev01/combine/batch_login",
            true,
            true,
        ),
        ("/ext/ntp/a1TestPK001/dev01/request", true, false),
        ("/ext/ntp/a1TestPK001/dev01/response", false, true),
        ("/ext/error/a1TestPK001/dev01", false, true),
        (
            "/ext/rrpc/1234567890123/sys/a1TestPK001/dev01/thing/service/Echo",
            true,
            true,
        ),
        ("/a1TestPK001/dev01/user/update", true, false),
        ("/a1TestPK001/dev01/user/update/error", true, false),
        ("/a1TestPK001/dev01/user/get", false, true),
        ("/ext/rrpc/77/a1TestPK001/dev01/user/get", true, true),
        ("/broadcast/a1TestPK001/news", false, true),
        ("/broadcast/a1TestPK001/a/b/c", false, true),
        // Not in the table.
        ("/a1TestPK001/dev01/user/other", false, false),
        ("/ext/rrpc/77/a1TestPK001/dev01/user/other", false, false),
        ("/ext/register", false, false),
        ("/ext/regnwl", false, false),
        ("/ota/device/upgrade/a1TestPK001/dev01/x", false, false),
        ("/shadow/get/a1TestPK001", false, false),
        ("/ext/ntp/a1TestPK001/dev01", false, false),
        ("/ext/error/a1TestPK001/dev01/x", false, false),
        ("/broadcast/a1OtherPK01/news", false, false),
        ("/something/else", false, false),
    ];
    for &(topic, publish, subscribe) in table {
        assert_eq!(a.can_publish(topic), publish, "publish {topic}");
        assert_eq!(a.can_subscribe(topic), subscribe, "subscribe {topic}");
    }
}

#[test]
fn auto_subscriptions_are_subscribable() {
    let a = perms();
    for f in auto_subscriptions(PK, DN) {
        assert!(a.can_subscribe(&f), "{f}");
    }
    // Also at the longest names.
    let (pk, dn) = ("P".repeat(32), "d".repeat(32));
    let a = DevicePermissions::new(&pk, &dn, &[]).unwrap();
    for f in auto_subscriptions(&pk, &dn) {
        assert_eq!(a.check_subscribe(&f), Ok(()), "{f}");
    }
}

#[test]
fn wildcard_filters() {
    let a = perms();
    for ok in [
        "/sys/a1TestPK001/dev01/#",
        "/sys/a1TestPK001/dev01/thing/#",
        "/sys/a1TestPK001/dev01/thing/service/+",
        "/sys/a1TestPK001/dev01/+/+/+",
        "/ext/rrpc/+/sys/a1TestPK001/dev01/#",
        "/ext/rrpc/+/sys/a1TestPK001/dev01/thing/service/+",
        "/ext/rrpc/+/a1TestPK001/dev01/user/get",
        "/ext/session/a1TestPK001/dev01/#",
        "/broadcast/a1TestPK001/#",
        "/broadcast/a1TestPK001/+",
    ] {
        assert_eq!(a.check_subscribe(ok), Ok(()), "{ok}");
    }
    for bad in [
        "#",
        "/#",
        "+",
        "/+",
        "/sys/#",
        "/sys/+/dev01/#",
        "/sys/a1TestPK001/#",
        "/sys/a1TestPK001/+/thing/service/+",
        "/sys/a1TestPK001/+/#",
        "/+/a1TestPK001/dev01/thing/service/+",
        "/a1TestPK001/+/user/get",
        "/a1TestPK001/dev01/user/#",
        "/a1TestPK001/dev01/user/+",
        "/a1TestPK001/dev01/+/get",
        "/+/+/user/get",
        "/ota/device/+/a1TestPK001/dev01",
        "/ota/device/upgrade/a1TestPK001/+",
        "/ext/ntp/a1TestPK001/dev01/+",
        "/ext/ntp/a1TestPK001/dev01/#",
        "/ext/rrpc/+/sys/a1TestPK001/+/#",
        "/ext/rrpc/#",
        "/ext/rrpc/+/+/dev01/user/get",
        "/ext/+/a1TestPK001/dev01",
        "/ext/session/a1TestPK001/+/combine/login_reply",
        "/shadow/+/a1TestPK001/dev01",
        "/broadcast/+/news",
        "/broadcast/#",
    ] {
        assert!(!a.can_subscribe(bad), "{bad}");
    }
}

#[test]
fn other_devices_and_products() {
    let a = perms();
    for t in [
        "/sys/a1TestPK001/dev02/thing/event/property/post",
        "/sys/a1TestPK002/dev01/thing/event/property/post",
        "/sys/a1TestPK001/Dev01/thing/event/property/post",
        "/sys/A1TESTPK001/dev01/thing/event/property/post",
        "/sys/a1TestPK001/dev01x/thing/event/property/post",
        "/sys/a1TestPK001/dev0/thing/event/property/post",
        "/shadow/update/a1TestPK001/dev02",
        "/ota/device/inform/a1TestPK001/dev02",
        "/ext/rrpc/1/sys/a1TestPK001/dev02/thing/service/Echo",
        "/a1TestPK001/dev02/user/update",
        "/a1TestPK001/Dev01/user/update",
        "/a1TestPK001/dev01/User/update",
        "/a1TestPK001/dev01/user/Update",
        "/SYS/a1TestPK001/dev01/thing/event/property/post",
    ] {
        assert!(!a.can_publish(t), "publish {t}");
        assert!(!a.can_subscribe(t), "subscribe {t}");
    }
}

#[test]
fn malformed_topics() {
    let a = perms();
    let own = "/sys/a1TestPK001/dev01/thing/event/property/post";
    assert_eq!(a.check_publish(""), Err(AclError::Empty));
    assert_eq!(a.check_subscribe(""), Err(AclError::Empty));
    assert_eq!(a.check_publish(&own[1..]), Err(AclError::NotAbsolute));
    assert_eq!(
        a.check_publish(&format!("{own}/")),
        Err(AclError::EmptyLevel)
    );
    assert_eq!(
        a.check_publish("/sys/a1TestPK001/dev01//thing"),
        Err(AclError::EmptyLevel)
    );
    assert_eq!(
        a.check_publish("//sys/a1TestPK001/dev01/thing"),
        Err(AclError::EmptyLevel)
    );
    assert_eq!(
        a.check_subscribe("/sys/a1TestPK001/dev01/#/"),
        Err(AclError::MalformedWildcard)
    );
    assert_eq!(a.check_publish("/"), Err(AclError::EmptyLevel));
    assert_eq!(
        a.check_publish("/sys/a1TestPK001/dev01/thing/+"),
        Err(AclError::WildcardInTopic)
    );
    assert_eq!(
        a.check_publish("/sys/a1TestPK001/dev01/#"),
        Err(AclError::WildcardInTopic)
    );
    assert_eq!(
        a.check_publish("/sys/a1TestPK001/dev01/a+b"),
        Err(AclError::WildcardInTopic)
    );
    assert_eq!(
        a.check_subscribe("/sys/a1TestPK001/dev01/a+b"),
        Err(AclError::MalformedWildcard)
    );
    assert_eq!(
        a.check_subscribe("/sys/a1TestPK001/dev01/#/x"),
        Err(AclError::MalformedWildcard)
    );
    assert_eq!(
        a.check_subscribe("/sys/a1TestPK001/dev01/x#"),
        Err(AclError::MalformedWildcard)
    );
    assert_eq!(
        a.check_publish("/sys/a1TestPK001/dev01/\0"),
        Err(AclError::Nul)
    );
    assert_eq!(
        a.check_subscribe("$share/g/sys/a1TestPK001/dev01/#"),
        Err(AclError::SharedSubscription)
    );
    assert_eq!(
        a.check_subscribe("$share/g//sys/a1TestPK001/dev01/#"),
        Err(AclError::SharedSubscription)
    );
    assert_eq!(a.check_subscribe("$SYS/#"), Err(AclError::DollarTopic));
    assert_eq!(
        a.check_subscribe("$queue//sys/a1TestPK001/dev01/#"),
        Err(AclError::DollarTopic)
    );
    assert_eq!(a.check_publish("$sys/x"), Err(AclError::DollarTopic));
    // Length is in characters: 128 fit, 129 do not.
    let base = "/sys/a1TestPK001/dev01/";
    let fill = |n: usize| format!("{base}{}", "é".repeat(n - base.len()));
    assert!(a.can_publish(&fill(128)));
    assert_eq!(
        a.check_publish(&fill(129)),
        Err(AclError::TooLong { len: 129, max: 128 })
    );
    assert!(a.check_subscribe(&fill(129)).is_err());
}

#[test]
fn injection_through_names_is_impossible() {
    for dn in [
        "+",
        "#",
        "dev/+",
        "dev01/../dev02",
        "${deviceName}",
        "dev01/#",
        "a/b/c/d",
        "dev 01",
        "",
    ] {
        assert!(
            matches!(
                DevicePermissions::new(PK, dn, &[]),
                Err(PermissionsError::Name(NameError::InvalidDeviceName(_)))
            ),
            "{dn}"
        );
    }
    for pk in ["+", "a1/b", "${productKey}", "a1Test+", "", "a1.b"] {
        assert!(
            matches!(
                DevicePermissions::new(pk, DN, &[]),
                Err(PermissionsError::Name(NameError::InvalidProductKey(_)))
            ),
            "{pk}"
        );
    }
    // A literal placeholder in a topic is just text, never expanded.
    let a = perms();
    assert!(!a.can_publish("/${productKey}/${deviceName}/user/update"));
    assert!(!a.can_subscribe("/sys/${productKey}/${deviceName}/#"));
}

#[test]
fn categories() {
    use CategoryError::*;
    let t = |s: &str, p| TopicCategory::new(s, p).map(|_| ());
    assert_eq!(
        t("/${productKey}/${deviceName}/user/update", Permission::Pub),
        Ok(())
    );
    assert_eq!(
        t(
            "/${productKey}/${deviceName}/user/a/b/c/d",
            Permission::PubSub
        ),
        Ok(())
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/a-b_c.d", Permission::Sub),
        Ok(())
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/+/x", Permission::Sub),
        Ok(())
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/x/#", Permission::Sub),
        Ok(())
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/#", Permission::Sub),
        Ok(())
    );
    assert_eq!(
        t(
            "/${productKey}/${deviceName}/user/a/b/c/d/e",
            Permission::Pub
        ),
        Err(TooManySlashes { count: 8, max: 7 })
    );
    assert_eq!(
        t(
            &format!("/${{productKey}}/${{deviceName}}/user/{}", "x".repeat(100)),
            Permission::Pub
        ),
        Err(TooLong { len: 134, max: 128 })
    );
    for bad_prefix in [
        "/${productKey}/${deviceName}/user/",
        "/${productKey}/${deviceName}/user",
        "/${productKey}/${deviceName}/get",
        "/${deviceName}/${productKey}/user/get",
        "/${productKey}/+/user/get",
        "/${productKey}/dev01/user/get",
        "/a1TestPK001/${deviceName}/user/get",
        "${productKey}/${deviceName}/user/get",
        "/sys/${productKey}/${deviceName}/user/get",
        "",
    ] {
        assert_eq!(
            t(bad_prefix, Permission::Sub),
            Err(WrongPrefix),
            "{bad_prefix}"
        );
    }
    assert_eq!(
        t("/${productKey}/${deviceName}/user/a//b", Permission::Sub),
        Err(EmptyLevel)
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/a/", Permission::Sub),
        Err(EmptyLevel)
    );
    assert_eq!(
        t(
            "/${productKey}/${deviceName}/user/${deviceName}",
            Permission::Sub
        ),
        Err(InvalidLevel("${deviceName}".into()))
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/a b", Permission::Sub),
        Err(InvalidLevel("a b".into()))
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/#/x", Permission::Sub),
        Err(MisplacedWildcard)
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/a+", Permission::Sub),
        Err(MisplacedWildcard)
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/+", Permission::Pub),
        Err(WildcardWithPublish)
    );
    assert_eq!(
        t("/${productKey}/${deviceName}/user/#", Permission::PubSub),
        Err(WildcardWithPublish)
    );
    // An invalid category makes the permissions fail to build, naming it.
    let bad = TopicCategory {
        template: "/x".into(),
        permission: Permission::Pub,
    };
    assert_eq!(
        DevicePermissions::new(PK, DN, &[bad]),
        Err(PermissionsError::Category {
            template: "/x".into(),
            error: WrongPrefix
        })
    );
}

#[test]
fn wildcard_categories() {
    let a = with(&[
        ("/${productKey}/${deviceName}/user/cmd/+", Permission::Sub),
        ("/${productKey}/${deviceName}/user/feed/#", Permission::Sub),
        ("/${productKey}/${deviceName}/user/both", Permission::PubSub),
    ]);
    assert!(a.can_subscribe("/a1TestPK001/dev01/user/cmd/+"));
    assert!(a.can_subscribe("/a1TestPK001/dev01/user/cmd/reboot"));
    assert!(!a.can_subscribe("/a1TestPK001/dev01/user/cmd/#"));
    assert!(!a.can_subscribe("/a1TestPK001/dev01/user/cmd/a/b"));
    assert!(!a.can_publish("/a1TestPK001/dev01/user/cmd/reboot"));
    assert!(a.can_subscribe("/a1TestPK001/dev01/user/feed/#"));
    assert!(a.can_subscribe("/a1TestPK001/dev01/user/feed"));
    assert!(a.can_subscribe("/a1TestPK001/dev01/user/feed/a/+/c"));
    assert!(a.can_publish("/a1TestPK001/dev01/user/both"));
    assert!(a.can_subscribe("/a1TestPK001/dev01/user/both"));
    assert!(!a.can_subscribe("/a1TestPK001/dev01/user/+"));
    assert!(!a.can_subscribe("/a1TestPK001/+/user/cmd/+"));
    // Custom RRPC on every category, both ways.
    assert!(a.can_publish("/ext/rrpc/9/a1TestPK001/dev01/user/cmd/reboot"));
    assert!(a.can_subscribe("/ext/rrpc/+/a1TestPK001/dev01/user/both"));
    assert!(!a.can_subscribe("/ext/rrpc/+/a1TestPK001/dev02/user/both"));
    // Without categories, no custom topic at all.
    let none = DevicePermissions::new(PK, DN, &[]).unwrap();
    assert!(!none.can_publish("/a1TestPK001/dev01/user/update"));
    assert!(!none.can_subscribe("/a1TestPK001/dev01/user/get"));
    assert_eq!(none.product_key(), PK);
    assert_eq!(none.device_name(), DN);
}

// ---- properties ----

fn device_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_@.:-]{4,32}"
}

fn product_key() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{1,32}"
}

/// A topic level that is sometimes one of the names in play.
fn level(pk: String, dn: String, other: String) -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z_]{1,8}",
        1 => Just(pk),
        1 => Just(dn),
        2 => Just(other),
        1 => prop_oneof![
            Just("sys".to_owned()), Just("ext".to_owned()), Just("rrpc".to_owned()),
            Just("user".to_owned()), Just("thing".to_owned()), Just("broadcast".to_owned()),
            Just("session".to_owned()), Just("ota".to_owned()), Just("device".to_owned()),
        ],
    ]
}

/// Base topics a device might try: its own and another device's.
fn base_topics(pk: &str, dn: &str, other: &str) -> Vec<String> {
    let mut v = Vec::new();
    for d in [dn, other] {
        v.extend([
            format!("/sys/{pk}/{d}/thing/service/property/set"),
            format!("/sys/{pk}/{d}/thing/event/property/post"),
            format!("/ext/rrpc/123/sys/{pk}/{d}/thing/service/Echo"),
            format!("/ext/rrpc/5/{pk}/{d}/user/get"),
            format!("/{pk}/{d}/user/update"),
            format!("/{pk}/{d}/user/get"),
            format!("/shadow/get/{pk}/{d}"),
            format!("/shadow/update/{pk}/{d}"),
            format!("/ota/device/upgrade/{pk}/{d}"),
            format!("/ota/device/inform/{pk}/{d}"),
            format!("/ext/ntp/{pk}/{d}/response"),
            format!("/ext/session/{pk}/{d}/combine/login"),
        ]);
    }
    v.push(format!("/broadcast/{pk}/news/x"));
    v
}

/// Turns a concrete topic into a filter: some levels become `+`, maybe a `#` tail.
fn to_filter(topic: &str, plus_mask: u32, hash_at: Option<usize>) -> String {
    let levels: Vec<&str> = topic.split('/').collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, l) in levels.iter().enumerate() {
        if i > 0 && hash_at == Some(i) {
            out.push("#");
            break;
        }
        if i > 0 && plus_mask & (1 << (i % 32)) != 0 {
            out.push("+");
        } else {
            out.push(l);
        }
    }
    out.join("/")
}

/// A concrete topic matched by `filter`: `+` filled from `fill`, `#` by 0–3 levels of `fill`.
fn instantiate(filter: &str, fill: &[String], pick: &[usize]) -> String {
    let mut k = 0;
    let mut next = || {
        let s = fill[pick[k % pick.len()] % fill.len()].clone();
        k += 1;
        s
    };
    let mut out = Vec::new();
    for l in filter.split('/') {
        match l {
            "+" => out.push(next()),
            "#" => {
                let n = pick[0] % 4;
                for _ in 0..n {
                    out.push(next());
                }
            }
            _ => out.push(l.to_owned()),
        }
    }
    out.join("/")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_another_devices_sys(
        pk in product_key(),
        dn in device_name(),
        other in device_name(),
        tail in proptest::collection::vec("[A-Za-z0-9_]{1,6}|\\+", 0..4),
        hash in any::<bool>(),
    ) {
        prop_assume!(dn != other);
        let a = DevicePermissions::new(&pk, &dn, &TopicCategory::defaults()).unwrap();
        let mut t = format!("/sys/{pk}/{other}");
        for l in &tail { t.push('/'); t.push_str(l); }
        if hash { t.push_str("/#"); }
        prop_assert!(!a.can_publish(&t), "publish {}", t);
        prop_assert!(!a.can_subscribe(&t), "subscribe {}", t);
        let rrpc = format!("/ext/rrpc/+/sys/{pk}/{other}/thing/service/+");
        prop_assert!(!a.can_subscribe(&rrpc));
        // And a wildcard at the device level never passes.
        let wild = format!("/sys/{pk}/+/thing/service/property/set");
        prop_assert!(!a.can_subscribe(&wild));
        let own = format!("/sys/{pk}/{dn}/thing/service/property/set");
        prop_assert!(a.can_subscribe(&own));
    }

    #[test]
    fn allowed_filters_only_reach_allowed_topics(
        (pk, dn, other, fill) in (product_key(), device_name(), device_name()).prop_flat_map(|(pk, dn, other)| {
            let fill = proptest::collection::vec(level(pk.clone(), dn.clone(), other.clone()), 1..6);
            (Just(pk), Just(dn), Just(other), fill)
        }),
        base_idx in any::<usize>(),
        plus_mask in any::<u32>(),
        hash_at in proptest::option::of(1usize..10),
        picks in proptest::collection::vec(any::<usize>(), 1..8),
    ) {
        prop_assume!(dn != other);
        let a = DevicePermissions::new(&pk, &dn, &TopicCategory::defaults()).unwrap();
        let bases = base_topics(&pk, &dn, &other);
        let base = &bases[base_idx % bases.len()];
        // Sparse masks, so that some filters stay narrow.
        let filter = to_filter(base, plus_mask & plus_mask.rotate_left(7) & plus_mask.rotate_left(13), hash_at);
        if a.can_subscribe(&filter) {
            prop_assert!(lode_mqtt::topic::valid_topic_filter(&filter));
            let topic = instantiate(&filter, &fill, &picks);
            if lode_mqtt::topic::matches(&filter, &topic) && crate::acl::parse(&topic, false).is_ok() {
                prop_assert!(a.can_subscribe(&topic), "filter {} allowed, topic {} not", filter, topic);
                prop_assert!(!topic.contains(&format!("/{other}/")) || topic.contains(&format!("/{dn}/")) || topic.starts_with("/broadcast/"),
                    "filter {} reached {}", filter, topic);
            }
        }
        // A concrete topic is subscribable exactly when it is allowed as a filter, and
        // publishing never needs a wildcard.
        if a.can_publish(base) {
            prop_assert!(lode_mqtt::topic::valid_topic_name(base));
        }
    }

    #[test]
    fn checks_never_panic(s in "\\PC{0,200}") {
        let a = perms();
        let _ = a.check_publish(&s);
        let _ = a.check_subscribe(&s);
        let _ = TopicCategory::new(&s, Permission::Sub);
    }

    #[test]
    fn checks_never_panic_on_topic_like(s in "[/+#$a-z0-9]{0,40}") {
        let a = perms();
        if a.can_publish(&s) {
            prop_assert!(lode_mqtt::topic::valid_topic_name(&s));
        }
        if a.can_subscribe(&s) {
            prop_assert!(lode_mqtt::topic::valid_topic_filter(&s));
        }
    }
}
