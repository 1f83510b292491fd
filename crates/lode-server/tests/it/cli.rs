//! `lodestone serve --help` documents every option.

use std::process::Command;

#[test]
fn serve_help_mentions_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--data-dir",
        "--storage",
        "--mqtt-addr",
        "--mqtts-addr",
        "--ws-addr",
        "--wss-addr",
        "--http-addr",
        "--https-addr",
        "--tls-cert",
        "--tls-key",
        "--tls-client-ca",
        "--tls-client-auth",
        "--allow-anonymous",
        "--max-connections",
        "--log",
    ] {
        assert!(help.contains(flag), "help does not mention {flag}:\n{help}");
    }
    for env in [
        "LODESTONE_CONFIG",
        "LODESTONE_DATA_DIR",
        "LODESTONE_ALLOW_ANONYMOUS",
    ] {
        assert!(help.contains(env), "help does not mention {env}");
    }
}

#[test]
fn unknown_config_key_fails_with_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lodestone.toml");
    std::fs::write(&path, "[mqtt]\nmax_pakcet_size = 10\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("max_pakcet_size"), "{err}");
    assert!(err.contains("lodestone.toml"), "{err}");
}

#[test]
fn bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lodestone"))
        .args(["serve", "--storage", "memory", "--mqtt-addr", &addr])
        .args(["--ws-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains(&format!("failed to bind mqtt listener on {addr}")),
        "{err}"
    );
}
