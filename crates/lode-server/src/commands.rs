//! The management commands of the `lodestone` binary, over the HTTP API.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{ApiClient, Connection};

#[derive(Debug, Subcommand)]
pub enum ProductCommand {
    /// Create a product.
    Create {
        #[arg(long)]
        name: String,
        /// Direct, Gateway or SubDevice
        #[arg(long, default_value = "Direct")]
        node_type: String,
        /// Let devices of the product register themselves with the ProductSecret
        #[arg(long)]
        dynamic_registration: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List products.
    List {
        #[arg(long, default_value_t = 1)]
        page: u32,
    },
    /// Show one product (with its ProductSecret).
    Get { product_key: String },
    /// Delete a product without devices.
    Delete { product_key: String },
    /// List the topic categories of a product.
    Topics { product_key: String },
}

#[derive(Debug, Args)]
pub struct DeviceRef {
    #[arg(long)]
    pub product_key: String,
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Register a device (prints its DeviceSecret).
    Register {
        #[arg(long)]
        product_key: String,
        /// DeviceName; generated when absent
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        nickname: Option<String>,
    },
    /// Register many devices at once (names separated by commas) and wait for the job.
    RegisterBatch {
        #[arg(long)]
        product_key: String,
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
    },
    /// List the devices of a product.
    List {
        #[arg(long)]
        product_key: String,
        /// Inactive, Online, Offline or Disabled
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 50)]
        page_size: u32,
    },
    /// Show one device.
    Get(DeviceRef),
    /// Show a device's connection status.
    Status(DeviceRef),
    /// Show a device's lifecycle log.
    Events(DeviceRef),
    /// Allow a disabled device to connect again.
    Enable(DeviceRef),
    /// Refuse the device and end its connection.
    Disable(DeviceRef),
    /// Give the device a new DeviceSecret.
    ResetSecret(DeviceRef),
    /// Delete the device and end its connection.
    Delete(DeviceRef),
}

#[derive(Debug, Args)]
pub struct PubArgs {
    #[arg(long)]
    pub topic: String,
    #[arg(long, short = 'm')]
    pub message: String,
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    #[arg(long)]
    pub retain: bool,
}

#[derive(Debug, Subcommand)]
pub enum AccessKeyCommand {
    /// Create another AccessKey for the account (prints its secret).
    Create,
    /// List the account's AccessKeys.
    List,
}

/// One management command.
#[derive(Debug, Subcommand)]
pub enum Manage {
    /// Products: create, list, get, delete, topics.
    #[command(subcommand)]
    Product(ProductCommand),
    /// Devices: register, list, get, status, enable, disable, delete, …
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Publish a message to a topic from the platform side.
    Pub(PubArgs),
    /// The account's AccessKeys.
    #[command(subcommand)]
    AccessKey(AccessKeyCommand),
}

/// Runs one command and prints its result.
pub async fn run(command: Manage, connection: &Connection) -> anyhow::Result<()> {
    let api = ApiClient::from_connection(connection)?;
    let (value, columns): (Value, &[&str]) = match command {
        Manage::Product(c) => product(&api, c).await?,
        Manage::Device(c) => device(&api, c).await?,
        Manage::Pub(p) => {
            let body = json!({"topic": p.topic, "payloadText": p.message, "qos": p.qos, "retain": p.retain});
            (
                call(&api, "POST", "/api/v1/pub", Some(body)).await?,
                &["topic", "delivered"],
            )
        }
        Manage::AccessKey(AccessKeyCommand::Create) => (
            call(&api, "POST", "/api/v1/accessKeys", Some(json!({}))).await?,
            &["accessKeyId", "accessKeySecret", "enabled"],
        ),
        Manage::AccessKey(AccessKeyCommand::List) => (
            call(&api, "GET", "/api/v1/accessKeys", None).await?,
            &["accessKeyId", "enabled", "createdAt"],
        ),
    };
    print(&value, columns, connection.json);
    Ok(())
}

async fn product(
    api: &ApiClient,
    c: ProductCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    const COLS: &[&str] = &[
        "productKey",
        "name",
        "nodeType",
        "dynamicRegistration",
        "productSecret",
    ];
    Ok(match c {
        ProductCommand::Create {
            name,
            node_type,
            dynamic_registration,
            description,
        } => {
            let body = json!({"name": name, "nodeType": node_type,
                "dynamicRegistration": dynamic_registration, "description": description});
            (
                call(api, "POST", "/api/v1/products", Some(body)).await?,
                COLS,
            )
        }
        ProductCommand::List { page } => (
            call(
                api,
                "GET",
                &format!("/api/v1/products?pageNo={page}&pageSize=50"),
                None,
            )
            .await?,
            &["productKey", "name", "nodeType", "dynamicRegistration"],
        ),
        ProductCommand::Get { product_key } => (
            call(api, "GET", &format!("/api/v1/products/{product_key}"), None).await?,
            COLS,
        ),
        ProductCommand::Delete { product_key } => (
            call(
                api,
                "DELETE",
                &format!("/api/v1/products/{product_key}"),
                None,
            )
            .await?,
            &[],
        ),
        ProductCommand::Topics { product_key } => (
            call(
                api,
                "GET",
                &format!("/api/v1/products/{product_key}/topics"),
                None,
            )
            .await?,
            &["id", "topicShortName", "operation", "desc"],
        ),
    })
}

async fn device(
    api: &ApiClient,
    c: DeviceCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    const COLS: &[&str] = &["productKey", "deviceName", "state", "deviceSecret", "iotId"];
    let path = |d: &DeviceRef| format!("/api/v1/products/{}/devices/{}", d.product_key, d.name);
    Ok(match c {
        DeviceCommand::Register {
            product_key,
            name,
            nickname,
        } => {
            let body = json!({"deviceName": name, "nickname": nickname});
            let url = format!("/api/v1/products/{product_key}/devices");
            (call(api, "POST", &url, Some(body)).await?, COLS)
        }
        DeviceCommand::RegisterBatch { product_key, names } => {
            let url = format!("/api/v1/products/{product_key}/devices:batch");
            let job = call(api, "POST", &url, Some(json!({"deviceNames": names}))).await?;
            let Some(id) = job.get("jobId").and_then(Value::as_str).map(str::to_owned) else {
                bail!("the server did not return a job id: {job}");
            };
            loop {
                let status = call(api, "GET", &format!("/api/v1/jobs/{id}"), None).await?;
                let state = status.get("status").and_then(Value::as_str).unwrap_or("");
                if !matches!(state, "Pending" | "Running") {
                    break (status, &["jobId", "status", "total", "succeeded", "failed"]);
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
        DeviceCommand::List {
            product_key,
            state,
            page,
            page_size,
        } => {
            let mut url = format!(
                "/api/v1/products/{product_key}/devices?pageNo={page}&pageSize={page_size}"
            );
            if let Some(s) = state {
                url.push_str(&format!("&state={s}"));
            }
            (
                call(api, "GET", &url, None).await?,
                &["deviceName", "state", "lastIp", "lastOnlineAt"],
            )
        }
        DeviceCommand::Get(d) => (call(api, "GET", &path(&d), None).await?, COLS),
        DeviceCommand::Status(d) => (
            call(api, "GET", &format!("{}/status", path(&d)), None).await?,
            &["state", "online", "lastOnline", "lastIp"],
        ),
        DeviceCommand::Events(d) => (
            call(api, "GET", &format!("{}/events", path(&d)), None).await?,
            &["event", "reason", "ip", "at"],
        ),
        DeviceCommand::Enable(d) => (
            call(api, "POST", &format!("{}:enable", path(&d)), None).await?,
            COLS,
        ),
        DeviceCommand::Disable(d) => (
            call(api, "POST", &format!("{}:disable", path(&d)), None).await?,
            COLS,
        ),
        DeviceCommand::ResetSecret(d) => (
            call(api, "POST", &format!("{}:resetSecret", path(&d)), None).await?,
            COLS,
        ),
        DeviceCommand::Delete(d) => (call(api, "DELETE", &path(&d), None).await?, &[]),
    })
}

async fn call(
    api: &ApiClient,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let response = api.call(method, path, body.as_ref()).await?;
    if !(200..300).contains(&response.status) {
        let code = response
            .body
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or("Error");
        let message = response
            .body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| response.body.to_string());
        bail!("{code} (HTTP {}): {message}", response.status);
    }
    Ok(response.body)
}

/// Prints the API object as JSON, or the chosen columns as a table.
#[allow(clippy::print_stdout)]
fn print(value: &Value, columns: &[&str], json: bool) {
    if json || columns.is_empty() {
        if !value.is_null() {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        }
        return;
    }
    let rows: Vec<&Value> = match value.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![value],
    };
    let cell = |row: &Value, col: &str| match row.get(col) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            rows.iter()
                .map(|r| cell(r, c).len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(columns.iter().map(|c| c.to_string()).collect()));
    for row in &rows {
        println!("{}", line(columns.iter().map(|c| cell(row, c)).collect()));
    }
    if let Some(total) = value.get("total") {
        println!("({} of {total})", rows.len());
    }
}
