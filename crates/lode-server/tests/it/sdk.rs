//! Runs the suite in `tests/sdk` (Alibaba's official Python device SDK,
//! `aliyun-iot-linkkit`, unmodified) against this build's `lodestone` binary, so that
//! `cargo test --workspace` covers it. The SDK needs paho-mqtt 1.x, so the suite lives
//! in its own virtualenv: `LODESTONE_SDK_PYTHON` names that venv's python
//! (`python3 -m venv target/sdk-venv && target/sdk-venv/bin/pip install -r tests/sdk/requirements.txt`).
//! Skips, saying why, when it is not set.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn official_python_sdk_suite() {
    let Some(python) = std::env::var_os("LODESTONE_SDK_PYTHON").filter(|p| !p.is_empty()) else {
        println!("skipped: LODESTONE_SDK_PYTHON is not set");
        return;
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/sdk"))
        .env("LODESTONE_BIN", env!("CARGO_BIN_EXE_lodestone"))
        .current_dir(&root)
        .status()
        .expect("the SDK virtualenv's python should start");
    assert!(status.success(), "the Python SDK suite failed: {status}");
}
