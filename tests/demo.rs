//! Black-box tests of `churnwatch demo` (embedded broker, nothing installed)
//! and `churnwatch generate --brokers` (against Tansu, see `scripts/test.sh`).

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use churnwatch::kafka::loadgen::topic_index;
use common::{TestBroker, free_port, http_get, metric_sum, wait_for};

/// The binary under test (`TEST_CHURNWATCH_BIN` overrides, as in `kafka_service.rs`).
fn churnwatch_bin() -> std::path::PathBuf {
    std::env::var_os("TEST_CHURNWATCH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_churnwatch").into())
}

#[cfg(unix)]
fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

#[cfg(unix)]
#[test]
fn demo_shows_firing_alerts_and_stops_cleanly_on_sigterm() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(churnwatch_bin())
        .args([
            "demo",
            "--customers",
            "60",
            "--speed",
            "864000",
            "--every",
            "1",
        ])
        .args(["--listen", &addr])
        .env_remove("CHURNWATCH_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start churnwatch demo");

    let seen = wait_for(Duration::from_secs(60), || {
        let (_, metrics) = http_get(&addr, "/metrics", None).ok()?;
        let consumed = metric_sum(&metrics, "churnwatch_events_consumed_total");
        let (status, alerts) = http_get(&addr, "/api/alerts?status=firing", None).ok()?;
        let v: serde_json::Value = serde_json::from_str(&alerts).ok()?;
        let firing = v["alerts"].as_array().map_or(0, Vec::len);
        (status == 200 && consumed > 0.0 && firing > 0).then_some((consumed, firing))
    });
    sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for demo") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (consumed, firing) = seen.unwrap_or_else(|| {
        panic!("no firing alert with consumed events within 60 s; demo output:\n{out}")
    });
    assert!(consumed > 0.0 && firing > 0);
    assert!(
        status.success(),
        "demo exit status {status:?}; output:\n{out}"
    );
    assert!(out.contains(&format!("http://{addr}/metrics")), "{out}");
    assert!(
        out.contains("alerts firing"),
        "summary line missing:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_to_brokers_produces_every_event_to_its_topic() {
    let broker = TestBroker::start();
    let args = [
        "--customers",
        "20",
        "--days",
        "10",
        "--seed",
        "3",
        "--dup-fraction",
        "0",
    ];
    // What the file mode gives for the same arguments, counted by topic.
    let file = Command::new(churnwatch_bin())
        .arg("generate")
        .args(args)
        .output()
        .expect("run generate to stdout");
    assert!(file.status.success());
    let mut expected: BTreeMap<usize, usize> = BTreeMap::new();
    for line in String::from_utf8_lossy(&file.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        let ty = v["type"].as_str().expect("type");
        *expected.entry(topic_index(ty)).or_default() += 1;
    }

    let out = tokio::task::spawn_blocking({
        let brokers = broker.brokers.clone();
        move || {
            Command::new(churnwatch_bin())
                .arg("generate")
                .args(args)
                .args(["--brokers", &brokers, "--rate", "0", "--partitions", "2"])
                .env("CHURNWATCH_FETCH_WAIT_MAX_MS", "1")
                .output()
                .expect("run generate --brokers")
        }
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "generate --brokers failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, topic) in ["product.usage", "billing.events", "customer.feedback"]
        .iter()
        .enumerate()
    {
        let want = expected.get(&i).copied().unwrap_or(0);
        let got =
            tokio::task::block_in_place(|| broker.read_all(topic, want, Duration::from_secs(20)));
        assert_eq!(got.len(), want, "{topic}");
        for r in &got {
            let v: serde_json::Value = r.json();
            assert_eq!(
                r.key.as_deref(),
                v["customer_id"].as_str(),
                "{topic}: key = customer_id"
            );
        }
    }
}
