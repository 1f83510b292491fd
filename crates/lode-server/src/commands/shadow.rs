//! `lodestone shadow get|update|delete`: the device shadow over the management API.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use super::call;
use crate::client::ApiClient;

/// The shadow of one device.
#[derive(Debug, Subcommand)]
pub enum ShadowCommand {
    /// Show the shadow document (state, metadata, version, timestamp).
    Get {
        product_key: String,
        device_name: String,
    },
    /// Set desired state; a connected device gets the difference at once.
    Update {
        product_key: String,
        device_name: String,
        /// A JSON object of desired attributes (a null value removes one), or "null" to
        /// clear all of them
        #[arg(long)]
        desired: String,
        /// The new version, greater than the shadow's (else a VersionConflict error)
        #[arg(long)]
        shadow_version: Option<u64>,
    },
    /// Delete the shadow document.
    Delete {
        product_key: String,
        device_name: String,
    },
}

/// Runs one command; the API's answer and the columns of its table.
pub(super) async fn run(
    api: &ApiClient,
    c: ShadowCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    const COLS: &[&str] = &["version", "timestamp", "state"];
    let path = |pk: &str, dn: &str| format!("/api/v1/products/{pk}/devices/{dn}/shadow");
    Ok(match c {
        ShadowCommand::Get {
            product_key,
            device_name,
        } => (
            call(api, "GET", &path(&product_key, &device_name), None).await?,
            COLS,
        ),
        ShadowCommand::Update {
            product_key,
            device_name,
            desired,
            shadow_version,
        } => {
            let desired: Value = if desired.trim() == "null" {
                Value::from("null")
            } else {
                serde_json::from_str(&desired).context("--desired is not valid JSON")?
            };
            let mut body = json!({ "desired": desired });
            if let Some(v) = shadow_version {
                body["version"] = json!(v);
            }
            let p = format!("{}/desired", path(&product_key, &device_name));
            (call(api, "PUT", &p, Some(body)).await?, COLS)
        }
        ShadowCommand::Delete {
            product_key,
            device_name,
        } => (
            call(api, "DELETE", &path(&product_key, &device_name), None).await?,
            &[],
        ),
    })
}
