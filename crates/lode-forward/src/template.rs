//! `${…}` templates in topics, payloads, headers and bodies.
//!
//! `${name}` is the row's column `name` (a path `a.b` reads into objects), or else a
//! message property: `productKey`, `deviceName`, `topic`, `messageId`, `timestamp`,
//! `ruleId`. Strings are inserted as they are, other values as JSON, and a missing
//! value as nothing.

use serde_json::{Map, Value};

/// Message properties a template may name besides the row's columns.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta<'a> {
    pub(crate) product_key: &'a str,
    pub(crate) device_name: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) message_id: &'a str,
    pub(crate) timestamp_ms: i64,
    pub(crate) rule_id: &'a str,
}

/// Checks that every `${` is closed.
pub(crate) fn check(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed ${{ in template {template:?}"));
        };
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Renders `template` against a row and the message properties.
pub(crate) fn render(template: &str, row: &Map<String, Value>, meta: &Meta<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        push_value(&mut out, lookup(&after[..end], row, meta));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The value a template stands for: the typed value when the template is exactly one
/// `${name}`, else the rendered text.
pub(crate) fn value(template: &str, row: &Map<String, Value>, meta: &Meta<'_>) -> Value {
    let sole = template
        .strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .filter(|name| !name.contains(['$', '{', '}']));
    match sole {
        Some(name) => lookup(name, row, meta).unwrap_or(Value::Null),
        None => Value::String(render(template, row, meta)),
    }
}

fn lookup(name: &str, row: &Map<String, Value>, meta: &Meta<'_>) -> Option<Value> {
    let name = name.trim();
    if let Some(v) = row.get(name) {
        return Some(v.clone());
    }
    let mut parts = name.split('.');
    if let Some(first) = parts.next()
        && let Some(mut v) = row.get(first)
        && name.contains('.')
    {
        for part in parts {
            v = v.get(part)?;
        }
        return Some(v.clone());
    }
    let s = match name {
        "productKey" => meta.product_key,
        "deviceName" => meta.device_name,
        "topic" => meta.topic,
        "messageId" => meta.message_id,
        "ruleId" => meta.rule_id,
        "timestamp" => return Some(Value::from(meta.timestamp_ms)),
        _ => return None,
    };
    Some(Value::String(s.to_owned()))
}

fn push_value(out: &mut String, v: Option<Value>) {
    match v {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push_str(&s),
        Some(other) => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta() -> Meta<'static> {
        Meta {
            product_key: "pk",
            device_name: "dn",
            topic: "/pk/dn/user/up",
            message_id: "m1",
            timestamp_ms: 1_700_000_000_000,
            rule_id: "r1",
        }
    }

    #[test]
    fn renders_columns_paths_and_properties() {
        let row = json!({"t": 35, "name": "x", "o": {"a": [1, 2]}, "n": null});
        let row = row.as_object().expect("object");
        assert_eq!(
            render("/${productKey}/${deviceName}/alert/${name}", row, &meta()),
            "/pk/dn/alert/x"
        );
        assert_eq!(
            render(
                "{\"temp\":${t},\"o\":${o.a},\"n\":\"${n}${missing}\"}",
                row,
                &meta()
            ),
            "{\"temp\":35,\"o\":[1,2],\"n\":\"\"}"
        );
        assert_eq!(
            render("${messageId} ${timestamp} ${ruleId} ${topic}", row, &meta()),
            "m1 1700000000000 r1 /pk/dn/user/up"
        );
        assert_eq!(render("no ${ end", row, &meta()), "no ${ end");
    }

    #[test]
    fn a_sole_placeholder_keeps_its_type() {
        let row = json!({"t": 35, "o": {"a": 1}});
        let row = row.as_object().expect("object");
        assert_eq!(value("${t}", row, &meta()), json!(35));
        assert_eq!(value("${o}", row, &meta()), json!({"a": 1}));
        assert_eq!(value("${missing}", row, &meta()), Value::Null);
        assert_eq!(value("t=${t}", row, &meta()), json!("t=35"));
        assert_eq!(value("${deviceName}", row, &meta()), json!("dn"));
    }

    #[test]
    fn a_column_shadows_a_property() {
        let row = json!({"deviceName": "fromRow"});
        let row = row.as_object().expect("object");
        assert_eq!(render("${deviceName}", row, &meta()), "fromRow");
    }

    #[test]
    fn check_finds_unclosed_placeholders() {
        assert!(check("/a/${b}/c").is_ok());
        assert!(check("plain").is_ok());
        assert!(check("/a/${b").is_err());
        assert!(check("${a}${").is_err());
    }
}
