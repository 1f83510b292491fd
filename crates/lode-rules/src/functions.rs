//! The built-in functions. Each is one row of an internal table, so a new function is a new row.
//!
//! Names are matched without regard to ASCII case. Unknown names and wrong argument
//! counts are parse errors. Unless said otherwise a NULL (or missing) argument gives NULL,
//! and an argument of the wrong type gives NULL too: numbers accept numeric strings and
//! booleans (1/0), strings accept any non-NULL scalar in its JSON text form.
//!
//! **Message metadata**
//!
//! | function | arguments | result |
//! |---|---|---|
//! | `deviceName()` | – | the sending device's name |
//! | `productKey()` | – | its product key |
//! | `topic()` | – | the message topic |
//! | `topic(n)` | level number from 1 | that topic level (`/a1/dev/user/up`: `topic(1)` = `a1`); NULL if out of range |
//! | `messageId()` | – | the message id |
//! | `clientIp()` | – | the device's IP address; NULL when unknown |
//! | `qos()` | – | the MQTT QoS of the message (Lodestone extension) |
//! | `messageTime([format])` | optional format | when the platform received the message: epoch ms, or formatted in UTC (Lodestone extension) |
//! | `timestamp([format])` | optional format | now: epoch ms, or formatted at the platform's UTC offset ([`crate::Context::utc_offset_minutes`]) |
//! | `timestamp_utc([format])` | optional format | now: epoch ms, or formatted in UTC |
//! | `attribute(key)` | tag key | the device tag value from [`crate::Context::attribute`]; NULL when absent |
//! | `payload([encoding])` | `'utf-8'` (default), `'json'`, `'base64'`, `'hex'` | the payload: as text (base64 for a binary payload), as the parsed JSON value (NULL for binary), or encoded |
//! | `newuuid()` | – | a fresh UUID from [`crate::Context::uuid`] |
//!
//! **Strings**
//!
//! | function | arguments | result |
//! |---|---|---|
//! | `lower(s)`, `upper(s)` | text | case-converted text |
//! | `concat(s, …)` | one or more | the texts joined; NULL arguments are skipped (NULL only if all are) |
//! | `substring(s, start[, end])` | text, 0-based character positions | characters from `start` up to (not including) `end`; positions are clamped to the text, negative counts as 0 |
//! | `replace(s, from, to)` | text ×3 | every `from` replaced by `to`; an empty `from` changes nothing |
//! | `trim(s)`, `ltrim(s)`, `rtrim(s)` | text | whitespace removed from both ends, the start, the end |
//! | `length(s)`, `char_length(s)` | text | number of characters |
//! | `startswith(s, prefix)`, `endswith(s, suffix)` | text ×2 | boolean |
//!
//! **Mathematics** (results that are not finite are NULL)
//!
//! | function | arguments | result |
//! |---|---|---|
//! | `abs(n)` | number | absolute value (integer stays integer) |
//! | `ceil(n)`, `floor(n)` | number | integer above / below |
//! | `round(n[, digits])` | number, integer | rounded half away from zero to `digits` decimals (default 0) |
//! | `sqrt(n)`, `exp(n)` | number | square root, e to the power n |
//! | `sin`, `cos`, `tan`, `asin`, `acos`, `atan`, `sinh`, `cosh`, `tanh` | number (radians) | the trigonometric function |
//! | `power(n, m)` | number ×2 | n to the power m (integer when exact) |
//! | `log(n[, m])` | number ×2 | logarithm of n to base m, base 10 without m |
//! | `mod(n, m)` | number ×2 | remainder, as `%`; NULL when m is 0 |
//! | `rand()` | – | a number in [0, 1) from [`crate::Context::random`] |
//!
//! **Conversion and NULL handling**
//!
//! | function | arguments | result |
//! |---|---|---|
//! | `to_base64(x)`, `to_base64(*)` | text, or `*` for the raw payload | standard base64 with padding |
//! | `to_hex(x)`, `to_hex(*)` | text, or `*` for the raw payload | lowercase hex |
//! | `crypto(x, algorithm)` | text, `'MD5'`, `'SHA1'`, `'SHA-256'`, `'SHA-384'` or `'SHA-512'` | lowercase hex digest of the text's UTF-8 bytes; another algorithm is an error |
//! | `nvl(x, default)`, `nanvl(x, default)` | any ×2 | x, or default when x is NULL |
//! | `coalesce(x, …)` | any | the first argument that is not NULL |
//! | `CAST(x AS type)` (syntax) | `int`, `double`, `string`, `bool` | converted value; NULL when it does not convert (`int` truncates toward zero) |
//!
//! **Time formats** follow Java's `SimpleDateFormat`, as on the reference platform
//! (`timestamp('yyyy-MM-dd\'T\'HH:mm:ss\'Z\'')` gives `2018-11-28T10:56:38Z`):
//!
//! | letters | meaning | example |
//! |---|---|---|
//! | `yyyy`, `yy` | year; `yy` is its last two digits | `2026`, `26` |
//! | `M`, `MM`, `MMM`, `MMMM` | month: number, padded, short name, full name | `3`, `03`, `Mar`, `March` |
//! | `d`, `dd` | day of month | `7`, `07` |
//! | `D` | day of year | `66` |
//! | `H`, `HH` | hour 0–23 | `09` |
//! | `h`, `hh` | hour 1–12 | `9` |
//! | `m`, `mm`, `s`, `ss` | minute, second | `05` |
//! | `S`, `SSS` | millisecond | `042` |
//! | `a` | `AM` / `PM` | `PM` |
//! | `E`, `EEE`, `EEEE` | weekday: short, short, full | `Sat`, `Saturday` |
//! | `Z` | offset `+0800` | `+0000` |
//! | `X`, `XX`, `XXX` | ISO offset, `Z` for UTC | `+08`, `+0800`, `+08:00` |
//!
//! Text in single quotes is copied (`'T'`), `''` is one quote, any other non-letter is
//! copied as is. Other letters are an error, so a typo fails loudly instead of printing a
//! wrong date.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::Md5;
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::MAX_STRING_BYTES;
use crate::error::EvalError;
use crate::eval::{Env, Num, arith, to_num, to_text};
use crate::time;

/// A function body: evaluated arguments in, a value out.
pub(crate) type Call = fn(&[Value], &Env<'_>) -> Result<Value, EvalError>;

/// One built-in function.
pub(crate) struct FunctionDef {
    /// The name as documented; lookup ignores ASCII case.
    pub(crate) name: &'static str,
    pub(crate) min_args: usize,
    /// `usize::MAX` for any number.
    pub(crate) max_args: usize,
    pub(crate) call: Call,
    /// The body for `f(*)`, for functions that accept the raw payload.
    pub(crate) star: Option<fn(&Env<'_>) -> Value>,
}

impl std::fmt::Debug for FunctionDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}()", self.name)
    }
}

const fn def(name: &'static str, min_args: usize, max_args: usize, call: Call) -> FunctionDef {
    FunctionDef {
        name,
        min_args,
        max_args,
        call,
        star: None,
    }
}

const ANY: usize = usize::MAX;

/// Every built-in function.
pub(crate) static TABLE: &[FunctionDef] = &[
    // Message metadata.
    def("deviceName", 0, 0, |_, env| Ok(text(env.msg.device_name))),
    def("productKey", 0, 0, |_, env| Ok(text(env.msg.product_key))),
    def("topic", 0, 1, topic),
    def("messageId", 0, 0, |_, env| Ok(text(env.msg.message_id))),
    def("clientIp", 0, 0, |_, env| {
        Ok(env.msg.client_ip.map_or(Value::Null, text))
    }),
    def("qos", 0, 0, |_, env| Ok(Value::from(env.msg.qos))),
    def("messageTime", 0, 1, |args, env| {
        time_value("messageTime", env.msg.timestamp_ms, 0, args)
    }),
    def("timestamp", 0, 1, |args, env| {
        let offset = env.ctx.utc_offset_minutes();
        time_value("timestamp", env.ctx.now_ms(), offset, args)
    }),
    def("timestamp_utc", 0, 1, |args, env| {
        time_value("timestamp_utc", env.ctx.now_ms(), 0, args)
    }),
    def("attribute", 1, 1, |args, env| {
        Ok(str_arg(args, 0)
            .and_then(|key| env.ctx.attribute(&key))
            .unwrap_or(Value::Null))
    }),
    def("payload", 0, 1, payload),
    def("newuuid", 0, 0, |_, env| Ok(Value::String(env.ctx.uuid()))),
    // Strings.
    def("lower", 1, 1, |args, _| {
        str_fn("lower", args, |s| Some(s.to_lowercase()))
    }),
    def("upper", 1, 1, |args, _| {
        str_fn("upper", args, |s| Some(s.to_uppercase()))
    }),
    def("concat", 1, ANY, concat),
    def("substring", 2, 3, substring),
    def("replace", 3, 3, replace),
    def("trim", 1, 1, |args, _| {
        str_fn("trim", args, |s| Some(s.trim().to_owned()))
    }),
    def("ltrim", 1, 1, |args, _| {
        str_fn("ltrim", args, |s| Some(s.trim_start().to_owned()))
    }),
    def("rtrim", 1, 1, |args, _| {
        str_fn("rtrim", args, |s| Some(s.trim_end().to_owned()))
    }),
    def("length", 1, 1, length),
    def("char_length", 1, 1, length),
    def("startswith", 2, 2, |args, _| {
        Ok(two_str(args).map_or(Value::Null, |(s, p)| Value::Bool(s.starts_with(&p))))
    }),
    def("endswith", 2, 2, |args, _| {
        Ok(two_str(args).map_or(Value::Null, |(s, p)| Value::Bool(s.ends_with(&p))))
    }),
    // Mathematics.
    def("abs", 1, 1, |args, _| {
        Ok(match num_arg(args, 0) {
            Some(Num::Int(i)) => i
                .checked_abs()
                .map_or(Num::Float(Num::Int(i).as_f64().abs()), Num::Int)
                .into_value(),
            Some(Num::Float(f)) => Num::Float(f.abs()).into_value(),
            None => Value::Null,
        })
    }),
    def("ceil", 1, 1, |args, _| Ok(integral(args, f64::ceil))),
    def("floor", 1, 1, |args, _| Ok(integral(args, f64::floor))),
    def("round", 1, 2, round),
    def("sqrt", 1, 1, |args, _| Ok(float_fn(args, f64::sqrt))),
    def("exp", 1, 1, |args, _| Ok(float_fn(args, f64::exp))),
    def("sin", 1, 1, |args, _| Ok(float_fn(args, f64::sin))),
    def("cos", 1, 1, |args, _| Ok(float_fn(args, f64::cos))),
    def("tan", 1, 1, |args, _| Ok(float_fn(args, f64::tan))),
    def("asin", 1, 1, |args, _| Ok(float_fn(args, f64::asin))),
    def("acos", 1, 1, |args, _| Ok(float_fn(args, f64::acos))),
    def("atan", 1, 1, |args, _| Ok(float_fn(args, f64::atan))),
    def("sinh", 1, 1, |args, _| Ok(float_fn(args, f64::sinh))),
    def("cosh", 1, 1, |args, _| Ok(float_fn(args, f64::cosh))),
    def("tanh", 1, 1, |args, _| Ok(float_fn(args, f64::tanh))),
    def("power", 2, 2, power),
    def("log", 1, 2, log),
    def("mod", 2, 2, |args, _| {
        let (a, b) = (arg(args, 0), arg(args, 1));
        Ok(arith(crate::ast::ArithOp::Rem, a, b))
    }),
    def("rand", 0, 0, |_, env| {
        Ok(Num::Float(env.ctx.random()).into_value())
    }),
    // Conversion and NULL handling.
    FunctionDef {
        star: Some(|env| Value::String(STANDARD.encode(env.msg.payload))),
        ..def("to_base64", 1, 1, |args, _| {
            bytes_fn("to_base64", args, |b| STANDARD.encode(b))
        })
    },
    FunctionDef {
        star: Some(|env| Value::String(hex::encode(env.msg.payload))),
        ..def("to_hex", 1, 1, |args, _| {
            bytes_fn("to_hex", args, |b| hex::encode(b))
        })
    },
    def("crypto", 2, 2, crypto),
    def("nvl", 2, 2, |args, _| Ok(coalesce_values(args))),
    def("nanvl", 2, 2, |args, _| Ok(coalesce_values(args))),
    def("coalesce", 1, ANY, |args, _| Ok(coalesce_values(args))),
];

/// The names of every built-in function, as documented above.
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|f| f.name)
}

/// The function called `name`, ignoring ASCII case.
pub(crate) fn lookup(name: &str) -> Option<&'static FunctionDef> {
    TABLE.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}

fn text(s: &str) -> Value {
    Value::String(s.to_owned())
}

fn arg(args: &[Value], i: usize) -> &Value {
    args.get(i).unwrap_or(&Value::Null)
}

fn str_arg(args: &[Value], i: usize) -> Option<String> {
    to_text(arg(args, i))
}

fn num_arg(args: &[Value], i: usize) -> Option<Num> {
    to_num(arg(args, i))
}

fn two_str(args: &[Value]) -> Option<(String, String)> {
    Some((str_arg(args, 0)?, str_arg(args, 1)?))
}

/// Refuses a string result longer than [`MAX_STRING_BYTES`].
fn check_len(function: &'static str, len: usize) -> Result<(), EvalError> {
    if len > MAX_STRING_BYTES {
        return Err(EvalError::ValueTooLarge {
            function,
            len,
            limit: MAX_STRING_BYTES,
        });
    }
    Ok(())
}

fn str_fn(
    name: &'static str,
    args: &[Value],
    f: impl FnOnce(&str) -> Option<String>,
) -> Result<Value, EvalError> {
    match str_arg(args, 0).and_then(|s| f(&s)) {
        Some(out) => {
            check_len(name, out.len())?;
            Ok(Value::String(out))
        }
        None => Ok(Value::Null),
    }
}

fn bytes_fn(
    name: &'static str,
    args: &[Value],
    encode: fn(&[u8]) -> String,
) -> Result<Value, EvalError> {
    let Some(s) = str_arg(args, 0) else {
        return Ok(Value::Null);
    };
    // Both encodings at most double the input (hex exactly, base64 by 4/3).
    check_len(name, s.len().saturating_mul(2))?;
    Ok(Value::String(encode(s.as_bytes())))
}

fn time_value(
    name: &'static str,
    ms: i64,
    offset_minutes: i32,
    args: &[Value],
) -> Result<Value, EvalError> {
    match args.first() {
        None => Ok(Value::from(ms)),
        Some(Value::Null) => Ok(Value::Null),
        Some(format) => {
            let pattern = to_text(format).unwrap_or_default();
            let out = time::format(ms, offset_minutes, &pattern).map_err(|message| {
                EvalError::InvalidArgument {
                    function: name,
                    message,
                }
            })?;
            check_len(name, out.len())?;
            Ok(Value::String(out))
        }
    }
}

fn topic(args: &[Value], env: &Env<'_>) -> Result<Value, EvalError> {
    let topic = env.msg.topic;
    if args.is_empty() {
        return Ok(text(topic));
    }
    let Some(Num::Int(n)) = num_arg(args, 0) else {
        return Ok(Value::Null);
    };
    let levels = topic.strip_prefix('/').unwrap_or(topic);
    let level = usize::try_from(n)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|i| levels.split('/').nth(i));
    Ok(level.map_or(Value::Null, text))
}

fn payload(args: &[Value], env: &Env<'_>) -> Result<Value, EvalError> {
    let raw = env.msg.payload;
    let encoding = match args.first() {
        None => "utf-8".to_owned(),
        Some(v) => match to_text(v) {
            Some(e) => e.to_ascii_lowercase(),
            None => return Ok(Value::Null),
        },
    };
    Ok(match encoding.as_str() {
        "utf-8" | "utf8" => match env.msg.json {
            Some(_) => Value::String(String::from_utf8_lossy(raw).into_owned()),
            None => Value::String(STANDARD.encode(raw)),
        },
        "json" => env.msg.json.cloned().unwrap_or(Value::Null),
        "base64" => Value::String(STANDARD.encode(raw)),
        "hex" => Value::String(hex::encode(raw)),
        other => {
            return Err(EvalError::InvalidArgument {
                function: "payload",
                message: format!(
                    "unknown encoding '{other}' (use 'utf-8', 'json', 'base64' or 'hex')"
                ),
            });
        }
    })
}

fn concat(args: &[Value], _: &Env<'_>) -> Result<Value, EvalError> {
    let parts: Vec<String> = args.iter().filter_map(to_text).collect();
    if parts.is_empty() {
        return Ok(Value::Null);
    }
    check_len("concat", parts.iter().map(String::len).sum())?;
    Ok(Value::String(parts.concat()))
}

fn substring(args: &[Value], _: &Env<'_>) -> Result<Value, EvalError> {
    let Some(s) = str_arg(args, 0) else {
        return Ok(Value::Null);
    };
    let position = |i: usize| match num_arg(args, i) {
        Some(Num::Int(n)) => Some(usize::try_from(n.max(0)).unwrap_or(usize::MAX)),
        // Fractional positions are truncated, as the reference does.
        Some(Num::Float(f)) => Some(if f <= 0.0 { 0 } else { f as usize }),
        None => None,
    };
    let Some(start) = position(1) else {
        return Ok(Value::Null);
    };
    let end = if args.len() > 2 {
        match position(2) {
            Some(end) => end,
            None => return Ok(Value::Null),
        }
    } else {
        usize::MAX
    };
    let out: String = s
        .chars()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    Ok(Value::String(out))
}

fn replace(args: &[Value], _: &Env<'_>) -> Result<Value, EvalError> {
    let (Some(s), Some(from), Some(to)) = (str_arg(args, 0), str_arg(args, 1), str_arg(args, 2))
    else {
        return Ok(Value::Null);
    };
    if from.is_empty() {
        return Ok(Value::String(s));
    }
    let n_hits = s.matches(from.as_str()).count();
    let len = (s.len() - n_hits * from.len()).saturating_add(n_hits.saturating_mul(to.len()));
    check_len("replace", len)?;
    Ok(Value::String(s.replace(&from, &to)))
}

fn length(args: &[Value], _: &Env<'_>) -> Result<Value, EvalError> {
    Ok(str_arg(args, 0).map_or(Value::Null, |s| Value::from(s.chars().count())))
}

fn float_fn(args: &[Value], f: fn(f64) -> f64) -> Value {
    num_arg(args, 0).map_or(Value::Null, |n| Num::Float(f(n.as_f64())).into_value())
}

/// `ceil`/`floor`: integers stay; floats become integers when in range.
fn integral(args: &[Value], f: fn(f64) -> f64) -> Value {
    match num_arg(args, 0) {
        Some(Num::Int(i)) => Value::from(i),
        Some(Num::Float(x)) => float_to_int_or_float(f(x)),
        None => Value::Null,
    }
}

fn float_to_int_or_float(x: f64) -> Value {
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&x) {
        Value::from(x as i64)
    } else {
        Num::Float(x).into_value()
    }
}

fn round(args: &[Value], _: &Env<'_>) -> Result<Value, EvalError> {
    let Some(n) = num_arg(args, 0) else {
        return Ok(Value::Null);
    };
    let digits = match args.get(1) {
        None => 0,
        Some(d) => match to_num(d) {
            Some(Num::Int(d)) => d.clamp(-18, 18),
            _ => return Ok(Value::Null),
        },
    };
    Ok(match n {
        Num::Int(i) if digits >= 0 => Value::from(i),
        _ if digits == 0 => float_to_int_or_float(n.as_f64().round()),
        _ => {
            // `digits` is clamped to ±18, so the cast is exact.
            let scale = 10f64.powi(digits as i32);
            let rounded = (n.as_f64() * scale).round() / scale;
            if digits < 0 {
                float_to_int_or_float(rounded)
            } else {
                Num::Float(rounded).into_value()
            }
        }
    })
}

fn power(args: &[Value], _: &Env<'_>) -> Result<Value, EvalError> {
    let (Some(base), Some(exp)) = (num_arg(args, 0), num_arg(args, 1)) else {
        return Ok(Value::Null);
    };
    if let (Num::Int(b), Num::Int(e)) = (base, exp)
        && let Ok(e) = u32::try_from(e)
        && let Some(p) = b.checked_pow(e)
    {
        return Ok(Value::from(p));
    }
    Ok(Num::Float(base.as_f64().powf(exp.as_f64())).into_value())
}

fn log(args: &[Value], _: &Env<'_>) -> Result<Value, EvalError> {
    let Some(n) = num_arg(args, 0) else {
        return Ok(Value::Null);
    };
    let n = n.as_f64();
    let result = match args.get(1) {
        None => n.log10(),
        Some(base) => match to_num(base) {
            Some(base) => n.ln() / base.as_f64().ln(),
            None => return Ok(Value::Null),
        },
    };
    Ok(Num::Float(result).into_value())
}

fn crypto(args: &[Value], _: &Env<'_>) -> Result<Value, EvalError> {
    let (Some(s), Some(algorithm)) = (str_arg(args, 0), str_arg(args, 1)) else {
        return Ok(Value::Null);
    };
    let bytes = s.as_bytes();
    let digest = match algorithm.to_ascii_uppercase().as_str() {
        "MD5" => hex::encode(Md5::digest(bytes)),
        "SHA1" | "SHA-1" => hex::encode(Sha1::digest(bytes)),
        "SHA256" | "SHA-256" => hex::encode(Sha256::digest(bytes)),
        "SHA384" | "SHA-384" => hex::encode(Sha384::digest(bytes)),
        "SHA512" | "SHA-512" => hex::encode(Sha512::digest(bytes)),
        _ => {
            return Err(EvalError::InvalidArgument {
                function: "crypto",
                message: format!(
                    "unknown algorithm '{algorithm}' (use MD5, SHA1, SHA-256, SHA-384 or SHA-512)"
                ),
            });
        }
    };
    Ok(Value::String(digest))
}

fn coalesce_values(args: &[Value]) -> Value {
    args.iter()
        .find(|v| !v.is_null())
        .cloned()
        .unwrap_or(Value::Null)
}
