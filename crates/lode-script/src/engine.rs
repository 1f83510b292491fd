//! [`ScriptEngine`]: the async handle to the pool of script worker threads.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::error::ScriptError;
use crate::sandbox::Limits;
use crate::script::{Call, Output, PROTOCOL_TO_RAW, Script};
use crate::worker::{self, Job, Task};

/// Maximum size of a script in bytes, the reference platform's limit (48 KB).
pub const MAX_SCRIPT_SIZE: usize = 48 * 1024;

/// Stack the worker thread has beyond what scripts may use, for the engine's own frames.
const THREAD_STACK_MARGIN: usize = 2 * 1024 * 1024;

/// Limits and sizes of a [`ScriptEngine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Worker threads, each running its own QuickJS runtimes (at least 1).
    pub workers: usize,
    /// Memory one script's runtime may allocate, in bytes. Keep it generous: QuickJS has
    /// crashed in its out-of-memory paths under very small limits.
    pub memory_limit: usize,
    /// Wall-clock time one call (or the top level of a script being compiled) may run.
    pub time_limit: Duration,
    /// Largest accepted script source, in bytes.
    pub max_script_size: usize,
    /// Stack a script may use, in bytes (deep recursion throws a `RangeError`).
    pub max_stack_size: usize,
    /// Compiled scripts each worker keeps; the least recently used is dropped first.
    pub cache_capacity: usize,
    /// Jobs waiting for a worker; callers wait for room when it is full.
    pub queue_capacity: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            memory_limit: 16 * 1024 * 1024,
            time_limit: Duration::from_millis(100),
            max_script_size: MAX_SCRIPT_SIZE,
            max_stack_size: 256 * 1024,
            cache_capacity: 128,
            queue_capacity: 1024,
        }
    }
}

/// Runs data parsing scripts on a pool of dedicated threads.
///
/// Cheap to clone; all clones share the pool. The threads end once every clone is dropped
/// and the jobs already queued are done.
#[derive(Debug, Clone)]
pub struct ScriptEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: mpsc::Sender<Job>,
    config: EngineConfig,
}

impl ScriptEngine {
    /// Starts the worker threads.
    ///
    /// Fails only when the operating system refuses a thread.
    pub fn new(config: EngineConfig) -> Result<Self, ScriptError> {
        let (jobs, queue) = mpsc::channel(config.queue_capacity.max(1));
        let queue: worker::Queue = Arc::new(Mutex::new(queue));
        let limits = Limits {
            memory: config.memory_limit,
            stack: config.max_stack_size,
            time: config.time_limit,
        };
        for idx in 0..config.workers.max(1) {
            let queue = Arc::clone(&queue);
            let cache_capacity = config.cache_capacity;
            thread::Builder::new()
                .name(format!("lode-script-{idx}"))
                .stack_size(config.max_stack_size.saturating_add(THREAD_STACK_MARGIN))
                .spawn(move || worker::run(&queue, limits, cache_capacity))
                .map_err(|err| {
                    ScriptError::Internal(format!("cannot start a script worker: {err}"))
                })?;
        }
        Ok(Self {
            inner: Arc::new(Inner { jobs, config }),
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Checks what can be checked without running the script: not empty, not too large.
    pub fn check_size(&self, source: &str) -> Result<(), ScriptError> {
        if source.trim().is_empty() {
            return Err(ScriptError::Empty);
        }
        let max = self.inner.config.max_script_size;
        if source.len() > max {
            return Err(ScriptError::TooLarge {
                size: source.len(),
                max,
            });
        }
        Ok(())
    }

    /// `rawDataToProtocol(bytes)`: raw bytes from a device (`thing/model/up_raw`, or a device's
    /// raw reply on `down_raw_reply`) to the Alink JSON the script builds.
    pub async fn raw_to_protocol(&self, script: &Script, raw: &[u8]) -> Result<Value, ScriptError> {
        let call = Call::RawToProtocol { raw: raw.to_vec() };
        json(self.call(script, call).await?)
    }

    /// `protocolToRawData(json)`: an Alink JSON message for a device (a downlink, or the reply
    /// to the device's raw uplink) to the bytes sent on `thing/model/down_raw` or
    /// `up_raw_reply`.
    pub async fn protocol_to_raw(
        &self,
        script: &Script,
        message: &Value,
    ) -> Result<Vec<u8>, ScriptError> {
        let call = Call::ProtocolToRaw {
            message: message.clone(),
        };
        raw(self.call(script, call).await?)
    }

    /// `transformPayload(topic, rawData)`: a payload on a custom topic to JSON.
    pub async fn transform_payload(
        &self,
        script: &Script,
        topic: &str,
        raw: &[u8],
    ) -> Result<Value, ScriptError> {
        let call = Call::TransformPayload {
            topic: topic.to_owned(),
            raw: raw.to_vec(),
        };
        json(self.call(script, call).await?)
    }

    /// Checks a draft before it is saved: size, syntax, the top level runs within the limits,
    /// and both required functions are defined.
    pub async fn check(&self, source: &str) -> Result<(), ScriptError> {
        self.check_size(source)?;
        self.submit(Task::Draft {
            source: source.into(),
            call: None,
        })
        .await
        .map(|_| ())
    }

    /// Runs a draft on a sample input, for debugging before publishing: the output, or the
    /// error with its line and column ([`ScriptError::line`], [`ScriptError::column`]).
    ///
    /// The draft is compiled afresh and never cached, so it cannot disturb the published
    /// scripts.
    pub async fn run_draft(&self, source: &str, call: Call) -> Result<Output, ScriptError> {
        self.check_size(source)?;
        self.submit(Task::Draft {
            source: source.into(),
            call: Some(call),
        })
        .await?
        .ok_or_else(no_output)
    }

    async fn call(&self, script: &Script, call: Call) -> Result<Output, ScriptError> {
        self.check_size(script.source())?;
        self.submit(Task::Call {
            script: script.clone(),
            call,
        })
        .await?
        .ok_or_else(no_output)
    }

    async fn submit(&self, task: Task) -> Result<Option<Output>, ScriptError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .send(Job { task, reply })
            .await
            .map_err(|_| ScriptError::Internal("script workers have stopped".to_owned()))?;
        answer.await.map_err(|_| {
            ScriptError::Internal("script worker stopped before answering".to_owned())
        })?
    }
}

fn no_output() -> ScriptError {
    ScriptError::Internal("script call produced no output".to_owned())
}

fn json(output: Output) -> Result<Value, ScriptError> {
    match output {
        Output::Json(value) => Ok(value),
        Output::Raw(_) => Err(ScriptError::Internal("expected JSON, got bytes".to_owned())),
    }
}

fn raw(output: Output) -> Result<Vec<u8>, ScriptError> {
    match output {
        Output::Raw(bytes) => Ok(bytes),
        Output::Json(_) => Err(ScriptError::Internal(format!(
            "expected bytes from {PROTOCOL_TO_RAW}, got JSON"
        ))),
    }
}
