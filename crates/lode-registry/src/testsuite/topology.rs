//! Conformance of [`crate::RegistryStore::topology`].

use super::{Harness, code, ok, run, small_limits};
use crate::{NewDevice, NewProduct, NodeType};

fn pair(pk: &str, dn: &str) -> (String, String) {
    (pk.to_owned(), dn.to_owned())
}

pub async fn gateway_topology(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let acc = ok(s.create_account("acme").await);
        let gw_product = ok(s
            .create_product(
                &acc.id,
                NewProduct {
                    node_type: NodeType::Gateway,
                    ..NewProduct::new("hub")
                },
            )
            .await);
        let sub_product = ok(s
            .create_product(
                &acc.id,
                NewProduct {
                    node_type: NodeType::SubDevice,
                    ..NewProduct::new("sensor")
                },
            )
            .await);
        let direct = ok(s.create_product(&acc.id, NewProduct::new("lamp")).await);
        let (gpk, spk) = (
            gw_product.product_key.as_str(),
            sub_product.product_key.as_str(),
        );
        for dn in ["gate1", "gate2"] {
            ok(s.create_device(gpk, NewDevice::new(dn.to_owned())).await);
        }
        for dn in ["sens1", "sens2", "sens3", "sens4"] {
            ok(s.create_device(spk, NewDevice::new(dn.to_owned())).await);
        }
        ok(
            s.create_device(&direct.product_key, NewDevice::new("lamp1".to_owned()))
                .await,
        );
        let t = s.topology();

        // Adding: links come back, twice is harmless, both lookups see them.
        let links = ok(t
            .add_sub_devices((gpk, "gate1"), &[pair(spk, "sens1"), pair(spk, "sens2")], 3)
            .await);
        assert_eq!(links.len(), 2);
        assert!(links.iter().all(|l| l.gateway_device_name == "gate1"));
        assert_eq!(links[0].device_name, "sens1");
        let again = ok(t
            .add_sub_devices((gpk, "gate1"), &[pair(spk, "sens1")], 3)
            .await);
        assert_eq!(again.len(), 1);
        let listed = ok(t.list_sub_devices((gpk, "gate1")).await);
        let names: Vec<_> = listed.iter().map(|l| l.device_name.as_str()).collect();
        assert_eq!(names, ["sens1", "sens2"]);
        let gw = ok(t.get_gateway((spk, "sens2")).await).expect("s2 has a gateway");
        assert_eq!(
            (
                gw.gateway_product_key.as_str(),
                gw.gateway_device_name.as_str()
            ),
            (gpk, "gate1")
        );
        assert!(ok(t.get_gateway((spk, "sens3")).await).is_none());
        assert!(ok(t.list_sub_devices((gpk, "gate2")).await).is_empty());

        // A sub-device belongs to one gateway only.
        assert_eq!(
            code(
                t.add_sub_devices((gpk, "gate2"), &[pair(spk, "sens1")], 3)
                    .await
            ),
            "SubDeviceHasGateway"
        );
        // Node types: the gateway must be one, the sub-devices too.
        assert_eq!(
            code(
                t.add_sub_devices((spk, "sens3"), &[pair(spk, "sens4")], 3)
                    .await
            ),
            "InvalidParameter"
        );
        assert_eq!(
            code(
                t.add_sub_devices((gpk, "gate1"), &[pair(&direct.product_key, "lamp1")], 3)
                    .await
            ),
            "InvalidParameter"
        );
        assert_eq!(
            code(
                t.add_sub_devices((gpk, "gate1"), &[pair(spk, "nope1")], 3)
                    .await
            ),
            "DeviceNotFound"
        );
        assert_eq!(
            code(
                t.add_sub_devices((gpk, "nope1"), &[pair(spk, "sens3")], 3)
                    .await
            ),
            "DeviceNotFound"
        );

        // The limit counts what the gateway already holds; a failed call adds nothing.
        assert_eq!(
            code(
                t.add_sub_devices((gpk, "gate1"), &[pair(spk, "sens3"), pair(spk, "sens4")], 3)
                    .await
            ),
            "QuotaExceeded.SubDevicesPerGateway"
        );
        assert!(ok(t.get_gateway((spk, "sens3")).await).is_none());
        ok(t.add_sub_devices((gpk, "gate1"), &[pair(spk, "sens3")], 3)
            .await);
        // Re-adding one already there does not count against the limit.
        ok(
            t.add_sub_devices((gpk, "gate1"), &[pair(spk, "sens3"), pair(spk, "sens1")], 3)
                .await,
        );

        // Removing: only links of that gateway, unknown ones ignored.
        let removed = ok(t
            .remove_sub_devices((gpk, "gate2"), &[pair(spk, "sens1")])
            .await);
        assert!(removed.is_empty());
        let removed = ok(t
            .remove_sub_devices((gpk, "gate1"), &[pair(spk, "sens1"), pair(spk, "sens4")])
            .await);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].device_name, "sens1");
        assert!(ok(t.get_gateway((spk, "sens1")).await).is_none());
        assert_eq!(
            code(
                t.remove_sub_devices((gpk, "nope1"), &[pair(spk, "sens1")])
                    .await
            ),
            "DeviceNotFound"
        );
        // Now free, s1 may move to the other gateway.
        ok(t.add_sub_devices((gpk, "gate2"), &[pair(spk, "sens1")], 3)
            .await);

        // Deleting a device removes its links, either side.
        ok(s.delete_device(spk, "sens2").await);
        let names: Vec<_> = ok(t.list_sub_devices((gpk, "gate1")).await)
            .into_iter()
            .map(|l| l.device_name)
            .collect();
        assert_eq!(names, ["sens3"]);
        ok(s.delete_device(gpk, "gate2").await);
        assert!(ok(t.get_gateway((spk, "sens1")).await).is_none());
    })
    .await;
}
