//! The management commands of the `lodestone` binary, over the HTTP API.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use lode_api::signing::encode_query;
use serde_json::{Value, json};

use crate::client::{ApiClient, Connection};

mod devconfig;
mod groups;
mod ota;
mod shadow;
mod topology;

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
    #[arg(long, visible_alias = "product")]
    pub product_key: String,
    /// DeviceName
    #[arg(long, visible_alias = "device")]
    pub name: String,
}

/// A time window and a page of history.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Start of the window, ms since the Unix epoch (inclusive) [default: 24 h before --end]
    #[arg(long)]
    pub start: Option<i64>,
    /// End of the window, ms since the Unix epoch (exclusive) [default: now]
    #[arg(long)]
    pub end: Option<i64>,
    /// Order of the records
    #[arg(long, value_enum, default_value_t = Order::Desc)]
    pub order: Order,
    /// Records per page, 1 to 200
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// The cursor printed with the previous page
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Order of history records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Oldest first
    Asc,
    /// Newest first
    Desc,
}

impl HistoryArgs {
    /// The query parameters, after `extra` ones.
    fn query(&self, extra: &[(&str, Option<&str>)]) -> String {
        let start = self.start.map(|v| v.to_string());
        let end = self.end.map(|v| v.to_string());
        let limit = self.limit.to_string();
        let order = match self.order {
            Order::Asc => "asc",
            Order::Desc => "desc",
        };
        let mut pairs: Vec<(&str, &str)> = extra
            .iter()
            .filter_map(|(k, v)| v.map(|v| (*k, v)))
            .collect();
        pairs.extend(
            [
                ("start", start.as_deref()),
                ("end", end.as_deref()),
                ("order", Some(order)),
                ("limit", Some(limit.as_str())),
                ("cursor", self.cursor.as_deref()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v))),
        );
        encode_query(&pairs)
    }
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
    /// Show the latest value of every property of the device.
    Props(DeviceRef),
    /// Set properties of the device (async; the reply is recorded with the call).
    Set {
        #[command(flatten)]
        device: DeviceRef,
        /// Property values as a JSON object, e.g. '{"target": 25}'
        #[arg(long)]
        items: String,
    },
    /// Set the same properties on many devices (names separated by commas, at most 100).
    SetBatch {
        #[arg(long, visible_alias = "product")]
        product_key: String,
        #[arg(long, value_delimiter = ',', required = true)]
        names: Vec<String>,
        /// Property values as a JSON object
        #[arg(long)]
        items: String,
    },
    /// Call a service of the device: a sync service prints the device's answer.
    Invoke {
        #[command(flatten)]
        device: DeviceRef,
        /// Service identifier
        #[arg(long)]
        service: String,
        /// Input parameters as a JSON object
        #[arg(long, default_value = "{}")]
        args: String,
        /// How long a sync call waits for the device, 1000 to 60000 ms [default: 5000]
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
    /// Show the history of one property.
    History {
        #[command(flatten)]
        device: DeviceRef,
        /// Property identifier
        #[arg(long)]
        property: String,
        #[command(flatten)]
        window: HistoryArgs,
    },
    /// Show the events the device reported (thing-model events).
    EventHistory {
        #[command(flatten)]
        device: DeviceRef,
        /// Only this event
        #[arg(long)]
        event: Option<String>,
        /// Only info, alert or error events
        #[arg(long)]
        event_type: Option<String>,
        #[command(flatten)]
        window: HistoryArgs,
    },
    /// Show property sets and service calls of the device, or one of them with --id.
    Calls {
        #[command(flatten)]
        device: DeviceRef,
        /// Only calls of this service (`set` for property sets)
        #[arg(long)]
        service: Option<String>,
        /// The message id of one call
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        window: HistoryArgs,
    },
    /// Show desired property values of the device.
    Desired {
        #[command(flatten)]
        device: DeviceRef,
        /// Only these properties (separated by commas)
        #[arg(long, value_delimiter = ',')]
        properties: Vec<String>,
    },
    /// Set desired property values of the device.
    SetDesired {
        #[command(flatten)]
        device: DeviceRef,
        /// Desired values as a JSON object
        #[arg(long)]
        items: String,
        /// Expected current versions as a JSON object, e.g. '{"target": 3}'
        #[arg(long)]
        versions: Option<String>,
    },
    /// Delete the desired value of a property.
    DeleteDesired {
        #[command(flatten)]
        device: DeviceRef,
        #[arg(long)]
        property: String,
        /// Expected current version
        #[arg(long)]
        version: Option<u64>,
    },
    /// Show the device's message log (up and down, with the outcome of each).
    Log {
        #[command(flatten)]
        device: DeviceRef,
        #[command(flatten)]
        window: HistoryArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ThingModelCommand {
    /// Print the thing model (TSL JSON): the published one, or the draft.
    Get {
        #[arg(long, visible_alias = "product")]
        product_key: String,
        #[arg(long)]
        draft: bool,
    },
    /// Validate and save a TSL JSON file as the draft ("-" reads standard input).
    Put {
        #[arg(long, visible_alias = "product")]
        product_key: String,
        file: PathBuf,
    },
    /// Publish the draft thing model.
    Publish {
        #[arg(long, visible_alias = "product")]
        product_key: String,
    },
}

/// Which function of a script a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Direction {
    /// rawDataToProtocol over bytes (--hex or --base64)
    Up,
    /// protocolToRawData over an Alink JSON message (--message)
    Down,
}

#[derive(Debug, Subcommand)]
pub enum ScriptCommand {
    /// Print the data parsing script: the published one, or the draft.
    Get {
        #[arg(long, visible_alias = "product")]
        product_key: String,
        #[arg(long)]
        draft: bool,
    },
    /// Check and save a JavaScript file as the draft script ("-" reads standard input).
    Put {
        #[arg(long, visible_alias = "product")]
        product_key: String,
        file: PathBuf,
    },
    /// Publish the draft script.
    Publish {
        #[arg(long, visible_alias = "product")]
        product_key: String,
    },
    /// Run a script on a sample (the product's draft unless --file is given).
    Test {
        #[arg(long, visible_alias = "product")]
        product_key: String,
        #[arg(long, value_enum)]
        direction: Direction,
        /// Script file to run instead of the draft
        #[arg(long)]
        file: Option<PathBuf>,
        /// Up: the payload in hex
        #[arg(long, conflicts_with = "base64")]
        hex: Option<String>,
        /// Up: the payload in base64
        #[arg(long)]
        base64: Option<String>,
        /// Down: the Alink JSON message
        #[arg(long)]
        message: Option<String>,
    },
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

#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Create a rule (disabled unless --enabled).
    Create {
        #[arg(long)]
        name: String,
        /// `SELECT … FROM '<topic filter>' [WHERE …]`
        #[arg(long)]
        sql: String,
        /// The actions, a JSON array (`[{"type":"republish","topic":"/a/b/user/get"}]`)
        #[arg(long, default_value = "[]")]
        actions: String,
        /// The error action, a JSON object
        #[arg(long)]
        error_action: Option<String>,
        #[arg(long)]
        enabled: bool,
    },
    /// List the account's rules.
    List,
    /// Show a rule.
    Get { id: String },
    /// Delete a rule.
    Delete { id: String },
    /// Enable a rule.
    Enable { id: String },
    /// Disable a rule.
    Disable { id: String },
    /// Test SQL on a sample message: the output row, or why the WHERE clause was false.
    Test {
        #[arg(long)]
        sql: String,
        #[arg(long)]
        topic: String,
        /// The payload (usually JSON)
        #[arg(long, short = 'm')]
        payload: String,
    },
    /// Counters of a rule and its actions.
    Counters { id: String },
    /// Trace the next messages through a rule (--start N), or show the trace.
    Trace {
        id: String,
        #[arg(long)]
        start: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DestinationCommand {
    /// Create a destination (checked before it is saved).
    Create {
        #[arg(long)]
        name: String,
        /// `http`
        #[arg(long)]
        kind: String,
        /// Settings and credentials, a JSON object (`{"url":"https://…"}`)
        #[arg(long)]
        config: String,
    },
    /// List the account's destinations.
    List,
    /// Show a destination.
    Get { id: String },
    /// Delete a destination.
    Delete { id: String },
}

/// One management command.
#[derive(Debug, Subcommand)]
pub enum Manage {
    /// Products: create, list, get, delete, topics.
    #[command(subcommand)]
    Product(ProductCommand),
    /// Devices: register, list, get, status, enable, disable, delete; properties,
    /// services, history, desired values and message log of the thing model.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Publish a message to a topic from the platform side.
    Pub(PubArgs),
    /// The account's AccessKeys.
    #[command(subcommand)]
    AccessKey(AccessKeyCommand),
    /// The thing model (TSL) of a product: get, put, publish.
    #[command(subcommand)]
    ThingModel(ThingModelCommand),
    /// The data parsing script of a product: get, put, publish, test.
    #[command(subcommand)]
    Script(ScriptCommand),
    /// Rules: create, list, get, delete, enable, disable, test, counters, trace.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Destinations rules forward to: create, list, get, delete.
    #[command(subcommand)]
    Destination(DestinationCommand),
    #[command(flatten)]
    Groups(groups::GroupsCommand),
    #[command(flatten)]
    DevConfig(devconfig::DevConfigCommand),
    /// Gateways: topo-get, topo-add, topo-delete, gateway-of.
    #[command(subcommand)]
    Gateway(topology::GatewayCommand),
    /// Device shadows: get, update (desired state), delete.
    #[command(subcommand)]
    Shadow(shadow::ShadowCommand),
    /// OTA: firmware (upload, list, get, delete) and upgrade jobs (create, list, get,
    /// cancel, devices).
    #[command(subcommand)]
    Ota(ota::OtaCommand),
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
        Manage::ThingModel(c) => thing_model(&api, c, connection.json).await?,
        Manage::Script(c) => script(&api, c, connection.json).await?,
        Manage::Rule(c) => rule(&api, c).await?,
        Manage::Destination(c) => destination(&api, c).await?,
        Manage::Groups(c) => groups::run(&api, c).await?,
        Manage::DevConfig(c) => devconfig::run(&api, c).await?,
        Manage::Gateway(c) => topology::run(&api, c).await?,
        Manage::Shadow(c) => shadow::run(&api, c).await?,
        Manage::Ota(c) => ota::run(&api, c).await?,
    };
    print(&value, columns, connection.json);
    Ok(())
}

/// Parses a JSON argument.
fn json_arg(name: &str, text: &str) -> anyhow::Result<Value> {
    serde_json::from_str(text).with_context(|| format!("--{name} is not valid JSON"))
}

async fn rule(api: &ApiClient, c: RuleCommand) -> anyhow::Result<(Value, &'static [&'static str])> {
    const COLS: &[&str] = &["id", "name", "enabled", "sql"];
    let path = |id: &str| format!("/api/v1/rules/{id}");
    Ok(match c {
        RuleCommand::Create {
            name,
            sql,
            actions,
            error_action,
            enabled,
        } => {
            let mut body = json!({"name": name, "sql": sql, "enabled": enabled,
                "actions": json_arg("actions", &actions)?});
            if let Some(e) = error_action {
                body["errorAction"] = json_arg("error-action", &e)?;
            }
            (call(api, "POST", "/api/v1/rules", Some(body)).await?, COLS)
        }
        RuleCommand::List => (call(api, "GET", "/api/v1/rules", None).await?, COLS),
        RuleCommand::Get { id } => (call(api, "GET", &path(&id), None).await?, COLS),
        RuleCommand::Delete { id } => (call(api, "DELETE", &path(&id), None).await?, &[]),
        RuleCommand::Enable { id } => (
            call(api, "POST", &format!("{}/enable", path(&id)), None).await?,
            COLS,
        ),
        RuleCommand::Disable { id } => (
            call(api, "POST", &format!("{}/disable", path(&id)), None).await?,
            COLS,
        ),
        RuleCommand::Test {
            sql,
            topic,
            payload,
        } => {
            let body = json!({"sql": sql, "topic": topic, "payload": payload});
            (
                call(api, "POST", "/api/v1/rules/test", Some(body)).await?,
                &["outcome", "row", "reason"],
            )
        }
        RuleCommand::Counters { id } => (
            call(api, "GET", &format!("{}/counters", path(&id)), None).await?,
            &[
                "matched",
                "passed",
                "filtered",
                "throttled",
                "errors",
                "lastError",
            ],
        ),
        RuleCommand::Trace { id, start } => {
            let url = format!("{}/trace", path(&id));
            if let Some(n) = start {
                call(api, "POST", &url, Some(json!({"count": n}))).await?;
            }
            (
                call(api, "GET", &url, None).await?,
                &["remaining", "entries"],
            )
        }
    })
}

async fn destination(
    api: &ApiClient,
    c: DestinationCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    const COLS: &[&str] = &["id", "name", "kind", "config"];
    let path = |id: &str| format!("/api/v1/destinations/{id}");
    Ok(match c {
        DestinationCommand::Create { name, kind, config } => {
            let body = json!({"name": name, "kind": kind, "config": json_arg("config", &config)?});
            (
                call(api, "POST", "/api/v1/destinations", Some(body)).await?,
                COLS,
            )
        }
        DestinationCommand::List => (call(api, "GET", "/api/v1/destinations", None).await?, COLS),
        DestinationCommand::Get { id } => (call(api, "GET", &path(&id), None).await?, COLS),
        DestinationCommand::Delete { id } => (call(api, "DELETE", &path(&id), None).await?, &[]),
    })
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
        DeviceCommand::Props(d) => (
            call(api, "GET", &format!("{}/properties", path(&d)), None).await?,
            &["identifier", "name", "value", "time"],
        ),
        DeviceCommand::Set { device, items } => {
            let body = json!({"items": json_object("--items", &items)?});
            let url = format!("{}/properties/set", path(&device));
            (call(api, "POST", &url, Some(body)).await?, &["messageId"])
        }
        DeviceCommand::SetBatch {
            product_key,
            names,
            items,
        } => {
            let body = json!({"deviceNames": names, "items": json_object("--items", &items)?});
            let url = format!("/api/v1/products/{product_key}/properties/set");
            (
                call(api, "POST", &url, Some(body)).await?,
                &["deviceName", "messageId", "code", "message"],
            )
        }
        DeviceCommand::Invoke {
            device,
            service,
            args,
            timeout_ms,
        } => {
            let mut body = json!({"args": json_object("--args", &args)?});
            if let Some(t) = timeout_ms {
                body["timeoutMs"] = json!(t);
            }
            let url = format!("{}/services/{service}", path(&device));
            (
                call(api, "POST", &url, Some(body)).await?,
                &["messageId", "callType", "code", "data", "message"],
            )
        }
        DeviceCommand::History {
            device,
            property,
            window,
        } => {
            let url = format!(
                "{}/properties/{property}/history?{}",
                path(&device),
                window.query(&[])
            );
            (
                call(api, "GET", &url, None).await?,
                &["time", "value", "serverTime"],
            )
        }
        DeviceCommand::EventHistory {
            device,
            event,
            event_type,
            window,
        } => {
            let query = window.query(&[
                ("identifier", event.as_deref()),
                ("eventType", event_type.as_deref()),
            ]);
            let url = format!("{}/event-history?{query}", path(&device));
            (
                call(api, "GET", &url, None).await?,
                &["time", "identifier", "eventType", "output"],
            )
        }
        DeviceCommand::Calls {
            device,
            service,
            id,
            window,
        } => {
            const CALL: &[&str] = &[
                "messageId",
                "identifier",
                "callType",
                "status",
                "code",
                "startedAt",
                "durationMs",
            ];
            let url = match id {
                Some(id) => format!("{}/service-calls/{id}", path(&device)),
                None => format!(
                    "{}/service-calls?{}",
                    path(&device),
                    window.query(&[("identifier", service.as_deref())])
                ),
            };
            (call(api, "GET", &url, None).await?, CALL)
        }
        DeviceCommand::Desired { device, properties } => {
            let mut url = format!("{}/desired", path(&device));
            if !properties.is_empty() {
                url.push('?');
                url.push_str(&encode_query(&[("identifiers", properties.join(","))]));
            }
            (
                call(api, "GET", &url, None).await?,
                &["identifier", "value", "version", "time"],
            )
        }
        DeviceCommand::SetDesired {
            device,
            items,
            versions,
        } => {
            let mut body = json!({"items": json_object("--items", &items)?});
            if let Some(v) = versions {
                body["versions"] = json_object("--versions", &v)?;
            }
            let url = format!("{}/desired", path(&device));
            (
                call(api, "PUT", &url, Some(body)).await?,
                &["identifier", "version"],
            )
        }
        DeviceCommand::DeleteDesired {
            device,
            property,
            version,
        } => {
            let mut url = format!("{}/desired/{property}", path(&device));
            if let Some(v) = version {
                url.push_str(&format!("?version={v}"));
            }
            (call(api, "DELETE", &url, None).await?, &[])
        }
        DeviceCommand::Log { device, window } => {
            let url = format!("{}/log?{}", path(&device), window.query(&[]));
            (
                call(api, "GET", &url, None).await?,
                &["time", "direction", "topic", "code", "message", "payload"],
            )
        }
    })
}

/// A JSON object given on the command line.
fn json_object(flag: &str, text: &str) -> anyhow::Result<Value> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("{flag} is not valid JSON"))?;
    if !value.is_object() {
        bail!("{flag} must be a JSON object");
    }
    Ok(value)
}

/// The text of `file`, or of standard input for `-`.
fn read_input(file: &Path) -> anyhow::Result<String> {
    if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("failed to read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("failed to read {}", file.display()))
}

const DOCUMENT_COLS: &[&str] = &["productKey", "version", "publishedAt", "draftUpdatedAt"];

/// `get` prints the TSL JSON itself (ready for `put`), or the whole object with `--json`.
async fn thing_model(
    api: &ApiClient,
    c: ThingModelCommand,
    json: bool,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    let url = |pk: &str| format!("/api/v1/products/{pk}/thing-model");
    Ok(match c {
        ThingModelCommand::Get { product_key, draft } => {
            let doc = call(
                api,
                "GET",
                &format!("{}?draft={draft}", url(&product_key)),
                None,
            )
            .await?;
            if json {
                (doc, &[])
            } else {
                (doc.get("tsl").cloned().unwrap_or(Value::Null), &[])
            }
        }
        ThingModelCommand::Put { product_key, file } => {
            let text = read_input(&file)?;
            let tsl: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            (
                call(api, "PUT", &url(&product_key), Some(tsl)).await?,
                DOCUMENT_COLS,
            )
        }
        ThingModelCommand::Publish { product_key } => (
            call(api, "POST", &format!("{}/publish", url(&product_key)), None).await?,
            DOCUMENT_COLS,
        ),
    })
}

/// `get` prints the source itself, or the whole object with `--json`.
async fn script(
    api: &ApiClient,
    c: ScriptCommand,
    json: bool,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    let url = |pk: &str| format!("/api/v1/products/{pk}/script");
    Ok(match c {
        ScriptCommand::Get { product_key, draft } => {
            let doc = call(
                api,
                "GET",
                &format!("{}?draft={draft}", url(&product_key)),
                None,
            )
            .await?;
            if json {
                (doc, &[])
            } else {
                (doc.get("source").cloned().unwrap_or(Value::Null), &[])
            }
        }
        ScriptCommand::Put { product_key, file } => {
            let source = read_input(&file)?;
            (
                call(
                    api,
                    "PUT",
                    &url(&product_key),
                    Some(json!({"source": source})),
                )
                .await?,
                DOCUMENT_COLS,
            )
        }
        ScriptCommand::Publish { product_key } => (
            call(api, "POST", &format!("{}/publish", url(&product_key)), None).await?,
            DOCUMENT_COLS,
        ),
        ScriptCommand::Test {
            product_key,
            direction,
            file,
            hex,
            base64,
            message,
        } => {
            let mut body = json!({"direction": match direction {
                Direction::Up => "up",
                Direction::Down => "down",
            }});
            if let Some(file) = file {
                body["source"] = json!(read_input(&file)?);
            }
            if let Some(h) = hex {
                body["payloadHex"] = json!(h);
            }
            if let Some(b) = base64 {
                body["payloadBase64"] = json!(b);
            }
            if let Some(m) = message {
                body["message"] = json_object("--message", &m)?;
            }
            let out = call(
                api,
                "POST",
                &format!("{}/test", url(&product_key)),
                Some(body),
            )
            .await?;
            (out.get("result").cloned().unwrap_or(Value::Null), &[])
        }
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
    if let (Value::String(text), false) = (value, json) {
        println!("{}", text.trim_end());
        return;
    }
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
    if let Some(cursor) = value.get("nextCursor").and_then(Value::as_str) {
        println!("(more: --cursor {cursor})");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Manage,
    }

    fn parse(args: &[&str]) -> Manage {
        Cli::try_parse_from(std::iter::once("lodestone").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
            .command
    }

    #[test]
    fn history_query_encodes_filters_and_window() {
        let window = HistoryArgs {
            start: Some(10),
            end: None,
            order: Order::Asc,
            limit: 5,
            cursor: Some("a+b/c=".into()),
        };
        assert_eq!(
            window.query(&[("identifier", Some("temp")), ("eventType", None)]),
            "identifier=temp&start=10&order=asc&limit=5&cursor=a%2Bb%2Fc%3D"
        );
    }

    #[test]
    fn json_flags_must_be_objects() {
        assert_eq!(
            json_object("--items", r#"{"a": 1}"#).expect("object"),
            json!({"a": 1})
        );
        assert!(json_object("--items", "[1]").is_err());
        assert!(json_object("--items", "{").is_err());
    }

    #[test]
    fn thing_commands_parse() {
        match parse(&[
            "device",
            "invoke",
            "--product",
            "pk",
            "--device",
            "dn",
            "--service",
            "add",
            "--args",
            r#"{"a":1}"#,
            "--timeout-ms",
            "2000",
        ]) {
            Manage::Device(DeviceCommand::Invoke {
                device,
                service,
                timeout_ms,
                ..
            }) => {
                assert_eq!(
                    (device.product_key.as_str(), device.name.as_str()),
                    ("pk", "dn")
                );
                assert_eq!((service.as_str(), timeout_ms), ("add", Some(2000)));
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "device",
            "history",
            "--product-key",
            "pk",
            "--name",
            "dn",
            "--property",
            "t",
        ]) {
            Manage::Device(DeviceCommand::History { window, .. }) => {
                assert_eq!((window.order, window.limit), (Order::Desc, 50));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["thing-model", "put", "--product", "pk", "tsl.json"]),
            Manage::ThingModel(ThingModelCommand::Put { .. })
        ));
        assert!(matches!(
            parse(&[
                "script",
                "test",
                "--product",
                "pk",
                "--direction",
                "up",
                "--hex",
                "00"
            ]),
            Manage::Script(ScriptCommand::Test {
                direction: Direction::Up,
                ..
            })
        ));
        assert!(
            Cli::try_parse_from([
                "lodestone",
                "script",
                "test",
                "--product",
                "pk",
                "--direction",
                "up",
                "--hex",
                "00",
                "--base64",
                "AA==",
            ])
            .is_err(),
            "--hex and --base64 conflict"
        );
    }
}
