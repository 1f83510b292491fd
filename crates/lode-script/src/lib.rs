//! The sandbox for a product's data parsing script.
//!
//! Products whose devices send their own binary (or JSON) format carry a JavaScript script
//! that turns the device's bytes into Alink JSON and back, written as users of the reference
//! platform write it. [`ScriptEngine`] runs those scripts on a few dedicated threads in
//! embedded QuickJS, each script in its own runtime, with no I/O, a memory limit and a time
//! limit per call.
//!
//! # The script contract
//!
//! ```js
//! function rawDataToProtocol(bytes) { /* ... */ return { method: "thing.event.property.post", id: "1", params: {}, version: "1.0" }; }
//! function protocolToRawData(json)  { /* ... */ return [0x01, 0x00, 0x2a]; }
//! function transformPayload(topic, rawData) { /* optional */ return {}; }
//! ```
//!
//! - `rawDataToProtocol(bytes)` (required) gets the raw payload of `thing/model/up_raw` (or a
//!   device's raw reply to a downlink) as an `Array` of **signed** byte values, -128..=127, as
//!   the reference platform passes a Java `byte[]`. Both usual idioms work on it:
//!   `bytes[i] & 0xff` and `new Uint8Array(bytes)` give 0..=255. It returns a JSON object:
//!   the Alink message (`method`, `id`, `params`, `version`, …) or reply (`id`, `code`, `data`).
//! - `protocolToRawData(json)` (required) gets the Alink JSON object of a downlink (or of the
//!   reply to the device's uplink) and returns the bytes to send: an `Array` (or `Uint8Array`,
//!   `Int8Array`, `Uint8ClampedArray`) of integers from -128 to 255, negative values taken as
//!   two's complement (-1 is `0xff`). Anything else is [`ScriptError::WrongReturnType`].
//! - `transformPayload(topic, rawData)` (optional) gets a custom topic and its payload as
//!   signed bytes, and returns a JSON object.
//!
//! A returned object goes through `JSON.stringify`, so the output follows its rules exactly:
//! `NaN` and `Infinity` become `null`, `undefined` and functions are dropped from objects and
//! become `null` in arrays, a `Date` becomes its ISO string, `toJSON` is honoured. Whether the
//! result carries a `method` (code 6450 when a raw uplink's does not) is for the caller to
//! check.
//!
//! # The sandbox
//!
//! - Scripts are plain (sloppy-mode) global code of at most 48 KiB ([`MAX_SCRIPT_SIZE`]).
//!   They see the ECMAScript built-ins (`JSON`, `Math`, `Date`, `RegExp`, typed arrays,
//!   `DataView`, `Map`/`Set`, `Promise`, `eval`) and nothing else: no `std`/`os` modules, no
//!   `console`, no timers, no module loader (`import` fails). Promise jobs a call queues run
//!   before the call returns, within its time limit.
//! - Each compiled script has its own runtime with its own memory limit (16 MiB by default),
//!   so one script's memory can never starve another's. A call is interrupted when it runs
//!   past its wall-clock time limit (100 ms by default), and so is the top level of a script
//!   while it is compiled.
//! - After a timeout or an out-of-memory error the script's runtime is thrown away and the
//!   next call compiles it afresh; other scripts are not affected.
//! - QuickJS throws `null` when it cannot even allocate the error for an out-of-memory
//!   condition, so a script that itself throws `null` is reported as out of memory.
//! - Compiled scripts are cached per worker under the caller's script id (the ProductKey,
//!   say), checked against the source on every call, so a changed script replaces the old one
//!   at its next call. A script's global variables live as long as its cached runtime, and
//!   every worker has its own copy: scripts must not count on state kept between calls.
//!   Scripts that fail to compile are cached as failures and not recompiled per message.
//!
//! # Errors
//!
//! Every [`ScriptError`] carries the Alink code the device is answered with
//! ([`ScriptError::alink_code`]; the mapping is documented there) and, for syntax and runtime
//! errors, the line and column in the script. [`ScriptEngine::check`] checks a draft when it
//! is saved; [`ScriptEngine::run_draft`] runs one on a sample, for debugging.

mod engine;
mod error;
mod sandbox;
mod script;
mod worker;

#[cfg(test)]
mod tests;

pub use engine::{EngineConfig, MAX_SCRIPT_SIZE, ScriptEngine};
pub use error::{
    CODE_FUNCTION_MISSING, CODE_SCRIPT_FAILED, CODE_SCRIPT_UNUSABLE, CODE_SYSTEM,
    CODE_WRONG_RETURN_TYPE, ScriptError,
};
pub use script::{Call, Output, PROTOCOL_TO_RAW, RAW_TO_PROTOCOL, Script, TRANSFORM_PAYLOAD};
