//! The worker threads: each takes jobs from the shared queue and keeps its own cache of
//! compiled scripts.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::error::ScriptError;
use crate::sandbox::{Clock, Limits, Sandbox};
use crate::script::{Call, Output, Script};

/// What a job asks for.
pub(crate) enum Task {
    /// Run a call of a published script, compiled once per worker and cached.
    Call { script: Script, call: Call },
    /// Compile a draft (never cached) and run `call` on it, if any.
    Draft {
        source: Arc<str>,
        call: Option<Call>,
    },
}

/// A task and where its answer goes.
pub(crate) struct Job {
    pub(crate) task: Task,
    pub(crate) reply: oneshot::Sender<Result<Option<Output>, ScriptError>>,
}

/// The receiving end of the job queue, shared by the workers.
pub(crate) type Queue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Runs jobs until the queue is closed (every engine handle dropped).
pub(crate) fn run(queue: &Queue, limits: Limits, cache_capacity: usize) {
    let clock = Clock::default();
    let mut cache = Cache::new(cache_capacity);
    loop {
        let job = queue.lock().blocking_recv();
        let Some(Job { task, reply }) = job else {
            return;
        };
        // The caller gave up (its future was dropped): the work would be thrown away.
        if reply.is_closed() {
            continue;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            execute(&mut cache, task, limits, &clock)
        }))
        .unwrap_or_else(|_| {
            // Nothing in the engine is known to panic; if something did, start afresh.
            cache.clear();
            tracing::error!("script worker recovered from a panic, cache cleared");
            Err(ScriptError::Internal("script worker failed".to_owned()))
        });
        // The caller may have gone meanwhile; nobody is left to tell.
        let _ = reply.send(result);
    }
}

fn execute(
    cache: &mut Cache,
    task: Task,
    limits: Limits,
    clock: &Clock,
) -> Result<Option<Output>, ScriptError> {
    match task {
        Task::Call { script, call } => cache.call(&script, &call, limits, clock).map(Some),
        Task::Draft { source, call } => {
            let sandbox = Sandbox::compile(&source, limits, clock)?;
            call.map(|call| sandbox.call(&call, limits, clock))
                .transpose()
        }
    }
}

/// Compiled scripts of one worker by script id, least recently used evicted first.
struct Cache {
    entries: HashMap<Arc<str>, Entry>,
    capacity: usize,
    tick: u64,
}

struct Entry {
    hash: u64,
    source: Arc<str>,
    /// The compiled script, or why it does not compile: a broken script is not recompiled
    /// for every message.
    compiled: Result<Sandbox, ScriptError>,
    last_used: u64,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            tick: 0,
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
    }

    fn call(
        &mut self,
        script: &Script,
        call: &Call,
        limits: Limits,
        clock: &Clock,
    ) -> Result<Output, ScriptError> {
        self.tick += 1;
        let tick = self.tick;
        let fresh = self
            .entries
            .get(script.id())
            .is_some_and(|entry| script.same_source(entry.hash, &entry.source));
        if !fresh {
            // Free the old runtime before building its replacement.
            self.entries.remove(script.id());
            let compiled = match Sandbox::compile(script.source(), limits, clock) {
                // Failures that depend on the moment (load, a runtime that could not be
                // created) are not remembered; a script that does not parse or whose top
                // level throws fails the same way on every message, and is.
                Err(
                    err @ (ScriptError::Timeout { .. }
                    | ScriptError::OutOfMemory { .. }
                    | ScriptError::Internal(_)),
                ) => return Err(err),
                compiled => compiled,
            };
            self.make_room();
            self.entries.insert(
                Arc::clone(script.id_arc()),
                Entry {
                    hash: script.hash(),
                    source: Arc::clone(script.source_arc()),
                    compiled,
                    last_used: tick,
                },
            );
        }
        let Some(entry) = self.entries.get_mut(script.id()) else {
            return Err(ScriptError::Internal(
                "compiled script not cached".to_owned(),
            ));
        };
        entry.last_used = tick;
        let sandbox = match &entry.compiled {
            Ok(sandbox) => sandbox,
            Err(err) => return Err(err.clone()),
        };
        let result = sandbox.call(call, limits, clock);
        if matches!(
            result,
            Err(ScriptError::Timeout { .. } | ScriptError::OutOfMemory { .. })
        ) {
            // The script was stopped half-way or its runtime hit its memory limit: its state
            // is not trusted again. The next call compiles it into a new runtime.
            self.entries.remove(script.id());
        }
        result
    }

    fn make_room(&mut self) {
        while self.entries.len() >= self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(id, _)| Arc::clone(id));
            match oldest {
                Some(id) => {
                    self.entries.remove(&id);
                }
                None => return,
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    const LIMITS: Limits = Limits {
        memory: 16 * 1024 * 1024,
        stack: 256 * 1024,
        time: Duration::from_millis(100),
    };

    fn script(id: &str, version: u32) -> Script {
        Script::new(
            id,
            format!(
                "function rawDataToProtocol(bytes) {{ return {{ v: {version} }}; }}\n\
                 function protocolToRawData(json) {{ return []; }}\n"
            ),
        )
    }

    fn call(cache: &mut Cache, script: &Script) -> Result<Output, ScriptError> {
        cache.call(
            script,
            &Call::RawToProtocol { raw: vec![] },
            LIMITS,
            &Clock::default(),
        )
    }

    #[test]
    fn least_recently_used_scripts_are_evicted() {
        let mut cache = Cache::new(2);
        let (a, b, c) = (script("a", 1), script("b", 2), script("c", 3));
        assert_eq!(call(&mut cache, &a), Ok(Output::Json(json!({ "v": 1 }))));
        assert_eq!(call(&mut cache, &b), Ok(Output::Json(json!({ "v": 2 }))));
        assert_eq!(call(&mut cache, &a), Ok(Output::Json(json!({ "v": 1 }))));
        assert_eq!(call(&mut cache, &c), Ok(Output::Json(json!({ "v": 3 }))));
        assert_eq!(cache.len(), 2);
        assert!(cache.entries.contains_key("a"));
        assert!(cache.entries.contains_key("c"));
        assert!(!cache.entries.contains_key("b"));
    }

    #[test]
    fn a_new_source_replaces_the_entry_of_its_id() {
        let mut cache = Cache::new(8);
        assert_eq!(
            call(&mut cache, &script("a", 1)),
            Ok(Output::Json(json!({ "v": 1 })))
        );
        assert_eq!(
            call(&mut cache, &script("a", 2)),
            Ok(Output::Json(json!({ "v": 2 })))
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn deterministic_compile_failures_are_cached_and_timeouts_are_not() {
        let mut cache = Cache::new(8);
        let broken = Script::new("broken", "function rawDataToProtocol( {");
        assert!(matches!(
            call(&mut cache, &broken),
            Err(ScriptError::Syntax { .. })
        ));
        assert_eq!(cache.len(), 1);
        let slow = Script::new("slow", "while (true) {}");
        assert!(matches!(
            call(&mut cache, &slow),
            Err(ScriptError::Timeout { .. })
        ));
        assert_eq!(cache.len(), 1);
        let looping = Script::new(
            "looping",
            "function rawDataToProtocol(bytes) { while (true) {} }\n\
             function protocolToRawData(json) { return []; }\n",
        );
        assert!(matches!(
            call(&mut cache, &looping),
            Err(ScriptError::Timeout { .. })
        ));
        // Its runtime is dropped after the timeout.
        assert_eq!(cache.len(), 1);
    }
}
