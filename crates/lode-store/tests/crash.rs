//! Durability under `kill -9`: every batch acknowledged by a child process
//! must be present after the child is killed and the store reopened.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lode_store::{BrokerStore, EmbeddedStore, GroupCommit, Op};

const DIR_ENV: &str = "LODE_STORE_CRASH_WRITER_DIR";
const WRITERS: u64 = 8;

/// Writer mode, only active in the child: concurrent tasks submit batches
/// through `GroupCommit` until killed, printing `ACK <task> <seq>` after each
/// acknowledgement. Each batch enqueues message `seq` and records `seq` in the
/// task's session, so a session value without its message means a torn batch.
#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(DIR_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = EmbeddedStore::open(std::path::Path::new(&dir)).unwrap();
        let gc = GroupCommit::new(Arc::new(store));
        let mut tasks = Vec::new();
        for task in 0..WRITERS {
            let gc = gc.clone();
            tasks.push(tokio::spawn(async move {
                let client = format!("writer-{task}");
                for seq in 0.. {
                    let mut ops = vec![
                        Op::Enqueue {
                            client_id: client.clone(),
                            seq,
                            data: Bytes::from(vec![task as u8; 100]),
                        },
                        Op::PutSession {
                            client_id: client.clone(),
                            data: Bytes::from(seq.to_be_bytes().to_vec()),
                        },
                    ];
                    if seq >= 3 {
                        // Keep a window of 3 messages: acknowledged deletes too.
                        ops.push(Op::Dequeue {
                            client_id: client.clone(),
                            seq: seq - 3,
                        });
                    }
                    gc.submit(ops).await.unwrap();
                    println!("ACK {task} {seq}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn acknowledged_batches_survive_sigkill() {
    if std::env::var_os(DIR_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();

    // Read acknowledgements on a thread; kill once enough arrived or time is up.
    let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ACK") {
                continue;
            }
            let (Some(Ok(task)), Some(Ok(seq))) = (
                parts.next().map(str::parse::<u64>),
                parts.next().map(str::parse::<u64>),
            ) else {
                continue; // a line cut short by the kill
            };
            if tx.send((task, seq)).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut acks: Vec<(u64, u64)> = Vec::new();
    while start.elapsed() < Duration::from_secs(3) && acks.len() < 20_000 {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(ack) => acks.push(ack),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
        // Kill mid-stream, after some but not too many batches.
        if acks.len() >= 2_000 && start.elapsed() > Duration::from_millis(300) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "writer exited on its own: {status}");
    reader.join().unwrap();
    // Everything printed before the kill counts as acknowledged.
    acks.extend(rx.try_iter());
    let mut last_ack = vec![None::<u64>; WRITERS as usize];
    for &(task, seq) in &acks {
        let slot = &mut last_ack[task as usize];
        *slot = Some(slot.map_or(seq, |s| s.max(seq)));
    }
    let total = acks.len();
    assert!(total > 0, "the writer acknowledged nothing");

    let store = EmbeddedStore::open(dir.path()).unwrap();
    let snap = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(store.load())
        .unwrap();
    for task in 0..WRITERS {
        let client = format!("writer-{task}");
        let session = snap.sessions.iter().find(|s| s.0 == client);
        let stored_seq = session.map(|s| u64::from_be_bytes(s.1.as_ref().try_into().unwrap()));
        if let Some(acked_seq) = last_ack[task as usize] {
            let stored =
                stored_seq.unwrap_or_else(|| panic!("{client}: acked {acked_seq}, no session"));
            assert!(
                stored >= acked_seq,
                "{client}: acked {acked_seq}, stored {stored}"
            );
        }
        // Atomicity: the queue holds exactly the window the session implies.
        let queued: Vec<u64> = snap
            .queued
            .iter()
            .filter(|q| q.0 == client)
            .map(|q| q.1)
            .collect();
        let want: Vec<u64> = match stored_seq {
            Some(s) => (s.saturating_sub(2)..=s).collect(),
            None => vec![],
        };
        assert_eq!(queued, want, "{client}: queue does not match its session");
    }
    println!("{total} acknowledged batches survived SIGKILL; last acks {last_ack:?}");
}
