//! The shadow document and every change to it, as pure functions.
//!
//! A [`Document`] is `{state:{reported,desired}, metadata:{reported:{k:{timestamp}},
//! desired:{..}}, version, timestamp}` (times in seconds). Devices change it with requests
//! on `/shadow/update/${pk}/${dn}` ([`DeviceRequest::parse`], [`Document::apply`]);
//! applications change the desired state through the API ([`Document::apply_desired`]).
//! Every answer the device gets is built here ([`reply_ok`], [`reply_error`],
//! [`Document::get_reply`], [`Document::control`]), in the shapes of the Alink shadow
//! protocol. No I/O and no clock: the caller passes the time.
//!
//! Versions: a write that carries a version is accepted only if it is greater than the
//! document's (which then takes it); otherwise it is a conflict (409). A write without a
//! version (or with `-1`) takes the current version plus one. So the version only grows.

use serde_json::{Map, Value, json};

/// Limits of one shadow (the platform's defaults in [`Limits::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of objects and arrays in `reported` or `desired` (an object of
    /// scalars is 1).
    pub max_depth: usize,
    /// Largest serialized document, and largest request, in bytes.
    pub max_document_bytes: usize,
    /// Most attributes in `reported`, and in `desired`.
    pub max_properties: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 5,
            max_document_bytes: 16 * 1024,
            max_properties: 128,
        }
    }
}

/// Why a shadow request was refused; [`ShadowError::code`] is the number the device sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShadowError {
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("the JSON is nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("the {what} is larger than {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    #[error("the request has no method")]
    MissingMethod,
    #[error("the request has no state")]
    MissingState,
    #[error("the version is not a number")]
    InvalidVersion,
    #[error("the request has no reported state")]
    MissingReported,
    #[error("the reported state is empty")]
    EmptyReported,
    #[error("invalid method {0:?}")]
    InvalidMethod(String),
    #[error("the shadow document is empty")]
    EmptyDocument,
    #[error("more than {0} attributes")]
    TooManyProperties(usize),
    #[error("version conflict: the shadow is at version {current}")]
    VersionConflict { current: u64 },
    #[error("too many requests: at most {0} per second")]
    Throttled(u32),
    #[error("server error: {0}")]
    Internal(String),
}

impl ShadowError {
    /// The shadow error code (400–409, 429, 500).
    pub fn code(&self) -> u16 {
        match self {
            ShadowError::InvalidJson(_)
            | ShadowError::TooDeep(_)
            | ShadowError::TooLarge { .. } => 400,
            ShadowError::MissingMethod => 401,
            ShadowError::MissingState => 402,
            ShadowError::InvalidVersion => 403,
            ShadowError::MissingReported => 404,
            ShadowError::EmptyReported => 405,
            ShadowError::InvalidMethod(_) => 406,
            ShadowError::EmptyDocument => 407,
            ShadowError::TooManyProperties(_) => 408,
            ShadowError::VersionConflict { .. } => 409,
            ShadowError::Throttled(_) => 429,
            ShadowError::Internal(_) => 500,
        }
    }
}

/// A section of the state: `reported` or `desired`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// Attribute values.
    pub values: Map<String, Value>,
    /// When each attribute was last written, in seconds.
    pub times: Map<String, Value>,
}

impl Section {
    fn set(&mut self, key: &str, value: Value, now: u64) {
        self.values.insert(key.to_owned(), value);
        self.times
            .insert(key.to_owned(), json!({ "timestamp": now }));
    }

    fn remove(&mut self, key: &str) {
        self.values.remove(key);
        self.times.remove(key);
    }

    fn clear(&mut self) {
        self.values.clear();
        self.times.clear();
    }
}

/// One device's shadow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    pub reported: Section,
    pub desired: Section,
    /// 0 for a device that never had a shadow.
    pub version: u64,
    /// Time of the last write, in seconds.
    pub timestamp: u64,
}

/// What a device asks on `/shadow/update/${pk}/${dn}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRequest {
    /// `clientToken`, echoed in the reply.
    pub client_token: Option<String>,
    pub op: DeviceOp,
}

/// The operation of a [`DeviceRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceOp {
    /// `get`: the whole document.
    Get,
    /// `update`: merge `reported` (a `null` value removes the attribute) and, with
    /// `clear_desired`, empty `desired`.
    Update {
        reported: Option<Map<String, Value>>,
        clear_desired: bool,
        version: Option<u64>,
    },
    /// `delete`: remove attributes, or every attribute of a section.
    Delete {
        reported: Removal,
        desired: Removal,
        version: Option<u64>,
    },
}

/// What a `delete` removes from one section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Nothing,
    All,
    Keys(Vec<String>),
}

/// A JSON `null` or the string `"null"`, which devices send for "remove".
fn is_null(v: &Value) -> bool {
    v.is_null() || v.as_str() == Some("null")
}

/// Nesting depth: a scalar is 0, an object or array one more than its deepest child.
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The `version` of a request: `None` when absent or `-1`.
fn parse_version(v: Option<&Value>) -> Result<Option<u64>, ShadowError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_i64()) {
            (Some(v), _) => Ok(Some(v)),
            (None, Some(-1)) => Ok(None),
            _ => Err(ShadowError::InvalidVersion),
        },
        Some(_) => Err(ShadowError::InvalidVersion),
    }
}

fn object_section(
    v: &Value,
    limits: &Limits,
    what: &'static str,
) -> Result<Map<String, Value>, ShadowError> {
    let Value::Object(m) = v else {
        return Err(ShadowError::InvalidJson(format!("{what} is not an object")));
    };
    if depth(v) > limits.max_depth {
        return Err(ShadowError::TooDeep(limits.max_depth));
    }
    if m.len() > limits.max_properties {
        return Err(ShadowError::TooManyProperties(limits.max_properties));
    }
    Ok(m.clone())
}

fn removal(v: Option<&Value>) -> Result<Removal, ShadowError> {
    match v {
        None => Ok(Removal::Nothing),
        Some(v) if is_null(v) => Ok(Removal::All),
        Some(Value::Object(m)) if m.is_empty() => Err(ShadowError::EmptyReported),
        Some(Value::Object(m)) => {
            if let Some((k, _)) = m.iter().find(|(_, v)| !is_null(v)) {
                return Err(ShadowError::InvalidJson(format!(
                    "delete takes \"null\" values, not a value for {k:?}"
                )));
            }
            Ok(Removal::Keys(m.keys().cloned().collect()))
        }
        Some(_) => Err(ShadowError::InvalidJson(
            "a section to delete is \"null\" or an object".into(),
        )),
    }
}

impl DeviceRequest {
    /// Parses a device's request. The error carries the `clientToken` when one could be
    /// read, so that the error reply echoes it.
    pub fn parse(
        payload: &[u8],
        limits: &Limits,
    ) -> Result<DeviceRequest, (ShadowError, Option<String>)> {
        if payload.len() > limits.max_document_bytes {
            return Err((
                ShadowError::TooLarge {
                    what: "request",
                    limit: limits.max_document_bytes,
                },
                None,
            ));
        }
        let value: Value = serde_json::from_slice(payload)
            .map_err(|e| (ShadowError::InvalidJson(e.to_string()), None))?;
        let Value::Object(root) = value else {
            return Err((ShadowError::InvalidJson("not an object".into()), None));
        };
        let client_token = root
            .get("clientToken")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Self::parse_object(&root, limits)
            .map(|op| DeviceRequest {
                client_token: client_token.clone(),
                op,
            })
            .map_err(|e| (e, client_token))
    }

    fn parse_object(root: &Map<String, Value>, limits: &Limits) -> Result<DeviceOp, ShadowError> {
        let method = match root.get("method") {
            None | Some(Value::Null) => return Err(ShadowError::MissingMethod),
            Some(Value::String(m)) => m.as_str(),
            Some(other) => return Err(ShadowError::InvalidMethod(other.to_string())),
        };
        match method {
            "get" => Ok(DeviceOp::Get),
            "update" => {
                let version = parse_version(root.get("version"))?;
                let Some(Value::Object(state)) = root.get("state") else {
                    return Err(ShadowError::MissingState);
                };
                let reported = match state.get("reported") {
                    None => None,
                    Some(Value::Object(m)) if m.is_empty() => {
                        return Err(ShadowError::EmptyReported);
                    }
                    Some(v) => Some(object_section(v, limits, "reported")?),
                };
                let clear_desired = match state.get("desired") {
                    None => false,
                    Some(v) if is_null(v) => true,
                    Some(_) => {
                        return Err(ShadowError::InvalidJson(
                            "a device may only clear desired (\"desired\":\"null\")".into(),
                        ));
                    }
                };
                if reported.is_none() && !clear_desired {
                    return Err(ShadowError::MissingReported);
                }
                Ok(DeviceOp::Update {
                    reported,
                    clear_desired,
                    version,
                })
            }
            "delete" => {
                let version = parse_version(root.get("version"))?;
                let state = match root.get("state") {
                    Some(Value::Object(state)) => state,
                    _ => return Err(ShadowError::MissingState),
                };
                let reported = removal(state.get("reported"))?;
                let desired = removal(state.get("desired"))?;
                if reported == Removal::Nothing && desired == Removal::Nothing {
                    return Err(ShadowError::MissingReported);
                }
                Ok(DeviceOp::Delete {
                    reported,
                    desired,
                    version,
                })
            }
            other => Err(ShadowError::InvalidMethod(other.to_owned())),
        }
    }
}

/// The desired state an application sets: an object (a `null` value removes that
/// attribute) or `"null"`, which clears all of it.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredUpdate {
    Clear,
    Merge(Map<String, Value>),
}

impl DesiredUpdate {
    /// Reads the API's `desired` value.
    pub fn from_value(v: &Value, limits: &Limits) -> Result<DesiredUpdate, ShadowError> {
        if is_null(v) {
            return Ok(DesiredUpdate::Clear);
        }
        object_section(v, limits, "desired").map(DesiredUpdate::Merge)
    }
}

impl Document {
    /// Reads a stored document.
    pub fn from_json(text: &str) -> Result<Document, ShadowError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ShadowError::Internal(format!("stored shadow: {e}")))?;
        let section = |name: &str| -> Section {
            let values = v["state"][name].as_object().cloned().unwrap_or_default();
            let times = v["metadata"][name].as_object().cloned().unwrap_or_default();
            Section { values, times }
        };
        Ok(Document {
            reported: section("reported"),
            desired: section("desired"),
            version: v["version"].as_u64().unwrap_or(0),
            timestamp: v["timestamp"].as_u64().unwrap_or(0),
        })
    }

    /// The document as stored and as the API shows it.
    pub fn to_json(&self) -> Value {
        json!({
            "state": self.state_json(),
            "metadata": self.metadata_json(),
            "version": self.version,
            "timestamp": self.timestamp,
        })
    }

    fn state_json(&self) -> Value {
        json!({ "reported": self.reported.values, "desired": self.desired.values })
    }

    fn metadata_json(&self) -> Value {
        json!({ "reported": self.reported.times, "desired": self.desired.times })
    }

    /// Whether neither section has an attribute.
    pub fn is_empty(&self) -> bool {
        self.reported.values.is_empty() && self.desired.values.is_empty()
    }

    /// The desired attributes whose value differs from the reported one.
    pub fn delta(&self) -> Map<String, Value> {
        self.desired
            .values
            .iter()
            .filter(|(k, v)| self.reported.values.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The version a write gets, or a conflict.
    fn next_version(&self, requested: Option<u64>) -> Result<u64, ShadowError> {
        match requested {
            Some(v) if v > self.version => Ok(v),
            Some(_) => Err(ShadowError::VersionConflict {
                current: self.version,
            }),
            None => self
                .version
                .checked_add(1)
                .ok_or(ShadowError::VersionConflict {
                    current: self.version,
                }),
        }
    }

    /// Checks the limits that depend on the whole document.
    fn check(&self, limits: &Limits) -> Result<(), ShadowError> {
        for s in [&self.reported, &self.desired] {
            if s.values.len() > limits.max_properties {
                return Err(ShadowError::TooManyProperties(limits.max_properties));
            }
        }
        if self.to_json().to_string().len() > limits.max_document_bytes {
            return Err(ShadowError::TooLarge {
                what: "shadow document",
                limit: limits.max_document_bytes,
            });
        }
        Ok(())
    }

    /// Applies a device's `update` or `delete` at time `now` (seconds): the new document,
    /// or why not. `get` changes nothing and is answered by [`Document::get_reply`].
    pub fn apply(&self, op: &DeviceOp, now: u64, limits: &Limits) -> Result<Document, ShadowError> {
        let mut next = self.clone();
        match op {
            DeviceOp::Get => return Ok(next),
            DeviceOp::Update {
                reported,
                clear_desired,
                version,
            } => {
                next.version = self.next_version(*version)?;
                if let Some(reported) = reported {
                    for (k, v) in reported {
                        if is_null(v) {
                            next.reported.remove(k);
                        } else {
                            next.reported.set(k, v.clone(), now);
                        }
                    }
                }
                if *clear_desired {
                    next.desired.clear();
                }
            }
            DeviceOp::Delete {
                reported,
                desired,
                version,
            } => {
                next.version = self.next_version(*version)?;
                for (section, removal) in
                    [(&mut next.reported, reported), (&mut next.desired, desired)]
                {
                    match removal {
                        Removal::Nothing => {}
                        Removal::All => section.clear(),
                        Removal::Keys(keys) => keys.iter().for_each(|k| section.remove(k)),
                    }
                }
            }
        }
        next.timestamp = now;
        next.check(limits)?;
        Ok(next)
    }

    /// Applies an application's desired update at time `now` (seconds). With `version`,
    /// it must be greater than the document's (else a conflict).
    pub fn apply_desired(
        &self,
        update: &DesiredUpdate,
        version: Option<u64>,
        now: u64,
        limits: &Limits,
    ) -> Result<Document, ShadowError> {
        let mut next = self.clone();
        next.version = self.next_version(version)?;
        match update {
            DesiredUpdate::Clear => next.desired.clear(),
            DesiredUpdate::Merge(m) => {
                for (k, v) in m {
                    if is_null(v) {
                        next.desired.remove(k);
                    } else {
                        next.desired.set(k, v.clone(), now);
                    }
                }
            }
        }
        next.timestamp = now;
        next.check(limits)?;
        Ok(next)
    }

    /// The answer to `get`: the whole document, or 407 when it is empty.
    pub fn get_reply(&self, client_token: Option<&str>, now: u64) -> Value {
        if self.is_empty() {
            return reply_error(
                &ShadowError::EmptyDocument,
                Some(self.version),
                client_token,
                now,
            );
        }
        let mut reply = json!({
            "method": "reply",
            "payload": {
                "status": "success",
                "state": self.state_json(),
                "metadata": self.metadata_json(),
                "version": self.version,
            },
            "version": self.version,
            "timestamp": now,
        });
        with_token(&mut reply, client_token);
        reply
    }

    /// The push of the desired state to the device: the attributes of [`Document::delta`]
    /// with their metadata; `None` when there is no difference to push.
    pub fn control(&self, now: u64) -> Option<Value> {
        let delta = self.delta();
        if delta.is_empty() {
            return None;
        }
        let times: Map<String, Value> = delta
            .keys()
            .filter_map(|k| self.desired.times.get(k).map(|t| (k.clone(), t.clone())))
            .collect();
        Some(json!({
            "method": "control",
            "payload": {
                "status": "success",
                "state": { "desired": delta },
                "metadata": { "desired": times },
                "version": self.version,
            },
            "version": self.version,
            "timestamp": now,
        }))
    }
}

fn with_token(reply: &mut Value, client_token: Option<&str>) {
    if let (Some(t), Value::Object(m)) = (client_token, reply) {
        m.insert("clientToken".into(), Value::String(t.to_owned()));
    }
}

/// The answer to a successful `update` or `delete`.
pub fn reply_ok(version: u64, client_token: Option<&str>, now: u64) -> Value {
    let mut reply = json!({
        "method": "reply",
        "payload": { "status": "success", "version": version },
        "version": version,
        "timestamp": now,
    });
    with_token(&mut reply, client_token);
    reply
}

/// The answer to a refused request; `version` is the shadow's current one, when known.
pub fn reply_error(
    error: &ShadowError,
    version: Option<u64>,
    client_token: Option<&str>,
    now: u64,
) -> Value {
    let mut reply = json!({
        "method": "reply",
        "payload": {
            "status": "error",
            "content": {
                "errorcode": error.code().to_string(),
                "errormessage": error.to_string(),
            },
        },
        "timestamp": now,
    });
    if let (Some(v), Value::Object(m)) = (version, &mut reply) {
        m.insert("version".into(), Value::from(v));
    }
    with_token(&mut reply, client_token);
    reply
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const L: Limits = Limits {
        max_depth: 5,
        max_document_bytes: 16 * 1024,
        max_properties: 128,
    };

    fn parse(v: Value) -> Result<DeviceRequest, u16> {
        DeviceRequest::parse(v.to_string().as_bytes(), &L).map_err(|(e, _)| e.code())
    }

    fn op(v: Value) -> DeviceOp {
        parse(v).expect("valid request").op
    }

    #[test]
    fn update_merges_reported_with_metadata_and_takes_the_version() {
        let doc = Document::default();
        let d = doc
            .apply(&op(json!({"method":"update","state":{"reported":{"color":"red","n":1}},"version":1})), 100, &L)
            .unwrap();
        assert_eq!(d.version, 1);
        assert_eq!(d.timestamp, 100);
        assert_eq!(
            d.reported.values,
            json!({"color":"red","n":1}).as_object().cloned().unwrap()
        );
        assert_eq!(
            d.to_json()["metadata"]["reported"]["color"],
            json!({"timestamp":100})
        );
        let d2 = d
            .apply(
                &op(json!({"method":"update","state":{"reported":{"n":null,"x":{"y":[1,2]}}}})),
                200,
                &L,
            )
            .unwrap();
        assert_eq!(d2.version, 2, "no version: current plus one");
        assert_eq!(d2.reported.values.get("n"), None);
        assert_eq!(
            d2.to_json()["state"]["reported"],
            json!({"color":"red","x":{"y":[1,2]}})
        );
        assert_eq!(
            d2.to_json()["metadata"]["reported"]["color"]["timestamp"],
            100
        );
        assert_eq!(Document::from_json(&d2.to_json().to_string()).unwrap(), d2);
    }

    #[test]
    fn stale_versions_conflict() {
        let d = Document {
            version: 7,
            ..Document::default()
        };
        for v in [0, 5, 7] {
            let e = d
                .apply(
                    &op(json!({"method":"update","state":{"reported":{"a":1}},"version":v})),
                    1,
                    &L,
                )
                .unwrap_err();
            assert_eq!(e, ShadowError::VersionConflict { current: 7 });
            assert_eq!(e.code(), 409);
        }
        let ok = d
            .apply(
                &op(json!({"method":"update","state":{"reported":{"a":1}},"version":-1})),
                1,
                &L,
            )
            .unwrap();
        assert_eq!(ok.version, 8);
        let api = d
            .apply_desired(&DesiredUpdate::Clear, Some(7), 1, &L)
            .unwrap_err();
        assert_eq!(api.code(), 409);
        assert_eq!(
            d.apply_desired(&DesiredUpdate::Clear, Some(9), 1, &L)
                .unwrap()
                .version,
            9
        );
    }

    #[test]
    fn clear_desired_and_delete_attributes() {
        let mut d = Document::default();
        d = d
            .apply_desired(
                &DesiredUpdate::from_value(&json!({"color":"green","mode":2}), &L).unwrap(),
                None,
                10,
                &L,
            )
            .unwrap();
        d = d
            .apply(
                &op(json!({"method":"update","state":{"reported":{"color":"red","mode":2,"t":3}}})),
                11,
                &L,
            )
            .unwrap();
        assert_eq!(
            d.delta(),
            json!({"color":"green"}).as_object().cloned().unwrap()
        );
        let c = d.control(12).unwrap();
        assert_eq!(c["method"], "control");
        assert_eq!(c["payload"]["state"]["desired"], json!({"color":"green"}));
        assert_eq!(
            c["payload"]["metadata"]["desired"]["color"]["timestamp"],
            10
        );
        assert_eq!(c["version"], d.version);
        assert_eq!(c["timestamp"], 12);

        let cleared = d
            .apply(
                &op(json!({"method":"update","state":{"desired":"null"},"version":d.version + 1})),
                13,
                &L,
            )
            .unwrap();
        assert!(cleared.desired.values.is_empty() && cleared.desired.times.is_empty());
        assert_eq!(cleared.control(14), None);

        let del = cleared
            .apply(
                &op(json!({"method":"delete","state":{"reported":{"t":"null"}}})),
                15,
                &L,
            )
            .unwrap();
        assert_eq!(
            del.to_json()["state"]["reported"],
            json!({"color":"red","mode":2})
        );
        assert!(del.to_json()["metadata"]["reported"].get("t").is_none());
        let all = del
            .apply(
                &op(json!({"method":"delete","state":{"reported":"null"}})),
                16,
                &L,
            )
            .unwrap();
        assert!(all.is_empty());
        assert_eq!(all.version, del.version + 1);
        let get = all.get_reply(None, 17);
        assert_eq!(get["payload"]["content"]["errorcode"], "407");
    }

    #[test]
    fn malformed_requests_get_their_codes() {
        let raw = |s: &[u8]| DeviceRequest::parse(s, &L).map_err(|(e, _)| e.code());
        assert_eq!(raw(b"{nope"), Err(400));
        assert_eq!(raw(b"[1]"), Err(400));
        assert_eq!(parse(json!({"state":{}})), Err(401));
        assert_eq!(parse(json!({"method":"update","version":1})), Err(402));
        assert_eq!(
            parse(json!({"method":"update","state":{"reported":{"a":1}},"version":"x"})),
            Err(403)
        );
        assert_eq!(
            parse(json!({"method":"update","state":{"reported":{"a":1}},"version":1.5})),
            Err(403)
        );
        assert_eq!(parse(json!({"method":"update","state":{}})), Err(404));
        assert_eq!(
            parse(json!({"method":"update","state":{"reported":{}}})),
            Err(405)
        );
        assert_eq!(parse(json!({"method":"patch"})), Err(406));
        assert_eq!(
            parse(json!({"method":"update","state":{"desired":{"a":1}}})),
            Err(400)
        );
        assert_eq!(
            parse(json!({"method":"delete","state":{"reported":{"a":1}}})),
            Err(400)
        );
        assert_eq!(parse(json!({"method":"delete","state":{}})), Err(404));
        let (e, token) =
            DeviceRequest::parse(br#"{"method":"x","clientToken":"t-1"}"#, &L).unwrap_err();
        assert_eq!((e.code(), token.as_deref()), (406, Some("t-1")));
    }

    #[test]
    fn limits_are_enforced() {
        // Depth: five levels pass, six do not.
        let five = json!({"a":{"b":{"c":{"d":{"e":1}}}}});
        assert_eq!(depth(&five), 5);
        assert!(parse(json!({"method":"update","state":{"reported":five}})).is_ok());
        let six = json!({"a":{"b":{"c":{"d":{"e":[1]}}}}});
        assert_eq!(
            parse(json!({"method":"update","state":{"reported":six}})),
            Err(400)
        );

        // 128 attributes pass, 129 do not, in one request or over several.
        let many = |n: usize, prefix: &str| -> Value {
            Value::Object((0..n).map(|i| (format!("{prefix}{i}"), json!(i))).collect())
        };
        assert!(parse(json!({"method":"update","state":{"reported":many(128, "a")}})).is_ok());
        assert_eq!(
            parse(json!({"method":"update","state":{"reported":many(129, "a")}})),
            Err(408)
        );
        let d = Document::default()
            .apply(
                &op(json!({"method":"update","state":{"reported":many(100, "a")}})),
                1,
                &L,
            )
            .unwrap();
        let e = d
            .apply(
                &op(json!({"method":"update","state":{"reported":many(29, "b")}})),
                2,
                &L,
            )
            .unwrap_err();
        assert_eq!(e.code(), 408);
        let e = Document::default()
            .apply_desired(
                &DesiredUpdate::Merge(many(129, "a").as_object().cloned().unwrap()),
                None,
                1,
                &L,
            )
            .unwrap_err();
        assert_eq!(e.code(), 408);

        // Size: a request or a document over 16 KB.
        let big = "x".repeat(16 * 1024);
        assert_eq!(
            parse(json!({"method":"update","state":{"reported":{"a":big}}})),
            Err(400)
        );
        let half = "x".repeat(9 * 1024);
        let d = Document::default()
            .apply(
                &op(json!({"method":"update","state":{"reported":{"a":half}}})),
                1,
                &L,
            )
            .unwrap();
        let e = d
            .apply(
                &op(json!({"method":"update","state":{"reported":{"b":half}}})),
                2,
                &L,
            )
            .unwrap_err();
        assert!(matches!(e, ShadowError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn replies_have_the_protocol_shapes() {
        let ok = reply_ok(3, Some("tok"), 99);
        assert_eq!(
            ok,
            json!({"method":"reply","payload":{"status":"success","version":3},"version":3,"timestamp":99,"clientToken":"tok"})
        );
        let err = reply_error(
            &ShadowError::VersionConflict { current: 4 },
            Some(4),
            None,
            99,
        );
        assert_eq!(err["payload"]["status"], "error");
        assert_eq!(err["payload"]["content"]["errorcode"], "409");
        assert!(err["payload"]["content"]["errormessage"].is_string());
        assert_eq!(
            (err["method"].as_str(), err["version"].as_u64()),
            (Some("reply"), Some(4))
        );
        let d = Document::default()
            .apply(
                &op(json!({"method":"update","state":{"reported":{"a":1}}})),
                5,
                &L,
            )
            .unwrap();
        let get = d.get_reply(Some("g"), 6);
        assert_eq!(get["payload"]["state"]["reported"], json!({"a":1}));
        assert_eq!(get["payload"]["state"]["desired"], json!({}));
        assert_eq!(get["payload"]["metadata"]["reported"]["a"]["timestamp"], 5);
        assert_eq!(
            (get["version"].as_u64(), get["timestamp"].as_u64()),
            (Some(1), Some(6))
        );
        assert_eq!(get["clientToken"], "g");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
            Just(Value::from("null")),
        ];
        leaf.prop_recursive(7, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-e]{1,2}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn request() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just("update"), Just("delete"), Just("get"), Just("other")],
            json_value(),
            json_value(),
            prop_oneof![Just(Value::Null), (-2i64..20).prop_map(Value::from), Just(Value::from("7"))],
        )
            .prop_map(|(m, r, d, v)| json!({"method": m, "state": {"reported": r, "desired": d}, "version": v}))
    }

    fn small() -> Limits {
        Limits {
            max_depth: 3,
            max_document_bytes: 400,
            max_properties: 4,
        }
    }

    proptest! {
        #[test]
        fn merging_never_panics_versions_grow_limits_hold(
            requests in prop::collection::vec(request(), 1..12),
            desired in prop::collection::vec((json_value(), prop::option::of(0u64..20)), 0..6),
            raw in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let limits = small();
            let _ = DeviceRequest::parse(&raw, &limits);
            let mut doc = Document::default();
            let mut now = 0;
            let mut desired = desired.into_iter();
            for r in requests {
                now += 1;
                if let Ok(req) = DeviceRequest::parse(r.to_string().as_bytes(), &limits)
                    && let Ok(next) = doc.apply(&req.op, now, &limits)
                {
                    if req.op != DeviceOp::Get {
                        prop_assert!(next.version > doc.version);
                    }
                    doc = next;
                }
                if let Some((d, v)) = desired.next()
                    && let Ok(u) = DesiredUpdate::from_value(&d, &limits)
                    && let Ok(next) = doc.apply_desired(&u, v, now, &limits)
                {
                    prop_assert!(next.version > doc.version);
                    doc = next;
                }
                prop_assert!(doc.reported.values.len() <= limits.max_properties);
                prop_assert!(doc.desired.values.len() <= limits.max_properties);
                prop_assert!(doc.to_json().to_string().len() <= limits.max_document_bytes);
                prop_assert!(depth(&Value::Object(doc.reported.values.clone())) <= limits.max_depth);
                prop_assert!(depth(&Value::Object(doc.desired.values.clone())) <= limits.max_depth);
                prop_assert_eq!(doc.reported.values.len(), doc.reported.times.len());
                prop_assert_eq!(&Document::from_json(&doc.to_json().to_string()).unwrap(), &doc);
                let _ = doc.get_reply(None, now);
                let _ = doc.control(now);
            }
        }
    }
}
