//! OTA end to end over real sockets: devices signed in over MQTT report versions, jobs push
//! upgrades, devices download over HTTP (resuming with Range), report progress and the new
//! version; failures, timeouts, retries, cancellation, the automatic stop, dynamic and
//! group-restricted jobs, rollout pacing, a restart, and the `lodestone ota` CLI.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use lode_server::client::{ApiClient, Connection, Response};
use lode_server::{Server, ServerConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::{MqttDevice, get};

const KEY_ID: &str = "LTAItestadmin0ota1";
const KEY_SECRET: &str = "test-admin-secret-ota-0123456789ab";

/// A server in this runtime, or run as a `lodestone serve` process.
struct OtaServer {
    /// Servers run as a `lodestone serve` process.
    child: Option<std::process::Child>,
    mqtt: SocketAddr,
    http: SocketAddr,
    api: ApiClient,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// Group members from a fixed table.
fn config() -> ServerConfig {
    let mut config = ServerConfig::local_ephemeral();
    config.allow_anonymous = false;
    config.admin_key = Some((KEY_ID.to_owned(), KEY_SECRET.to_owned()));
    config
}

impl OtaServer {
    async fn start(config: ServerConfig) -> OtaServer {
        let server = Server::bind(config).await.expect("bind");
        let (mqtt, http) = (server.mqtt_addr(), server.http_addr());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        for _ in 0..200 {
            if get(http, "/readyz").await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let api = ApiClient::from_connection(&Connection {
            url: Some(format!("http://{http}")),
            access_key_id: Some(KEY_ID.to_owned()),
            access_key_secret: Some(KEY_SECRET.to_owned()),
            profile: None,
            json: true,
        })
        .expect("client");
        OtaServer {
            child: None,
            mqtt,
            http,
            api,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `lodestone serve` on `data_dir`, at fixed loopback ports (a restart keeps them).
    async fn spawn(data_dir: &std::path::Path, mqtt: SocketAddr, http: SocketAddr) -> OtaServer {
        let child = Command::new(env!("CARGO_BIN_EXE_lodestone"))
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args([
                "--mqtt-addr",
                &mqtt.to_string(),
                "--http-addr",
                &http.to_string(),
            ])
            .args(["--ws-addr", "127.0.0.1:0", "--coap-addr", "127.0.0.1:0"])
            .args([
                "--coap-psk-addr",
                "127.0.0.1:0",
                "--coap-dtls-addr",
                "127.0.0.1:0",
            ])
            .env("LODESTONE_ADMIN_ACCESS_KEY_ID", KEY_ID)
            .env("LODESTONE_ADMIN_ACCESS_KEY_SECRET", KEY_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("lodestone serve starts");
        let api = ApiClient::from_connection(&Connection {
            url: Some(format!("http://{http}")),
            access_key_id: Some(KEY_ID.to_owned()),
            access_key_secret: Some(KEY_SECRET.to_owned()),
            profile: None,
            json: true,
        })
        .expect("client");
        for _ in 0..500 {
            if matches!(api.call("GET", "/api/v1/ota/jobs", None).await, Ok(r) if r.status == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        OtaServer {
            child: Some(child),
            mqtt,
            http,
            api,
            stop: None,
            task: None,
        }
    }

    async fn shutdown(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("shutdown in time")
                .expect("no panic")
                .expect("run ok");
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        self.api
            .call(method, path, body.as_ref())
            .await
            .expect("API answers")
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.call(method, path, body).await;
        assert!((200..300).contains(&r.status), "{} {}", r.status, r.body);
        r.body
    }

    /// A product with devices; their secrets in order.
    async fn product(&self, names: &[&str]) -> (String, Vec<String>) {
        let p = self
            .ok(
                "POST",
                "/api/v1/products",
                Some(json!({"name": "otaproduct"})),
            )
            .await;
        let pk = p["productKey"].as_str().expect("pk").to_owned();
        let mut secrets = Vec::new();
        for name in names {
            let d = self
                .ok(
                    "POST",
                    &format!("/api/v1/products/{pk}/devices"),
                    Some(json!({"deviceName": name})),
                )
                .await;
            secrets.push(d["deviceSecret"].as_str().expect("secret").to_owned());
        }
        (pk, secrets)
    }

    async fn upload(&self, pk: &str, version: &str, bytes: &[u8]) -> Value {
        let r = self
            .api
            .call_bytes(
                "POST",
                &format!("/api/v1/ota/firmware?productKey={pk}&version={version}"),
                bytes,
                Some("application/octet-stream"),
            )
            .await
            .expect("upload answers");
        assert_eq!(r.status, 201, "{}", r.body);
        r.body
    }

    async fn job(&self, spec: Value) -> String {
        let r = self.call("POST", "/api/v1/ota/jobs", Some(spec)).await;
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    async fn devices(&self, job: &str) -> Vec<Value> {
        let v = self
            .ok("GET", &format!("/api/v1/ota/jobs/{job}/devices"), None)
            .await;
        v["items"].as_array().expect("items").clone()
    }

    async fn status_of(&self, job: &str, dn: &str) -> String {
        self.devices(job)
            .await
            .iter()
            .find(|d| d["deviceName"] == dn)
            .and_then(|d| d["status"].as_str())
            .unwrap_or("absent")
            .to_owned()
    }

    /// Waits until a device of a job has `status`.
    async fn wait_status(&self, job: &str, dn: &str, status: &str) {
        for _ in 0..200 {
            if self.status_of(job, dn).await == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "device {dn} of {job} never became {status}: {:?}",
            self.devices(job).await
        );
    }

    async fn job_state(&self, job: &str) -> Value {
        self.ok("GET", &format!("/api/v1/ota/jobs/{job}"), None)
            .await
    }

    async fn wait_job(&self, job: &str, state: &str) -> Value {
        for _ in 0..200 {
            let v = self.job_state(job).await;
            if v["state"] == state {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "job {job} never became {state}: {}",
            self.job_state(job).await
        );
    }
}

/// A raw HTTP/1.1 GET; status, headers (lowercase names) and body.
async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    parse_http(&raw)
}

fn parse_http(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, raw[split + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The path and query of a download URL.
fn path_of(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("http url");
    rest[rest.find('/').expect("path")..].to_owned()
}

fn firmware_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(bytes))
}

async fn inform(d: &mut MqttDevice, pk: &str, dn: &str, version: &str, id: u16) {
    d.publish_acked(
        &format!("/ota/device/inform/{pk}/{dn}"),
        &json!({"id": id, "params": {"version": version}}),
        id,
    )
    .await;
}

async fn progress(d: &mut MqttDevice, pk: &str, dn: &str, step: &str, id: u16) {
    d.publish_acked(
        &format!("/ota/device/progress/{pk}/{dn}"),
        &json!({"id": id, "params": {"step": step, "desc": format!("step {step}")}}),
        id,
    )
    .await;
}

#[tokio::test]
async fn upgrade_download_resume_progress_success() {
    let s = OtaServer::start(config()).await;
    let (pk, secrets) = s.product(&["dev1"]).await;
    let mut d = MqttDevice::connect(s.mqtt, &pk, "dev1", &secrets[0]).await;
    inform(&mut d, &pk, "dev1", "1.0.0", 1).await;
    let modules = s
        .ok(
            "GET",
            &format!("/api/v1/products/{pk}/devices/dev1/ota/modules"),
            None,
        )
        .await;
    assert_eq!(modules["items"][0]["module"], "default");
    assert_eq!(modules["items"][0]["version"], "1.0.0");

    let bytes = firmware_bytes(300_000);
    let fw = s.upload(&pk, "2.0.0", &bytes).await;
    assert_eq!(fw["size"], 300_000);
    assert_eq!(fw["md5"], md5_hex(&bytes));
    let fw_id = fw["id"].as_str().expect("id").to_owned();
    // A second upload of the same version is refused.
    let dup = s
        .api
        .call_bytes(
            "POST",
            &format!("/api/v1/ota/firmware?productKey={pk}&version=2.0.0"),
            b"x",
            None,
        )
        .await
        .expect("answer");
    assert_eq!(dup.status, 400, "{}", dup.body);
    let list = s.ok("GET", "/api/v1/ota/firmware", None).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    let job = s
        .job(json!({"firmwareId": fw_id, "deviceNames": ["dev1"], "timeoutSecs": 60}))
        .await;
    let (topic, push) = d.expect("/ota/device/upgrade/").await;
    assert_eq!(topic, format!("/ota/device/upgrade/{pk}/dev1"));
    assert_eq!(push["code"], "1000");
    assert_eq!(push["message"], "success");
    assert!(push["id"].is_u64());
    let data = &push["data"];
    assert_eq!(data["size"], 300_000);
    assert_eq!(data["version"], "2.0.0");
    assert_eq!(data["module"], "default");
    assert_eq!(data["signMethod"], "Md5");
    assert_eq!(data["sign"], md5_hex(&bytes));
    assert_eq!(data["md5"], md5_hex(&bytes));
    let url = data["url"].as_str().expect("url");
    let path = path_of(url);
    s.wait_status(&job, "dev1", "notified").await;

    // The download is interrupted after the first part and resumed with Range.
    let (status, headers, first) = http_get(s.http, &path, &[("Range", "bytes=0-99999")]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&headers, "content-range"),
        Some("bytes 0-99999/300000")
    );
    assert_eq!(header(&headers, "accept-ranges"), Some("bytes"));
    assert_eq!(first.len(), 100_000);
    {
        // A full download dropped after a few bytes.
        let mut tcp = TcpStream::connect(s.http).await.expect("connect");
        tcp.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut some = [0u8; 1024];
        let n = tcp.read(&mut some).await.expect("read");
        assert!(n > 0);
    }
    let (status, headers, rest) = http_get(s.http, &path, &[("Range", "bytes=100000-")]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&headers, "content-range"),
        Some("bytes 100000-299999/300000")
    );
    let mut whole = first;
    whole.extend_from_slice(&rest);
    assert_eq!(md5_hex(&whole), data["sign"].as_str().expect("sign"));
    let (status, _, full) = http_get(s.http, &path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(full, bytes);

    // Refusals: several ranges, a range past the end, a wrong or expired signature.
    let (status, headers, _) = http_get(s.http, &path, &[("Range", "bytes=0-1,5-6")]).await;
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), Some("bytes */300000"));
    let (status, _, _) = http_get(s.http, &path, &[("Range", "bytes=300000-")]).await;
    assert_eq!(status, 416);
    let tampered = path.replace("signature=", "signature=00");
    assert_eq!(http_get(s.http, &tampered, &[]).await.0, 403);
    let expired = format!("/ota/download/{fw_id}?expires=1&signature=00");
    assert_eq!(http_get(s.http, &expired, &[]).await.0, 403);
    assert_eq!(
        http_get(s.http, &format!("/ota/download/{fw_id}"), &[])
            .await
            .0,
        403
    );

    progress(&mut d, &pk, "dev1", "30", 2).await;
    s.wait_status(&job, "dev1", "in_progress").await;
    progress(&mut d, &pk, "dev1", "100", 3).await;
    // firmware/get while upgrading answers the pending upgrade.
    d.publish_acked(
        &format!("/sys/{pk}/dev1/thing/ota/firmware/get"),
        &json!({"id": 77, "params": {}}),
        4,
    )
    .await;
    let (_, reply) = d
        .expect(&format!("/sys/{pk}/dev1/thing/ota/firmware/get_reply"))
        .await;
    assert_eq!(reply["id"], 77);
    assert_eq!(reply["code"], 200);
    assert_eq!(reply["data"]["version"], "2.0.0");
    inform(&mut d, &pk, "dev1", "2.0.0", 5).await;
    s.wait_status(&job, "dev1", "succeeded").await;
    let done = s.wait_job(&job, "completed").await;
    assert_eq!(done["stats"]["succeeded"], 1);
    assert_eq!(done["stats"]["total"], 1);
    let stats = s
        .ok("GET", &format!("/api/v1/ota/jobs/{job}/stats"), None)
        .await;
    assert_eq!(stats["succeeded"], 1);
    let row = &s.devices(&job).await[0];
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["step"], 100);

    // Nothing pending any more.
    d.publish_acked(
        &format!("/sys/{pk}/dev1/thing/ota/firmware/get"),
        &json!({"id": 78, "params": {}}),
        6,
    )
    .await;
    let (_, reply) = d
        .expect(&format!("/sys/{pk}/dev1/thing/ota/firmware/get_reply"))
        .await;
    assert_eq!(reply["data"], json!({}));

    // A firmware a job uses is not deleted; an unknown one is 404.
    let r = s
        .call("DELETE", &format!("/api/v1/ota/firmware/{fw_id}"), None)
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.call("GET", "/api/v1/ota/firmware/fnothere", None).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (404, Some("FirmwareNotFound"))
    );
    s.shutdown().await;
}

#[tokio::test]
async fn failures_retries_timeouts_offline_and_cancel() {
    let s = OtaServer::start(config()).await;
    let (pk, secrets) = s.product(&["dev1", "dev2", "dev3", "dev4"]).await;
    let fw = s.upload(&pk, "2.0.0", &firmware_bytes(1000)).await;
    let fw_id = fw["id"].as_str().expect("id");
    let mut d1 = MqttDevice::connect(s.mqtt, &pk, "dev1", &secrets[0]).await;
    let mut d2 = MqttDevice::connect(s.mqtt, &pk, "dev2", &secrets[1]).await;
    // d1 fails twice (download, then verification), d2 stays silent, d3 is offline.
    let job = s
        .job(
            json!({"firmwareId": fw_id, "deviceNames": ["dev1", "dev2", "dev3"],
            "maxRetries": 1, "timeoutSecs": 2}),
        )
        .await;
    d1.expect("/ota/device/upgrade/").await;
    d2.expect("/ota/device/upgrade/").await;
    s.wait_status(&job, "dev3", "offline").await;
    progress(&mut d1, &pk, "dev1", "-2", 1).await;
    // Retried: a second push.
    d1.expect("/ota/device/upgrade/").await;
    progress(&mut d1, &pk, "dev1", "-3", 2).await;
    s.wait_status(&job, "dev1", "failed").await;
    let row = s
        .devices(&job)
        .await
        .into_iter()
        .find(|d| d["deviceName"] == "dev1")
        .expect("dev1");
    assert_eq!(row["attempts"], 2);
    assert_eq!(row["step"], -3);
    // d2 times out twice: pushed again after the first timeout, then failed.
    d2.expect("/ota/device/upgrade/").await;
    s.wait_status(&job, "dev2", "failed").await;
    let row = s
        .devices(&job)
        .await
        .into_iter()
        .find(|d| d["deviceName"] == "dev2")
        .expect("dev2");
    assert_eq!(row["detail"], "timeout");
    assert_eq!(row["attempts"], 2);

    // d3 comes online and gets its push.
    let mut d3 = MqttDevice::connect(s.mqtt, &pk, "dev3", &secrets[2]).await;
    let (_, push) = d3.expect("/ota/device/upgrade/").await;
    assert_eq!(push["data"]["version"], "2.0.0");
    s.wait_status(&job, "dev3", "notified").await;

    // Cancel: d3 is canceled, the job too; cancelling again is refused.
    let v = s
        .ok("POST", &format!("/api/v1/ota/jobs/{job}/cancel"), None)
        .await;
    assert_eq!(v["state"], "canceled");
    assert_eq!(s.status_of(&job, "dev3").await, "canceled");
    let r = s
        .call("POST", &format!("/api/v1/ota/jobs/{job}/cancel"), None)
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("InvalidJobState"))
    );
    // Late reports of a canceled job change nothing.
    inform(&mut d3, &pk, "dev3", "2.0.0", 1).await;
    assert_eq!(s.status_of(&job, "dev3").await, "canceled");
    let stats = s.job_state(&job).await["stats"].clone();
    assert_eq!(stats["failed"], 2);
    assert_eq!(stats["canceled"], 1);
    // Unknown devices are refused at creation.
    let r = s
        .call(
            "POST",
            "/api/v1/ota/jobs",
            Some(json!({"firmwareId": fw_id, "deviceNames": ["nobody"]})),
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    s.shutdown().await;
}

#[tokio::test]
async fn automatic_stop_on_failure_rate() {
    let s = OtaServer::start(config()).await;
    let names = ["dev1", "dev2", "dev3", "dev4"];
    let (pk, secrets) = s.product(&names).await;
    let fw = s.upload(&pk, "2.0.0", &firmware_bytes(1000)).await;
    let mut d1 = MqttDevice::connect(s.mqtt, &pk, "dev1", &secrets[0]).await;
    let mut d2 = MqttDevice::connect(s.mqtt, &pk, "dev2", &secrets[1]).await;
    let job = s
        .job(json!({"firmwareId": fw["id"], "deviceNames": names,
            "failureThreshold": 0.5, "minSample": 2}))
        .await;
    d1.expect("/ota/device/upgrade/").await;
    d2.expect("/ota/device/upgrade/").await;
    progress(&mut d1, &pk, "dev1", "-1", 1).await;
    s.wait_status(&job, "dev1", "failed").await;
    assert_eq!(s.job_state(&job).await["state"], "running");
    progress(&mut d2, &pk, "dev2", "-4", 1).await;
    let v = s.wait_job(&job, "stopped").await;
    assert!(
        v["reason"].as_str().unwrap_or("").contains("failure rate"),
        "{v}"
    );
    assert_eq!(v["stats"]["failed"], 2);
    assert_eq!(v["stats"]["canceled"], 2);
    assert_eq!(s.status_of(&job, "dev3").await, "canceled");
    s.shutdown().await;
}

#[tokio::test]
async fn dynamic_group_job_picks_up_later_devices() {
    let s = OtaServer::start(config()).await;
    let names = ["dev1", "dev2", "dev3", "dev4"];
    let (pk, secrets) = s.product(&names).await;
    // The group lives in the registry, as the groups API makes it: dev1, dev3 and dev4,
    // dev4 in a subgroup.
    let group = s
        .call(
            "POST",
            "/api/v1/groups",
            Some(json!({"groupName": "ota_fleet"})),
        )
        .await;
    assert_eq!(group.status, 201, "{}", group.body);
    let g1 = group.body["groupId"].as_str().expect("groupId").to_owned();
    let sub = s
        .call(
            "POST",
            "/api/v1/groups",
            Some(json!({"groupName": "ota_fleet_sub", "parentId": g1})),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    let g1_sub = sub.body["groupId"].as_str().expect("groupId").to_owned();
    for (group, members) in [(&g1, &["dev1", "dev3"][..]), (&g1_sub, &["dev4"][..])] {
        let devices: Vec<Value> = members
            .iter()
            .map(|dn| json!({"productKey": pk, "deviceName": dn}))
            .collect();
        let added = s
            .call(
                "POST",
                &format!("/api/v1/groups/{group}/devices"),
                Some(json!({"devices": devices})),
            )
            .await;
        assert_eq!(added.status, 200, "{}", added.body);
    }
    let fw = s.upload(&pk, "2.0.0", &firmware_bytes(2000)).await;
    let mut d1 = MqttDevice::connect(s.mqtt, &pk, "dev1", &secrets[0]).await;
    inform(&mut d1, &pk, "dev1", "1.0.0", 1).await;
    let mut d2 = MqttDevice::connect(s.mqtt, &pk, "dev2", &secrets[1]).await;
    inform(&mut d2, &pk, "dev2", "1.0.0", 1).await;
    // An unknown group is refused.
    let r = s
        .call(
            "POST",
            "/api/v1/ota/jobs",
            Some(json!({"firmwareId": fw["id"], "kind": "dynamic",
                "sourceVersions": ["1.0.0"], "groupId": "nope"})),
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("GroupLookupFailed"))
    );
    let job = s
        .job(json!({"firmwareId": fw["id"], "kind": "dynamic",
            "sourceVersions": ["1.0.0", "1.1.0"], "groupId": g1}))
        .await;
    // d1 matches at creation; d2 is at a source version but outside the group.
    d1.expect("/ota/device/upgrade/").await;
    assert_eq!(s.status_of(&job, "dev2").await, "absent");

    // d3 reports a source version later and joins; d4 reports another version and does not.
    let mut d3 = MqttDevice::connect(s.mqtt, &pk, "dev3", &secrets[2]).await;
    inform(&mut d3, &pk, "dev3", "1.1.0", 1).await;
    let (_, push) = d3.expect("/ota/device/upgrade/").await;
    assert_eq!(push["data"]["version"], "2.0.0");
    let mut d4 = MqttDevice::connect(s.mqtt, &pk, "dev4", &secrets[3]).await;
    inform(&mut d4, &pk, "dev4", "0.9.0", 1).await;
    // d3 asks for it too (firmware/get with the module).
    d3.publish_acked(
        &format!("/sys/{pk}/dev3/thing/ota/firmware/get"),
        &json!({"id": 9, "params": {"module": "default"}}),
        2,
    )
    .await;
    let (_, reply) = d3
        .expect(&format!("/sys/{pk}/dev3/thing/ota/firmware/get_reply"))
        .await;
    assert_eq!(reply["data"]["sign"], push["data"]["sign"]);
    inform(&mut d1, &pk, "dev1", "2.0.0", 2).await;
    inform(&mut d3, &pk, "dev3", "2.0.0", 3).await;
    s.wait_status(&job, "dev3", "succeeded").await;
    s.wait_status(&job, "dev1", "succeeded").await;
    assert_eq!(s.status_of(&job, "dev4").await, "absent");
    assert_eq!(s.status_of(&job, "dev2").await, "absent");
    // A dynamic job keeps running (later devices may still join) until canceled.
    let v = s.job_state(&job).await;
    assert_eq!(v["state"], "running");
    assert_eq!(v["stats"]["succeeded"], 2);
    // A device cannot report for another device: d4 informing for d2 is not taken.
    d4.publish(
        &format!("/ota/device/inform/{pk}/dev2"),
        &json!({"id": 5, "params": {"version": "1.1.0"}}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.status_of(&job, "dev2").await, "absent");
    s.shutdown().await;
}

#[tokio::test]
async fn rollout_rate_restart_and_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
    };
    let (mqtt, http) = (free(), free());
    let s = OtaServer::spawn(dir.path(), mqtt, http).await;
    let (pk, secrets) = s.product(&["dev1", "dev2", "dev3"]).await;
    let fw = s.upload(&pk, "2.0.0", &firmware_bytes(5000)).await;
    let mut d1 = MqttDevice::connect(s.mqtt, &pk, "dev1", &secrets[0]).await;
    let mut d2 = MqttDevice::connect(s.mqtt, &pk, "dev2", &secrets[1]).await;
    // 60 per minute: one push a second.
    let job = s
        .job(
            json!({"firmwareId": fw["id"], "deviceNames": ["dev1", "dev2", "dev3"],
            "ratePerMinute": 60}),
        )
        .await;
    let t0 = std::time::Instant::now();
    d1.expect("/ota/device/upgrade/").await;
    d2.expect("/ota/device/upgrade/").await;
    let gap = t0.elapsed();
    assert!(
        gap >= Duration::from_millis(800),
        "second push after {gap:?}"
    );
    let rows = s.devices(&job).await;
    let pushed: Vec<i64> = rows[..2]
        .iter()
        .map(|r| r["pushedAt"].as_i64().expect("pushedAt"))
        .collect();
    assert!(pushed[1] - pushed[0] >= 800, "{pushed:?}");
    drop((d1, d2));
    s.shutdown().await;

    // After a restart the job is still running and d3 gets its push when it connects.
    let s = OtaServer::spawn(dir.path(), mqtt, http).await;
    assert_eq!(s.job_state(&job).await["state"], "running");
    let mut d3 = MqttDevice::connect(s.mqtt, &pk, "dev3", &secrets[2]).await;
    let (_, push) = d3.expect("/ota/device/upgrade/").await;
    // The URL signed before the restart's key is the same key: downloads still work.
    let (status, _, body) = http_get(
        s.http,
        &path_of(push["data"]["url"].as_str().expect("url")),
        &[],
    )
    .await;
    assert_eq!((status, body.len()), (200, 5000));
    inform(&mut d3, &pk, "dev3", "2.0.0", 1).await;
    s.wait_status(&job, "dev3", "succeeded").await;

    // The CLI: upload, list, job list, devices, cancel.
    let file = dir.path().join("fw.bin");
    std::fs::write(&file, firmware_bytes(777)).expect("write");
    let url = format!("http://{}", s.http);
    let cli = move |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lodestone"))
            .args(args)
            .arg("--json")
            .env("LODESTONE_URL", &url)
            .env("LODESTONE_ACCESS_KEY_ID", KEY_ID)
            .env("LODESTONE_ACCESS_KEY_SECRET", KEY_SECRET)
            .env("HOME", "/nonexistent")
            .output()
            .expect("run lodestone");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON output")
    };
    let cli_file = file.display().to_string();
    let pk_cli = pk.clone();
    let (uploaded, list) = tokio::task::spawn_blocking(move || {
        let uploaded = cli(&[
            "ota",
            "firmware",
            "upload",
            "--product-key",
            &pk_cli,
            "--firmware-version",
            "3.0.0",
            "--file",
            &cli_file,
        ]);
        let lists = (
            cli(&["ota", "firmware", "list"]),
            cli(&["ota", "job", "list"]),
        );
        (uploaded, lists)
    })
    .await
    .expect("cli task");
    assert_eq!(uploaded["size"], 777);
    assert_eq!(list.0["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(list.1["items"][0]["id"], job.as_str());
    s.shutdown().await;
}
