//! Config precedence (defaults < file < env < flags), validation and the file format.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lode_server::cli::ServeArgs;
use lode_server::config::{self, ClientAuth, ConfigError, Env, StorageKind, file::FileConfig};

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const FILE: &str = r#"
version = 1
data_dir = "/from/file"
storage = "memory"
allow_anonymous = true
shutdown_grace = "5s"

[listeners]
mqtt = "127.0.0.1:1001"
ws = "127.0.0.1:1002"
http = "127.0.0.1:1003"
https = "127.0.0.1:1004"

[mqtt]
max_packet_size = 1024
queued_message_expiry = "1d"
keep_alive_range = [10, 600]
maximum_qos = 1
"#;

#[test]
fn defaults_without_file_env_or_flags() {
    let c = config::resolve(&FileConfig::default(), &Env::new(), &ServeArgs::default()).unwrap();
    assert_eq!(c, lode_server::ServerConfig::default());
    assert_eq!(c.data_dir, PathBuf::from("./lodestone-data"));
    assert_eq!(c.listeners.mqtt, addr("0.0.0.0:1883"));
    assert_eq!(c.listeners.http, addr("0.0.0.0:8080"));
    assert_eq!(c.listeners.https, addr("0.0.0.0:8443"));
    assert!(!c.allow_anonymous);
}

#[test]
fn file_overrides_defaults() {
    let file = FileConfig::parse(FILE).unwrap();
    let c = config::resolve(&file, &Env::new(), &ServeArgs::default()).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/from/file"));
    assert_eq!(c.storage, StorageKind::Memory);
    assert!(c.allow_anonymous);
    assert_eq!(c.shutdown_grace, Duration::from_secs(5));
    assert_eq!(c.listeners.mqtt, addr("127.0.0.1:1001"));
    assert_eq!(c.listeners.mqtts, addr("0.0.0.0:8883"));
    assert_eq!(c.listeners.https, addr("127.0.0.1:1004"));
    assert_eq!(c.broker.max_packet_size, 1024);
    assert_eq!(c.broker.queued_message_expiry, Duration::from_secs(86_400));
    assert_eq!(c.broker.keep_alive_range, Some((10, 600)));
    assert_eq!(c.broker.maximum_qos, lode_mqtt::QoS::AtLeastOnce);
    assert_eq!(
        c.broker.max_inflight,
        lode_broker::BrokerConfig::default().max_inflight
    );
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let file = FileConfig::parse(FILE).unwrap();
    let env = env(&[
        ("LODESTONE_DATA_DIR", "/from/env"),
        ("LODESTONE_MQTT_ADDR", "127.0.0.1:2001"),
        ("LODESTONE_WS_ADDR", "127.0.0.1:2002"),
        ("LODESTONE_HTTPS_ADDR", "127.0.0.1:2004"),
        ("LODESTONE_ALLOW_ANONYMOUS", "false"),
        ("LODESTONE_STORAGE", "embedded"),
    ]);
    let flags = ServeArgs {
        data_dir: Some(PathBuf::from("/from/flag")),
        mqtt_addr: Some(addr("127.0.0.1:3001")),
        ..ServeArgs::default()
    };
    let c = config::resolve(&file, &env, &flags).unwrap();
    assert_eq!(
        c.data_dir,
        PathBuf::from("/from/flag"),
        "flag beats env and file"
    );
    assert_eq!(
        c.listeners.mqtt,
        addr("127.0.0.1:3001"),
        "flag beats env and file"
    );
    assert_eq!(c.listeners.ws, addr("127.0.0.1:2002"), "env beats file");
    assert_eq!(c.listeners.https, addr("127.0.0.1:2004"), "env beats file");
    assert_eq!(
        c.listeners.http,
        addr("127.0.0.1:1003"),
        "file beats default"
    );
    assert!(!c.allow_anonymous, "env false beats file true");
    assert_eq!(c.storage, StorageKind::Embedded);

    let flags = ServeArgs {
        allow_anonymous: Some(true),
        ..ServeArgs::default()
    };
    assert!(
        config::resolve(&file, &env, &flags)
            .unwrap()
            .allow_anonymous
    );
}

#[test]
fn https_addr_flag_beats_env() {
    let file = FileConfig::parse(FILE).unwrap();
    let env = env(&[("LODESTONE_HTTPS_ADDR", "127.0.0.1:2004")]);
    let flags = ServeArgs {
        https_addr: Some(addr("127.0.0.1:3004")),
        ..ServeArgs::default()
    };
    let c = config::resolve(&file, &env, &flags).unwrap();
    assert_eq!(c.listeners.https, addr("127.0.0.1:3004"));
}

#[test]
fn load_reads_the_file_named_in_env() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.toml");
    std::fs::write(&path, FILE).unwrap();
    let env = env(&[("LODESTONE_CONFIG", path.to_str().unwrap())]);
    let c = config::load_with_env(&ServeArgs::default(), &env).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/from/file"));
}

#[test]
fn unknown_key_is_an_error_naming_the_key() {
    let err = FileConfig::parse("[listeners]\nmqqt = \"0.0.0.0:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `mqqt`"), "{err}");
    let err = FileConfig::parse("colour = 1\n").unwrap_err().to_string();
    assert!(err.contains("unknown field `colour`"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[mqtt]\nmax_packet = 1\n").unwrap();
    let args = ServeArgs {
        config: Some(path.clone()),
        ..ServeArgs::default()
    };
    match config::load_with_env(&args, &Env::new()) {
        Err(e @ ConfigError::Parse { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("bad.toml") && msg.contains("max_packet"),
                "{msg}"
            );
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn validation_errors_are_reported_together() {
    let file = FileConfig::parse(
        r#"
storage = "s3"
[tls]
cert = "/c.pem"
client_auth = "required"
[mqtt]
maximum_qos = 3
keep_alive_range = [100, 10]
receive_maximum = 0
"#,
    )
    .unwrap();
    let env = env(&[("LODESTONE_HTTP_ADDR", "not-an-addr")]);
    let err = config::resolve(&file, &env, &ServeArgs::default()).unwrap_err();
    let msg = err.to_string();
    for needle in [
        "storage",
        "tls",
        "maximum_qos",
        "keep_alive_range",
        "receive_maximum",
        "LODESTONE_HTTP_ADDR",
    ] {
        assert!(msg.contains(needle), "{needle} missing from:\n{msg}");
    }
    assert!(err.0.len() >= 6, "{msg}");
}

#[test]
fn tls_with_client_auth_resolves() {
    let file = FileConfig::parse(
        r#"
[tls]
cert = "/c.pem"
key = "/k.pem"
client_ca = "/ca.pem"
client_auth = "optional"
"#,
    )
    .unwrap();
    let flags = ServeArgs {
        tls_client_auth: Some(ClientAuth::Required),
        ..ServeArgs::default()
    };
    let c = config::resolve(&file, &Env::new(), &flags).unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.client_auth, ClientAuth::Required);
    assert_eq!(tls.client_ca, Some(PathBuf::from("/ca.pem")));
}

#[test]
fn the_rules_section_sets_the_rules_runtime() {
    let file = FileConfig::parse(
        r#"
[rules]
account_rate = 50
stream_rate = 20
stream_queue = 500
buffer_capacity = 1000
full_policy = "refuse_new"
max_attempts = 3
backoff_initial = "1s"
backoff_max = "1m"
"#,
    )
    .unwrap();
    let c = config::resolve(&file, &Env::new(), &ServeArgs::default()).unwrap();
    let r = &c.rules;
    assert_eq!(
        (
            r.account_rate,
            r.stream_rate,
            r.stream_queue,
            r.buffer_capacity
        ),
        (50, 20, 500, 1000)
    );
    assert_eq!(r.full_policy, lode_forward::FullPolicy::RefuseNew);
    assert_eq!(r.max_attempts, 3);
    assert_eq!(r.backoff_initial, Duration::from_secs(1));
    assert_eq!(r.backoff_max, Duration::from_secs(60));
    assert_eq!(r.rules_per_account, 1000, "unset keys keep their defaults");

    let bad = FileConfig::parse(
        r#"
[rules]
stream_rate = 0
full_policy = "drop_newest"
backoff_initial = "1m"
backoff_max = "1s"
"#,
    )
    .unwrap();
    let msg = config::resolve(&bad, &Env::new(), &ServeArgs::default())
        .unwrap_err()
        .to_string();
    for needle in [
        "rules.stream_rate",
        "rules.full_policy",
        "rules.backoff_initial",
    ] {
        assert!(msg.contains(needle), "{needle} missing from:\n{msg}");
    }
}
