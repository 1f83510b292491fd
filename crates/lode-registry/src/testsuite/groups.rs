//! Conformance of [`crate::RegistryStore::groups`]: groups and subgroups, their limits,
//! memberships in batches, tags and tag search, and what deleting a device or a group
//! does to memberships.

use std::sync::Arc;

use super::{Harness, code, ok, run, small_limits};
use crate::{
    DeviceKeyRef, GroupListing, GroupUpdate, NewDevice, NewGroup, NewProduct, PageRequest,
    RegistryLimits, RegistryStore, Tags,
};

fn group(name: &str) -> NewGroup {
    NewGroup {
        name: name.to_owned(),
        ..NewGroup::default()
    }
}

fn sub(name: &str, parent: &str) -> NewGroup {
    NewGroup {
        name: name.to_owned(),
        parent_id: Some(parent.to_owned()),
        ..NewGroup::default()
    }
}

fn keys(pk: &str, names: &[&str]) -> Vec<DeviceKeyRef> {
    names.iter().map(|n| DeviceKeyRef::new(pk, *n)).collect()
}

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An account with one product and devices `d0`..`d{n-1}`.
async fn fleet(s: &Arc<dyn RegistryStore>, n: usize) -> (String, String) {
    let acc = ok(s.create_account("acme").await).id;
    let pk = ok(s.create_product(&acc, NewProduct::new("lamp")).await).product_key;
    for i in 0..n {
        ok(s.create_device(&pk, NewDevice::new(format!("dev{i}")))
            .await);
    }
    (acc, pk)
}

/// The outcome of each device of a batch: `changed`, `unchanged` or the error code.
fn outcomes(items: &[crate::MembershipItem]) -> Vec<&'static str> {
    items
        .iter()
        .map(|i| match &i.result {
            Ok(true) => "changed",
            Ok(false) => "unchanged",
            Err(e) => e.code(),
        })
        .collect()
}

pub async fn groups_and_tags(h: impl Harness) {
    let limits = RegistryLimits {
        devices_per_product: 10,
        devices_per_account: 10,
        ..small_limits()
    };
    run(h, limits, |s| async move {
        let (acc, pk) = fleet(&s, 6).await;
        let g = s.groups();

        // --- create, validate, nest
        let root = ok(g
            .create_group(
                &acc,
                NewGroup {
                    name: "floor_1".into(),
                    description: "first floor".into(),
                    parent_id: None,
                    tags: tags(&[("site", "berlin")]),
                },
            )
            .await);
        assert_eq!(root.depth, 1);
        assert_eq!(root.parent_id, None);
        assert_eq!(root.tags, tags(&[("site", "berlin")]));
        assert_eq!(ok(g.get_group(&root.id).await), Some(root.clone()));
        assert_eq!(
            code(g.create_group(&acc, group("floor_1")).await),
            "GroupAlreadyExists"
        );
        assert_eq!(
            code(g.create_group(&acc, group("ab")).await),
            "InvalidParameter"
        );
        assert_eq!(
            code(g.create_group(&acc, group("has space")).await),
            "InvalidParameter"
        );
        assert!(ok(g.create_group(&acc, group("楼层一")).await).depth == 1);
        assert_eq!(
            code(g.create_group(&acc, sub("orphan", "gNoSuchGroup")).await),
            "GroupNotFound"
        );
        let room = ok(g.create_group(&acc, sub("room_11", &root.id)).await);
        assert_eq!(
            (room.depth, room.parent_id.as_deref()),
            (2, Some(root.id.as_str()))
        );
        let desk = ok(g.create_group(&acc, sub("desk_111", &room.id)).await);
        assert_eq!(desk.depth, 3);
        assert_eq!(
            code(g.create_group(&acc, sub("drawer", &desk.id)).await),
            "QuotaExceeded.GroupDepth"
        );
        // Another account cannot nest under this account's group.
        let other = ok(s.create_account("other").await).id;
        assert_eq!(
            code(g.create_group(&other, sub("intruder", &root.id)).await),
            "GroupNotFound"
        );

        // --- groups per account (5, subgroups included): 4 so far
        ok(g.create_group(&acc, group("spare")).await);
        assert_eq!(
            code(g.create_group(&acc, group("one_too_many")).await),
            "QuotaExceeded.GroupsPerAccount"
        );

        // --- listings
        let all = ok(g
            .list_groups(&acc, GroupListing::All, PageRequest::first(10))
            .await);
        assert_eq!(all.total, 5);
        let top = ok(g
            .list_groups(&acc, GroupListing::TopLevel, PageRequest::first(10))
            .await);
        let names: Vec<&str> = top.items.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["floor_1", "spare", "楼层一"]);
        let subs = ok(g
            .list_groups(
                &acc,
                GroupListing::SubgroupsOf(root.id.clone()),
                PageRequest::first(10),
            )
            .await);
        assert_eq!(subs.items.len(), 1);
        assert_eq!(subs.items[0].id, room.id);
        let first = ok(g
            .list_groups(&acc, GroupListing::All, PageRequest::first(2))
            .await);
        let cursor = first.next_cursor.clone().expect("more groups");
        let rest = ok(g
            .list_groups(
                &acc,
                GroupListing::All,
                PageRequest::After {
                    cursor: Some(cursor),
                    page_size: 10,
                },
            )
            .await);
        assert_eq!(first.items.len() + rest.items.len(), 5);
        assert!(rest.next_cursor.is_none());
        assert!(
            ok(
                g.list_groups(&other, GroupListing::All, PageRequest::first(10))
                    .await
            )
            .items
            .is_empty()
        );
        assert_eq!(
            code(
                g.list_groups(
                    &other,
                    GroupListing::SubgroupsOf(root.id.clone()),
                    PageRequest::first(10)
                )
                .await
            ),
            "GroupNotFound"
        );

        // --- update
        let renamed = ok(g
            .update_group(
                &room.id,
                GroupUpdate {
                    name: Some("room_12".into()),
                    description: None,
                },
            )
            .await);
        assert_eq!(renamed.name, "room_12");
        assert_eq!(renamed.parent_id.as_deref(), Some(root.id.as_str()));
        assert_eq!(
            code(
                g.update_group(
                    &room.id,
                    GroupUpdate {
                        name: Some("spare".into()),
                        description: None
                    }
                )
                .await
            ),
            "GroupAlreadyExists"
        );
        assert_eq!(
            code(g.update_group("gNoSuchGroup", GroupUpdate::default()).await),
            "GroupNotFound"
        );

        // --- memberships: per-device outcomes and the limits
        // devices_per_group 4, groups_per_device 3, group_batch_max 10
        let items = ok(g
            .add_devices(&root.id, keys(&pk, &["dev0", "dev1", "nope", "dev0"]))
            .await);
        assert_eq!(
            outcomes(&items),
            ["changed", "changed", "DeviceNotFound", "unchanged"]
        );
        let items = ok(g
            .add_devices(&root.id, keys(&pk, &["dev2", "dev3", "dev4"]))
            .await);
        assert_eq!(
            outcomes(&items),
            ["changed", "changed", "QuotaExceeded.DevicesPerGroup"]
        );
        assert_eq!(
            ok(g.get_group(&root.id).await).expect("group").device_count,
            4
        );
        let eleven = keys(&pk, &["dev0"; 11]);
        assert_eq!(code(g.add_devices(&root.id, eleven).await), "BatchTooLarge");
        assert_eq!(
            code(g.add_devices("gNoSuchGroup", keys(&pk, &["dev0"])).await),
            "GroupNotFound"
        );
        // Another account's devices are not found.
        let other_pk = ok(s.create_product(&other, NewProduct::new("fan")).await).product_key;
        ok(s.create_device(&other_pk, NewDevice::new("xdev0")).await);
        let items = ok(g.add_devices(&root.id, keys(&other_pk, &["xdev0"])).await);
        assert_eq!(outcomes(&items), ["DeviceNotFound"]);

        ok(g.add_devices(&room.id, keys(&pk, &["dev0", "dev5"])).await);
        ok(g.add_devices(&desk.id, keys(&pk, &["dev0", "dev5"])).await);
        let spare = ok(g
            .list_groups(&acc, GroupListing::TopLevel, PageRequest::first(10))
            .await)
        .items
        .into_iter()
        .find(|g| g.name == "spare")
        .expect("spare");
        let items = ok(g.add_devices(&spare.id, keys(&pk, &["dev0", "dev5"])).await);
        assert_eq!(
            outcomes(&items),
            ["QuotaExceeded.GroupsPerDevice", "changed"]
        );

        // --- a device's groups, a group's devices (paged)
        let of_d0: Vec<String> = ok(g.device_groups(&pk, "dev0").await)
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(of_d0, ["desk_111", "floor_1", "room_12"]);
        assert_eq!(code(g.device_groups(&pk, "nope").await), "DeviceNotFound");
        let page = ok(g.list_group_devices(&root.id, PageRequest::first(3)).await);
        assert_eq!(page.total, 4);
        let names: Vec<&str> = page.items.iter().map(|d| d.device_name.as_str()).collect();
        assert_eq!(names, ["dev0", "dev1", "dev2"]);
        let rest = ok(g
            .list_group_devices(
                &root.id,
                PageRequest::After {
                    cursor: page.next_cursor.clone(),
                    page_size: 3,
                },
            )
            .await);
        assert_eq!(rest.items.len(), 1);
        assert_eq!(rest.items[0].device_name, "dev3");

        // --- every device of a group, with or without its subgroups
        let direct = ok(g.group_device_keys(&root.id, false).await);
        assert_eq!(direct, keys(&pk, &["dev0", "dev1", "dev2", "dev3"]));
        let deep = ok(g.group_device_keys(&root.id, true).await);
        assert_eq!(deep, keys(&pk, &["dev0", "dev1", "dev2", "dev3", "dev5"]));
        assert_eq!(
            ok(g.group_device_keys(&desk.id, true).await),
            keys(&pk, &["dev0", "dev5"])
        );
        assert_eq!(
            code(g.group_device_keys("gNoSuchGroup", true).await),
            "GroupNotFound"
        );

        // --- removal reports per device
        let items = ok(g
            .remove_devices(&root.id, keys(&pk, &["dev1", "dev5", "nope"]))
            .await);
        assert_eq!(outcomes(&items), ["changed", "unchanged", "DeviceNotFound"]);
        assert_eq!(
            ok(g.get_group(&root.id).await).expect("group").device_count,
            3
        );

        // --- deleting a device removes its memberships
        ok(s.delete_device(&pk, "dev0").await);
        assert_eq!(
            ok(g.group_device_keys(&root.id, true).await),
            keys(&pk, &["dev2", "dev3", "dev5"])
        );
        assert_eq!(
            ok(g.get_group(&desk.id).await).expect("group").device_count,
            1
        );

        // --- tags on groups, limit 3, and search
        assert_eq!(
            ok(
                g.set_group_tags(&room.id, tags(&[("site", "berlin"), ("kind", "room")]))
                    .await
            ),
            tags(&[("kind", "room"), ("site", "berlin")])
        );
        assert_eq!(
            code(
                g.set_group_tags(&room.id, tags(&[("a", "1"), ("b", "2")]))
                    .await
            ),
            "TooManyTags"
        );
        assert_eq!(
            code(g.set_group_tags(&room.id, tags(&[("bad key", "1")])).await),
            "InvalidTag"
        );
        assert_eq!(
            ok(
                g.remove_group_tags(&room.id, vec!["kind".into(), "missing".into()])
                    .await
            ),
            tags(&[("site", "berlin")])
        );
        assert_eq!(
            code(g.set_group_tags("gNoSuchGroup", tags(&[("a", "1")])).await),
            "GroupNotFound"
        );
        let berlin: Vec<String> = ok(g.find_groups_by_tag(&acc, "site", Some("berlin")).await)
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(berlin, ["floor_1", "room_12"]);
        assert_eq!(ok(g.find_groups_by_tag(&acc, "site", None).await).len(), 2);
        assert!(ok(g.find_groups_by_tag(&acc, "site", Some("paris")).await).is_empty());
        assert!(ok(g.find_groups_by_tag(&other, "site", None).await).is_empty());

        // --- deletion: not while subgroups exist; memberships go, devices stay
        assert_eq!(code(g.delete_group(&root.id).await), "GroupHasSubgroups");
        ok(g.delete_group(&desk.id).await);
        ok(g.delete_group(&room.id).await);
        ok(g.delete_group(&root.id).await);
        assert_eq!(ok(g.get_group(&root.id).await), None);
        assert_eq!(code(g.delete_group(&root.id).await), "GroupNotFound");
        assert!(ok(s.get_device(&pk, "dev2").await).is_some());
        let of_d5: Vec<String> = ok(g.device_groups(&pk, "dev5").await)
            .into_iter()
            .map(|g| g.name)
            .collect();
        assert_eq!(of_d5, ["spare"]);
        // The three freed places count again (2 groups are left).
        ok(g.create_group(&acc, group("floor_2")).await);
        ok(g.create_group(&acc, group("floor_3")).await);
        ok(g.create_group(&acc, group("floor_4")).await);
        assert_eq!(
            code(g.create_group(&acc, group("floor_5")).await),
            "QuotaExceeded.GroupsPerAccount"
        );

        // --- concurrent batches cannot overshoot the group's capacity (4)
        let conc = ok(g.create_group(&other, group("concurrent")).await);
        for i in 1..8 {
            ok(
                s.create_device(&other_pk, NewDevice::new(format!("xdev{i}")))
                    .await,
            );
        }
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                let (id, pk) = (conc.id.clone(), other_pk.clone());
                tokio::spawn(async move {
                    s.groups()
                        .add_devices(&id, vec![DeviceKeyRef::new(pk, format!("xdev{i}"))])
                        .await
                })
            })
            .collect();
        let mut added = 0;
        for t in tasks {
            let items = ok(t.await.expect("task"));
            if matches!(items[0].result, Ok(true)) {
                added += 1;
            } else {
                assert_eq!(outcomes(&items), ["QuotaExceeded.DevicesPerGroup"]);
            }
        }
        assert_eq!(added, 4);
        assert_eq!(
            ok(g.get_group(&conc.id).await).expect("group").device_count,
            4
        );
    })
    .await;
}
