//! `lodestone config …` (remote configuration of a product), `lodestone rrpc` (a synchronous
//! request to a device) and `lodestone broadcast` (topic or device broadcast), over the
//! management API.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::call;
use crate::client::ApiClient;

/// The remote-configuration, RRPC and broadcast commands, flattened into the top-level list.
#[derive(Debug, Subcommand)]
pub enum DevConfigCommand {
    /// Remote configuration of a product: put, get, versions, push.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Send a payload to a device and print its answer (RRPC).
    Rrpc(RrpcArgs),
    /// Broadcast to a product: on /broadcast/{pk}/{topic} with --topic, else to every
    /// online device on /sys/{pk}/{dn}/broadcast/request/{messageId}.
    Broadcast(BroadcastArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Save a JSON file (at most 64 KB) as the product's new configuration version.
    Put {
        product_key: String,
        /// The configuration file
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Show the current configuration (or --config-version N) with its download URL.
    Get {
        product_key: String,
        /// A version number; the current version when absent
        #[arg(long)]
        config_version: Option<i64>,
    },
    /// List the configuration's versions, newest first.
    Versions { product_key: String },
    /// Push the current configuration to the product's online devices (or --devices).
    Push {
        product_key: String,
        /// Device names, separated by commas
        #[arg(long, value_delimiter = ',')]
        devices: Option<Vec<String>>,
        /// How long to wait for the devices' answers, in ms
        #[arg(long)]
        wait_ms: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct RrpcArgs {
    pub product_key: String,
    pub device_name: String,
    /// The request payload (text)
    #[arg(long)]
    pub message: String,
    /// A custom topic `user/...`; the system RRPC topic when absent
    #[arg(long)]
    pub topic: Option<String>,
    /// How long to wait for the answer, in ms
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct BroadcastArgs {
    pub product_key: String,
    /// The payload (text)
    #[arg(long)]
    pub message: String,
    /// Topic suffix under /broadcast/{productKey}/; a device broadcast when absent
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
}

/// Runs one command; the API's answer and the columns of its table.
pub(super) async fn run(
    api: &ApiClient,
    c: DevConfigCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    const VERSION_COLS: &[&str] = &["version", "configId", "size", "sha256", "createdAt"];
    Ok(match c {
        DevConfigCommand::Config(ConfigCommand::Put { product_key, file }) => {
            let text = tokio::fs::read_to_string(&file)
                .await
                .with_context(|| format!("failed to read {}", file.display()))?;
            let body: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            let path = format!("/api/v1/products/{product_key}/config");
            (call(api, "PUT", &path, Some(body)).await?, VERSION_COLS)
        }
        DevConfigCommand::Config(ConfigCommand::Get {
            product_key,
            config_version,
        }) => {
            let query = config_version
                .map(|v| format!("?version={v}"))
                .unwrap_or_default();
            let path = format!("/api/v1/products/{product_key}/config{query}");
            (
                call(api, "GET", &path, None).await?,
                &["version", "configId", "size", "sha256", "url"],
            )
        }
        DevConfigCommand::Config(ConfigCommand::Versions { product_key }) => {
            let path = format!("/api/v1/products/{product_key}/config/versions");
            (call(api, "GET", &path, None).await?, VERSION_COLS)
        }
        DevConfigCommand::Config(ConfigCommand::Push {
            product_key,
            devices,
            wait_ms,
        }) => {
            let path = format!("/api/v1/products/{product_key}/config/push");
            let mut body = json!({});
            if let Some(devices) = devices {
                body["deviceNames"] = json!(devices);
            }
            if let Some(wait) = wait_ms {
                body["waitMs"] = json!(wait);
            }
            let report = call(api, "POST", &path, Some(body)).await?;
            (
                json!({
                    "configId": report.get("configId"),
                    "version": report.get("version"),
                    "items": report.get("results"),
                }),
                &["deviceName", "status", "code"],
            )
        }
        DevConfigCommand::Rrpc(a) => {
            let mut body = json!({
                "productKey": a.product_key,
                "deviceName": a.device_name,
                "payloadText": a.message,
            });
            if let Some(topic) = a.topic {
                body["topic"] = json!(topic);
            }
            if let Some(t) = a.timeout_ms {
                body["timeoutMs"] = json!(t);
            }
            (
                call(api, "POST", "/api/v1/rrpc", Some(body)).await?,
                &["payloadText", "payload"],
            )
        }
        DevConfigCommand::Broadcast(a) => match a.topic {
            Some(topic) => (
                call(
                    api,
                    "POST",
                    &format!("/api/v1/products/{}/broadcast", a.product_key),
                    Some(json!({"topicSuffix": topic, "payloadText": a.message, "qos": a.qos})),
                )
                .await?,
                &["topic", "delivered"],
            ),
            None => (
                call(
                    api,
                    "POST",
                    &format!("/api/v1/products/{}/devices/broadcast", a.product_key),
                    Some(json!({"payloadText": a.message, "qos": a.qos})),
                )
                .await?,
                &["messageId", "devices", "delivered"],
            ),
        },
    })
}
