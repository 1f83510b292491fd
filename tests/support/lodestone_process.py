"""Running the `lodestone` binary from a Python test suite: finding it, free ports,
waiting until it listens, and stopping it. Shared by `tests/interop` and `tests/sdk`,
which run in different virtualenvs; standard library only (plus pytest).
"""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lodestone_bin():
    path = Path(os.environ.get("LODESTONE_BIN", ROOT / "target" / "debug" / "lodestone"))
    if not path.is_file():
        pytest.skip(f"lodestone binary not found at {path} (build it or set LODESTONE_BIN)")
    return path


def wait_listening(proc, host, ports, timeout, read_log):
    """Waits until `proc` accepts TCP connections on every port; raises with its log
    if it exits or does not listen within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"lodestone exited with {proc.returncode}: {read_log()}")
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"lodestone did not listen on {port}: {read_log()}")
                time.sleep(0.05)


def stop_gracefully(proc, timeout=20):
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
