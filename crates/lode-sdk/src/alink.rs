//! The Alink JSON envelope (section 6) and the topics of one device (section 7), pure.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::message::QoS;

/// Success.
pub const CODE_SUCCESS: i64 = 200;
/// Request error: the device failed while handling the request (also a handler that panicked).
pub const CODE_REQUEST_ERROR: i64 = 400;
/// Parameter error; also the answer to a call nobody handles ("service not supported").
pub const CODE_NOT_SUPPORTED: i64 = 460;

/// An uplink request: a topic under `/sys/${pk}/${dn}/`, its Alink method and params.
///
/// Built with one of the constructors, adjusted with [`Request::qos`] and
/// [`Request::timeout`], sent with [`crate::Device::request`] (awaits the `_reply`) or
/// [`crate::Device::send`] (`sys.ack=0`, no reply).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub(crate) suffix: String,
    pub(crate) method: String,
    pub(crate) params: Value,
    pub(crate) qos: QoS,
    pub(crate) timeout: Option<Duration>,
}

impl Request {
    /// Any request: `topic_suffix` is relative to `/sys/${pk}/${dn}/` (for example
    /// `thing/event/property/post`), the reply is expected on the same topic plus `_reply`.
    /// QoS 0 unless changed.
    pub fn new(topic_suffix: impl Into<String>, method: impl Into<String>, params: Value) -> Self {
        Request {
            suffix: topic_suffix.into(),
            method: method.into(),
            params,
            qos: QoS::AtMostOnce,
            timeout: None,
        }
    }

    /// `thing/event/property/post` with `params` such as `{"Temp":23.5}` (QoS 1, as the
    /// official SDKs send it).
    pub fn property_post(params: Value) -> Self {
        Request::new(
            "thing/event/property/post",
            "thing.event.property.post",
            params,
        )
        .qos(QoS::AtLeastOnce)
    }

    /// `thing/event/property/batch/post` with `{"properties":{..},"events":{..}}` (QoS 1).
    pub fn property_batch_post(params: Value) -> Self {
        Request::new(
            "thing/event/property/batch/post",
            "thing.event.property.batch.post",
            params,
        )
        .qos(QoS::AtLeastOnce)
    }

    /// `thing/event/${identifier}/post`.
    pub fn event_post(identifier: &str, params: Value) -> Self {
        Request::new(
            format!("thing/event/{identifier}/post"),
            format!("thing.event.{identifier}.post"),
            params,
        )
    }

    /// `thing/property/desired/get` for these property identifiers.
    pub fn desired_get<I, S>(identifiers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let ids = identifiers
            .into_iter()
            .map(|s| Value::String(s.into()))
            .collect();
        Request::new(
            "thing/property/desired/get",
            "thing.property.desired.get",
            Value::Array(ids),
        )
    }

    /// `thing/property/desired/delete` with `params` such as `{"LightSwitch":{}}`.
    pub fn desired_delete(params: Value) -> Self {
        Request::new(
            "thing/property/desired/delete",
            "thing.property.desired.delete",
            params,
        )
    }

    /// `thing/deviceinfo/update` with `[{"attrKey":k,"attrValue":v},..]`.
    pub fn device_info_update<I, K, V>(attributes: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let items = attributes
            .into_iter()
            .map(|(k, v)| json!({"attrKey": k.into(), "attrValue": v.into()}))
            .collect();
        Request::new(
            "thing/deviceinfo/update",
            "thing.deviceinfo.update",
            Value::Array(items),
        )
    }

    /// `thing/deviceinfo/delete` with `[{"attrKey":k},..]`.
    pub fn device_info_delete<I, K>(keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let items = keys
            .into_iter()
            .map(|k| json!({"attrKey": k.into()}))
            .collect();
        Request::new(
            "thing/deviceinfo/delete",
            "thing.deviceinfo.delete",
            Value::Array(items),
        )
    }

    /// `thing/dsltemplate/get`: the product's thing model (TSL) comes back in `data`.
    pub fn tsl_get() -> Self {
        Request::new("thing/dsltemplate/get", "thing.dsltemplate.get", json!({}))
    }

    /// The QoS of the PUBLISH.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// How long to wait for the reply, instead of [`crate::DeviceConfig::reply_timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The server's answer to a request, from `<topic>_reply`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request id, echoed.
    pub id: String,
    /// 200 on success, else an Alink error code.
    pub code: i64,
    /// The result (`{}` for most requests; the TSL for `dsltemplate/get`).
    pub data: Value,
    /// The server's message, if any.
    pub message: Option<String>,
}

impl Reply {
    /// Whether `code` is 200.
    pub fn is_success(&self) -> bool {
        self.code == CODE_SUCCESS
    }
}

/// How a downlink call reached the device, which decides where its answer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `thing/service/...` (or `thing/model/down_raw`): answered on the `_reply` topic.
    Async,
    /// `/ext/rrpc/${rrpcId}/...` (synchronous): answered on the identical topic.
    Rrpc {
        /// The RRPC id from the topic.
        rrpc_id: String,
    },
    /// `/sys/${pk}/${dn}/rrpc/request/${messageId}` (legacy synchronous): answered on
    /// `.../rrpc/response/${messageId}`.
    LegacyRrpc {
        /// The message id from the topic.
        message_id: String,
    },
}

/// A downlink Alink call: a property set or a service invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The request id; the SDK echoes it in the answer.
    pub id: String,
    /// `property/set` for a property set, else the service identifier.
    pub identifier: String,
    /// The `method` field, when the server sent one.
    pub method: Option<String>,
    /// The `params` (`{}` when absent).
    pub params: Value,
    /// How the call arrived.
    pub via: Via,
}

/// A handler's answer to a [`Call`]: `{"id","code","data"}` on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// 200 on success, else a device error code (400, 460, 100000–110000…).
    pub code: i64,
    /// The output data (`{}` when there is none).
    pub data: Value,
    /// An optional explanation, sent as `message`.
    pub message: Option<String>,
}

impl Response {
    /// Code 200 with this data.
    pub fn ok(data: Value) -> Response {
        Response {
            code: CODE_SUCCESS,
            data,
            message: None,
        }
    }

    /// An error code with an explanation and empty data.
    pub fn error(code: i64, message: impl Into<String>) -> Response {
        Response {
            code,
            data: json!({}),
            message: Some(message.into()),
        }
    }
}

/// `{"id","version","params","method"}` plus `"sys":{"ack":0}` when no reply is wanted.
pub(crate) fn request_payload(id: &str, method: &str, params: &Value, ack: bool) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(id.to_owned()));
    m.insert("version".into(), Value::String("1.0".into()));
    m.insert("params".into(), params.clone());
    m.insert("method".into(), Value::String(method.to_owned()));
    if !ack {
        m.insert("sys".into(), json!({"ack": 0}));
    }
    Value::Object(m).to_string().into_bytes()
}

/// `{"id","code","data"[,"message"]}`.
pub(crate) fn response_payload(id: &str, response: &Response) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("id".into(), Value::String(id.to_owned()));
    m.insert("code".into(), Value::from(response.code));
    m.insert("data".into(), response.data.clone());
    if let Some(msg) = &response.message {
        m.insert("message".into(), Value::String(msg.clone()));
    }
    Value::Object(m).to_string().into_bytes()
}

/// An id as sent: a string, or a bare number (OTA style).
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A reply from the server; `None` unless it is a JSON object with an id and a code.
pub(crate) fn parse_reply(payload: &[u8]) -> Option<Reply> {
    let Value::Object(mut m) = serde_json::from_slice(payload).ok()? else {
        return None;
    };
    let id = id_of(m.get("id")?)?;
    let code = match m.get("code")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    let data = m.remove("data").unwrap_or(Value::Null);
    let message = match m.remove("message") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Some(Reply {
        id,
        code,
        data,
        message,
    })
}

/// The fields of a downlink request: id, method, params.
pub(crate) struct ParsedCall {
    pub(crate) id: String,
    pub(crate) method: Option<String>,
    pub(crate) params: Value,
}

/// A downlink request; `None` unless it is a JSON object with an id. An answer (a `code`
/// without `method` or `params`, such as the device's own answer heard back through a
/// subscription) is not a request.
pub(crate) fn parse_call(payload: &[u8]) -> Option<ParsedCall> {
    let Value::Object(mut m) = serde_json::from_slice(payload).ok()? else {
        return None;
    };
    if m.contains_key("code") && !m.contains_key("method") && !m.contains_key("params") {
        return None;
    }
    let id = id_of(m.get("id")?)?;
    let method = match m.remove("method") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let params = match m.remove("params") {
        None | Some(Value::Null) => json!({}),
        Some(p) => p,
    };
    Some(ParsedCall { id, method, params })
}

/// The service identifier of a `thing.service.${id}` method.
pub(crate) fn service_of_method(method: &str) -> Option<String> {
    let id = method.strip_prefix("thing.service.")?;
    if id.is_empty() {
        return None;
    }
    Some(if id == "property.set" {
        PROPERTY_SET.to_owned()
    } else {
        id.to_owned()
    })
}

/// The identifier a property set is dispatched under.
pub(crate) const PROPERTY_SET: &str = "property/set";

/// What a downlink topic is, for one device.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound<'a> {
    /// `/sys/P/D/<request>_reply`: a reply to an uplink (except `up_raw_reply`).
    Reply,
    /// `/sys/P/D/thing/model/up_raw_reply`.
    RawReply,
    /// A JSON call: property set or service, async or through `/ext/rrpc`.
    Call { identifier: &'a str, via: Via },
    /// `thing/model/down_raw`, async or through `/ext/rrpc`.
    Raw { via: Via },
    /// `/sys/P/D/rrpc/request/${messageId}`: the service comes from `method`.
    LegacyRrpc { message_id: &'a str },
    /// `/ext/rrpc/${rrpcId}/P/D/user/...`: custom-topic RRPC, `suffix` starts at `user/`.
    CustomRrpc { rrpc_id: &'a str, suffix: &'a str },
    /// Anything else (custom topics, shadow, OTA, broadcasts…).
    Other,
}

/// The topics of one device.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    /// `/sys/${pk}/${dn}`.
    sys: String,
    /// `/${pk}/${dn}`.
    user: String,
    /// `sys/${pk}/${dn}/`, as it follows the rrpc id in `/ext/rrpc/${id}/...`.
    rrpc_sys: String,
    /// `${pk}/${dn}/`, as it follows the rrpc id for custom topics.
    rrpc_user: String,
}

impl Topics {
    pub(crate) fn new(product_key: &str, device_name: &str) -> Topics {
        Topics {
            sys: format!("/sys/{product_key}/{device_name}"),
            user: format!("/{product_key}/{device_name}"),
            rrpc_sys: format!("sys/{product_key}/{device_name}/"),
            rrpc_user: format!("{product_key}/{device_name}/"),
        }
    }

    /// `/sys/${pk}/${dn}/<suffix>`.
    pub(crate) fn sys(&self, suffix: &str) -> String {
        format!("{}/{suffix}", self.sys)
    }

    /// A topic as given when it starts with `/`, else relative to `/${pk}/${dn}/`.
    pub(crate) fn full(&self, topic: &str) -> String {
        if topic.starts_with('/') {
            topic.to_owned()
        } else {
            format!("{}/{topic}", self.user)
        }
    }

    /// The filter of a custom-topic RRPC: `/ext/rrpc/+/${pk}/${dn}/<suffix>`.
    pub(crate) fn custom_rrpc_filter(&self, suffix: &str) -> String {
        format!("/ext/rrpc/+/{}{suffix}", self.rrpc_user)
    }

    /// Reply topics the server-side subscription list lacks, subscribed explicitly always.
    pub(crate) fn extra_subscriptions(&self) -> Vec<String> {
        vec![self.sys("thing/event/property/batch/post_reply")]
    }

    /// What the SDK subscribes to itself without `_ss=1`: every downlink it handles.
    pub(crate) fn system_subscriptions(&self, ext_rrpc: bool) -> Vec<String> {
        let mut out: Vec<String> = [
            "thing/event/+/post_reply",
            "thing/service/property/set",
            "thing/service/+",
            "thing/model/down_raw",
            "thing/model/up_raw_reply",
            "thing/property/desired/get_reply",
            "thing/property/desired/delete_reply",
            "thing/deviceinfo/update_reply",
            "thing/deviceinfo/delete_reply",
            "thing/dsltemplate/get_reply",
            "rrpc/request/+",
        ]
        .iter()
        .map(|s| self.sys(s))
        .collect();
        if ext_rrpc {
            out.push(format!("/ext/rrpc/+/{}thing/service/+", self.rrpc_sys));
            out.push(format!(
                "/ext/rrpc/+/{}thing/service/property/set",
                self.rrpc_sys
            ));
            out.push(format!("/ext/rrpc/+/{}thing/model/down_raw", self.rrpc_sys));
        }
        out
    }

    /// Classifies a downlink topic.
    pub(crate) fn classify<'a>(&self, topic: &'a str) -> Inbound<'a> {
        if let Some(rest) = topic
            .strip_prefix(self.sys.as_str())
            .and_then(|r| r.strip_prefix('/'))
        {
            return classify_sys(rest);
        }
        if let Some(rest) = topic.strip_prefix("/ext/rrpc/") {
            let Some((rrpc_id, rest)) = rest.split_once('/') else {
                return Inbound::Other;
            };
            if rrpc_id.is_empty() {
                return Inbound::Other;
            }
            let via = || Via::Rrpc {
                rrpc_id: rrpc_id.to_owned(),
            };
            if let Some(sys) = rest.strip_prefix(self.rrpc_sys.as_str()) {
                if sys == "thing/model/down_raw" {
                    return Inbound::Raw { via: via() };
                }
                if let Some(identifier) = sys.strip_prefix("thing/service/")
                    && valid_service(identifier)
                {
                    return Inbound::Call {
                        identifier,
                        via: via(),
                    };
                }
                return Inbound::Other;
            }
            if let Some(suffix) = rest.strip_prefix(self.rrpc_user.as_str())
                && suffix.starts_with("user/")
            {
                return Inbound::CustomRrpc { rrpc_id, suffix };
            }
        }
        Inbound::Other
    }
}

/// A service identifier from a topic: property set, or one level that is not a reply.
fn valid_service(identifier: &str) -> bool {
    identifier == PROPERTY_SET
        || (!identifier.is_empty() && !identifier.contains('/') && !identifier.ends_with("_reply"))
}

/// Classifies the part of a topic after `/sys/P/D/`.
fn classify_sys(rest: &str) -> Inbound<'_> {
    if rest == "thing/model/up_raw_reply" {
        return Inbound::RawReply;
    }
    if rest.ends_with("_reply") {
        return Inbound::Reply;
    }
    if rest == "thing/model/down_raw" {
        return Inbound::Raw { via: Via::Async };
    }
    if let Some(identifier) = rest.strip_prefix("thing/service/")
        && valid_service(identifier)
    {
        return Inbound::Call {
            identifier,
            via: Via::Async,
        };
    }
    if let Some(message_id) = rest.strip_prefix("rrpc/request/")
        && !message_id.is_empty()
        && !message_id.contains('/')
    {
        return Inbound::LegacyRrpc { message_id };
    }
    Inbound::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics::new("a1PK", "dev01")
    }

    #[test]
    fn request_envelope_matches_the_python_sdk_shape() {
        let p = request_payload(
            "1",
            "thing.event.property.post",
            &json!({"Temp": 23.5}),
            true,
        );
        let v: Value = serde_json::from_slice(&p).expect("json");
        assert_eq!(
            v,
            json!({"id":"1","version":"1.0","params":{"Temp":23.5},"method":"thing.event.property.post"})
        );
        let p = request_payload("2", "m", &json!({}), false);
        let v: Value = serde_json::from_slice(&p).expect("json");
        assert_eq!(v["sys"], json!({"ack": 0}));
    }

    #[test]
    fn response_envelope_carries_message_only_when_set() {
        let v: Value =
            serde_json::from_slice(&response_payload("7", &Response::ok(json!({"a":1}))))
                .expect("json");
        assert_eq!(v, json!({"id":"7","code":200,"data":{"a":1}}));
        let v: Value = serde_json::from_slice(&response_payload(
            "8",
            &Response::error(CODE_NOT_SUPPORTED, "service not supported"),
        ))
        .expect("json");
        assert_eq!(
            v,
            json!({"id":"8","code":460,"data":{},"message":"service not supported"})
        );
    }

    #[test]
    fn replies_parse_with_string_or_number_fields() {
        let r =
            parse_reply(br#"{"id":"12","code":200,"data":{},"message":"success","version":"1.0"}"#)
                .expect("reply");
        assert_eq!(
            r,
            Reply {
                id: "12".into(),
                code: 200,
                data: json!({}),
                message: Some("success".into())
            }
        );
        assert!(r.is_success());
        let r = parse_reply(br#"{"id":13,"code":"6100"}"#).expect("reply");
        assert_eq!((r.id.as_str(), r.code, r.data), ("13", 6100, Value::Null));
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"code":200}"#,
            br#"{"id":"1"}"#,
            br#"{"id":true,"code":200}"#,
            br#"{"id":"1","code":"x"}"#,
        ] {
            assert!(
                parse_reply(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn calls_parse_leniently() {
        let c = parse_call(br#"{"id":"1001","version":"1.0","params":{"Switch":0},"method":"thing.service.property.set"}"#)
            .expect("call");
        assert_eq!(c.id, "1001");
        assert_eq!(c.method.as_deref(), Some("thing.service.property.set"));
        assert_eq!(c.params, json!({"Switch":0}));
        let c = parse_call(br#"{"id":5}"#).expect("call");
        assert_eq!((c.id.as_str(), c.method, c.params), ("5", None, json!({})));
        assert!(
            parse_call(br#"{"id":"5","code":200,"data":{}}"#).is_none(),
            "an answer"
        );
        assert!(parse_call(b"\xff").is_none());
        assert!(parse_call(br#"{"params":{}}"#).is_none());
    }

    #[test]
    fn service_ids_come_from_methods() {
        assert_eq!(
            service_of_method("thing.service.Echo").as_deref(),
            Some("Echo")
        );
        assert_eq!(
            service_of_method("thing.service.property.set").as_deref(),
            Some(PROPERTY_SET)
        );
        assert_eq!(service_of_method("thing.service."), None);
        assert_eq!(service_of_method("thing.event.x.post"), None);
    }

    #[test]
    fn downlink_topics_are_classified() {
        let t = topics();
        let call = |identifier, via| Inbound::Call { identifier, via };
        let rrpc = || Via::Rrpc {
            rrpc_id: "123".into(),
        };
        for (topic, want) in [
            (
                "/sys/a1PK/dev01/thing/event/property/post_reply",
                Inbound::Reply,
            ),
            (
                "/sys/a1PK/dev01/thing/dsltemplate/get_reply",
                Inbound::Reply,
            ),
            (
                "/sys/a1PK/dev01/thing/model/up_raw_reply",
                Inbound::RawReply,
            ),
            (
                "/sys/a1PK/dev01/thing/service/property/set",
                call("property/set", Via::Async),
            ),
            (
                "/sys/a1PK/dev01/thing/service/Echo",
                call("Echo", Via::Async),
            ),
            ("/sys/a1PK/dev01/thing/service/Echo_reply", Inbound::Reply),
            ("/sys/a1PK/dev01/thing/service/property/get", Inbound::Other),
            (
                "/sys/a1PK/dev01/thing/model/down_raw",
                Inbound::Raw { via: Via::Async },
            ),
            (
                "/sys/a1PK/dev01/rrpc/request/99",
                Inbound::LegacyRrpc { message_id: "99" },
            ),
            ("/sys/a1PK/dev01/rrpc/request/", Inbound::Other),
            (
                "/ext/rrpc/123/sys/a1PK/dev01/thing/service/Echo",
                call("Echo", rrpc()),
            ),
            (
                "/ext/rrpc/123/sys/a1PK/dev01/thing/service/property/set",
                call("property/set", rrpc()),
            ),
            (
                "/ext/rrpc/123/sys/a1PK/dev01/thing/model/down_raw",
                Inbound::Raw { via: rrpc() },
            ),
            (
                "/ext/rrpc/123/a1PK/dev01/user/get",
                Inbound::CustomRrpc {
                    rrpc_id: "123",
                    suffix: "user/get",
                },
            ),
            ("/ext/rrpc//a1PK/dev01/user/get", Inbound::Other),
            ("/ext/rrpc/123/a1PK/dev02/user/get", Inbound::Other),
            (
                "/ext/rrpc/123/sys/a1PK/dev01/thing/service/a/b",
                Inbound::Other,
            ),
            ("/sys/a1PK/dev012/thing/service/Echo", Inbound::Other),
            ("/a1PK/dev01/user/get", Inbound::Other),
            ("/shadow/get/a1PK/dev01", Inbound::Other),
        ] {
            assert_eq!(t.classify(topic), want, "{topic}");
        }
    }

    #[test]
    fn topic_helpers() {
        let t = topics();
        assert_eq!(t.sys("thing/x"), "/sys/a1PK/dev01/thing/x");
        assert_eq!(t.full("user/update"), "/a1PK/dev01/user/update");
        assert_eq!(t.full("/broadcast/a1PK/x"), "/broadcast/a1PK/x");
        assert_eq!(
            t.custom_rrpc_filter("user/get"),
            "/ext/rrpc/+/a1PK/dev01/user/get"
        );
        let subs = t.system_subscriptions(true);
        assert!(subs.contains(&"/ext/rrpc/+/sys/a1PK/dev01/thing/service/+".to_owned()));
        assert!(
            !t.system_subscriptions(false)
                .iter()
                .any(|s| s.starts_with("/ext/"))
        );
        for s in subs.iter().chain(&t.extra_subscriptions()) {
            assert!(lode_mqtt::topic::valid_topic_filter(s), "{s}");
        }
    }

    #[test]
    fn request_constructors_build_the_documented_topics() {
        let r = Request::event_post("Alarm", json!({"value":{"Level":2}}));
        assert_eq!(
            (r.suffix.as_str(), r.method.as_str()),
            ("thing/event/Alarm/post", "thing.event.Alarm.post")
        );
        assert_eq!(r.qos, QoS::AtMostOnce);
        assert_eq!(Request::property_post(json!({})).qos, QoS::AtLeastOnce);
        assert_eq!(Request::desired_get(["A", "B"]).params, json!(["A", "B"]));
        assert_eq!(
            Request::device_info_update([("room", "lab1")]).params,
            json!([{"attrKey":"room","attrValue":"lab1"}])
        );
        assert_eq!(
            Request::device_info_delete(["room"]).params,
            json!([{"attrKey":"room"}])
        );
        assert_eq!(Request::tsl_get().suffix, "thing/dsltemplate/get");
        let r = Request::desired_delete(json!({"L":{}})).timeout(Duration::from_secs(1));
        assert_eq!(r.timeout, Some(Duration::from_secs(1)));
        assert_eq!(r.suffix, "thing/property/desired/delete");
        assert_eq!(
            Request::property_batch_post(json!({})).suffix,
            "thing/event/property/batch/post"
        );
    }
}
