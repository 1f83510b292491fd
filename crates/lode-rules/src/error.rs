//! Errors of parsing a rule and of evaluating it against a message.

use thiserror::Error;

/// A statement that is not valid rule SQL: where, and what the parser wanted there.
///
/// `offset` is a byte offset into the statement; `line` and `column` count from 1, the
/// column in characters.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("line {line}, column {column}: expected {expected}, found {found}")]
pub struct ParseError {
    /// Byte offset of the offending token in the statement.
    pub offset: usize,
    /// Line of the offending token, from 1.
    pub line: u32,
    /// Column of the offending token in characters, from 1.
    pub column: u32,
    /// What would have been valid at this position, e.g. ``"`FROM`"``.
    pub expected: String,
    /// What is there instead, e.g. ``"`WHERE`"`` or `"end of input"`.
    pub found: String,
}

impl ParseError {
    /// An error at byte `offset` of `sql`; line and column are computed from the text.
    pub(crate) fn at(
        sql: &str,
        offset: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        let offset = offset.min(sql.len());
        let before = sql.get(..offset).unwrap_or(sql);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        Self {
            offset,
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// A failure while evaluating a rule. Type mismatches are not errors (they give NULL);
/// these are the cases where the rule cannot produce a meaningful row at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A function would have built a string longer than [`crate::MAX_STRING_BYTES`].
    #[error("{function}() would build a value of {len} bytes, over the limit of {limit}")]
    ValueTooLarge {
        /// The function that refused.
        function: &'static str,
        /// Size the result would have had.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// An argument that selects behaviour (a time format, an encoding, an algorithm) is invalid.
    #[error("{function}(): {message}")]
    InvalidArgument {
        /// The function that refused.
        function: &'static str,
        /// What is wrong with the argument.
        message: String,
    },
}
