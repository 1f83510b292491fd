//! `lodestone gateway topo-get|topo-add|topo-delete|gateway-of`: a gateway's topology over
//! the management API.

use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};

use super::call;
use crate::client::ApiClient;

/// Gateway commands.
#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// List the sub-devices of a gateway.
    TopoGet {
        product_key: String,
        device_name: String,
    },
    /// Add sub-devices (`productKey/deviceName`, separated by commas) to a gateway.
    TopoAdd {
        product_key: String,
        device_name: String,
        #[arg(long, value_delimiter = ',', required = true)]
        sub_devices: Vec<String>,
    },
    /// Remove sub-devices (`productKey/deviceName`, separated by commas) from a gateway.
    TopoDelete {
        product_key: String,
        device_name: String,
        #[arg(long, value_delimiter = ',', required = true)]
        sub_devices: Vec<String>,
    },
    /// Show the gateway of a sub-device.
    GatewayOf {
        product_key: String,
        device_name: String,
    },
}

const COLS: &[&str] = &[
    "productKey",
    "deviceName",
    "gatewayProductKey",
    "gatewayDeviceName",
    "gmtCreate",
];

fn sub_devices(names: &[String]) -> anyhow::Result<Value> {
    let list = names
        .iter()
        .map(|n| {
            let (pk, dn) = n
                .split_once('/')
                .with_context(|| format!("{n:?} is not productKey/deviceName"))?;
            Ok(json!({"productKey": pk, "deviceName": dn}))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(json!({ "subDevices": list }))
}

/// Runs one gateway command.
pub(super) async fn run(
    api: &ApiClient,
    c: GatewayCommand,
) -> anyhow::Result<(Value, &'static [&'static str])> {
    let path = |pk: &str, dn: &str| format!("/api/v1/products/{pk}/devices/{dn}");
    Ok(match c {
        GatewayCommand::TopoGet {
            product_key,
            device_name,
        } => (
            call(
                api,
                "GET",
                &format!("{}/topology", path(&product_key, &device_name)),
                None,
            )
            .await?,
            COLS,
        ),
        GatewayCommand::TopoAdd {
            product_key,
            device_name,
            sub_devices: names,
        } => (
            call(
                api,
                "POST",
                &format!("{}/topology", path(&product_key, &device_name)),
                Some(sub_devices(&names)?),
            )
            .await?,
            COLS,
        ),
        GatewayCommand::TopoDelete {
            product_key,
            device_name,
            sub_devices: names,
        } => (
            call(
                api,
                "POST",
                &format!("{}/topology/delete", path(&product_key, &device_name)),
                Some(sub_devices(&names)?),
            )
            .await?,
            COLS,
        ),
        GatewayCommand::GatewayOf {
            product_key,
            device_name,
        } => (
            call(
                api,
                "GET",
                &format!("{}/gateway", path(&product_key, &device_name)),
                None,
            )
            .await?,
            COLS,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_device_lists() {
        let v = sub_devices(&["pk1/dev1".into(), "pk2/dev2".into()]).expect("valid");
        assert_eq!(v["subDevices"][1]["deviceName"], "dev2");
        assert!(sub_devices(&["nodelimiter".into()]).is_err());
    }
}
