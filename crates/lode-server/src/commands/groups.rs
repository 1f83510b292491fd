//! `lodestone group …` (device groups and their members) and `lodestone tag search`
//! (products, devices and groups by tag), over the management API.

use anyhow::bail;
use clap::Subcommand;
use lode_api::signing::encode_query;
use serde_json::{Value, json};

use super::{call, json_arg};
use crate::client::ApiClient;

/// The group and tag commands, flattened into the top-level command list.
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Device groups: create, list, get, update, delete, add-devices, remove-devices,
    /// devices.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Tags: search products, devices and groups by tag.
    #[command(subcommand)]
    Tag(TagCommand),
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group, or with --parent a subgroup (3 levels at most).
    Create {
        /// 4 to 30 characters: letters, digits, _
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The parent group's id
        #[arg(long)]
        parent: Option<String>,
        /// Tags, a JSON object (`{"site":"berlin"}`)
        #[arg(long)]
        tags: Option<String>,
    },
    /// List top-level groups, the subgroups of --parent, or every group with --all.
    List {
        #[arg(long, conflicts_with = "all")]
        parent: Option<String>,
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 50)]
        page_size: u32,
    },
    /// Show a group.
    Get { id: String },
    /// Rename a group or change its description.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a group without subgroups (its devices only leave it).
    Delete { id: String },
    /// Add devices (`productKey/deviceName`, separated by commas) to a group.
    AddDevices {
        id: String,
        #[arg(long, value_delimiter = ',', required = true)]
        devices: Vec<String>,
    },
    /// Remove devices (`productKey/deviceName`, separated by commas) from a group.
    RemoveDevices {
        id: String,
        #[arg(long, value_delimiter = ',', required = true)]
        devices: Vec<String>,
    },
    /// List the devices directly in a group.
    Devices {
        id: String,
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 50)]
        page_size: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum TagCommand {
    /// Products, devices and groups carrying a tag.
    Search {
        /// `key` or `key=value`
        tag: String,
        /// Only these kinds, separated by commas: product, device, group
        #[arg(long)]
        types: Option<String>,
    },
}

/// Columns of a group table.
const GROUP_COLS: &[&str] = &[
    "groupId",
    "groupName",
    "depth",
    "parentId",
    "deviceCount",
    "subgroupCount",
];

/// Columns of a per-device outcome table.
const MEMBER_COLS: &[&str] = &["productKey", "deviceName", "changed", "code", "message"];

/// `productKey/deviceName` arguments as the API's device list.
fn device_list(devices: &[String]) -> anyhow::Result<Value> {
    let mut out = Vec::with_capacity(devices.len());
    for d in devices {
        match d.split_once('/') {
            Some((pk, dn)) if !pk.is_empty() && !dn.is_empty() => {
                out.push(json!({"productKey": pk, "deviceName": dn}));
            }
            _ => bail!("{d:?} is not productKey/deviceName"),
        }
    }
    Ok(Value::Array(out))
}

/// Runs one group or tag command; its result and the columns to print.
pub(super) async fn run(
    api: &ApiClient,
    c: GroupsCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    match c {
        GroupsCommand::Group(c) => group(api, c).await,
        GroupsCommand::Tag(TagCommand::Search { tag, types }) => {
            let mut pairs = vec![("tag", tag)];
            if let Some(t) = types {
                pairs.push(("types", t));
            }
            let url = format!("/api/v1/tags/search?{}", encode_query(&pairs));
            let found = call(api, "GET", &url, None).await?;
            Ok((tag_rows(&found), &["kind", "id", "name", "tags"]))
        }
    }
}

/// One table of everything a tag search found: kind, id and name of each object.
fn tag_rows(found: &Value) -> Value {
    let mut items = Vec::new();
    let list = |key: &str| {
        found
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for p in list("products") {
        items.push(
            json!({"kind": "product", "id": p["productKey"], "name": p["name"], "tags": p["tags"]}),
        );
    }
    for d in list("devices") {
        let id = format!(
            "{}/{}",
            d["productKey"].as_str().unwrap_or_default(),
            d["deviceName"].as_str().unwrap_or_default()
        );
        items.push(json!({"kind": "device", "id": id, "name": d["nickname"], "tags": d["tags"]}));
    }
    for g in list("groups") {
        items.push(
            json!({"kind": "group", "id": g["groupId"], "name": g["groupName"], "tags": g["tags"]}),
        );
    }
    json!({"items": items})
}

async fn group(
    api: &ApiClient,
    c: GroupCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    let path = |id: &str| format!("/api/v1/groups/{id}");
    Ok(match c {
        GroupCommand::Create {
            name,
            description,
            parent,
            tags,
        } => {
            let mut body = json!({"groupName": name, "description": description});
            if let Some(p) = parent {
                body["parentId"] = Value::String(p);
            }
            if let Some(t) = tags {
                body["tags"] = json_arg("tags", &t)?;
            }
            (
                call(api, "POST", "/api/v1/groups", Some(body)).await?,
                GROUP_COLS,
            )
        }
        GroupCommand::List {
            parent,
            all,
            page,
            page_size,
        } => {
            let mut pairs = vec![
                ("pageNo", page.to_string()),
                ("pageSize", page_size.to_string()),
            ];
            if let Some(p) = parent {
                pairs.push(("parentId", p));
            }
            if all {
                pairs.push(("all", "true".to_owned()));
            }
            let url = format!("/api/v1/groups?{}", encode_query(&pairs));
            (call(api, "GET", &url, None).await?, GROUP_COLS)
        }
        GroupCommand::Get { id } => (call(api, "GET", &path(&id), None).await?, GROUP_COLS),
        GroupCommand::Update {
            id,
            name,
            description,
        } => {
            if name.is_none() && description.is_none() {
                bail!("give --name or --description");
            }
            let body = json!({"groupName": name, "description": description});
            (
                call(api, "PATCH", &path(&id), Some(body)).await?,
                GROUP_COLS,
            )
        }
        GroupCommand::Delete { id } => (call(api, "DELETE", &path(&id), None).await?, &[]),
        GroupCommand::AddDevices { id, devices } => {
            let body = json!({"devices": device_list(&devices)?});
            let url = format!("{}/devices", path(&id));
            (call(api, "POST", &url, Some(body)).await?, MEMBER_COLS)
        }
        GroupCommand::RemoveDevices { id, devices } => {
            let body = json!({"devices": device_list(&devices)?});
            let url = format!("{}/devices/remove", path(&id));
            (call(api, "POST", &url, Some(body)).await?, MEMBER_COLS)
        }
        GroupCommand::Devices {
            id,
            page,
            page_size,
        } => {
            let url = format!(
                "{}/devices?{}",
                path(&id),
                encode_query(&[
                    ("pageNo", page.to_string()),
                    ("pageSize", page_size.to_string())
                ])
            );
            (
                call(api, "GET", &url, None).await?,
                &["productKey", "deviceName", "state", "iotId"],
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_arguments_need_both_names() {
        let list = device_list(&["a1/d1".to_owned(), "a1/d/2".to_owned()]).expect("valid");
        assert_eq!(
            list,
            json!([{"productKey": "a1", "deviceName": "d1"},
                   {"productKey": "a1", "deviceName": "d/2"}])
        );
        assert!(device_list(&["nodevice".to_owned()]).is_err());
        assert!(device_list(&["/d1".to_owned()]).is_err());
    }

    #[test]
    fn tag_search_results_make_one_table() {
        let found = json!({
            "products": [{"productKey": "a1", "name": "lamp", "tags": {"site": "x"}}],
            "devices": [{"productKey": "a1", "deviceName": "d1", "nickname": null, "tags": {"site": "x"}}],
            "deviceTotal": 1,
            "groups": [{"groupId": "g1", "groupName": "floor", "tags": {"site": "x"}}],
        });
        let rows = tag_rows(&found);
        let kinds: Vec<&str> = rows["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|r| r["kind"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(kinds, ["product", "device", "group"]);
        assert_eq!(rows["items"][1]["id"], "a1/d1");
    }
}
