//! The rules-engine SQL: `SELECT <expressions> FROM '<topic filter>' WHERE <condition>`
//! over device messages, parsed once and evaluated per message.
//!
//! Pure: no I/O, no clock, no randomness of its own. The time, UUIDs, random numbers and
//! device tags come from a [`Context`] the caller provides, so evaluation is deterministic
//! in tests. Actions (where a row goes) are not part of this crate.
//!
//! ```
//! use lode_rules::{Context, Message, Outcome, Rule};
//!
//! struct Fixed;
//! impl Context for Fixed {
//!     fn now_ms(&self) -> i64 { 1_700_000_000_000 }
//!     fn uuid(&self) -> String { "00000000-0000-0000-0000-000000000000".into() }
//!     fn random(&self) -> f64 { 0.5 }
//! }
//!
//! let rule = Rule::parse(
//!     r#"SELECT temperature AS t, deviceName() AS dn FROM "/+/+/user/update" WHERE temperature > 30"#,
//! )?;
//! let json = serde_json::json!({"temperature": 35});
//! let payload = json.to_string();
//! let msg = Message {
//!     topic: "/a1b2/dev1/user/update",
//!     payload: payload.as_bytes(),
//!     json: Some(&json),
//!     product_key: "a1b2",
//!     device_name: "dev1",
//!     client_ip: None,
//!     message_id: "1",
//!     timestamp_ms: 1_700_000_000_000,
//!     qos: 0,
//! };
//! let Outcome::Row(row) = rule.evaluate(&msg, &Fixed)? else { panic!("not a row") };
//! assert_eq!(serde_json::Value::Object(row), serde_json::json!({"t": 35, "dn": "dev1"}));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The language
//!
//! - **FROM** takes one quoted topic filter (`"/a1xx/+/user/update"` or single quotes) with
//!   MQTT wildcards; a message on another topic gives [`Outcome::TopicMismatch`].
//!   [`Rule::source`] tells thing-model, status and lifecycle topics apart ([`Source`]).
//! - **Fields** are paths into the JSON payload: `temperature`, `items.Temp.value`,
//!   `a.b[0]`, `a['key with spaces']`. A path segment may be quoted with `"…"` or `` `…` ``
//!   (`"a"` is the field `a`, as on the reference platform), while `'…'` is always a string
//!   constant. Keywords (`SELECT`, `FROM`, `WHERE`, `AS`, `AND`, `OR`, `NOT`, `IN`, `LIKE`,
//!   `ESCAPE`, `IS`, `NULL`, `TRUE`, `FALSE`, `BETWEEN`, `CASE`, `WHEN`, `THEN`, `ELSE`,
//!   `END`, `CAST`) are case-insensitive and must be quoted to be used as names.
//! - **SELECT** lists expressions, each with an optional alias (`x AS name` or `x name`),
//!   and `*` for every top-level field of the payload. Output column names: the alias,
//!   else the last key of a bare field path (`items.Temp.value` → `value`), else the
//!   expression as written (`deviceName()`). Later columns overwrite earlier ones of the
//!   same name, so `SELECT *, 1 AS a` replaces the payload's `a`. With `*`, a payload that
//!   is not a JSON object appears as one column `payload`: the JSON value, or for a
//!   binary payload its base64 text.
//! - **Operators**, loosest first: `OR`; `AND`; `NOT`; `= != <> < <= > >=`, `IS [NOT] NULL`,
//!   `[NOT] IN (…)`, `[NOT] LIKE p [ESCAPE 'c']`, `[NOT] BETWEEN a AND b`; `+ -`; `* / %`;
//!   unary `-`. `CASE WHEN c THEN v … [ELSE e] END` and `CASE x WHEN v THEN r … END`.
//!   `LIKE` uses `%` (any run) and `_` (one character), with `\` as the default escape.
//! - **Functions**: see the [`functions`] module for the table (metadata, strings, maths,
//!   time, conversion).
//! - **Constants**: integers, decimals (`1.5`, `2e3`), `TRUE`, `FALSE`, `NULL` and strings in
//!   single quotes. In a string `''` or `\'` is a quote, `\\` a backslash, `\n`, `\t`, `\r`
//!   control characters; a backslash before anything else stays, so `LIKE '100\%'` works.
//! - Comments: `-- to the end of the line`. A trailing `;` is allowed.
//!
//! # NULL, missing fields and coercion
//!
//! - A missing field, like a binary payload's fields, is NULL.
//! - NULL in arithmetic, comparisons, `LIKE`, `IN` and most functions gives NULL.
//!   `AND` and `OR` are three-valued (`NULL AND FALSE` is false, `NULL OR TRUE` is true).
//!   `IS NULL` is always true or false. `x IN (…)` is NULL when nothing matched and the list
//!   held a NULL.
//! - A WHERE clause passes only when it is true; false and NULL both filter the message
//!   out, with a reason saying which and the values of the fields it read. A condition
//!   value counts as true or false when it is a boolean or a number (non-zero is true);
//!   anything else counts as NULL.
//! - Integers are 64-bit. An overflow makes the result a float; `/` of integers is an
//!   integer when exact and a float otherwise (`7 / 2` = `3.5`); division or remainder by
//!   zero is NULL, and so is any result that is not a finite number.
//! - A string that reads entirely as a number (surrounding spaces allowed) is a number in
//!   arithmetic and when compared with a number: `'10' > 9` is true, `'10' + 1` is 11. Two
//!   strings compare as text: `'10' > '9'` is false. Booleans count as 1 and 0 next to
//!   numbers, so `on = 1` holds for `"on": true`. Values that still do not compare (a
//!   number and `'abc'`, an object and a number) are unequal, and ordering them is NULL.
//! - Objects and arrays are equal when their JSON is equal; they have no order.
//!
//! # Limits
//!
//! A statement is at most [`MAX_SQL_LEN`] bytes, expressions nest at most [`MAX_DEPTH`]
//! levels, and string functions refuse to build values over [`MAX_STRING_BYTES`], so no
//! rule can exhaust the stack or memory. Parsing and evaluation never panic.

mod ast;
mod error;
mod eval;
pub mod functions;
mod lexer;
mod parser;
mod source;
mod time;

#[cfg(test)]
mod tests;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

pub use error::{EvalError, ParseError};
pub use source::Source;

use ast::{Condition, SelectItem};
use eval::{Env, eval, truth};

/// Longest statement accepted, in bytes.
pub const MAX_SQL_LEN: usize = 64 * 1024;
/// Deepest expression tree accepted.
pub const MAX_DEPTH: usize = 64;
/// Longest string a function may build, in bytes.
pub const MAX_STRING_BYTES: usize = 1024 * 1024;

/// A parsed rule statement, ready to evaluate against messages.
#[derive(Debug, Clone)]
pub struct Rule {
    items: Vec<SelectItem>,
    topic: String,
    condition: Option<Condition>,
    source: Source,
}

/// One message as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The topic it was published on.
    pub topic: &'a str,
    /// The payload bytes as published.
    pub payload: &'a [u8],
    /// The payload parsed as JSON; `None` for a binary payload.
    pub json: Option<&'a Value>,
    /// Product key of the sending device.
    pub product_key: &'a str,
    /// Name of the sending device.
    pub device_name: &'a str,
    /// The device's IP address, when known.
    pub client_ip: Option<&'a str>,
    /// The message id.
    pub message_id: &'a str,
    /// When the platform received it, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The MQTT QoS it was published with.
    pub qos: u8,
}

/// What the evaluation needs from outside: time, identifiers, randomness, device tags.
pub trait Context {
    /// The device tag `key` of the message's device, for `attribute(key)`.
    fn attribute(&self, key: &str) -> Option<Value> {
        let _ = key;
        None
    }
    /// The current time in milliseconds since the Unix epoch, for `timestamp()`.
    fn now_ms(&self) -> i64;
    /// A new UUID, for `newuuid()`.
    fn uuid(&self) -> String;
    /// A number in [0, 1), for `rand()`.
    fn random(&self) -> f64;
    /// The platform's offset from UTC in minutes (east positive), for `timestamp(format)`.
    fn utc_offset_minutes(&self) -> i32 {
        0
    }
}

/// The result of evaluating a rule against one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The WHERE clause held (or there was none): the selected columns.
    Row(Map<String, Value>),
    /// The WHERE clause was false or NULL.
    Filtered {
        /// Why, e.g. `WHERE was false: temperature > 30 with temperature = 21`.
        reason: String,
    },
    /// The message's topic does not match the rule's FROM filter.
    TopicMismatch,
}

impl Rule {
    /// Parses a statement. The error names the position and what was expected there.
    pub fn parse(sql: &str) -> Result<Rule, ParseError> {
        let statement = parser::parse(sql)?;
        let source = source::classify(&statement.topic);
        Ok(Rule {
            items: statement.items,
            topic: statement.topic,
            condition: statement.condition,
            source,
        })
    }

    /// The FROM topic filter.
    pub fn topic_filter(&self) -> &str {
        &self.topic
    }

    /// Whether the SELECT list contains `*`.
    pub fn select_all(&self) -> bool {
        self.items.iter().any(|i| matches!(i, SelectItem::All))
    }

    /// What kind of messages the FROM topic selects.
    pub fn source(&self) -> Source {
        self.source.clone()
    }

    /// Whether a message on `topic` is one this rule reads.
    pub fn matches_topic(&self, topic: &str) -> bool {
        lode_mqtt::topic::matches(&self.topic, topic)
    }

    /// Evaluates the rule against one message: the output row, or why there is none.
    ///
    /// This is also how a rule is tested against a sample message before it is enabled.
    pub fn evaluate(&self, msg: &Message<'_>, ctx: &dyn Context) -> Result<Outcome, EvalError> {
        if !self.matches_topic(msg.topic) {
            return Ok(Outcome::TopicMismatch);
        }
        let env = Env { msg, ctx };
        if let (Some(condition), Some(verdict)) = (&self.condition, self.rejects(&env)?) {
            return Ok(Outcome::Filtered {
                reason: explain(condition, msg, verdict),
            });
        }
        self.row(&env).map(Outcome::Row)
    }

    /// Like [`Rule::evaluate`] without the explanation: the row, or `None` when the topic
    /// does not match or the WHERE clause is not true. Cheaper for messages filtered out.
    pub fn select(
        &self,
        msg: &Message<'_>,
        ctx: &dyn Context,
    ) -> Result<Option<Map<String, Value>>, EvalError> {
        if !self.matches_topic(msg.topic) {
            return Ok(None);
        }
        let env = Env { msg, ctx };
        if self.rejects(&env)?.is_some() {
            return Ok(None);
        }
        self.row(&env).map(Some)
    }

    /// `None` when the WHERE clause holds (or there is none), else `"false"` or `"null"`.
    fn rejects(&self, env: &Env<'_>) -> Result<Option<&'static str>, EvalError> {
        let Some(condition) = &self.condition else {
            return Ok(None);
        };
        Ok(match truth(&eval(&condition.expr, env)?) {
            Some(true) => None,
            Some(false) => Some("false"),
            None => Some("null"),
        })
    }

    fn row(&self, env: &Env<'_>) -> Result<Map<String, Value>, EvalError> {
        let mut row = Map::new();
        for item in &self.items {
            match item {
                SelectItem::All => match env.msg.json {
                    Some(Value::Object(fields)) => {
                        row.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    Some(other) => {
                        row.insert("payload".to_owned(), other.clone());
                    }
                    None => {
                        let encoded = STANDARD.encode(env.msg.payload);
                        row.insert("payload".to_owned(), Value::String(encoded));
                    }
                },
                SelectItem::Expr { expr, name } => {
                    row.insert(name.clone(), eval(expr, env)?);
                }
            }
        }
        Ok(row)
    }
}

/// `WHERE was false: temperature > 30 with temperature = 21, humidity missing`.
fn explain(condition: &Condition, msg: &Message<'_>, verdict: &str) -> String {
    let mut reason = format!("WHERE was {verdict}: {}", condition.text);
    for (i, path) in condition.fields.iter().enumerate() {
        reason.push_str(if i == 0 { " with " } else { ", " });
        match msg.json.and_then(|root| path.lookup(root)) {
            Some(value) => {
                let mut shown = value.to_string();
                if shown.len() > 64 {
                    let mut cut = 61;
                    while !shown.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    shown.truncate(cut);
                    shown.push_str("...");
                }
                reason.push_str(&format!("{path} = {shown}"));
            }
            None => reason.push_str(&format!("{path} missing")),
        }
    }
    reason
}
