//! `lodestone ota firmware upload|list|get|delete` and
//! `lodestone ota job create|list|get|cancel|devices`: OTA over the management API.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use lode_api::signing::encode_query;
use serde_json::{Value, json};

use super::call;
use crate::client::ApiClient;

/// OTA: firmware packages and upgrade jobs.
#[derive(Debug, Subcommand)]
pub enum OtaCommand {
    /// Firmware packages: upload, list, get, delete.
    #[command(subcommand)]
    Firmware(FirmwareCommand),
    /// Upgrade jobs: create, list, get, cancel, devices.
    #[command(subcommand)]
    Job(JobCommand),
}

/// Firmware packages.
#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Upload a firmware file (MD5 and SHA-256 are computed by the server).
    Upload {
        #[arg(long)]
        product_key: String,
        /// The firmware's version
        #[arg(long)]
        firmware_version: String,
        /// The file to upload
        #[arg(long)]
        file: PathBuf,
        /// The device module (default: "default")
        #[arg(long)]
        module: Option<String>,
        /// A signature of the package, passed to devices as digestsign
        #[arg(long)]
        signature: Option<String>,
        #[arg(long)]
        sign_method: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List firmware, optionally of one product.
    List {
        #[arg(long)]
        product_key: Option<String>,
    },
    /// Show a firmware with a signed download URL.
    Get { id: String },
    /// Delete a firmware no job uses.
    Delete { id: String },
}

/// Upgrade jobs.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Create a job: static with --devices, dynamic with --source-versions.
    Create {
        #[arg(long)]
        firmware_id: String,
        /// Device names (static job), comma-separated
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// Module versions that get the upgrade (dynamic job), comma-separated
        #[arg(long, value_delimiter = ',')]
        source_versions: Vec<String>,
        /// Only devices of this group
        #[arg(long)]
        group_id: Option<String>,
        /// Start time, ms since the Unix epoch
        #[arg(long)]
        start_at: Option<i64>,
        /// Devices pushed per minute
        #[arg(long)]
        rate_per_minute: Option<u32>,
        #[arg(long, default_value_t = 0)]
        max_retries: u32,
        /// Seconds a pushed device may stay silent
        #[arg(long, default_value_t = 1800)]
        timeout_secs: u64,
        /// Stop the job when the failure rate passes this (0…1)
        #[arg(long)]
        failure_threshold: Option<f64>,
        /// Finished devices before the failure rate is judged
        #[arg(long, default_value_t = 10)]
        min_sample: u32,
        /// Md5 or SHA256
        #[arg(long, default_value = "Md5")]
        sign_method: String,
    },
    /// List jobs.
    List,
    /// Show a job with its statistics.
    Get { id: String },
    /// Cancel a job.
    Cancel { id: String },
    /// The devices of a job with their status.
    Devices { id: String },
}

/// Runs one command; the API's answer and the columns of its table.
pub(super) async fn run(
    api: &ApiClient,
    c: OtaCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    const FW: &[&str] = &["id", "productKey", "module", "version", "size", "md5"];
    const JOB: &[&str] = &["id", "productKey", "firmwareId", "state", "stats"];
    let fw = |id: &str| format!("/api/v1/ota/firmware/{id}");
    let job = |id: &str| format!("/api/v1/ota/jobs/{id}");
    Ok(match c {
        OtaCommand::Firmware(FirmwareCommand::Upload {
            product_key,
            firmware_version,
            file,
            module,
            signature,
            sign_method,
            description,
        }) => {
            let bytes = tokio::fs::read(&file)
                .await
                .with_context(|| format!("cannot read {}", file.display()))?;
            let mut q = vec![("productKey", product_key), ("version", firmware_version)];
            for (k, v) in [
                ("module", module),
                ("signature", signature),
                ("signMethod", sign_method),
                ("description", description),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let path = format!("/api/v1/ota/firmware?{}", encode_query(&pairs));
            let response = api
                .call_bytes("POST", &path, &bytes, Some("application/octet-stream"))
                .await?;
            if !(200..300).contains(&response.status) {
                let code = response.body["code"].as_str().unwrap_or("Error");
                let message = response.body["message"].as_str().unwrap_or("");
                bail!("{code} (HTTP {}): {message}", response.status);
            }
            (response.body, FW)
        }
        OtaCommand::Firmware(FirmwareCommand::List { product_key }) => {
            let path = match product_key {
                Some(pk) => format!(
                    "/api/v1/ota/firmware?{}",
                    encode_query(&[("productKey", pk.as_str())])
                ),
                None => "/api/v1/ota/firmware".to_owned(),
            };
            (call(api, "GET", &path, None).await?, FW)
        }
        OtaCommand::Firmware(FirmwareCommand::Get { id }) => {
            (call(api, "GET", &fw(&id), None).await?, FW)
        }
        OtaCommand::Firmware(FirmwareCommand::Delete { id }) => {
            (call(api, "DELETE", &fw(&id), None).await?, &[])
        }
        OtaCommand::Job(JobCommand::Create {
            firmware_id,
            devices,
            source_versions,
            group_id,
            start_at,
            rate_per_minute,
            max_retries,
            timeout_secs,
            failure_threshold,
            min_sample,
            sign_method,
        }) => {
            let kind = if source_versions.is_empty() {
                "static"
            } else {
                "dynamic"
            };
            let body = json!({
                "firmwareId": firmware_id,
                "kind": kind,
                "deviceNames": devices,
                "sourceVersions": source_versions,
                "groupId": group_id,
                "startAt": start_at,
                "ratePerMinute": rate_per_minute,
                "maxRetries": max_retries,
                "timeoutSecs": timeout_secs,
                "failureThreshold": failure_threshold,
                "minSample": min_sample,
                "signMethod": sign_method,
            });
            (
                call(api, "POST", "/api/v1/ota/jobs", Some(body)).await?,
                JOB,
            )
        }
        OtaCommand::Job(JobCommand::List) => {
            (call(api, "GET", "/api/v1/ota/jobs", None).await?, JOB)
        }
        OtaCommand::Job(JobCommand::Get { id }) => (call(api, "GET", &job(&id), None).await?, JOB),
        OtaCommand::Job(JobCommand::Cancel { id }) => (
            call(api, "POST", &format!("{}/cancel", job(&id)), None).await?,
            JOB,
        ),
        OtaCommand::Job(JobCommand::Devices { id }) => (
            call(api, "GET", &format!("{}/devices", job(&id)), None).await?,
            &["deviceName", "status", "attempts", "step", "detail"],
        ),
    })
}
