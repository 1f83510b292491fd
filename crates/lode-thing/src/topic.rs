//! Which uplink topics the thing model handles (section 7.1 of the Alink reference).

/// An uplink the thing model takes, with the device its topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified<'a> {
    pub product_key: &'a str,
    pub device_name: &'a str,
    pub kind: UplinkKind<'a>,
}

/// What an uplink topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkKind<'a> {
    /// `thing/event/property/post`
    PropertyPost,
    /// `thing/event/property/batch/post`
    BatchPost,
    /// `thing/event/${id}/post`
    EventPost(&'a str),
    /// `thing/service/property/set_reply`
    PropertySetReply,
    /// `thing/service/${id}_reply`
    ServiceReply(&'a str),
    /// `/ext/rrpc/${rrpcId}/sys/.../thing/service/${id}`: a sync call's answer.
    ExtRrpcReply { rrpc_id: &'a str, service: &'a str },
    /// `/ext/rrpc/${rrpcId}/sys/.../thing/model/down_raw`: a raw sync call's answer.
    ExtRrpcRawReply { rrpc_id: &'a str },
    /// `rrpc/response/${messageId}`: a legacy sync call's answer (Alink or raw).
    RrpcResponse(&'a str),
    /// `/ext/rrpc/${rrpcId}/${pk}/${dn}/user/...`: a custom-topic RRPC answer (raw).
    CustomRrpcReply { rrpc_id: &'a str },
    /// `thing/model/up_raw`
    UpRaw,
    /// `thing/model/down_raw_reply`
    DownRawReply,
    /// `thing/property/desired/get`
    DesiredGet,
    /// `thing/property/desired/delete`
    DesiredDelete,
    /// `thing/deviceinfo/update`
    DeviceInfoUpdate,
    /// `thing/deviceinfo/delete`
    DeviceInfoDelete,
    /// `thing/dsltemplate/get`
    TslGet,
    /// `/ext/ntp/${pk}/${dn}/request`
    NtpRequest,
}

/// Classifies `topic`; `None` for topics the thing model leaves to the broker.
pub fn classify(topic: &str) -> Option<Classified<'_>> {
    if let Some(rest) = topic.strip_prefix("/sys/") {
        let (pk, dn, path) = split_device(rest)?;
        return Some(Classified {
            product_key: pk,
            device_name: dn,
            kind: sys_kind(path)?,
        });
    }
    if let Some(rest) = topic.strip_prefix("/ext/rrpc/") {
        let (rrpc_id, rest) = rest.split_once('/')?;
        if rrpc_id.is_empty() {
            return None;
        }
        let Some(rest) = rest.strip_prefix("sys/") else {
            let (pk, dn, path) = split_device(rest)?;
            let custom = path
                .strip_prefix("user/")
                .is_some_and(|p| !p.is_empty() && p.split('/').all(|l| !l.is_empty()));
            return custom.then_some(Classified {
                product_key: pk,
                device_name: dn,
                kind: UplinkKind::CustomRrpcReply { rrpc_id },
            });
        };
        let (pk, dn, path) = split_device(rest)?;
        let kind = if let Some(service) = path.strip_prefix("thing/service/") {
            if service.is_empty() || service.contains('/') {
                return None;
            }
            UplinkKind::ExtRrpcReply { rrpc_id, service }
        } else if path == "thing/model/down_raw" {
            UplinkKind::ExtRrpcRawReply { rrpc_id }
        } else {
            return None;
        };
        return Some(Classified {
            product_key: pk,
            device_name: dn,
            kind,
        });
    }
    if let Some(rest) = topic.strip_prefix("/ext/ntp/") {
        let (pk, dn, path) = split_device(rest)?;
        return (path == "request").then_some(Classified {
            product_key: pk,
            device_name: dn,
            kind: UplinkKind::NtpRequest,
        });
    }
    None
}

fn split_device(rest: &str) -> Option<(&str, &str, &str)> {
    let (pk, rest) = rest.split_once('/')?;
    let (dn, path) = rest.split_once('/')?;
    (!pk.is_empty() && !dn.is_empty()).then_some((pk, dn, path))
}

fn sys_kind(path: &str) -> Option<UplinkKind<'_>> {
    Some(match path {
        "thing/event/property/post" => UplinkKind::PropertyPost,
        "thing/event/property/batch/post" => UplinkKind::BatchPost,
        "thing/service/property/set_reply" => UplinkKind::PropertySetReply,
        "thing/model/up_raw" => UplinkKind::UpRaw,
        "thing/model/down_raw_reply" => UplinkKind::DownRawReply,
        "thing/property/desired/get" => UplinkKind::DesiredGet,
        "thing/property/desired/delete" => UplinkKind::DesiredDelete,
        "thing/deviceinfo/update" => UplinkKind::DeviceInfoUpdate,
        "thing/deviceinfo/delete" => UplinkKind::DeviceInfoDelete,
        "thing/dsltemplate/get" => UplinkKind::TslGet,
        _ => {
            if let Some(id) = path
                .strip_prefix("thing/event/")
                .and_then(|p| p.strip_suffix("/post"))
                && single_segment(id)
            {
                return Some(UplinkKind::EventPost(id));
            }
            if let Some(id) = path
                .strip_prefix("thing/service/")
                .and_then(|p| p.strip_suffix("_reply"))
                && single_segment(id)
            {
                return Some(UplinkKind::ServiceReply(id));
            }
            if let Some(id) = path.strip_prefix("rrpc/response/")
                && single_segment(id)
            {
                return Some(UplinkKind::RrpcResponse(id));
            }
            return None;
        }
    })
}

fn single_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(topic: &str) -> Option<UplinkKind<'_>> {
        classify(topic).map(|c| c.kind)
    }

    #[test]
    fn thing_model_uplinks() {
        let c = classify("/sys/pk1/dev1/thing/event/property/post").expect("taken");
        assert_eq!((c.product_key, c.device_name), ("pk1", "dev1"));
        assert_eq!(c.kind, UplinkKind::PropertyPost);
        assert_eq!(
            kind("/sys/p/d/thing/event/property/batch/post"),
            Some(UplinkKind::BatchPost)
        );
        assert_eq!(
            kind("/sys/p/d/thing/event/Alarm/post"),
            Some(UplinkKind::EventPost("Alarm"))
        );
        assert_eq!(
            kind("/sys/p/d/thing/service/property/set_reply"),
            Some(UplinkKind::PropertySetReply)
        );
        assert_eq!(
            kind("/sys/p/d/thing/service/Reboot_reply"),
            Some(UplinkKind::ServiceReply("Reboot"))
        );
        assert_eq!(
            kind("/sys/p/d/rrpc/response/77"),
            Some(UplinkKind::RrpcResponse("77"))
        );
        assert_eq!(kind("/sys/p/d/thing/model/up_raw"), Some(UplinkKind::UpRaw));
        assert_eq!(
            kind("/sys/p/d/thing/dsltemplate/get"),
            Some(UplinkKind::TslGet)
        );
        assert_eq!(
            kind("/ext/rrpc/123/sys/p/d/thing/service/Echo"),
            Some(UplinkKind::ExtRrpcReply {
                rrpc_id: "123",
                service: "Echo"
            })
        );
        assert_eq!(
            kind("/ext/rrpc/9/sys/p/d/thing/model/down_raw"),
            Some(UplinkKind::ExtRrpcRawReply { rrpc_id: "9" })
        );
        assert_eq!(kind("/ext/ntp/p/d/request"), Some(UplinkKind::NtpRequest));
        assert_eq!(
            kind("/ext/rrpc/1/p/d/user/x"),
            Some(UplinkKind::CustomRrpcReply { rrpc_id: "1" })
        );
        assert_eq!(
            kind("/ext/rrpc/42/p/d/user/a/b"),
            Some(UplinkKind::CustomRrpcReply { rrpc_id: "42" })
        );
    }

    #[test]
    fn other_topics_are_left_to_the_broker() {
        for t in [
            "/p/d/user/update",
            "/sys/p/d/thing/event/property/post_reply",
            "/sys/p/d/thing/event/a/b/post",
            "/sys/p/d/thing/service/property/set",
            "/sys/p//thing/event/property/post",
            "/sys/p/d",
            "/ext/rrpc/1/p/d/other/x",
            "/ext/rrpc/1/p/d/user/",
            "/ext/rrpc/1/p/d/user//x",
            "/ext/rrpc//sys/p/d/thing/service/x",
            "/ext/ntp/p/d/response",
            "/shadow/update/p/d",
            "/ota/device/inform/p/d",
        ] {
            assert_eq!(classify(t), None, "{t}");
        }
    }
}
