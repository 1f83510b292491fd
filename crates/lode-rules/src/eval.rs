//! The evaluator: expressions over a message, with SQL-style NULL and coercion rules.
//!
//! Values are `serde_json::Value`s. The rules (documented for users in the crate docs):
//!
//! - A missing field is NULL. NULL in arithmetic, comparison, `LIKE` and most functions
//!   gives NULL; `AND`/`OR` use three-valued logic; `IS NULL` is never NULL.
//! - Numbers are `i64` while they fit and `f64` otherwise: an `i64` overflow turns the
//!   result into a float; a result that is not finite (or a division by zero) is NULL.
//! - A string that reads entirely as a number takes part in arithmetic, and is compared
//!   numerically with a number (`'10' > 9` is true); two strings compare as text
//!   (`'10' > '9'` is false). Booleans count as 1 and 0 next to numbers.
//! - Values that cannot be compared are unequal (`=` false, `!=` true) and unordered
//!   (`<` and friends give NULL).

use std::cmp::Ordering;

use serde_json::{Number, Value};

use crate::ast::{ArithOp, CastType, CmpOp, Expr};
use crate::error::EvalError;
use crate::{Context, Message};

/// What a function or an operator can see besides its arguments.
pub(crate) struct Env<'a> {
    pub(crate) msg: &'a Message<'a>,
    pub(crate) ctx: &'a dyn Context,
}

/// A number while computing: exact integers stay integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            // Precision loss above 2^53 is the documented float behaviour.
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// The JSON value; non-finite floats have no JSON form and become NULL.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Num::Int(i) => Value::from(i),
            Num::Float(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        }
    }
}

/// The number a value stands for, if any: numbers, numeric strings, booleans as 1/0.
pub(crate) fn to_num(value: &Value) -> Option<Num> {
    match value {
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Num::Int(i),
            None => Num::Float(n.as_f64()?),
        }),
        Value::String(s) => parse_num(s),
        Value::Bool(b) => Some(Num::Int(i64::from(*b))),
        _ => None,
    }
}

/// A string that reads entirely (spaces around allowed) as a finite number.
pub(crate) fn parse_num(s: &str) -> Option<Num> {
    let s = s.trim();
    if let Ok(i) = s.parse::<i64>() {
        return Some(Num::Int(i));
    }
    // Rust also reads "inf" and "NaN"; only digits, signs, dots and exponents count here.
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'))
    {
        return None;
    }
    s.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .map(Num::Float)
}

/// The text a value stands for: strings as they are, scalars printed, containers as
/// compact JSON; NULL has none.
pub(crate) fn to_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The truth of a value in a condition: booleans as they are, numbers true unless zero;
/// anything else (NULL, strings, containers) is unknown.
pub(crate) fn truth(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_f64().is_some_and(|f| f != 0.0)),
        _ => None,
    }
}

fn bool_or_null(b: Option<bool>) -> Value {
    b.map_or(Value::Null, Value::Bool)
}

pub(crate) fn eval(expr: &Expr, env: &Env<'_>) -> Result<Value, EvalError> {
    Ok(match expr {
        Expr::Lit(v) => v.clone(),
        Expr::Field(path) => env
            .msg
            .json
            .and_then(|root| path.lookup(root))
            .cloned()
            .unwrap_or(Value::Null),
        Expr::Neg(e) => match to_num(&eval(e, env)?) {
            Some(Num::Int(i)) => i
                .checked_neg()
                .map_or(Num::Float(-Num::Int(i).as_f64()), Num::Int)
                .into_value(),
            Some(Num::Float(f)) => Num::Float(-f).into_value(),
            None => Value::Null,
        },
        Expr::Not(e) => bool_or_null(truth(&eval(e, env)?).map(|b| !b)),
        Expr::Arith(op, a, b) => arith(*op, &eval(a, env)?, &eval(b, env)?),
        Expr::Cmp(op, a, b) => bool_or_null(compare_op(*op, &eval(a, env)?, &eval(b, env)?)),
        Expr::And(a, b) => {
            let left = truth(&eval(a, env)?);
            if left == Some(false) {
                return Ok(Value::Bool(false));
            }
            match (left, truth(&eval(b, env)?)) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            }
        }
        Expr::Or(a, b) => {
            let left = truth(&eval(a, env)?);
            if left == Some(true) {
                return Ok(Value::Bool(true));
            }
            match (left, truth(&eval(b, env)?)) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            }
        }
        Expr::IsNull { expr, negated } => Value::Bool(eval(expr, env)?.is_null() != *negated),
        Expr::In {
            expr,
            list,
            negated,
        } => {
            let value = eval(expr, env)?;
            let mut result = Some(false);
            for item in list {
                match equals(&value, &eval(item, env)?) {
                    Some(true) => {
                        result = Some(true);
                        break;
                    }
                    Some(false) => {}
                    None => result = None,
                }
            }
            bool_or_null(result.map(|b| b != *negated))
        }
        Expr::Like {
            expr,
            pattern,
            escape,
            negated,
        } => {
            let value = to_text(&eval(expr, env)?);
            let pattern = to_text(&eval(pattern, env)?);
            match (value, pattern) {
                (Some(v), Some(p)) => Value::Bool(like(&v, &p, *escape) != *negated),
                _ => Value::Null,
            }
        }
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => {
            let value = eval(expr, env)?;
            let above = compare_op(CmpOp::Ge, &value, &eval(low, env)?);
            let below = compare_op(CmpOp::Le, &value, &eval(high, env)?);
            let inside = match (above, below) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            bool_or_null(inside.map(|b| b != *negated))
        }
        Expr::Case {
            operand,
            whens,
            otherwise,
        } => {
            let operand = match operand {
                Some(e) => Some(eval(e, env)?),
                None => None,
            };
            for (when, then) in whens {
                let when = eval(when, env)?;
                let hit = match &operand {
                    Some(v) => equals(v, &when) == Some(true),
                    None => truth(&when) == Some(true),
                };
                if hit {
                    return eval(then, env);
                }
            }
            match otherwise {
                Some(e) => eval(e, env)?,
                None => Value::Null,
            }
        }
        Expr::Cast(e, ty) => cast(&eval(e, env)?, *ty),
        Expr::Call(def, args) => {
            let values = args
                .iter()
                .map(|a| eval(a, env))
                .collect::<Result<Vec<_>, _>>()?;
            (def.call)(&values, env)?
        }
        Expr::CallStar(def) => match def.star {
            Some(star) => star(env),
            None => Value::Null,
        },
    })
}

/// `+ - * / %` with the coercions and overflow rules of the module docs.
pub(crate) fn arith(op: ArithOp, a: &Value, b: &Value) -> Value {
    let (Some(x), Some(y)) = (to_num(a), to_num(b)) else {
        return Value::Null;
    };
    let result = match (x, y) {
        (Num::Int(x), Num::Int(y)) => int_arith(op, x, y),
        _ => float_arith(op, x.as_f64(), y.as_f64()),
    };
    result.map_or(Value::Null, Num::into_value)
}

fn int_arith(op: ArithOp, x: i64, y: i64) -> Option<Num> {
    let exact = match op {
        ArithOp::Add => x.checked_add(y),
        ArithOp::Sub => x.checked_sub(y),
        ArithOp::Mul => x.checked_mul(y),
        ArithOp::Div => {
            if y == 0 {
                return None;
            }
            // Exact quotients stay integers; others are floats (7 / 2 = 3.5).
            match (x.checked_rem(y), x.checked_div(y)) {
                (Some(0), Some(q)) => Some(q),
                _ => return float_arith(op, Num::Int(x).as_f64(), Num::Int(y).as_f64()),
            }
        }
        ArithOp::Rem => {
            if y == 0 {
                return None;
            }
            // Only i64::MIN % -1 overflows, and its remainder is 0.
            Some(x.checked_rem(y).unwrap_or(0))
        }
    };
    match exact {
        Some(i) => Some(Num::Int(i)),
        None => float_arith(op, Num::Int(x).as_f64(), Num::Int(y).as_f64()),
    }
}

fn float_arith(op: ArithOp, x: f64, y: f64) -> Option<Num> {
    let result = match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div | ArithOp::Rem if y == 0.0 => return None,
        ArithOp::Div => x / y,
        ArithOp::Rem => x % y,
    };
    result.is_finite().then_some(Num::Float(result))
}

/// The order of two non-NULL values, when they are comparable.
pub(crate) fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            (a == b).then_some(Ordering::Equal)
        }
        _ => match (to_num(a)?, to_num(b)?) {
            (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
            (x, y) => x.as_f64().partial_cmp(&y.as_f64()),
        },
    }
}

/// `a = b`: NULL when either is NULL; otherwise equal when they compare equal.
pub(crate) fn equals(a: &Value, b: &Value) -> Option<bool> {
    if a.is_null() || b.is_null() {
        return None;
    }
    Some(order(a, b) == Some(Ordering::Equal))
}

fn compare_op(op: CmpOp, a: &Value, b: &Value) -> Option<bool> {
    match op {
        CmpOp::Eq => equals(a, b),
        CmpOp::Ne => equals(a, b).map(|e| !e),
        _ => {
            let container = |v: &Value| matches!(v, Value::Array(_) | Value::Object(_));
            if a.is_null() || b.is_null() || container(a) || container(b) {
                return None;
            }
            let ordering = order(a, b)?;
            Some(match op {
                CmpOp::Lt => ordering.is_lt(),
                CmpOp::Le => ordering.is_le(),
                CmpOp::Gt => ordering.is_gt(),
                _ => ordering.is_ge(),
            })
        }
    }
}

/// `LIKE`: `%` matches any run of characters, `_` exactly one, `escape` makes the next
/// pattern character literal. Linear backtracking on the last `%`: O(len × pattern).
pub(crate) fn like(text: &str, pattern: &str, escape: char) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Any,
        One,
        Lit(char),
    }
    let mut parts = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        parts.push(match c {
            c if c == escape => P::Lit(chars.next().unwrap_or(escape)),
            '%' => P::Any,
            '_' => P::One,
            c => P::Lit(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0, 0);
    // Position after the last `%` seen, and the text position it was tried at.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match parts.get(p) {
            Some(P::Any) => {
                p += 1;
                resume = Some((p, t));
            }
            Some(P::One) => {
                p += 1;
                t += 1;
            }
            Some(P::Lit(c)) if text.get(t) == Some(c) => {
                p += 1;
                t += 1;
            }
            _ => match resume {
                Some((rp, rt)) => {
                    p = rp;
                    t = rt + 1;
                    resume = Some((rp, rt + 1));
                }
                None => return false,
            },
        }
    }
    parts
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|x| *x == P::Any))
}

/// `CAST(value AS ty)`; a value that does not convert gives NULL.
pub(crate) fn cast(value: &Value, ty: CastType) -> Value {
    match ty {
        CastType::Int => match value {
            Value::String(s) => match parse_num(s) {
                Some(n) => float_to_int(n),
                None => Value::Null,
            },
            other => to_num(other).map_or(Value::Null, float_to_int),
        },
        CastType::Double => {
            to_num(value).map_or(Value::Null, |n| Num::Float(n.as_f64()).into_value())
        }
        CastType::String => to_text(value).map_or(Value::Null, Value::String),
        CastType::Bool => match value {
            Value::Bool(b) => Value::Bool(*b),
            Value::Number(_) => bool_or_null(truth(value)),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => Value::Null,
            },
            _ => Value::Null,
        },
    }
}

/// An integer, truncating floats toward zero; out of `i64` range gives NULL.
fn float_to_int(n: Num) -> Value {
    match n {
        Num::Int(i) => Value::from(i),
        Num::Float(f) => {
            let t = f.trunc();
            // i64::MIN is -2^63 exactly; 2^63 itself is already out of range.
            if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&t) {
                Value::from(t as i64)
            } else {
                Value::Null
            }
        }
    }
}
