//! The parsed form of a rule: select items, the topic filter, the condition.

use std::fmt;

use serde_json::Value;

use crate::functions::FunctionDef;

/// An expression of the SELECT list or the WHERE clause.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Lit(Value),
    Field(Path),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    In {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: char,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast(Box<Expr>, CastType),
    Call(&'static FunctionDef, Vec<Expr>),
    /// `f(*)`: a function applied to the raw payload.
    CallStar(&'static FunctionDef),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Target of `CAST(x AS type)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastType {
    Int,
    Double,
    String,
    Bool,
}

/// A path into the payload: `items.Temp.value`, `a.b[0]`, `a['x-y']`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    pub(crate) segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

impl Path {
    /// The value at this path in `root`, or `None` when any step is missing.
    pub(crate) fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.segments
            .iter()
            .try_fold(root, |value, segment| match (segment, value) {
                (Segment::Key(key), Value::Object(map)) => map.get(key),
                (Segment::Index(i), Value::Array(items)) => items.get(*i),
                _ => None,
            })
    }

    /// The output column name of a bare path: its last key, if it ends with one.
    pub(crate) fn column_name(&self) -> Option<&str> {
        match self.segments.last() {
            Some(Segment::Key(key)) => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    let plain = key.chars().next().is_some_and(|c| !c.is_ascii_digit())
                        && key
                            .chars()
                            .all(|c| c == '_' || c == '$' || c.is_alphanumeric());
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if plain {
                        f.write_str(key)?;
                    } else {
                        write!(f, "`{}`", key.replace('`', "``"))?;
                    }
                }
                Segment::Index(idx) => write!(f, "[{idx}]")?,
            }
        }
        Ok(())
    }
}

/// One entry of the SELECT list.
#[derive(Debug, Clone)]
pub(crate) enum SelectItem {
    /// `*`: every field of the payload.
    All,
    /// An expression and its output column name.
    Expr { expr: Expr, name: String },
}

/// The WHERE clause with what is needed to explain a false result.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) expr: Expr,
    /// The clause as written.
    pub(crate) text: String,
    /// Payload fields the clause reads, in order of first use, without duplicates.
    pub(crate) fields: Vec<Path>,
}

impl Expr {
    /// Adds every payload path this expression reads to `out`, first use first.
    pub(crate) fn collect_fields(&self, out: &mut Vec<Path>) {
        let mut add = |e: &Expr| e.collect_fields(out);
        match self {
            Expr::Field(path) => {
                if !out.contains(path) {
                    out.push(path.clone());
                }
            }
            Expr::Lit(_) | Expr::CallStar(_) => {}
            Expr::Neg(e) | Expr::Not(e) | Expr::Cast(e, _) | Expr::IsNull { expr: e, .. } => {
                add(e);
            }
            Expr::Arith(_, a, b) | Expr::Cmp(_, a, b) | Expr::And(a, b) | Expr::Or(a, b) => {
                add(a);
                add(b);
            }
            Expr::In { expr, list, .. } => {
                add(expr);
                list.iter().for_each(add);
            }
            Expr::Like { expr, pattern, .. } => {
                add(expr);
                add(pattern);
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                add(expr);
                add(low);
                add(high);
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(e) = operand {
                    add(e);
                }
                for (when, then) in whens {
                    add(when);
                    add(then);
                }
                if let Some(e) = otherwise {
                    add(e);
                }
            }
            Expr::Call(_, args) => args.iter().for_each(add),
        }
    }
}
