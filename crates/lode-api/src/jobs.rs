//! Batch registration jobs: kept in memory, readable by their account until
//! `job_ttl` after they finish.

use std::collections::HashMap;

use chrono::Utc;
use lode_registry::{BatchItem, RegistryError};
use rand::Rng;

use crate::dto::{JobDto, JobFailure, JobResult, JobStatus};

struct Entry {
    account_id: String,
    job: JobDto,
    finished_ms: Option<i64>,
}

/// Jobs by id.
#[derive(Default)]
pub(crate) struct Jobs {
    jobs: parking_lot::Mutex<HashMap<String, Entry>>,
}

impl Jobs {
    /// Starts a job; returns its id.
    pub(crate) fn start(&self, account_id: &str, product_key: &str, total: usize) -> String {
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        let id = hex::encode(b);
        let job = JobDto {
            job_id: id.clone(),
            product_key: product_key.to_owned(),
            status: JobStatus::Running,
            total,
            succeeded: 0,
            failed: 0,
            error: None,
            failures: Vec::new(),
            results: Vec::new(),
            created_at: Utc::now(),
            finished_at: None,
        };
        self.jobs.lock().insert(
            id.clone(),
            Entry {
                account_id: account_id.to_owned(),
                job,
                finished_ms: None,
            },
        );
        id
    }

    /// Records the outcome of a job.
    pub(crate) fn finish(&self, id: &str, outcome: Result<Vec<BatchItem>, RegistryError>) {
        let mut jobs = self.jobs.lock();
        let Some(entry) = jobs.get_mut(id) else {
            return;
        };
        let job = &mut entry.job;
        match outcome {
            Ok(items) => {
                for item in items {
                    match item.result {
                        Ok(d) => job.results.push(JobResult {
                            device_name: d.device_name,
                            iot_id: d.iot_id,
                            device_secret: d.device_secret,
                        }),
                        Err(e) => job.failures.push(JobFailure {
                            device_name: item.device_name,
                            code: e.code().to_owned(),
                            message: e.to_string(),
                        }),
                    }
                }
                job.succeeded = job.results.len();
                job.failed = job.failures.len();
                job.status = JobStatus::Succeeded;
            }
            Err(e) => {
                if matches!(e, RegistryError::Backend(_) | RegistryError::Corrupt(_)) {
                    tracing::error!(error = %e, job = id, "batch registration failed");
                }
                job.failed = job.total;
                job.error = Some(JobFailure {
                    device_name: String::new(),
                    code: e.code().to_owned(),
                    message: e.to_string(),
                });
                job.status = JobStatus::Failed;
            }
        }
        let now = Utc::now();
        job.finished_at = Some(now);
        entry.finished_ms = Some(now.timestamp_millis());
    }

    /// A job of `account_id`.
    pub(crate) fn get(&self, account_id: &str, id: &str) -> Option<JobDto> {
        self.jobs
            .lock()
            .get(id)
            .filter(|e| e.account_id == account_id)
            .map(|e| e.job.clone())
    }

    /// Forgets jobs finished before `before_ms`.
    pub(crate) fn expire(&self, before_ms: i64) {
        self.jobs
            .lock()
            .retain(|_, e| e.finished_ms.is_none_or(|t| t >= before_ms));
    }
}
