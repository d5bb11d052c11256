//! Black-box tests of `churnwatch run` against a real Kafka-protocol broker
//! (Tansu, started per test; see `scripts/test.sh`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use churnwatch::app::{self, AppError};
use churnwatch::config::{Config, RawConfig};
use churnwatch::event::{DAY_MS, HOUR_MS, format_ts};
use churnwatch::metrics;
use common::{TestBroker, config_toml, free_port, http_get, init_tracing, metric_sum, wait_for};
use tokio_util::sync::CancellationToken;

/// 2026-11-01T00:00:00Z.
const T0: i64 = 1_793_491_200_000;
const TOKEN: &str = "test-token-0123456789";

fn config(broker: &TestBroker, extra: &str) -> Config {
    let raw: RawConfig = toml::from_str(&config_toml(&broker.brokers, "127.0.0.1:0", extra))
        .expect("test config parses");
    raw.validate().expect("test config is valid")
}

fn started(customer: &str, ts: i64) -> String {
    format!(
        r#"{{"type":"subscription_started","customer_id":"{customer}","plan":"pro","mrr":4900,"currency":"USD","ts":"{}"}}"#,
        format_ts(ts)
    )
}

fn cancelled(customer: &str, ts: i64) -> String {
    format!(
        r#"{{"type":"subscription_cancelled","customer_id":"{customer}","reason":"too_expensive","ts":"{}"}}"#,
        format_ts(ts)
    )
}

fn usage(customer: &str, ts: i64) -> String {
    format!(
        r#"{{"type":"usage","customer_id":"{customer}","user_id":"u-1","action":"login","ts":"{}"}}"#,
        format_ts(ts)
    )
}

/// The binary under test; `TEST_CHURNWATCH_BIN` (not `CHURNWATCH_*`: those are config) overrides Cargo's path (useful
/// when several worktrees share one `CARGO_TARGET_DIR`, where the last build
/// of any of them owns `target/debug/churnwatch`).
fn churnwatch_bin() -> std::path::PathBuf {
    std::env::var_os("TEST_CHURNWATCH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_churnwatch").into())
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_events_go_to_the_dlq_and_valid_ones_raise_alerts() {
    init_tracing();
    let broker = TestBroker::start();
    broker.create_default_topics(1).await;
    let cancel = CancellationToken::new();
    let running = app::start(
        config(&broker, "max_message_bytes = 4096\nmax_label_values = 2"),
        cancel.clone(),
    )
    .await
    .expect("service starts");
    let addr = running.http_addr().to_string();
    let service = tokio::spawn(running.wait());

    let bad_json = "{not json";
    // Valid JSON, wrong values (issue 12).
    let ts = format_ts(T0);
    let too_large = format!(
        r#"{{"type":"usage","customer_id":"c-4","action":"a","ts":"{ts}","pad":"{}"}}"#,
        "x".repeat(5000)
    );
    let too_deep = format!(
        r#"{{"type":"usage","customer_id":"c-4","action":"a","ts":"{ts}","x":{}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let long_plan = format!(
        r#"{{"type":"subscription_started","customer_id":"c-4","plan":"{}","mrr":100,"ts":"{ts}"}}"#,
        "c-4".repeat(30)
    );
    let huge_mrr = format!(
        r#"{{"type":"subscription_started","customer_id":"c-4","plan":"pro","mrr":1000000000000000,"ts":"{ts}"}}"#
    );
    // Three plans where two label values are allowed: the third is "(other)".
    let plan = |c: &str, p: &str| {
        format!(
            r#"{{"type":"subscription_started","customer_id":"{c}","plan":"{p}","mrr":100,"ts":"{ts}"}}"#
        )
    };
    let empty_id = format!(
        r#"{{"type":"usage","customer_id":"","action":"login","ts":"{}"}}"#,
        format_ts(T0)
    );
    let bad_score = format!(
        r#"{{"type":"nps","customer_id":"c-3","score":11,"ts":"{}"}}"#,
        format_ts(T0)
    );
    broker
        .produce(
            "billing.events",
            Some(0),
            &[
                (Some("c-1"), &started("c-1", T0 - DAY_MS)),
                (Some("c-1"), bad_json),
                (Some("c-1"), &cancelled("c-1", T0 + HOUR_MS)),
                // Later event time, so the watermark passes the cancellation.
                (Some("c-2"), &started("c-2", T0 + 5 * HOUR_MS)),
            ],
        )
        .await;
    broker
        .produce(
            "billing.events",
            Some(0),
            &[
                (Some("c-4"), &too_large),
                (Some("c-4"), &too_deep),
                (Some("c-4"), &long_plan),
                (Some("c-4"), &huge_mrr),
                (Some("c-5"), &plan("c-5", "basic")),
                (Some("c-6"), &plan("c-6", "team")),
            ],
        )
        .await;
    // A producer with a broken clock: dated 2099, it must not move event
    // time (and so every deadline) forward for everyone.
    let from_2099 = usage(
        "c-9",
        churnwatch::event::parse_ts("2099-01-01T00:00:00Z").expect("ts"),
    );
    broker
        .produce(
            "product.usage",
            Some(0),
            &[(None, &empty_id), (Some("c-9"), &from_2099)],
        )
        .await;
    // Keyed by another customer than its body: no stray customer.
    let wrong_key = usage("c-7", T0);
    broker
        .produce("product.usage", Some(0), &[(Some("c-1"), &wrong_key)])
        .await;
    broker
        .produce("customer.feedback", Some(0), &[(Some("c-3"), &bad_score)])
        .await;

    let dlq = block(|| broker.read_all("churnwatch.dlq", 9, Duration::from_secs(30)));
    assert_eq!(dlq.len(), 9, "dead letters: {dlq:#?}");
    let reasons: BTreeSet<&str> = dlq.iter().filter_map(|r| r.header("reason")).collect();
    for r in ["too_large", "too_deep", "invalid_label", "value_too_large"] {
        assert!(reasons.contains(r), "no {r} in {reasons:?}");
    }
    let by_reason: BTreeMap<&str, &common::Record> = dlq
        .iter()
        .map(|r| (r.header("reason").expect("reason header"), r))
        .collect();
    let mismatch = by_reason["key_mismatch"];
    assert_eq!(mismatch.payload, wrong_key.as_bytes());
    assert_eq!(mismatch.key.as_deref(), Some("c-1"));
    let future = by_reason["ts_in_future"];
    assert_eq!(future.payload, from_2099.as_bytes());
    assert!(
        future
            .header("error")
            .is_some_and(|e| e.contains("2099-01-01")),
        "{future:?}"
    );
    let json = by_reason["invalid_json"];
    assert_eq!(json.payload, bad_json.as_bytes(), "original bytes kept");
    assert_eq!(json.key.as_deref(), Some("c-1"), "original key kept");
    assert_eq!(json.header("source_topic"), Some("billing.events"));
    assert_eq!(json.header("source_partition"), Some("0"));
    assert_eq!(json.header("source_offset"), Some("1"));
    assert!(json.header("error").is_some_and(|e| e.contains("JSON")));
    assert_eq!(
        by_reason["empty_customer_id"].header("source_topic"),
        Some("product.usage")
    );
    assert_eq!(by_reason["out_of_range"].payload, bad_score.as_bytes());

    let alerts = block(|| broker.read_all("churnwatch.alerts", 1, Duration::from_secs(30)));
    let churned = alerts
        .iter()
        .find(|r| {
            let v = r.json();
            v["data"]["alert"] == "churned" && v["data"]["customer_id"] == "c-1"
        })
        .unwrap_or_else(|| panic!("no churned alert for c-1 in {alerts:#?}"));
    let v = churned.json();
    assert_eq!(v["type"], "churnwatch.alert.firing");
    assert_eq!(v["data"]["status"], "firing");
    assert_eq!(
        v["data"]["starts_at"],
        format_ts(T0 + HOUR_MS),
        "event time"
    );
    assert_eq!(churned.key.as_deref(), Some("c-1"));
    assert_eq!(
        churned.header("content-type"),
        Some("application/cloudevents+json")
    );
    for r in &alerts {
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            ["content-type"],
            "structured mode: content-type only"
        );
    }
    // The official CloudEvents Python SDK (installed by scripts/test.sh)
    // parses every alert, with its auto-detection and with the v1 API.
    let dump = std::env::temp_dir().join(format!("churnwatch-ce-{}.jsonl", std::process::id()));
    let lines: Vec<String> = alerts
        .iter()
        .map(|r| {
            serde_json::json!({
                "headers": r.headers.iter().cloned().collect::<BTreeMap<String, String>>(),
                "key": r.key,
                "value": String::from_utf8_lossy(&r.payload),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&dump, lines.join("\n")).expect("write dump");
    let python =
        std::env::var("CHURNWATCH_CE_PYTHON").unwrap_or_else(|_| "target/cevenv/bin/python".into());
    let out = Command::new(&python)
        .arg("scripts/ce-parse.py")
        .arg(&dump)
        .output()
        .unwrap_or_else(|e| {
            panic!("run {python} (scripts/test.sh installs the CloudEvents SDK there): {e}")
        });
    assert!(
        out.status.success(),
        "CloudEvents SDK rejects alerts: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("parsed {} alerts", alerts.len())),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_file(&dump);

    // A support person reads the same alert with `churnwatch alerts`.
    let out = Command::new(churnwatch_bin())
        .args(["alerts", "--from-beginning", "--brokers", &broker.brokers])
        .env("CHURNWATCH_FETCH_WAIT_MAX_MS", "1")
        .output()
        .expect("run alerts");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("FIRING") && l.contains("churned") && l.contains("c-1")),
        "readable line missing: {text}"
    );
    let out = Command::new(churnwatch_bin())
        .args([
            "alerts",
            "--json",
            "--from-beginning",
            "--brokers",
            &broker.brokers,
        ])
        .output()
        .expect("run alerts --json");
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    let parsed: serde_json::Value = serde_json::from_str(first).expect("--json prints CloudEvents");
    assert_eq!(parsed["specversion"], "1.0");

    let metrics = block(|| {
        wait_for(Duration::from_secs(10), || {
            let (code, body) = http_get(&addr, "/metrics", None).ok()?;
            (code == 200
                && body.contains(
                    r#"churnwatch_events_rejected_total{reason="invalid_json",topic="billing.events"} 1"#,
                )
                && body.contains(r#"churnwatch_alerts_produced_total{alert="churned",status="firing"} 1"#)
                && body.contains(r#"churnwatch_events_rejected_total{reason="too_large",topic="billing.events"} 1"#)
                && body.contains(r#"churnwatch_events_rejected_total{reason="value_too_large",topic="billing.events"} 1"#)
                && body.contains(r#"churnwatch_label_values_folded{label="plan"} 1"#)
                && body.contains(r#"churnwatch_mrr{plan="(other)",segment="none"} 100"#)
                && body.contains("churnwatch_new_customers_per_minute "))
            .then_some(body)
        })
    });
    assert!(metrics.is_some(), "pipeline metrics missing");

    cancel.cancel();
    service
        .await
        .expect("service task")
        .expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_topics_with_different_partition_counts_are_refused() {
    init_tracing();
    let broker = TestBroker::start();
    broker
        .create_topics(&[
            ("product.usage", 2),
            ("billing.events", 1),
            ("customer.feedback", 1),
            ("churnwatch.alerts", 1),
            ("churnwatch.dlq", 1),
        ])
        .await;
    let err = app::start(config(&broker, ""), CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(matches!(err, AppError::Topics(_)), "{err:?}");
    let msg = err.to_string();
    for part in [
        "not co-partitioned",
        "product.usage has 2 partition(s)",
        "billing.events has 1 partition(s)",
        "customer.feedback has 1 partition(s)",
    ] {
        assert!(msg.contains(part), "{part:?} missing in: {msg}");
    }

    // The binary says the same and exits non-zero.
    let dir = tempdir("copart");
    let cfg = dir.join("churnwatch.toml");
    std::fs::write(&cfg, config_toml(&broker.brokers, "127.0.0.1:0", "")).expect("write config");
    let out = Command::new(churnwatch_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("product.usage has 2 partition(s)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_a_missing_or_wrong_token_and_serves_with_the_right_one() {
    init_tracing();
    let broker = TestBroker::start();
    broker.create_default_topics(1).await;
    let cancel = CancellationToken::new();
    let extra = format!("[http]\napi_token = \"{TOKEN}\"\n");
    // `[http]` is also written by config_toml: merge by hand.
    let toml_text = config_toml(&broker.brokers, "127.0.0.1:0", "").replace("[http]\n", &extra);
    let raw: RawConfig = toml::from_str(&toml_text).expect("parses");
    let running = app::start(raw.validate().expect("valid"), cancel.clone())
        .await
        .expect("service starts");
    let addr = running.http_addr().to_string();
    let service = tokio::spawn(running.wait());

    broker
        .produce(
            "product.usage",
            Some(0),
            &[
                (Some("c-1"), &usage("c-1", T0)),
                (Some("c-2"), &usage("c-2", T0 + 5 * HOUR_MS)),
            ],
        )
        .await;

    block(|| {
        let get = |path: &str, token: Option<&str>| {
            http_get(&addr, path, token).unwrap_or_else(|e| panic!("GET {path}: {e}"))
        };
        assert_eq!(get("/healthz", None).0, 200, "probes stay open");
        assert_eq!(get("/metrics", None).0, 200, "metrics stay open");
        let (code, body) = get("/api/alerts?status=firing", None);
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("error"), "JSON error: {body}");
        assert_eq!(get("/api/alerts", Some("wrong-token-0123456789")).0, 401);
        assert_eq!(get("/api/at-risk", Some("wrong")).0, 401);
        assert_eq!(get("/api/customers/c-1", None).0, 401);
        let (code, body) = get("/api/alerts?status=firing", Some(TOKEN));
        assert_eq!(code, 200, "{body}");
        assert_eq!(get("/api/at-risk?limit=10", Some(TOKEN)).0, 200);
        assert_eq!(get("/api/at-risk?limit=zero", Some(TOKEN)).0, 400);
        let (code, body) = get("/api/customers/no-such-customer", Some(TOKEN));
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("error"), "{body}");
        let found = wait_for(Duration::from_secs(30), || {
            let (code, body) = get("/api/customers/c-1", Some(TOKEN));
            (code == 200).then_some(body)
        });
        assert!(
            found.is_some_and(|b| b.contains("c-1")),
            "customer c-1 never appeared"
        );
    });

    cancel.cancel();
    service
        .await
        .expect("service task")
        .expect("clean shutdown");
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "churnwatch-test-{name}-{}-{}",
        std::process::id(),
        T0 ^ Instant::now().elapsed().as_nanos() as i64
    ));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

struct Service {
    child: Child,
    addr: String,
}

impl Service {
    /// Starts `churnwatch run` and waits until it is ready (caught up).
    fn start(config: &Path, log: &Path) -> Service {
        let s = Service::spawn(config, log);
        let ready = wait_for(Duration::from_secs(60), || {
            http_get(&s.addr, "/readyz", None)
                .ok()
                .filter(|r| r.0 == 200)
        });
        assert!(ready.is_some(), "service never became ready");
        s
    }

    /// Starts `churnwatch run` and waits only until it serves HTTP.
    fn spawn(config: &Path, log: &Path) -> Service {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("service log");
        let child = Command::new(churnwatch_bin())
            .args(["run", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CHURNWATCH_LOG", "info,churnwatch=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start churnwatch");
        let s = Service {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let up = wait_for(Duration::from_secs(60), || {
            http_get(&s.addr, "/healthz", None)
                .ok()
                .filter(|r| r.0 == 200)
        });
        assert!(up.is_some(), "service never served /healthz");
        s
    }

    /// SIGKILL: no shutdown sequence at all.
    fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    fn sigterm(mut self) -> ExitStatus {
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        let status = wait_for(Duration::from_secs(30), || {
            self.child.try_wait().ok().flatten()
        });
        status.unwrap_or_else(|| {
            let _ = self.child.kill();
            panic!("service did not stop within 30s of SIGTERM")
        })
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn churned_alerts(broker: &TestBroker, at_least: usize) -> (Vec<String>, BTreeSet<String>) {
    let recs = broker.read_all("churnwatch.alerts", at_least, Duration::from_secs(60));
    let ids = recs
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let churned = recs
        .iter()
        .map(|r| r.json())
        .filter(|v| v["data"]["alert"] == "churned" && v["data"]["status"] == "firing")
        .map(|v| {
            v["data"]["customer_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    (ids, churned)
}

/// Every alert id on the topic is there once: nothing was re-emitted.
fn assert_emitted_once(ids: &[String]) {
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an alert was emitted twice: {ids:?}"
    );
}

async fn cancel_batch(
    broker: &TestBroker,
    partitions: i32,
    customers: std::ops::Range<u32>,
    start: i64,
) {
    let mut recs: Vec<(String, String)> = Vec::new();
    for i in customers.clone() {
        let c = format!("c-{i}");
        recs.push((c.clone(), started(&c, start - DAY_MS)));
    }
    for i in customers {
        let c = format!("c-{i}");
        recs.push((c.clone(), cancelled(&c, start + i64::from(i) * 60_000)));
    }
    let borrowed: Vec<(Option<&str>, &str)> = recs
        .iter()
        .map(|(k, v)| (Some(k.as_str()), v.as_str()))
        .collect();
    broker.produce("billing.events", None, &borrowed).await;
    // Each partition has its own event-time clock: an event well past the
    // lateness allowance on every partition moves each watermark past them.
    for p in 0..partitions {
        let key = format!("flush-{p}");
        let flush = started(&key, start + 3 * HOUR_MS);
        broker
            .produce(
                "billing.events",
                Some(p),
                &[(Some(key.as_str()), flush.as_str())],
            )
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_then_restart_neither_loses_nor_reemits_alerts() {
    init_tracing();
    let broker = TestBroker::start();
    broker.create_default_topics(2).await;
    let dir = tempdir("restart");
    let cfg = dir.join("churnwatch.toml");
    let log = dir.join("churnwatch.log");
    std::fs::write(&cfg, config_toml(&broker.brokers, "127.0.0.1:0", "")).expect("config");

    let svc = block(|| Service::start(&cfg, &log));
    cancel_batch(&broker, 2, 1..6, T0).await;
    let (_, churned) = block(|| churned_alerts(&broker, 5));
    assert_eq!(churned.len(), 5, "first run alerts: {churned:?}");
    let status = block(|| svc.sigterm());
    assert!(
        status.success(),
        "exit status after SIGTERM: {status:?}; log {}",
        log.display()
    );

    // While it is down, more customers churn.
    cancel_batch(&broker, 2, 6..11, T0 + DAY_MS).await;
    // Two batches of 5 started, 5 cancelled and a flush per partition.
    const PRODUCED: f64 = 24.0;
    // The restart receives the backlog while it replays what the first run
    // committed; with a 1-byte hold bound, the first message it holds stops
    // receiving until the rebuild is done, the rest wait in librdkafka.
    let small_hold = dir.join("small-hold.toml");
    std::fs::write(
        &small_hold,
        config_toml(&broker.brokers, "127.0.0.1:0", "")
            .replace("[kafka]\n", "[kafka]\nrebuild_hold_max = 1\n"),
    )
    .expect("config");
    let svc = block(|| Service::start(&small_hold, &log));
    let (_, churned) = block(|| churned_alerts(&broker, 10));
    assert_eq!(churned.len(), 10, "nothing lost: {churned:?}");
    let metric = |name: &str| -> f64 {
        let (_, m) = http_get(&svc.addr, "/metrics", None).expect("GET /metrics");
        metric_sum(&m, name)
    };
    assert!(
        metric("churnwatch_rebuild_hold_full_total") >= 1.0,
        "the hold bound was never reached, so this test does not exercise it; log {}",
        log.display()
    );
    // Every message is either replayed (below the committed offset) or
    // applied live (from it on, held or not), once.
    let applied =
        || metric("churnwatch_events_replayed_total") + metric("churnwatch_events_consumed_total");
    let seen = block(|| {
        wait_for(Duration::from_secs(10), || {
            Some(applied()).filter(|n| *n >= PRODUCED)
        })
    });
    assert_eq!(
        seen,
        Some(PRODUCED),
        "replayed + applied live; log {}",
        log.display()
    );
    // Give a re-emission time to show up, then count again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ids, churned) = block(|| churned_alerts(&broker, 10));
    assert_emitted_once(&ids);
    let expected: BTreeSet<String> = (1..11).map(|i| format!("c-{i}")).collect();
    assert_eq!(churned, expected);
    assert_eq!(applied(), PRODUCED, "nothing applied twice");
    let status = block(|| svc.sigterm());
    assert!(status.success(), "second exit: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_still_fires_time_based_alerts_at_event_time() {
    init_tracing();
    let broker = TestBroker::start();
    broker.create_default_topics(1).await;
    // Dunning expires 3s (event time) after the failure; the partition then
    // goes quiet, and only idle ticks can move its clock past the deadline.
    let extra = "dunning_grace = \"3s\"\nallowed_lateness = \"0s\"\n";
    let toml_text = config_toml(&broker.brokers, "127.0.0.1:0", extra)
        .replace("idle_timeout = \"30s\"", "idle_timeout = \"1s\"");
    let raw: RawConfig = toml::from_str(&toml_text).expect("parses");
    let cancel = CancellationToken::new();
    let running = app::start(raw.validate().expect("valid"), cancel.clone())
        .await
        .expect("service starts");
    let service = tokio::spawn(running.wait());
    let failed = format!(
        r#"{{"type":"payment_failed","customer_id":"c-1","mrr":4900,"reason":"card_declined","ts":"{}"}}"#,
        format_ts(T0)
    );
    broker
        .produce(
            "billing.events",
            Some(0),
            &[
                (Some("c-1"), &started("c-1", T0 - DAY_MS)),
                (Some("c-1"), &failed),
            ],
        )
        .await;
    let churned = block(|| {
        wait_for(Duration::from_secs(30), || {
            broker
                .read_all("churnwatch.alerts", 1, Duration::from_secs(1))
                .into_iter()
                .map(|r| r.json())
                .find(|v| v["data"]["alert"] == "churned" && v["data"]["customer_id"] == "c-1")
        })
    })
    .expect("dunning expiry fired on an idle partition");
    assert_eq!(churned["data"]["evidence"]["kind"], "involuntary");
    assert_eq!(
        churned["data"]["starts_at"],
        format_ts(T0 + 3000),
        "alert time is the event-time deadline, not the wall clock"
    );
    cancel.cancel();
    service
        .await
        .expect("service task")
        .expect("clean shutdown");
}

/// The idle rule (issue 13 item 2): on a partition quiet for
/// `kafka.idle_timeout`, event time follows the wall clock from its newest
/// event, and the watermark stays `allowed_lateness` behind it. So the last
/// events are applied `allowed_lateness` of wall time after input stopped
/// (not at `idle_timeout`), and an event arriving after a short pause, a
/// little behind the newest one, is on time, as in a backtest of the same
/// sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_keeps_allowed_lateness_and_agrees_with_the_backtest() {
    init_tracing();
    let broker = TestBroker::start();
    broker.create_default_topics(1).await;
    let extra = "allowed_lateness = \"20s\"\n";
    let toml_text = config_toml(&broker.brokers, "127.0.0.1:0", extra)
        .replace("idle_timeout = \"30s\"", "idle_timeout = \"1s\"");
    let raw: RawConfig = toml::from_str(&toml_text).expect("parses");
    let cfg = raw.validate().expect("valid");
    let cancel = CancellationToken::new();
    let running = app::start(cfg.clone(), cancel.clone())
        .await
        .expect("service starts");
    let addr = running.http_addr().to_string();
    let service = tokio::spawn(running.wait());
    // The watermark after c-2 is T0 - 10 s: c-1 waits in the buffer.
    let first = [usage("c-1", T0), usage("c-2", T0 + 10_000)];
    let behind = usage("c-3", T0 + 5_000);
    for l in &first {
        let id = if l.contains("c-1") { "c-1" } else { "c-2" };
        broker
            .produce("product.usage", Some(0), &[(Some(id), l.as_str())])
            .await;
    }
    let applied = |c: &str| -> bool {
        http_get(&addr, &format!("/api/customers/{c}"), None).is_ok_and(|r| r.0 == 200)
    };
    // c-1 is consumed at once; after idle_timeout (and twice that) it is
    // still buffered: only 20 s of idle wall time apply it.
    let seen = block(|| {
        wait_for(Duration::from_secs(30), || {
            let (_, m) = http_get(&addr, "/metrics", None).ok()?;
            (metric_sum(&m, metrics::EVENTS_CONSUMED) >= 2.0).then_some(())
        })
    });
    assert!(seen.is_some(), "never consumed");
    block(|| std::thread::sleep(Duration::from_millis(2_500)));
    assert!(
        !applied("c-1"),
        "applied at idle_timeout, not after allowed_lateness"
    );
    // 5 s of event time behind the newest, after a pause of a few seconds:
    // on time (it was late when an idle tick moved the watermark to the
    // newest event time plus the idle time).
    broker
        .produce("product.usage", Some(0), &[(Some("c-3"), behind.as_str())])
        .await;
    let all = block(|| {
        wait_for(Duration::from_secs(60), || {
            (applied("c-1") && applied("c-2") && applied("c-3")).then_some(())
        })
    });
    assert!(
        all.is_some(),
        "buffered events never applied on the idle partition"
    );
    let (_, m) = http_get(&addr, "/metrics", None).expect("metrics");
    assert_eq!(
        metric_sum(&m, metrics::EVENTS_LATE),
        0.0,
        "counted late by the service"
    );
    // The backtest of the same sequence: nothing late either.
    let lines = [first[0].as_str(), first[1].as_str(), behind.as_str()].join("\n");
    let (_, summary) = churnwatch::backtest::replay(
        std::sync::Arc::new(cfg),
        std::io::Cursor::new(lines.into_bytes()),
        None,
        |_| Ok(()),
        |_, r, _| panic!("rejected: {r}"),
        |_| {},
    )
    .expect("backtest");
    assert_eq!(summary.late, 0);
    cancel.cancel();
    service
        .await
        .expect("service task")
        .expect("clean shutdown");
}

#[test]
fn check_config_lists_every_problem_and_exits_2() {
    let dir = tempdir("check");
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        "dunning_grace = \"soon\"\n[kafka]\nalerts_topic = \"bad topic\"\n[http]\nlisten = \"nowhere\"\n",
    )
    .expect("write");
    let out = Command::new(churnwatch_bin())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env("CHURNWATCH_DUNING_GRACE", "1d")
        .output()
        .expect("run check-config");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "dunning_grace",
        "kafka.alerts_topic",
        "http.listen",
        "CHURNWATCH_DUNING_GRACE",
    ] {
        assert!(err.contains(key), "{key} missing in: {err}");
    }
    let good = dir.join("good.toml");
    std::fs::write(&good, "[kafka]\nbrokers = \"k:9092\"\n").expect("write");
    let out = Command::new(churnwatch_bin())
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .expect("run check-config");
    assert!(out.status.success());
    // Every effective value, as a config file that reads back (issue 13).
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        r#"brokers = "k:9092""#,
        r#"dunning_grace = "14d""#,
        r#"reporting_currency = "USD""#,
        "key_features = []",
        "[alerts.key_feature_unused]",
        r#"idle_timeout = "30s""#,
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
    let back: RawConfig = toml::from_str(&text).expect("check-config output parses");
    back.validate().expect("check-config output is valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_partitions_and_emit_each_alert_once() {
    init_tracing();
    let broker = TestBroker::start();
    broker.create_default_topics(2).await;
    let cancel = CancellationToken::new();
    let mut services = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..2 {
        let running = app::start(config(&broker, ""), cancel.clone())
            .await
            .expect("service starts");
        addrs.push(running.http_addr().to_string());
        services.push(tokio::spawn(running.wait()));
    }
    let both_ready = block(|| {
        wait_for(Duration::from_secs(60), || {
            // Ready, and the group settled: one partition number each.
            addrs
                .iter()
                .all(|a| {
                    http_get(a, "/readyz", None)
                        .is_ok_and(|r| r.0 == 200 && r.1.contains(r#""live_partitions":1"#))
                })
                .then_some(())
        })
    });
    assert!(both_ready.is_some(), "instances never became ready");
    cancel_batch(&broker, 2, 1..11, T0).await;
    let (_, churned) = block(|| churned_alerts(&broker, 10));
    assert_eq!(churned.len(), 10, "{churned:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ids, _) = block(|| churned_alerts(&broker, 10));
    assert_emitted_once(&ids);
    cancel.cancel();
    for s in services {
        s.await.expect("service task").expect("clean shutdown");
    }
}

/// A generated backlog on the input topics, `PARTITIONS` partitions, plus one
/// sentinel usage event per partition, and the backtest of the same lines up
/// to the generator's end. No idle ticks (`idle_timeout` 1h): they move a
/// quiet partition's clock by wall time, which the backtest cannot follow;
/// the sentinels move the clocks instead.
///
/// Generated events end before midnight `end`. Each sentinel, later than
/// `end` by the allowed lateness and 1 ms, moves its partition's watermark
/// to `end + 1 ms` once the billing and feedback topics are drained: each
/// partition applies every event up to `end` and the daily sweep at `end`,
/// and its clock stops there. The backtest gets the same lines and
/// `until = end`: the same events, timers and sweeps, the same clock; the
/// sentinels stay unapplied on both sides.
struct Backlog {
    /// The service's config (TOML text, and parsed).
    toml: String,
    cfg: Config,
    engine: churnwatch::engine::Engine,
    summary: churnwatch::backtest::Summary,
    expected: Vec<churnwatch::alert::AlertEvent>,
}

const PARTITIONS: i32 = 2;

/// The sum of the test group's committed offsets over the input topics.
fn committed_reader(broker: &TestBroker) -> impl Fn() -> i64 {
    let reader: rdkafka::consumer::BaseConsumer = broker
        .client()
        .set("group.id", "churnwatch-test")
        .create()
        .expect("offset reader");
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in ["product.usage", "billing.events", "customer.feedback"] {
        for p in 0..PARTITIONS {
            tpl.add_partition(t, p);
        }
    }
    move || {
        use rdkafka::consumer::Consumer;
        reader
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .map(|c| {
                c.elements()
                    .iter()
                    .filter_map(|e| e.offset().to_raw())
                    .filter(|o| *o > 0)
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Resolved events on the alert topic with no firing event of the same
/// customer, alert and `starts_at` before them (a subscriber's alert that
/// never resolves).
fn unpaired_resolutions(recs: &[common::Record]) -> Vec<String> {
    let mut open: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut unpaired = Vec::new();
    for r in recs {
        let v = r.json();
        let d = &v["data"];
        let key = (
            d["customer_id"].to_string(),
            d["alert"].to_string(),
            d["starts_at"].to_string(),
        );
        if d["status"] == "firing" {
            open.insert(key);
        } else if !open.contains(&key) {
            unpaired.push(format!("{} {} {}", key.0, key.1, key.2));
        }
    }
    unpaired
}

/// What subscribers read, checked against the backtest: every resolved
/// event pairs (customer, alert, `starts_at`) with a firing one before it on
/// the topic; every record is, field for field, the backtest's event of the
/// same id, a re-emission after a kill included; every backtest alert is
/// there. Returns the ids read.
fn assert_topic_is_the_backtest(
    recs: &[common::Record],
    expected: &[churnwatch::alert::AlertEvent],
) -> Vec<String> {
    let want: BTreeMap<String, serde_json::Value> =
        expected.iter().map(|a| (a.id(), a.to_value())).collect();
    let unpaired = unpaired_resolutions(recs);
    let mut ids = Vec::new();
    let mut differ = Vec::new();
    let mut extra = Vec::new();
    for r in recs {
        let v = r.json();
        let d = &v["data"];
        let id = v["id"].as_str().unwrap_or_default().to_string();
        match want.get(&id) {
            Some(w) if *w == v => {}
            Some(w) => differ.push(format!("got {v}\nwant {w}")),
            None => extra.push(format!(
                "{} {} {} {}",
                d["customer_id"], d["alert"], d["status"], v["time"]
            )),
        }
        ids.push(id);
    }
    let got: BTreeSet<&String> = ids.iter().collect();
    let missing: Vec<String> = expected
        .iter()
        .filter(|a| !got.contains(&a.id()))
        .map(|a| {
            format!(
                "{} {} {:?} {}",
                a.customer_id,
                a.alert.name(),
                a.status,
                format_ts(a.time())
            )
        })
        .collect();
    assert!(
        unpaired.is_empty() && differ.is_empty() && extra.is_empty() && missing.is_empty(),
        "resolved without its firing: {unpaired:#?}\ndiffering from the backtest: {differ:#?}\nnot in the backtest: {extra:#?}\nmissing: {missing:#?}"
    );
    ids
}

/// `/api/alerts?status=firing` of the service at `addr` is the backtest's
/// firing alerts (those of the alerts `keep` names), in order, field for
/// field but `health_score`, which the API computes at the service's clock
/// (idle ticks move it seconds past the backtest's end). Waits up to 30 s.
fn assert_api_alerts_are_backtest(
    addr: &str,
    engine: &churnwatch::engine::Engine,
    keep: impl Fn(&str) -> bool,
    when: &str,
) {
    use serde_json::Value;
    let strip = |mut v: Value| {
        v["health_score"] = Value::Null;
        v
    };
    let kept = |v: &Value| keep(v["alert"].as_str().unwrap_or_default());
    let want: Vec<Value> = engine
        .firing()
        .iter()
        .map(|a| strip(a.to_value()["data"].clone()))
        .filter(kept)
        .collect();
    assert!(!want.is_empty(), "no firing alert to compare");
    let got = block(|| {
        let mut last = Vec::new();
        wait_for(Duration::from_secs(30), || {
            let (_, body) = http_get(addr, "/api/alerts?status=firing", None).ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            last = v["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(strip)
                .filter(kept)
                .collect();
            (last == want).then_some(())
        });
        last
    });
    let key = |v: &Value| v.to_string();
    let got_set: BTreeSet<String> = got.iter().map(key).collect();
    let want_set: BTreeSet<String> = want.iter().map(key).collect();
    assert!(
        got == want,
        "{when}: /api/alerts differs from the backtest: API only {:#?}; backtest only {:#?}",
        got_set.difference(&want_set).collect::<Vec<_>>(),
        want_set.difference(&got_set).collect::<Vec<_>>(),
    );
}

/// Input messages a running service has read: replayed, consumed or rejected.
fn events_read(addr: &str) -> u64 {
    http_get(addr, "/metrics", None).map_or(0, |(_, m)| {
        [
            metrics::EVENTS_REPLAYED,
            metrics::EVENTS_CONSUMED,
            metrics::EVENTS_REJECTED,
        ]
        .iter()
        .map(|n| metric_sum(&m, n) as u64)
        .sum()
    })
}

async fn backlog_and_backtest(broker: &TestBroker, seed: u64) -> Backlog {
    use churnwatch::alert::AlertEvent;
    use churnwatch::generate::{GenerateOptions, generate_to_vec};
    use churnwatch::kafka::loadgen::{LoadCounters, Pace, produce_generated};
    use serde_json::Value;
    use std::sync::Arc;

    broker.create_default_topics(PARTITIONS).await;
    // No late lines: the file order and the per-topic order then agree.
    let opts = GenerateOptions {
        seed,
        customers: 300,
        days: 120,
        late_fraction: 0.0,
        ..GenerateOptions::default()
    };
    let toml_text = config_toml(&broker.brokers, "127.0.0.1:0", "")
        .replace("idle_timeout = \"30s\"", "idle_timeout = \"1h\"");
    let raw: RawConfig = toml::from_str(&toml_text).expect("parses");
    let cfg = raw.validate().expect("valid");
    assert_eq!(cfg.kafka.idle_timeout, HOUR_MS, "idle ticks off");
    let kafka = cfg.kafka.clone();
    block(|| {
        produce_generated(
            &kafka,
            &opts,
            Pace::Unlimited,
            &CancellationToken::new(),
            Arc::new(LoadCounters::default()),
        )
    })
    .expect("produce generated traffic");

    let end = opts.end();
    let generated = generate_to_vec(&opts);
    assert!(
        generated.lines.iter().all(|l| {
            let v: Value = serde_json::from_str(l).expect("generated JSON");
            churnwatch::event::parse_ts(v["ts"].as_str().unwrap_or_default()).is_ok_and(|t| t < end)
        }),
        "generated events end before {}",
        format_ts(end)
    );
    let sentinel_ts = end + cfg.allowed_lateness + 1;
    let sentinels: Vec<(String, String)> = (0..PARTITIONS)
        .map(|p| {
            let id = format!("sentinel-{p}");
            let line = usage(&id, sentinel_ts);
            (id, line)
        })
        .collect();
    for (p, (id, line)) in (0..PARTITIONS).zip(&sentinels) {
        broker
            .produce("product.usage", Some(p), &[(Some(id.as_str()), line)])
            .await;
    }

    let mut bytes = Vec::new();
    for l in generated.lines.iter().chain(sentinels.iter().map(|s| &s.1)) {
        bytes.extend_from_slice(l.as_bytes());
        bytes.push(b'\n');
    }
    let mut expected: Vec<AlertEvent> = Vec::new();
    let (engine, summary) = churnwatch::backtest::replay(
        std::sync::Arc::new(cfg.clone()),
        std::io::Cursor::new(bytes),
        Some(end),
        |a| {
            expected.push(a.clone());
            Ok(())
        },
        |_, _, _| Ok(()),
        |_| {},
    )
    .expect("backtest");
    assert_eq!(summary.after_until, sentinels.len() as u64, "{summary:?}");
    assert_eq!(summary.as_of.as_deref(), Some(&*format_ts(end)));
    assert!(
        expected.len() > 20,
        "too few alerts to compare: {}",
        expected.len()
    );
    Backlog {
        toml: toml_text,
        cfg,
        engine,
        summary,
        expected,
    }
}

/// The `churnwatch_business_*` series of a /metrics text, sorted.
fn business_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("churnwatch_business_"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Every business gauge (overall, per plan, per segment, every ratio) on the
/// service's /metrics matches the backtest's rolling window: the backtest
/// engine's report, rendered through the same metrics code, gives the same
/// series (waits up to 15 s for the next refresh).
fn assert_business_gauges_match(addr: &str, engine: &mut churnwatch::engine::Engine) {
    let want_metrics = churnwatch::metrics::Metrics::new().expect("metrics");
    want_metrics.set_business(&[engine.business_rolling()]);
    let want = business_lines(&want_metrics.encode());
    assert!(
        want.iter().any(|l| l.contains("plan=\"all\""))
            && want.iter().any(|l| !l.contains("plan=\"all\"")),
        "the backtest report has overall and per-plan series: {want:?}"
    );
    let seen = wait_for(Duration::from_secs(15), || {
        let (_, m) = http_get(addr, "/metrics", None).ok()?;
        Some(business_lines(&m)).filter(|got| *got == want)
    });
    if seen.is_none() {
        let got = http_get(addr, "/metrics", None)
            .map(|(_, m)| business_lines(&m))
            .unwrap_or_default();
        let only_got: Vec<_> = got.iter().filter(|l| !want.contains(l)).collect();
        let only_want: Vec<_> = want.iter().filter(|l| !got.contains(l)).collect();
        panic!(
            "business gauges differ from the backtest's ({} series): /metrics only {only_got:?}; backtest only {only_want:?}",
            want.len()
        );
    }
}

/// The service fed generated traffic through Kafka raises the same alerts
/// (same deterministic ids) as `backtest` on the same events, and serves the
/// same customers, at-risk list, firing alerts and business gauges. The
/// traffic is a backlog produced before the service starts, the hardest case
/// for ordering across the three input topics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_run_matches_backtest_alert_ids() {
    use churnwatch::alert::AlertEvent;
    use serde_json::Value;

    init_tracing();
    let broker = TestBroker::start();
    let Backlog {
        cfg,
        mut engine,
        summary,
        expected,
        ..
    } = backlog_and_backtest(&broker, 11).await;
    // A broken producer after the backlog (issue 12): a clock in 2099, too
    // deep, out of bounds, a customer id as plan. Each goes to the
    // dead-letter topic and nothing else changes: the alerts, customers and
    // business gauges below are the backtest's, which never saw them.
    let t = churnwatch::event::parse_ts("2026-03-01T00:00:00Z").expect("ts");
    let c = "c-000001";
    let hostile_usage = [
        usage(
            c,
            churnwatch::event::parse_ts("2099-01-01T00:00:00Z").expect("ts"),
        ),
        format!(
            r#"{{"type":"usage","customer_id":"{c}","action":"a","ts":"{}","x":{}{}}}"#,
            format_ts(t),
            "[".repeat(40),
            "]".repeat(40)
        ),
        format!(
            r#"{{"type":"usage","customer_id":"{c}","action":"a","quantity":1e12,"ts":"{}"}}"#,
            format_ts(t)
        ),
    ];
    let hostile_billing = [
        format!(
            r#"{{"type":"plan_changed","customer_id":"{c}","plan":"{}","mrr":5,"ts":"{}"}}"#,
            "u-1234567890/".repeat(10),
            format_ts(t)
        ),
        format!(
            r#"{{"type":"subscription_renewed","customer_id":"{c}","mrr":4000000000000000,"ts":"{}"}}"#,
            format_ts(t)
        ),
    ];
    let keyed = |lines: &[String]| -> Vec<(Option<&str>, String)> {
        lines.iter().map(|l| (Some(c), l.clone())).collect()
    };
    for (topic, lines) in [
        ("product.usage", keyed(&hostile_usage)),
        ("billing.events", keyed(&hostile_billing)),
    ] {
        let msgs: Vec<(Option<&str>, &str)> = lines.iter().map(|(k, l)| (*k, l.as_str())).collect();
        broker.produce(topic, Some(0), &msgs).await;
    }

    let cancel = CancellationToken::new();
    let running = app::start(cfg, cancel.clone())
        .await
        .expect("service starts");
    let addr = running.http_addr().to_string();
    let service = tokio::spawn(running.wait());

    // Wait until everything is consumed.
    let mut last = None;
    let consumed = block(|| {
        wait_for(Duration::from_secs(120), || {
            let (_, m) = http_get(&addr, "/metrics", None).ok()?;
            let n = metric_sum(&m, metrics::EVENTS_CONSUMED);
            last = Some(n);
            (n as u64 >= summary.events_read).then_some(n)
        })
    });
    assert!(
        consumed.is_some(),
        "the service did not consume all {} events (consumed: {last:?})",
        summary.events_read
    );
    let dlq = block(|| broker.read_all("churnwatch.dlq", 5, Duration::from_secs(30)));
    let reasons: Vec<&str> = dlq.iter().filter_map(|r| r.header("reason")).collect();
    assert_eq!(
        reasons.iter().copied().collect::<BTreeSet<_>>(),
        [
            "invalid_label",
            "too_deep",
            "ts_in_future",
            "value_too_large"
        ]
        .into_iter()
        .collect(),
        "{reasons:?}"
    );
    assert_eq!(reasons.len(), 5, "{reasons:?}");

    // Every alert the backtest raised up to `end`, and no other, is on the
    // alert topic. Population-dependent ones (engagement_drop,
    // seat_contraction, inactivity) included: the instance merges one
    // population over its partitions at each daily sweep, as the backtest's
    // single engine computes it.
    let want_ids: BTreeSet<String> = expected.iter().map(AlertEvent::id).collect();
    let recs = block(|| {
        let mut recs = Vec::new();
        wait_for(Duration::from_secs(60), || {
            recs = broker.read_all("churnwatch.alerts", 0, Duration::ZERO);
            let got: BTreeSet<String> = recs
                .iter()
                .map(|r| r.json()["id"].as_str().unwrap_or_default().to_string())
                .collect();
            (got == want_ids).then_some(())
        });
        recs
    });
    let got: BTreeSet<String> = recs
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let describe = |a: &AlertEvent| {
        format!(
            "{} {} {:?} {}",
            a.customer_id,
            a.alert.name(),
            a.status,
            format_ts(a.time())
        )
    };
    let missing: Vec<String> = expected
        .iter()
        .filter(|a| !got.contains(&a.id()))
        .map(describe)
        .collect();
    let extra: Vec<String> = recs
        .iter()
        .map(|r| r.json())
        .filter(|v| v["id"].as_str().is_some_and(|id| !want_ids.contains(id)))
        .map(|v| {
            format!(
                "{} {} {} {}",
                v["data"]["customer_id"], v["data"]["alert"], v["data"]["status"], v["time"]
            )
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} of {} backtest alerts missing from Kafka: {missing:?}; {} not in the backtest: {extra:?}",
        missing.len(),
        want_ids.len(),
        extra.len()
    );
    assert_eq!(got, want_ids);
    assert_emitted_once(
        &recs
            .iter()
            .map(|r| r.json()["id"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>(),
    );

    // The API and /metrics see the same customers.
    let tracked = |addr: &str| -> Option<usize> {
        let (_, m) = http_get(addr, "/metrics", None).ok()?;
        Some(metric_sum(&m, metrics::CUSTOMERS_TRACKED) as usize)
    };
    let all = block(|| {
        wait_for(Duration::from_secs(30), || {
            tracked(&addr).filter(|n| *n == engine.customer_count())
        })
    });
    assert_eq!(
        all,
        Some(engine.customer_count()),
        "customers tracked: {:?}",
        tracked(&addr)
    );
    let biz = &summary.business_rolling["overall"];
    assert!(
        biz["customers_end"].as_f64() > Some(0.0) && biz["mrr_end"].as_f64() > Some(0.0),
        "{biz}"
    );
    block(|| assert_business_gauges_match(&addr, &mut engine));

    // The API serves what the backtest computes, field for field: every
    // customer's full record (row, health breakdown, windows, billing,
    // feedback, firing alerts with evidence, `as_of`), the whole at-risk list
    // in order, and the firing alerts.
    let get_json = |path: &str| -> Value {
        let (status, body) =
            http_get(&addr, path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    };
    let rows = engine.customers();
    assert!(
        rows.iter().any(|r| !r.firing.is_empty()) && rows.iter().any(|r| r.last_seen.is_some()),
        "customers with alerts and usage to compare"
    );
    let customer_diffs = || -> Vec<String> {
        rows.iter()
            .filter_map(|r| {
                let id = &*r.customer_id;
                let want = churnwatch::http::customer_json(
                    &engine.customer(id).expect("backtest customer"),
                );
                let got = get_json(&format!("/api/customers/{id}"));
                (got != want).then(|| {
                    let keys: BTreeSet<&String> = want
                        .as_object()
                        .into_iter()
                        .chain(got.as_object())
                        .flat_map(|o| o.keys())
                        .collect();
                    let fields: Vec<String> = keys
                        .into_iter()
                        .filter(|k| got[k.as_str()] != want[k.as_str()])
                        .map(|k| {
                            format!("{k}: API {} backtest {}", got[k.as_str()], want[k.as_str()])
                        })
                        .collect();
                    format!("{id}: {fields:?}")
                })
            })
            .collect()
    };
    let diffs = block(|| {
        let mut diffs = Vec::new();
        wait_for(Duration::from_secs(15), || {
            diffs = customer_diffs();
            diffs.is_empty().then_some(())
        });
        diffs
    });
    assert!(
        diffs.is_empty(),
        "{} of {} customers differ from the backtest; first: {:#?}",
        diffs.len(),
        rows.len(),
        &diffs[..diffs.len().min(3)]
    );

    // /api/at-risk with a limit covering everyone: the backtest's rows,
    // filtered and ranked as the API documents.
    let mut at_risk: Vec<_> = rows
        .iter()
        .filter(|r| r.risk != churnwatch::signals::health::Risk::Low || !r.firing.is_empty())
        .cloned()
        .collect();
    churnwatch::http::rank_at_risk(&mut at_risk);
    assert!(
        at_risk.len() > 5 && at_risk.len() < rows.len(),
        "{} at risk of {}",
        at_risk.len(),
        rows.len()
    );
    let want_at_risk: Vec<Value> = at_risk
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).expect("row JSON");
            v["mrr_at_risk"] = r.mrr_at_risk.into();
            v
        })
        .collect();
    // The list and the firing alerts come from the read view the service
    // publishes after its (paced) refresh: wait for the one at its clock.
    let want_at_risk = Value::Array(want_at_risk);
    let path = format!("/api/at-risk?limit={}", churnwatch::http::MAX_LIMIT);
    let got = block(|| {
        let mut last = Value::Null;
        wait_for(Duration::from_secs(15), || {
            last = get_json(&path);
            (last["customers"] == want_at_risk).then_some(())
        });
        last
    });
    assert_eq!(
        got["customers"], want_at_risk,
        "/api/at-risk differs from the backtest"
    );

    // /api/alerts?status=firing: the backtest's firing alerts, as data.
    let want_firing: Vec<Value> = engine
        .firing()
        .iter()
        .map(|a| {
            let v: Value = serde_json::from_str(&a.to_json()).expect("alert JSON");
            v["data"].clone()
        })
        .collect();
    assert!(!want_firing.is_empty());
    let got = block(|| {
        let mut last = Vec::new();
        wait_for(Duration::from_secs(15), || {
            let v = get_json("/api/alerts?status=firing");
            last = v["alerts"].as_array().cloned().unwrap_or_default();
            (last == want_firing).then_some(())
        });
        last
    });
    let key = |v: &Value| v.to_string();
    let got_set: BTreeSet<String> = got.iter().map(key).collect();
    let want_set: BTreeSet<String> = want_firing.iter().map(key).collect();
    let only_got: Vec<_> = got_set.difference(&want_set).collect();
    let only_want: Vec<_> = want_set.difference(&got_set).collect();
    assert!(
        only_got.is_empty() && only_want.is_empty() && got.len() == want_firing.len(),
        "/api/alerts?status=firing differs from the backtest: API only {only_got:#?}; backtest only {only_want:#?}"
    );
    // In the same order: by customer, then alert, whatever the partitions.
    assert_eq!(got, want_firing, "/api/alerts?status=firing order");

    cancel.cancel();
    let _ = service.await;
}

/// A restart must not change what an alert says (issue 14): graceful
/// restarts mid-backlog, right after it, and after idle ticks moved event
/// time (`kafka.idle_timeout = 1s`; both partitions go idle after the
/// backlog). Subscribers then read exactly the backtest's alerts, field for
/// field, each resolved event paired with its firing one, each once; and
/// `/api/alerts` after each restart equals the backtest's firing alerts.
///
/// It failed in about half the runs until 2026-12-04, in two ways: a
/// `downgrade` resolved event on the topic before its firing event (the
/// outbox enqueued each alert from a task of its own, so a restart's burst
/// of transitions reached the topic in the runtime's scheduling order), and
/// `engagement_drop` evidence after the first restart differing from the
/// backtest's (the messages held during a rebuild counted as received when
/// it began, so a partition with input still to read got an idle tick that
/// moved its clock weeks ahead and made its usage late).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restarts_mid_backlog_after_it_and_after_idle_ticks_change_no_alert() {
    init_tracing();
    let broker = TestBroker::start();
    let Backlog {
        toml,
        engine,
        summary,
        expected,
        ..
    } = backlog_and_backtest(&broker, 5).await;
    let dir = tempdir("restarts");
    let cfg = dir.join("churnwatch.toml");
    let log = dir.join("churnwatch.log");
    std::fs::write(
        &cfg,
        toml.replace("idle_timeout = \"1h\"", "idle_timeout = \"1s\""),
    )
    .expect("config");
    let committed = committed_reader(&broker);
    let api_is_backtest = |svc: &Service, when: &str| {
        assert_api_alerts_are_backtest(
            &svc.addr,
            &engine,
            |_| true,
            &format!("{when}; log {}", log.display()),
        )
    };
    let read_everything = |svc: &Service| {
        let done = block(|| {
            wait_for(Duration::from_secs(120), || {
                (events_read(&svc.addr) >= summary.events_read).then_some(())
            })
        });
        assert!(done.is_some(), "not everything read; log {}", log.display());
    };

    // Stopped mid-backlog.
    let svc = block(|| Service::spawn(&cfg, &log));
    let third = (summary.events_read / 3) as i64;
    let mid = block(|| {
        wait_for(Duration::from_secs(60), || {
            (committed() >= third).then_some(())
        })
    });
    assert!(mid.is_some(), "never committed a third");
    assert!(
        block(|| svc.sigterm()).success(),
        "exit after SIGTERM; log {}",
        log.display()
    );
    // Stopped right after the backlog.
    let svc = block(|| Service::spawn(&cfg, &log));
    read_everything(&svc);
    api_is_backtest(&svc, "after the backlog");
    assert!(block(|| svc.sigterm()).success());
    // Stopped after idle ticks moved event time on.
    let svc = block(|| Service::spawn(&cfg, &log));
    read_everything(&svc);
    block(|| std::thread::sleep(Duration::from_secs(5)));
    api_is_backtest(&svc, "after idle ticks");
    assert!(block(|| svc.sigterm()).success());
    // And once more.
    let svc = block(|| Service::spawn(&cfg, &log));
    read_everything(&svc);
    api_is_backtest(&svc, "after three restarts");
    let recs = block(|| {
        let mut recs = Vec::new();
        wait_for(Duration::from_secs(60), || {
            recs = broker.read_all("churnwatch.alerts", 0, Duration::ZERO);
            (recs.len() >= expected.len()).then_some(())
        });
        // Give a re-emission time to show up.
        std::thread::sleep(Duration::from_secs(2));
        broker.read_all("churnwatch.alerts", 0, Duration::ZERO)
    });
    let ids = assert_topic_is_the_backtest(&recs, &expected);
    assert_emitted_once(&ids);
    assert!(block(|| svc.sigterm()).success());
}

/// `kill -9` at any moment loses nothing and applies nothing twice: the
/// service is killed with SIGKILL partway through a generated backlog, again
/// soon after it comes back (during its rebuild or just after), then
/// restarted for good. The last run reads every message (replayed or live);
/// every alert the backtest raises reaches the alert topic, each record the
/// backtest's alert of its id field for field (but for the health score),
/// every resolved event after its firing one; an alert may be emitted again
/// after a kill (at least once) but always with the same id and content, so
/// subscribers drop it by `id`; `/api/alerts` is the backtest's; and every
/// customer's state and the business gauges equal the backtest's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_nothing_and_applies_nothing_twice() {
    init_tracing();
    let broker = TestBroker::start();
    let Backlog {
        toml,
        mut engine,
        summary,
        expected,
        ..
    } = backlog_and_backtest(&broker, 5).await;
    let dir = tempdir("kill9");
    let cfg = dir.join("churnwatch.toml");
    let log = dir.join("churnwatch.log");
    // A killed member leaves the group only when its session times out
    // (librdkafka's default is 45 s).
    let toml = format!("{toml}\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n");
    // Each restart comes after the killed member's session has expired. Tansu
    // completes a join after half a session timeout with the dead member still
    // in the group, and once handed an empty assignment the new member was
    // seen waiting for a rebalance that never came (Apache Kafka holds the
    // join until the dead member's session expires). What this test is about
    // is the moment of the kill, not how soon the process comes back.
    let after_session = || std::thread::sleep(Duration::from_millis(7_500));
    std::fs::write(&cfg, &toml).expect("config");
    let counter = |addr: &str, name: &str| -> u64 {
        http_get(addr, "/metrics", None).map_or(0, |(_, m)| metric_sum(&m, name) as u64)
    };
    let committed = committed_reader(&broker);
    // First run: killed once a third of the backlog is committed.
    let svc = block(|| Service::spawn(&cfg, &log));
    let third = (summary.events_read / 3) as i64;
    let mid = block(|| {
        wait_for(Duration::from_secs(60), || {
            (committed() >= third).then_some(())
        })
    });
    assert!(mid.is_some(), "first run never committed a third");
    block(|| svc.kill9());
    block(after_session);
    let after_first = block(&committed);
    assert!(
        after_first < summary.events_read as i64,
        "the first run committed everything before the kill"
    );
    // Second run: killed once it rebuilds (replays) or consumes.
    let svc = block(|| Service::spawn(&cfg, &log));
    let busy = block(|| {
        wait_for(Duration::from_secs(60), || {
            (counter(&svc.addr, metrics::EVENTS_REPLAYED)
                + counter(&svc.addr, metrics::EVENTS_CONSUMED)
                > 0)
            .then_some(())
        })
    });
    assert!(
        busy.is_some(),
        "second run never started; log {}",
        log.display()
    );
    block(|| svc.kill9());
    block(after_session);
    // Third run: left to finish; it rebuilds what the others committed, then
    // reads the rest.
    let svc = block(|| Service::spawn(&cfg, &log));
    let done = block(|| {
        wait_for(Duration::from_secs(120), || {
            (events_read(&svc.addr) >= summary.events_read).then_some(())
        })
    });
    if done.is_none() {
        let m = http_get(&svc.addr, "/metrics", None)
            .map(|r| r.1)
            .unwrap_or_default();
        let lines: Vec<&str> = m
            .lines()
            .filter(|l| {
                l.starts_with(metrics::EVENTS_REPLAYED)
                    || l.starts_with(metrics::EVENTS_CONSUMED)
                    || l.starts_with(metrics::EVENTS_REJECTED)
                    || l.starts_with("churnwatch_consumer_lag")
            })
            .collect();
        panic!(
            "the last run read {} of {} events; committed {}; log {}; {lines:#?}",
            events_read(&svc.addr),
            summary.events_read,
            committed(),
            log.display()
        );
    }

    // Every alert must be there with the backtest's id, the
    // population-dependent ones too (they differed near a threshold after a
    // kill before the fixes of issue 14).
    let want: BTreeSet<String> = expected.iter().map(|a| a.id()).collect();
    assert!(want.len() > 20, "too few alerts to compare: {}", want.len());
    let recs = block(|| {
        let mut recs = Vec::new();
        wait_for(Duration::from_secs(90), || {
            recs = broker.read_all("churnwatch.alerts", 0, Duration::ZERO);
            let got: BTreeSet<String> = recs
                .iter()
                .map(|r| r.json()["id"].as_str().unwrap_or_default().to_string())
                .collect();
            want.is_subset(&got).then_some(())
        });
        recs
    });
    let got: BTreeSet<String> = recs
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap_or_default().to_string())
        .collect();
    let missing: Vec<&String> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} of {} alerts lost after kill -9: {missing:?}; log {}",
        missing.len(),
        want.len(),
        log.display()
    );
    let extra: Vec<String> = recs
        .iter()
        .map(|r| r.json())
        .filter(|v| !want.contains(v["id"].as_str().unwrap_or_default()))
        .map(|v| v["data"].to_string())
        .collect();
    assert!(
        extra.is_empty(),
        "alerts the backtest never raised: {extra:?}"
    );
    // Every resolved event, of every alert, pairs with a firing one before it.
    let unpaired = unpaired_resolutions(&recs);
    assert!(
        unpaired.is_empty(),
        "resolved without its firing before it: {unpaired:#?}; log {}",
        log.display()
    );
    // Each record is the backtest's alert of its id, field for field (its
    // `starts_at` and evidence), but for the health score, which reads the
    // plan's population at the moment it was emitted.
    let without_health = |v: &serde_json::Value| {
        let mut v = v.clone();
        v["data"]["health_score"] = serde_json::Value::Null;
        v
    };
    let backtest: BTreeMap<String, serde_json::Value> = expected
        .iter()
        .map(|a| (a.id(), without_health(&a.to_value())))
        .collect();
    let differ: Vec<String> = recs
        .iter()
        .map(|r| without_health(&r.json()))
        .filter(|v| backtest.get(v["id"].as_str().unwrap_or_default()) != Some(v))
        .map(|v| v.to_string())
        .collect();
    assert!(
        differ.is_empty(),
        "alerts differing from the backtest's: {differ:#?}"
    );
    // An alert emitted again (at-least-once) is then the same too, but for
    // its health score.
    // Every customer's state, rebuilt from the topics, is the backtest's: no
    // event lost or applied twice.
    let state_diffs = || -> Vec<String> {
        engine
            .customers()
            .iter()
            .flat_map(|r| {
                let id = &*r.customer_id;
                let want = churnwatch::http::customer_json(
                    &engine.customer(id).expect("backtest customer"),
                );
                let got: serde_json::Value =
                    http_get(&svc.addr, &format!("/api/customers/{id}"), None)
                        .ok()
                        .and_then(|(_, b)| serde_json::from_str(&b).ok())
                        .unwrap_or_default();
                [
                    "lifecycle",
                    "plan",
                    "segment",
                    "mrr",
                    "billing",
                    "feedback",
                    "first_seen",
                    "last_seen",
                    "as_of",
                ]
                .into_iter()
                .filter(|k| got[*k] != want[*k])
                .map(|k| format!("{id} {k}: API {} backtest {}", got[k], want[k]))
                .collect::<Vec<_>>()
            })
            .collect()
    };
    let mut diffs = Vec::new();
    block(|| {
        wait_for(Duration::from_secs(15), || {
            diffs = state_diffs();
            diffs.is_empty().then_some(())
        })
    });
    assert!(
        diffs.is_empty(),
        "{} fields differ from the backtest after kill -9 and restart: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(5)]
    );
    assert!(
        counter(&svc.addr, metrics::EVENTS_REPLAYED) > 0,
        "the last run rebuilt from the committed offsets"
    );
    // The business gauges too (the ledger depends on the order facts were
    // recorded in); they must also be refreshed within the helper's wait
    // after a restart, not put off by a slow refresh during the rebuild.
    block(|| assert_business_gauges_match(&svc.addr, &mut engine));
    // The API's firing alerts are the backtest's, starts_at and evidence
    // included.
    assert_api_alerts_are_backtest(
        &svc.addr,
        &engine,
        |_| true,
        &format!("after kill -9; log {}", log.display()),
    );
    let status = block(|| svc.sigterm());
    assert!(status.success(), "final exit: {status:?}");
}

/// After a restart, partitions are committed at different event times. Here
/// partition 0 is committed 8 h before a daily sweep and partition 1 8 h
/// after it (at clean cuts: no message after the cut is older than it), as if
/// a run had stopped there. Partition 1 replays past the sweep; it waits there
/// live for partition 0 (settling, its live events held), so the sweep's
/// population is both partitions' as in the backtest: every alert after the
/// cuts, population-dependent ones and health scores included, is the
/// backtest's, nothing is lost, and nothing replayed is emitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_committed_at_different_event_times_sweep_together_after_a_restart() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    init_tracing();
    let broker = TestBroker::start();
    let Backlog {
        toml,
        mut engine,
        summary,
        expected,
        cfg,
    } = backlog_and_backtest(&broker, 7).await;
    let topics = ["product.usage", "billing.events", "customer.feedback"];
    // (topic, partition) -> event times in offset order; customer -> partition.
    let mut ts: BTreeMap<(usize, i32), Vec<i64>> = BTreeMap::new();
    let mut partition_of: BTreeMap<String, i32> = BTreeMap::new();
    for (i, t) in topics.iter().enumerate() {
        let recs = block(|| broker.read_all(t, 0, Duration::ZERO));
        for r in recs {
            let v = r.json();
            let at = churnwatch::event::parse_ts(v["ts"].as_str().expect("ts")).expect("ts");
            ts.entry((i, r.partition)).or_default().push(at);
            partition_of.insert(v["customer_id"].as_str().expect("id").into(), r.partition);
        }
    }
    let first = ts.values().flatten().copied().min().expect("events");
    let sweep = (first / DAY_MS + 60) * DAY_MS;
    // The first hour from `target` on that no message crosses in any topic
    // of the partition, and where each topic-partition is cut.
    let cut = |p: i32, target: i64| -> (i64, Vec<(usize, i64)>) {
        (0..48)
            .map(|h| target + h * HOUR_MS)
            .find(|&c| {
                ts.iter().filter(|(k, _)| k.1 == p).all(|(_, v)| {
                    let first_after = v.iter().position(|t| *t >= c).unwrap_or(v.len());
                    v[first_after..].iter().all(|t| *t >= c)
                })
            })
            .map(|c| {
                let offsets = ts
                    .iter()
                    .filter(|(k, _)| k.1 == p)
                    .map(|(k, v)| {
                        (
                            k.0,
                            v.iter().position(|t| *t >= c).unwrap_or(v.len()) as i64,
                        )
                    })
                    .collect();
                (c, offsets)
            })
            .expect("a clean cut within two days")
    };
    let (cut0, offsets0) = cut(0, sweep - 8 * HOUR_MS);
    let (cut1, offsets1) = cut(1, sweep + 8 * HOUR_MS);
    assert!(cut0 < sweep && cut1 > sweep, "cuts straddle the sweep");
    let committer: BaseConsumer = broker
        .client()
        .set("group.id", "churnwatch-test")
        .create()
        .expect("committer");
    let mut tpl = TopicPartitionList::new();
    for (p, offsets) in [(0, &offsets0), (1, &offsets1)] {
        for (i, o) in offsets {
            tpl.add_partition_offset(topics[*i], p, Offset::Offset(*o))
                .expect("tpl");
        }
    }
    block(|| committer.commit(&tpl, CommitMode::Sync)).expect("commit");
    drop(committer);

    let dir = tempdir("straddle");
    let cfg_path = dir.join("churnwatch.toml");
    let log = dir.join("churnwatch.log");
    std::fs::write(&cfg_path, &toml).expect("config");
    let svc = block(|| Service::spawn(&cfg_path, &log));
    let done = block(|| {
        wait_for(Duration::from_secs(120), || {
            (events_read(&svc.addr) >= summary.events_read).then_some(())
        })
    });
    assert!(done.is_some(), "not everything read; log {}", log.display());
    // Events held while settling are counted as read: partition 1 may
    // still be waiting for partition 0 here.
    let settled = block(|| {
        wait_for(Duration::from_secs(60), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.contains("waits at a daily sweep")
                && text.contains("past what it replayed; live"))
            .then_some(())
        })
    });
    assert!(
        settled.is_some(),
        "partition 1 did not wait at the sweep (settling); log {}",
        log.display()
    );
    // Logs for machines: no colour codes in a file, and reaching the end
    // of a partition while replaying is not a warning.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains('\u{1b}'),
        "ANSI escapes in a log file: {}",
        log.display()
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("WARN") && l.contains("PartitionEOF")),
        "PartitionEOF logged as a warning: {}",
        log.display()
    );

    // Every backtest alert after the cuts (and the lateness that follows
    // them), exactly; none that the backtest did not raise; nothing from
    // before the cuts again.
    let cut_of = |customer: &str| {
        if partition_of.get(customer) == Some(&0) {
            cut0
        } else {
            cut1
        }
    };
    let after = |customer: &str, time: i64| {
        let c = cut_of(customer);
        time > c + cfg.allowed_lateness + HOUR_MS
    };
    let want: BTreeMap<String, serde_json::Value> = expected
        .iter()
        .filter(|a| after(&a.customer_id, a.time()))
        .map(|a| (a.id(), a.to_value()))
        .collect();
    assert!(want.len() > 20, "too few alerts to compare: {}", want.len());
    let mut got: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    block(|| {
        wait_for(Duration::from_secs(60), || {
            got = broker
                .read_all("churnwatch.alerts", 0, Duration::ZERO)
                .iter()
                .map(|r| {
                    let v = r.json();
                    (v["id"].as_str().unwrap_or_default().to_string(), v)
                })
                .collect();
            want.keys().all(|k| got.contains_key(k)).then_some(())
        })
    });
    let differ: Vec<String> = want
        .iter()
        .filter(|(id, v)| got.get(*id) != Some(v))
        .map(|(id, v)| {
            let same: Vec<String> = got
                .values()
                .filter(|g| g["subject"] == v["subject"] && g["data"]["alert"] == v["data"]["alert"])
                .map(|g| g.to_string())
                .collect();
            format!(
                "{id}: backtest {v}, service {:?}; the service's alerts of that kind for that customer: {same:#?}",
                got.get(id).map(|g| g.to_string())
            )
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} alerts after the cuts differ from the backtest: {:#?}; log {}",
        differ.len(),
        want.len(),
        &differ[..differ.len().min(3)],
        log.display()
    );
    let time_of = |v: &serde_json::Value| {
        churnwatch::event::parse_ts(v["time"].as_str().unwrap_or_default()).unwrap_or(0)
    };
    let extra: Vec<&serde_json::Value> = got
        .values()
        .filter(|v| after(v["subject"].as_str().unwrap_or_default(), time_of(v)))
        .filter(|v| !want.contains_key(v["id"].as_str().unwrap_or_default()))
        .collect();
    assert!(
        extra.is_empty(),
        "alerts the backtest never raised: {extra:#?}"
    );
    let before_cuts = got
        .values()
        .filter(|v| {
            let c = cut_of(v["subject"].as_str().unwrap_or_default());
            time_of(v) < c - cfg.allowed_lateness - DAY_MS
        })
        .count();
    assert_eq!(before_cuts, 0, "alerts of replayed events emitted again");
    block(|| assert_business_gauges_match(&svc.addr, &mut engine));
    let status = block(|| svc.sigterm());
    assert!(status.success(), "exit: {status:?}");
}

/// The outbox puts outputs on the topic in the order they were handed over,
/// a burst of thousands on a multi-thread runtime included (issue 14: each
/// output used to be enqueued by a task of its own, so a restart's burst of
/// transitions reached the topic in the runtime's scheduling order, and a
/// subscriber saw a resolved event before its firing one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_keeps_the_hand_over_order_of_a_burst() {
    use churnwatch::kafka::producer::{Outbox, Output, OutputKind, create_producer};

    init_tracing();
    let broker = TestBroker::start();
    broker.create_topics(&[("order.check", 1)]).await;
    let raw: RawConfig =
        toml::from_str(&format!("[kafka]\nbrokers = \"{}\"\n", broker.brokers)).expect("toml");
    let cfg = raw.validate().expect("config");
    let producer = create_producer(&cfg.kafka).expect("producer");
    let metrics = metrics::Metrics::new().expect("metrics");
    let mut outbox = Outbox::new(producer, metrics, CancellationToken::new());
    const N: usize = 3000;
    for i in 0..N {
        outbox
            .send(Output {
                topic: "order.check".into(),
                key: Some(format!("c-{}", i % 3).into_bytes()),
                payload: i.to_string().into_bytes(),
                headers: Vec::new(),
                kind: OutputKind::DeadLetter { reason: "test" },
            })
            .await;
    }
    outbox.drain().await;
    assert_eq!(outbox.acked_prefix(), N as u64);
    let recs = block(|| broker.read_all("order.check", N, Duration::from_secs(60)));
    let got: Vec<usize> = recs
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).parse().expect("number"))
        .collect();
    let want: Vec<usize> = (0..N).collect();
    assert_eq!(got, want, "topic order is not hand-over order");
}
