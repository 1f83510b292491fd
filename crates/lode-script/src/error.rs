//! Why a script call failed, where in the script, and the Alink code the device is answered with.

use std::time::Duration;

/// Alink code: the product has no usable script (empty or over the size limit).
pub const CODE_SCRIPT_UNUSABLE: u32 = 26001;
/// Alink code: the script failed: syntax error, exception, time limit or memory limit.
pub const CODE_SCRIPT_FAILED: u32 = 26002;
/// Alink code: a function the contract requires is not defined by the script.
pub const CODE_FUNCTION_MISSING: u32 = 26006;
/// Alink code: a function returned a value of the wrong type.
pub const CODE_WRONG_RETURN_TYPE: u32 = 26007;
/// Alink code: the platform itself failed ("system exception" in the protocol's code table).
pub const CODE_SYSTEM: u32 = 6760;

/// A data parsing script that could not be used, or a call of it that failed.
///
/// Every variant maps to the code the device is answered with ([`ScriptError::alink_code`]);
/// [`ScriptError::line`] and [`ScriptError::column`] locate syntax and runtime errors in the
/// source (1-based) when the engine reported a position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// The source is empty or only white space.
    #[error("script is empty")]
    Empty,
    /// The source is longer than the configured maximum.
    #[error("script is {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// Length of the source in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The source does not parse.
    #[error("syntax error{}: {message}", position(*line, *column))]
    Syntax {
        /// Line of the error, 1-based.
        line: Option<u32>,
        /// Column of the error, 1-based.
        column: Option<u32>,
        /// The parser's message.
        message: String,
    },
    /// A function of the contract is not defined (as a function) by the script.
    #[error("script does not define function {0}")]
    MissingFunction(&'static str),
    /// The script threw an exception.
    #[error("script error{}: {message}", position(*line, *column))]
    Runtime {
        /// Line in the script where the exception was thrown, 1-based.
        line: Option<u32>,
        /// Column in the script where the exception was thrown, 1-based.
        column: Option<u32>,
        /// `Name: message` of the thrown error, or the thrown value as a string.
        message: String,
    },
    /// The call ran past its time limit and was interrupted.
    #[error("script ran longer than {} ms", limit.as_millis())]
    Timeout {
        /// The time limit per call.
        limit: Duration,
    },
    /// The script needed more memory than its runtime may use.
    #[error("script ran out of memory (limit {limit} bytes)")]
    OutOfMemory {
        /// The memory limit of the runtime.
        limit: usize,
    },
    /// A function returned a value of a type the contract does not allow.
    #[error("{function} returned {found}, expected {expected}")]
    WrongReturnType {
        /// The function that returned it.
        function: &'static str,
        /// What the contract asks for.
        expected: &'static str,
        /// What came back.
        found: String,
    },
    /// The engine could not run the call (shut down, a worker lost, a runtime not created).
    #[error("script engine failure: {0}")]
    Internal(String),
}

impl ScriptError {
    /// The Alink code a device is answered with when its message failed in the script.
    ///
    /// The protocol reference confirms only that 26001, 26002 and 26006 belong to the data
    /// parsing family; the meaning given to each number here, and 26007, are this platform's
    /// choice:
    ///
    /// | error | code |
    /// |---|---|
    /// | `Empty`, `TooLarge` | 26001 (no usable script) |
    /// | `Syntax`, `Runtime`, `Timeout`, `OutOfMemory` | 26002 (script failed) |
    /// | `MissingFunction` | 26006 |
    /// | `WrongReturnType` | 26007 |
    /// | `Internal` | 6760 (system exception: not the script's fault) |
    pub fn alink_code(&self) -> u32 {
        match self {
            Self::Empty | Self::TooLarge { .. } => CODE_SCRIPT_UNUSABLE,
            Self::Syntax { .. }
            | Self::Runtime { .. }
            | Self::Timeout { .. }
            | Self::OutOfMemory { .. } => CODE_SCRIPT_FAILED,
            Self::MissingFunction(_) => CODE_FUNCTION_MISSING,
            Self::WrongReturnType { .. } => CODE_WRONG_RETURN_TYPE,
            Self::Internal(_) => CODE_SYSTEM,
        }
    }

    /// Line of a syntax or runtime error in the script, 1-based, when known.
    pub fn line(&self) -> Option<u32> {
        match self {
            Self::Syntax { line, .. } | Self::Runtime { line, .. } => *line,
            _ => None,
        }
    }

    /// Column of a syntax or runtime error in the script, 1-based, when known.
    pub fn column(&self) -> Option<u32> {
        match self {
            Self::Syntax { column, .. } | Self::Runtime { column, .. } => *column,
            _ => None,
        }
    }
}

fn position(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

/// The first `file:line:column` of `file_name` in a QuickJS stack trace.
///
/// Frames look like `    at name (script.js:3:11)` or, for syntax errors, `    at script.js:3:13`;
/// frames of native functions (`at repeat (native)`) are skipped.
pub(crate) fn stack_position(stack: &str, file_name: &str) -> Option<(u32, Option<u32>)> {
    let marker = format!("{file_name}:");
    stack.lines().find_map(|frame| {
        let start = frame.find(&marker)? + marker.len();
        let rest = frame[start..].trim_end_matches(')');
        let mut parts = rest.split(':');
        let line = parts.next()?.parse().ok()?;
        let column = parts.next().and_then(|c| c.parse().ok());
        Some((line, column))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_position_reads_the_first_script_frame() {
        let stack =
            "    at repeat (native)\n    at f (script.js:1:26)\n    at <eval> (script.js:2:1)\n";
        assert_eq!(stack_position(stack, "script.js"), Some((1, Some(26))));
        assert_eq!(
            stack_position("    at script.js:3:13\n", "script.js"),
            Some((3, Some(13)))
        );
        assert_eq!(
            stack_position("    at g (script.js:7)\n", "script.js"),
            Some((7, None))
        );
        assert_eq!(stack_position("    at f (native)\n", "script.js"), None);
        assert_eq!(stack_position("", "script.js"), None);
        assert_eq!(
            stack_position("    at f (script.js:x:1)\n", "script.js"),
            None
        );
    }

    #[test]
    fn codes_follow_the_documented_mapping() {
        let syntax = ScriptError::Syntax {
            line: Some(3),
            column: Some(13),
            message: "unexpected token".into(),
        };
        assert_eq!(syntax.alink_code(), 26002);
        assert_eq!(syntax.line(), Some(3));
        assert_eq!(syntax.column(), Some(13));
        assert_eq!(
            syntax.to_string(),
            "syntax error at line 3, column 13: unexpected token"
        );
        assert_eq!(ScriptError::Empty.alink_code(), 26001);
        assert_eq!(
            ScriptError::TooLarge { size: 2, max: 1 }.alink_code(),
            26001
        );
        assert_eq!(
            ScriptError::MissingFunction("rawDataToProtocol").alink_code(),
            26006
        );
        let wrong = ScriptError::WrongReturnType {
            function: "protocolToRawData",
            expected: "an array of byte values",
            found: "a string".into(),
        };
        assert_eq!(wrong.alink_code(), 26007);
        assert_eq!(
            wrong.to_string(),
            "protocolToRawData returned a string, expected an array of byte values"
        );
        assert_eq!(
            ScriptError::Timeout {
                limit: Duration::from_millis(100)
            }
            .alink_code(),
            26002
        );
        assert_eq!(ScriptError::OutOfMemory { limit: 1 }.alink_code(), 26002);
        assert_eq!(ScriptError::Internal("gone".into()).alink_code(), 6760);
        assert_eq!(ScriptError::Internal("gone".into()).line(), None);
        let runtime = ScriptError::Runtime {
            line: Some(2),
            column: None,
            message: "Error: bad".into(),
        };
        assert_eq!(runtime.to_string(), "script error at line 2: Error: bad");
        assert_eq!(runtime.line(), Some(2));
    }
}
