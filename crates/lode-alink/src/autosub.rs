//! Server-side auto-subscription (`_ss=1`, section 4): the filters the server subscribes a
//! device to on its behalf, because the SDKs never send SUBSCRIBE for system topics.
//!
//! The broker must deliver downlinks through these filters but must not match them against
//! the device's own uplinks (a `thing/service/+` filter would also match `..._reply`).

/// The filters a device `${pk}/${dn}` is subscribed to when its clientId carries `_ss=1`,
/// exactly the list of section 4 (47 filters, QoS 1 is what the SDKs would ask for).
pub fn auto_subscriptions(product_key: &str, device_name: &str) -> Vec<String> {
    const SYS: &[&str] = &[
        "thing/event/+/post_reply",
        "thing/service/property/set",
        "thing/service/property/get",
        "thing/service/+",
        "thing/model/down_raw",
        "thing/model/up_raw_reply",
        "thing/property/desired/get_reply",
        "thing/property/desired/delete_reply",
        "thing/deviceinfo/update_reply",
        "thing/deviceinfo/delete_reply",
        "thing/dsltemplate/get_reply",
        "thing/dynamicTsl/get_reply",
        "thing/config/get_reply",
        "thing/config/push",
        "thing/config/log/get_reply",
        "thing/config/log/push",
        "thing/ota/firmware/get_reply",
        "thing/topo/add_reply",
        "thing/topo/delete_reply",
        "thing/topo/get_reply",
        "thing/topo/change",
        "thing/topo/add/notify",
        "thing/sub/register_reply",
        "thing/sub/unregister_reply",
        "thing/proxy/provisioning/product_register_reply",
        "thing/list/found_reply",
        "thing/gateway/permit",
        "thing/disable",
        "thing/enable",
        "thing/delete",
        "thing/job/notify",
        "thing/job/get_reply",
        "thing/job/update_reply",
        "thing/bootstrap/notify",
        "rrpc/request/+",
        "broadcast/request/+",
    ];
    const RRPC: &[&str] = &["thing/service/+", "thing/model/down_raw"];
    const SESSION: &[&str] = &[
        "combine/login_reply",
        "combine/logout_reply",
        "combine/batch_login_reply",
        "combine/batch_logout_reply",
    ];
    let (pk, dn) = (product_key, device_name);
    let mut out = Vec::with_capacity(47);
    out.extend(SYS.iter().map(|t| format!("/sys/{pk}/{dn}/{t}")));
    out.extend(
        RRPC.iter()
            .map(|t| format!("/ext/rrpc/+/sys/{pk}/{dn}/{t}")),
    );
    out.extend(
        SESSION
            .iter()
            .map(|t| format!("/ext/session/{pk}/{dn}/{t}")),
    );
    out.push(format!("/ext/ntp/{pk}/{dn}/response"));
    out.push(format!("/ext/error/{pk}/{dn}"));
    out.push(format!("/shadow/get/{pk}/{dn}"));
    out.push(format!("/ota/device/upgrade/{pk}/{dn}"));
    out.push(format!("/ota/device/request/{pk}/{dn}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list() {
        let subs = auto_subscriptions("a1TestPK001", "dev01");
        assert_eq!(subs.len(), 47);
        let set: std::collections::HashSet<_> = subs.iter().collect();
        assert_eq!(set.len(), subs.len(), "no duplicates");
        for must in [
            "/sys/a1TestPK001/dev01/thing/event/+/post_reply",
            "/sys/a1TestPK001/dev01/thing/service/property/set",
            "/sys/a1TestPK001/dev01/thing/service/+",
            "/sys/a1TestPK001/dev01/rrpc/request/+",
            "/ext/rrpc/+/sys/a1TestPK001/dev01/thing/service/+",
            "/ext/rrpc/+/sys/a1TestPK001/dev01/thing/model/down_raw",
            "/ext/session/a1TestPK001/dev01/combine/batch_login_reply",
            "/ext/ntp/a1TestPK001/dev01/response",
            "/ext/error/a1TestPK001/dev01",
            "/shadow/get/a1TestPK001/dev01",
            "/ota/device/upgrade/a1TestPK001/dev01",
        ] {
            assert!(set.contains(&must.to_string()), "{must}");
        }
        for s in &subs {
            assert!(lode_mqtt::topic::valid_topic_filter(s), "{s}");
        }
    }

    #[test]
    fn downlinks_are_matched() {
        let subs = auto_subscriptions("pk", "dev01");
        let hit = |t: &str| subs.iter().any(|f| lode_mqtt::topic::matches(f, t));
        assert!(hit("/sys/pk/dev01/thing/event/property/post_reply"));
        assert!(hit("/sys/pk/dev01/thing/service/Reboot"));
        assert!(hit(
            "/ext/rrpc/1234567890123/sys/pk/dev01/thing/service/Echo"
        ));
        assert!(hit("/sys/pk/dev01/rrpc/request/42"));
        assert!(!hit("/sys/pk/dev02/thing/service/Reboot"));
        assert!(!hit("/sys/pk/dev01/thing/event/property/post"));
    }
}
