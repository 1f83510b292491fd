//! Conformance of [`crate::RegistryStore::ota`].

use chrono::Utc;

use super::{Harness, account_and_product, code, ok, run, small_limits};
use crate::{JobDeviceRecord, NewFirmware, NewOtaJob};

fn firmware(pk: &str, version: &str) -> NewFirmware {
    NewFirmware {
        product_key: pk.to_owned(),
        module: "default".to_owned(),
        version: version.to_owned(),
        size: 1234,
        md5: "0".repeat(32),
        sha256: "1".repeat(64),
        signature: Some("sig".to_owned()),
        sign_method: Some("RSA".to_owned()),
        description: Some("first".to_owned()),
    }
}

fn device_row(job: &str, dn: &str, status: &str, attempts: u32) -> JobDeviceRecord {
    JobDeviceRecord {
        job_id: job.to_owned(),
        product_key: "pk".to_owned(),
        device_name: dn.to_owned(),
        status: status.to_owned(),
        attempts,
        step: None,
        detail: None,
        pushed_at: None,
        updated_at: crate::backend::now(),
    }
}

pub async fn ota_firmware_and_jobs(h: impl Harness) {
    run(h, small_limits(), |s| async move {
        let (acc, pk) = account_and_product(&s).await;
        let ota = s.ota();

        // Firmware: create, duplicate version refused, get, list, delete.
        let fw = ok(ota.create_firmware(&acc, firmware(&pk, "2.0.0")).await);
        assert!(fw.id.starts_with('f'));
        assert_eq!(fw.size, 1234);
        assert_eq!(fw.signature.as_deref(), Some("sig"));
        assert_eq!(
            code(ota.create_firmware(&acc, firmware(&pk, "2.0.0")).await),
            "InvalidParameter"
        );
        let other = ok(ota.create_firmware(&acc, firmware(&pk, "3.0.0")).await);
        assert_eq!(ok(ota.get_firmware(&fw.id).await), Some(fw.clone()));
        assert_eq!(ok(ota.get_firmware("fnope").await), None);
        assert_eq!(ok(ota.list_firmware(&acc, None).await).len(), 2);
        assert_eq!(ok(ota.list_firmware(&acc, Some(&pk)).await).len(), 2);
        assert!(ok(ota.list_firmware(&acc, Some("other")).await).is_empty());
        assert!(ok(ota.delete_firmware(&other.id).await));
        assert!(!ok(ota.delete_firmware(&other.id).await));

        // Module versions: the last report wins, per module.
        ok(ota
            .report_module_version(&pk, "d1", "default", "1.0.0")
            .await);
        ok(ota
            .report_module_version(&pk, "d1", "default", "1.1.0")
            .await);
        ok(ota.report_module_version(&pk, "d1", "mcu", "0.1").await);
        ok(ota
            .report_module_version(&pk, "d2", "default", "1.0.0")
            .await);
        let d1 = ok(ota.module_versions(&pk, "d1").await);
        assert_eq!(
            d1.iter()
                .map(|m| (m.module.as_str(), m.version.as_str()))
                .collect::<Vec<_>>(),
            [("default", "1.1.0"), ("mcu", "0.1")]
        );
        let at = ok(ota
            .devices_at_versions(&pk, "default", &["1.0.0".to_owned(), "1.1.0".to_owned()])
            .await);
        assert_eq!(
            at.iter()
                .map(|m| m.device_name.as_str())
                .collect::<Vec<_>>(),
            ["d1", "d2"]
        );
        assert!(
            ok(ota
                .devices_at_versions(&pk, "mcu", &["1.0.0".to_owned()])
                .await)
            .is_empty()
        );

        // Jobs: create, unknown firmware refused, states, listing.
        let job = ok(ota
            .create_job(
                &acc,
                NewOtaJob {
                    firmware_id: fw.id.clone(),
                    product_key: pk.clone(),
                    settings: "{\"k\":1}".to_owned(),
                    state: "running".to_owned(),
                },
            )
            .await);
        assert!(job.id.starts_with('j'));
        assert_eq!(job.reason, None);
        assert_eq!(
            code(
                ota.create_job(
                    &acc,
                    NewOtaJob {
                        firmware_id: "fmissing".to_owned(),
                        product_key: pk.clone(),
                        settings: "{}".to_owned(),
                        state: "running".to_owned(),
                    },
                )
                .await
            ),
            "InvalidParameter"
        );
        assert_eq!(ok(ota.get_job(&job.id).await), Some(job.clone()));
        assert_eq!(ok(ota.list_jobs(&acc).await).len(), 1);
        assert_eq!(
            ok(ota.jobs_in_states(&["running", "scheduled"]).await).len(),
            1
        );
        // A firmware used by a job is not deleted.
        assert_eq!(code(ota.delete_firmware(&fw.id).await), "InvalidParameter");

        // Device rows: insert, replace, list in order.
        ok(ota
            .put_job_devices(&[
                device_row(&job.id, "d2", "queued", 0),
                device_row(&job.id, "d1", "queued", 0),
            ])
            .await);
        let mut pushed = device_row(&job.id, "d1", "in_progress", 1);
        pushed.step = Some(-3);
        pushed.detail = Some("bad digest".to_owned());
        pushed.pushed_at = Some(crate::backend::now());
        ok(ota.put_job_devices(std::slice::from_ref(&pushed)).await);
        // An older row does not replace a newer one.
        let mut stale = device_row(&job.id, "d1", "queued", 0);
        stale.updated_at = pushed.updated_at - chrono::Duration::hours(1);
        ok(ota.put_job_devices(&[stale]).await);
        let rows = ok(ota.list_job_devices(&job.id).await);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], pushed);
        assert_eq!(rows[1].status, "queued");
        assert_eq!(
            code(
                ota.put_job_devices(&[device_row("jmissing", "d1", "queued", 0)])
                    .await
            ),
            "InvalidParameter"
        );

        let done = ok(ota
            .set_job_state(&job.id, "canceled", Some("by the user"))
            .await)
        .expect("job exists");
        assert_eq!(done.state, "canceled");
        assert_eq!(done.reason.as_deref(), Some("by the user"));
        assert!(done.updated_at <= Utc::now());
        assert!(ok(ota.jobs_in_states(&["running"]).await).is_empty());
        assert_eq!(ok(ota.set_job_state("jmissing", "x", None).await), None);
    })
    .await;
}
