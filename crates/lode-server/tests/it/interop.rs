//! Runs the independent-client suite in `tests/interop` (Python paho-mqtt and the
//! mosquitto command-line clients) against this build's `lodestone` binary, so
//! that `cargo test --workspace` covers it. Skips, saying why, when Python, pytest
//! or paho-mqtt is missing (`pip install -r tests/interop/requirements.txt`).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn independent_clients_suite() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let suite = root.join("tests/interop");
    let probe = Command::new("python3")
        .args(["-c", "import pytest, paho.mqtt"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(_) => {
            println!(
                "skipped: python3 lacks pytest or paho-mqtt (pip install -r tests/interop/requirements.txt)"
            );
            return;
        }
        Err(e) => {
            println!("skipped: python3 is not available: {e}");
            return;
        }
    }
    let status = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(&suite)
        .env("LODESTONE_BIN", env!("CARGO_BIN_EXE_lodestone"))
        .current_dir(&root)
        .status()
        .expect("pytest should start");
    assert!(
        status.success(),
        "the independent-client suite failed: {status}"
    );
}
