//! One compiled script in its own QuickJS runtime, and the calls into it under the limits.
//!
//! Everything here runs on one worker thread: QuickJS runtimes are `!Send`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::context::{EvalOptions, intrinsic};
use rquickjs::{Array, Context, Ctx, Function, Object, Runtime, Type, Value};

use crate::error::{ScriptError, stack_position};
use crate::script::{Call, Output, PROTOCOL_TO_RAW, RAW_TO_PROTOCOL, TRANSFORM_PAYLOAD};

/// File name the engine gives the script; stack frames name it, which locates errors.
const FILE_NAME: &str = "script.js";

/// Functions every script must define.
const REQUIRED: [&str; 2] = [RAW_TO_PROTOCOL, PROTOCOL_TO_RAW];

/// The language the scripts see: ECMAScript built-ins only, no I/O.
///
/// Left out: `Proxy`, `WeakRef`, `performance` and `DOMException`. `Promise` stays in:
/// without it QuickJS still compiles `async` functions and `import()`, and the objects they
/// leave behind trip an assertion (a process abort) when the runtime is freed.
type Intrinsics = (
    intrinsic::Date,
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
);

/// Elements converted between two looks at the clock while reading a returned array.
const DEADLINE_CHECK_EVERY: usize = 4096;

/// The limits every runtime runs under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) memory: usize,
    pub(crate) stack: usize,
    pub(crate) time: Duration,
}

/// The deadline of the call running on this thread, shared with every runtime's interrupt
/// handler.
#[derive(Debug, Clone, Default)]
pub(crate) struct Clock {
    deadline: Rc<Cell<Option<Instant>>>,
    interrupted: Rc<Cell<bool>>,
}

impl Clock {
    fn start(&self, limit: Duration) {
        self.interrupted.set(false);
        self.deadline.set(Instant::now().checked_add(limit));
    }

    /// True once the deadline has passed; remembers that the script was interrupted.
    fn expired(&self) -> bool {
        let expired = self
            .deadline
            .get()
            .is_some_and(|deadline| Instant::now() >= deadline);
        if expired {
            self.interrupted.set(true);
        }
        expired
    }

    /// Ends the call: a call that was interrupted is a timeout, whatever it returned.
    fn finish<T>(&self, result: Result<T, ScriptError>, limit: Duration) -> Result<T, ScriptError> {
        self.deadline.set(None);
        if self.interrupted.replace(false) {
            return Err(ScriptError::Timeout { limit });
        }
        result
    }
}

/// A compiled script: its own runtime (so its memory limit and its failures are its own) and
/// one context holding the script's globals.
pub(crate) struct Sandbox {
    context: Context,
}

impl Sandbox {
    /// Compiles `source` and runs its top level, then checks the required functions.
    pub(crate) fn compile(
        source: &str,
        limits: Limits,
        clock: &Clock,
    ) -> Result<Self, ScriptError> {
        let runtime = Runtime::new()
            .map_err(|err| ScriptError::Internal(format!("cannot create a runtime: {err}")))?;
        runtime.set_max_stack_size(limits.stack);
        let handler_clock = clock.clone();
        runtime.set_interrupt_handler(Some(Box::new(move || handler_clock.expired())));
        let context = Context::custom::<Intrinsics>(&runtime)
            .map_err(|err| ScriptError::Internal(format!("cannot create a context: {err}")))?;
        // The limit is set after the context exists: QuickJS has crashed when a context was
        // created under a tight limit.
        runtime.set_memory_limit(limits.memory);

        clock.start(limits.time);
        let result = context.with(|ctx| {
            let mut options = EvalOptions::default();
            options.global = true;
            options.strict = false;
            options.filename = Some(FILE_NAME.to_owned());
            ctx.eval_with_options::<Value, _>(source, options)
                .map_err(|err| classify(&ctx, err, limits))?;
            let globals = ctx.globals();
            for name in REQUIRED {
                function(&ctx, &globals, name, limits)?;
            }
            Ok(())
        });
        let sandbox = Self { context };
        let jobs = sandbox.run_jobs(clock, limits);
        clock.finish(result.and(jobs), limits.time)?;
        Ok(sandbox)
    }

    /// Runs one call under the time limit and converts its result.
    pub(crate) fn call(
        &self,
        call: &Call,
        limits: Limits,
        clock: &Clock,
    ) -> Result<Output, ScriptError> {
        clock.start(limits.time);
        let result = self.context.with(|ctx| {
            let globals = ctx.globals();
            let run = |err| classify(&ctx, err, limits);
            match call {
                Call::RawToProtocol { raw } => {
                    let f = function(&ctx, &globals, RAW_TO_PROTOCOL, limits)?;
                    let bytes = byte_array(&ctx, raw).map_err(run)?;
                    let value: Value = f.call((bytes,)).map_err(run)?;
                    json_object(&ctx, value, RAW_TO_PROTOCOL, limits).map(Output::Json)
                }
                Call::ProtocolToRaw { message } => {
                    let f = function(&ctx, &globals, PROTOCOL_TO_RAW, limits)?;
                    let json = ctx.json_parse(message.to_string()).map_err(run)?;
                    let value: Value = f.call((json,)).map_err(run)?;
                    bytes(value, clock, limits).map(Output::Raw)
                }
                Call::TransformPayload { topic, raw } => {
                    let f = function(&ctx, &globals, TRANSFORM_PAYLOAD, limits)?;
                    let bytes = byte_array(&ctx, raw).map_err(run)?;
                    let value: Value = f.call((topic.as_str(), bytes)).map_err(run)?;
                    json_object(&ctx, value, TRANSFORM_PAYLOAD, limits).map(Output::Json)
                }
            }
        });
        let jobs = self.run_jobs(clock, limits);
        clock.finish(jobs.and(result), limits.time)
    }

    /// Runs the promise jobs the script queued (`async` functions, `then` callbacks), within
    /// the deadline of the call that queued them.
    ///
    /// The call's result is already decided, and what a job throws is dropped, except running
    /// out of memory: the runtime is not to be trusted after that.
    fn run_jobs(&self, clock: &Clock, limits: Limits) -> Result<(), ScriptError> {
        let runtime = self.context.runtime();
        while runtime.is_job_pending() && !clock.expired() {
            if let Err(job) = runtime.execute_pending_job() {
                let err = job
                    .0
                    .with(|ctx| classify(&ctx, rquickjs::Error::Exception, limits));
                if let ScriptError::OutOfMemory { .. } = err {
                    return Err(err);
                }
            }
        }
        if clock.expired() {
            // The deadline came while promise jobs were still running (an interrupted job
            // leaves nothing queued): the call did not finish.
            return Err(ScriptError::Timeout { limit: limits.time });
        }
        Ok(())
    }

    /// Bytes the runtime has allocated.
    #[cfg(test)]
    pub(crate) fn memory_used(&self) -> i64 {
        self.context.runtime().memory_usage().malloc_size
    }
}

/// The global function `name`, or `MissingFunction`.
fn function<'js>(
    ctx: &Ctx<'js>,
    globals: &Object<'js>,
    name: &'static str,
    limits: Limits,
) -> Result<Function<'js>, ScriptError> {
    let value: Value = globals
        .get(name)
        .map_err(|err| classify(ctx, err, limits))?;
    value
        .into_function()
        .ok_or(ScriptError::MissingFunction(name))
}

/// The raw bytes as a JavaScript array of signed byte values (-128..=127), as the reference
/// platform passes a Java `byte[]`.
fn byte_array<'js>(ctx: &Ctx<'js>, raw: &[u8]) -> rquickjs::Result<Array<'js>> {
    let array = Array::new(ctx.clone())?;
    for (idx, byte) in raw.iter().enumerate() {
        array.set(idx, i32::from(i8::from_ne_bytes([*byte])))?;
    }
    Ok(array)
}

/// The returned value as JSON, through `JSON.stringify`; only a plain object is accepted.
fn json_object<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    function: &'static str,
    limits: Limits,
) -> Result<serde_json::Value, ScriptError> {
    const EXPECTED: &str = "a JSON object";
    let wrong = |found: String| ScriptError::WrongReturnType {
        function,
        expected: EXPECTED,
        found,
    };
    if value.type_of() != Type::Object && value.type_of() != Type::Exception {
        return Err(wrong(describe(&value).to_owned()));
    }
    let text = match ctx.json_stringify(value) {
        Ok(Some(text)) => text,
        Ok(None) => return Err(wrong("an object whose JSON is undefined".to_owned())),
        Err(err) => {
            return Err(match classify(ctx, err, limits) {
                ScriptError::Runtime { message, .. } => {
                    wrong(format!("an object JSON.stringify rejects ({message})"))
                }
                other => other,
            });
        }
    };
    let text = text.to_string().map_err(|err| classify(ctx, err, limits))?;
    match serde_json::from_str(&text) {
        Ok(json @ serde_json::Value::Object(_)) => Ok(json),
        Ok(_) => Err(wrong("an object whose toJSON returns no object".to_owned())),
        Err(err) => Err(ScriptError::Internal(format!(
            "JSON.stringify produced invalid JSON: {err}"
        ))),
    }
}

/// The returned value as bytes: an array (or `Uint8Array`, `Int8Array`,
/// `Uint8ClampedArray`) of integers from -128 to 255; negative values are two's complement.
fn bytes(value: Value<'_>, clock: &Clock, limits: Limits) -> Result<Vec<u8>, ScriptError> {
    const EXPECTED: &str = "an array of integers from -128 to 255";
    let wrong = |found: String| ScriptError::WrongReturnType {
        function: PROTOCOL_TO_RAW,
        expected: EXPECTED,
        found,
    };
    let is_bytes_view = value.as_object().is_some_and(|object| {
        object.is_typed_array::<u8>()
            || object.is_typed_array::<i8>()
            || object.is_typed_array::<rquickjs::U8Clamped>()
    });
    if !value.is_array() && !is_bytes_view {
        return Err(wrong(describe(&value).to_owned()));
    }
    let Some(object) = value.as_object() else {
        return Err(wrong(describe(&value).to_owned()));
    };
    let len: Value = object
        .get("length")
        .map_err(|err| wrong(format!("an array whose length cannot be read ({err})")))?;
    let len = len
        .as_number()
        .filter(|len| len.is_finite() && *len >= 0.0)
        .ok_or_else(|| wrong("an array without a valid length".to_owned()))?;
    // An array longer than u32::MAX cannot exist in JavaScript.
    let len = len as u32;
    let mut out = Vec::with_capacity(len.min(64 * 1024) as usize);
    for idx in 0..len {
        if (idx as usize) % DEADLINE_CHECK_EVERY == DEADLINE_CHECK_EVERY - 1 && clock.expired() {
            return Err(ScriptError::Timeout { limit: limits.time });
        }
        let element: Value = object.get(idx).map_err(|err| {
            wrong(format!(
                "an array whose element {idx} cannot be read ({err})"
            ))
        })?;
        let byte = element
            .as_number()
            .filter(|n| n.fract() == 0.0 && (-128.0..=255.0).contains(n))
            .ok_or_else(|| {
                wrong(format!(
                    "an array holding {} at index {idx}",
                    element_text(&element)
                ))
            })?;
        // In range by the filter: -128..=255 fits i16; the low byte is the two's complement.
        out.push((byte as i16).to_le_bytes()[0]);
    }
    Ok(out)
}

/// An element for an error message: numbers by value, everything else by type.
fn element_text(value: &Value<'_>) -> String {
    match value.as_number() {
        Some(n) => format!("{n}"),
        None => describe(value).to_owned(),
    }
}

/// The type of a value, with its article, for error messages.
fn describe(value: &Value<'_>) -> &'static str {
    match value.type_of() {
        Type::Uninitialized | Type::Undefined => "undefined",
        Type::Null => "null",
        Type::Bool => "a boolean",
        Type::Int | Type::Float => "a number",
        Type::String => "a string",
        Type::Symbol => "a symbol",
        Type::BigInt => "a bigint",
        Type::Array => "an array",
        Type::Function | Type::Constructor => "a function",
        Type::Promise => "a promise",
        Type::Object | Type::Exception | Type::Proxy | Type::Module | Type::Unknown => "an object",
    }
}

/// Turns an engine error into a [`ScriptError`], reading the pending exception.
fn classify(ctx: &Ctx<'_>, err: rquickjs::Error, limits: Limits) -> ScriptError {
    let out_of_memory = ScriptError::OutOfMemory {
        limit: limits.memory,
    };
    match err {
        rquickjs::Error::Exception => {}
        rquickjs::Error::Allocation => return out_of_memory,
        other => return ScriptError::Internal(other.to_string()),
    }
    let exception = ctx.catch();
    match exception.type_of() {
        // QuickJS throws null when it cannot even allocate the error object for an
        // out-of-memory condition.
        Type::Null | Type::Uninitialized => return out_of_memory,
        Type::String => {
            return ScriptError::Runtime {
                line: None,
                column: None,
                message: string_of(&exception).unwrap_or_else(|| "a string".to_owned()),
            };
        }
        Type::Exception => {}
        _ => {
            let message = ctx
                .json_stringify(exception.clone())
                .ok()
                .flatten()
                .and_then(|text| text.to_string().ok())
                .unwrap_or_else(|| describe(&exception).to_owned());
            return ScriptError::Runtime {
                line: None,
                column: None,
                message: format!("uncaught {message}"),
            };
        }
    }
    let Some(error) = exception.as_object() else {
        return ScriptError::Internal("exception is not an object".to_owned());
    };
    let field = |name: &str| {
        error
            .get::<_, Value>(name)
            .ok()
            .and_then(|value| string_of(&value))
    };
    let name = field("name").unwrap_or_else(|| "Error".to_owned());
    let message = field("message").unwrap_or_default();
    if name == "InternalError" && message == "out of memory" {
        return out_of_memory;
    }
    if name == "InternalError" && message == "interrupted" {
        return ScriptError::Timeout { limit: limits.time };
    }
    let stack = field("stack").unwrap_or_default();
    let (line, column) = stack_position(&stack, FILE_NAME)
        .map_or((None, None), |(line, column)| (Some(line), column));
    // The parser's own errors have a single frame naming the file but no function; a
    // `SyntaxError` thrown by `JSON.parse` or `eval` is the script's runtime error.
    let parse_error = stack
        .lines()
        .next()
        .is_some_and(|frame| frame.trim().starts_with(&format!("at {FILE_NAME}:")));
    if name == "SyntaxError" && parse_error {
        return ScriptError::Syntax {
            line,
            column,
            message,
        };
    }
    let message = if message.is_empty() {
        name
    } else {
        format!("{name}: {message}")
    };
    ScriptError::Runtime {
        line,
        column,
        message,
    }
}

fn string_of(value: &Value<'_>) -> Option<String> {
    value.as_string().and_then(|text| text.to_string().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        memory: 16 * 1024 * 1024,
        stack: 256 * 1024,
        time: Duration::from_millis(100),
    };

    fn script(body: &str) -> String {
        format!(
            "function rawDataToProtocol(bytes) {{\n{body}\n}}\nfunction protocolToRawData(json) {{ return []; }}\n"
        )
    }

    fn up() -> Call {
        Call::RawToProtocol { raw: vec![1, 2] }
    }

    /// Scripts that leave odd state behind: each is run, then its runtime is freed. QuickJS
    /// aborts the process when a freed runtime still holds objects, so surviving is the test.
    #[test]
    fn hostile_scripts_leave_a_runtime_that_frees_cleanly() {
        let clock = Clock::default();
        let cases = [
            "import('os'); return {};",
            "async function f() { await null; while (true) {} } f(); return {};",
            "async function f() { while (true) {} } f(); return {};",
            "function loop() { return Promise.resolve().then(loop); } loop(); return {};",
            "new Promise(function () {}); return {};",
            "function* g() { yield 1; yield 2; } var it = g(); it.next(); return {};",
            "Promise.resolve().then(function () { var a = []; while (true) a.push([a]); }); return {};",
            "var a = []; while (true) a.push(function () { return a; });",
            "eval('while (true) {}');",
            "return eval('({ ok: 1 }');",
            "var o = {}; o.self = o; o.f = function () { return o; }; return { ok: 1 };",
            "return { r: /(a+)+$/.test('a'.repeat(40) + 'b') };",
            "throw null;",
        ];
        for body in cases {
            let sandbox = Sandbox::compile(&script(body), LIMITS, &clock);
            let sandbox = match sandbox {
                Ok(sandbox) => sandbox,
                Err(err) => panic!("{body}: {err}"),
            };
            let started = Instant::now();
            let result = sandbox.call(&up(), LIMITS, &clock);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{body}: {result:?}"
            );
            drop(sandbox);
            // The clock is left clean for the next call.
            assert!(!clock.interrupted.get(), "{body}");
            assert!(clock.deadline.get().is_none(), "{body}");
        }
    }

    #[test]
    fn promise_jobs_run_within_the_call_and_do_not_pile_up() {
        let clock = Clock::default();
        let source = script(
            "Promise.resolve(bytes[0]).then(function (b) { last = b; });\n\
             return { last: typeof last === 'undefined' ? null : last };",
        );
        let sandbox = match Sandbox::compile(&source, LIMITS, &clock) {
            Ok(sandbox) => sandbox,
            Err(err) => panic!("{err}"),
        };
        let first = sandbox.call(&Call::RawToProtocol { raw: vec![5] }, LIMITS, &clock);
        assert_eq!(first, Ok(Output::Json(serde_json::json!({ "last": null }))));
        let second = sandbox.call(&Call::RawToProtocol { raw: vec![6] }, LIMITS, &clock);
        assert_eq!(second, Ok(Output::Json(serde_json::json!({ "last": 5 }))));
        let before = sandbox.memory_used();
        for _ in 0..2000 {
            assert!(sandbox.call(&up(), LIMITS, &clock).is_ok());
        }
        let after = sandbox.memory_used();
        assert!(
            after < before + 64 * 1024,
            "grew from {before} to {after} bytes"
        );
    }

    #[test]
    fn an_endless_promise_chain_is_stopped() {
        let clock = Clock::default();
        let source =
            script("function loop() { return Promise.resolve().then(loop); }\nloop();\nreturn {};");
        let sandbox = match Sandbox::compile(&source, LIMITS, &clock) {
            Ok(sandbox) => sandbox,
            Err(err) => panic!("{err}"),
        };
        let started = Instant::now();
        let result = sandbox.call(&up(), LIMITS, &clock);
        // Whether QuickJS keeps the chain queued until the deadline or drops it earlier
        // varies between runs; what must hold is that the call ends in bounded time, with
        // a timeout if the deadline interrupted it, and that the runtime stays usable.
        assert!(
            matches!(
                result,
                Ok(_) | Err(ScriptError::Timeout { .. } | ScriptError::OutOfMemory { .. })
            ),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(500));
        let again = sandbox.call(&up(), LIMITS, &clock);
        assert!(started.elapsed() < Duration::from_millis(1000), "{again:?}");
    }

    #[test]
    fn a_returned_array_is_read_within_the_deadline() {
        let clock = Clock::default();
        let limits = Limits {
            time: Duration::from_millis(1),
            ..LIMITS
        };
        let source = "function rawDataToProtocol(bytes) { return {}; }\n\
                      function protocolToRawData(json) { return new Uint8Array(json ? 256 : 4 * 1024 * 1024); }\n";
        let sandbox = match Sandbox::compile(source, LIMITS, &clock) {
            Ok(sandbox) => sandbox,
            Err(err) => panic!("{err}"),
        };
        let call = Call::ProtocolToRaw {
            message: serde_json::Value::Null,
        };
        assert_eq!(
            sandbox.call(&call, limits, &clock),
            Err(ScriptError::Timeout { limit: limits.time })
        );
        let small = Call::ProtocolToRaw {
            message: serde_json::json!({}),
        };
        assert_eq!(
            sandbox.call(&small, LIMITS, &clock),
            Ok(Output::Raw(vec![0; 256]))
        );
    }
}
