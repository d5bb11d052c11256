//! The Grafana dashboards and the Prometheus deployment files, checked
//! against the real thing: a real Prometheus (the Debian `prometheus`
//! package, installed by `scripts/test.sh`) scrapes the real service, which
//! consumes generated traffic from a real broker (Tansu), and every query of
//! every dashboard panel must be valid and return data. `promtool` checks
//! `deploy/prometheus.yml` and `deploy/alert-rules.yml` and runs the rules'
//! unit tests; the compose file must reference only files that exist.
//!
//! Without `prometheus`/`promtool` on PATH (or `PROMETHEUS_BIN` /
//! `PROMTOOL_BIN`) these tests are skipped with a message, unless `CI` is
//! set, where they fail.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use churnwatch::app;
use churnwatch::config::RawConfig;
use churnwatch::event::{DAY_MS, format_ts};
use churnwatch::generate::{GenerateOptions, generate_to_vec};
use common::{TestBroker, config_toml, free_port, init_tracing, wait_for};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from `env` or PATH, if it runs; `None` means skip (or fail on CI).
fn tool(env: &str, name: &str) -> Option<PathBuf> {
    let bin = std::env::var_os(env).map_or_else(|| PathBuf::from(name), PathBuf::from);
    let ok = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "`{name}` is required on CI: install it (`apt-get install -y prometheus`, as scripts/test.sh does) or set {env}"
    );
    eprintln!(
        "SKIPPED: `{name}` not found; install it with `apt-get install -y prometheus` (scripts/test.sh does) or set {env}"
    );
    None
}

// ---------------------------------------------------------------------------
// Dashboards

/// Every query of every panel (rows' nested panels included), with the
/// dashboard file and panel title, and every `label_values(metric, label)`
/// variable query.
struct Queries {
    exprs: Vec<(String, String, String)>,
    label_values: Vec<(String, String, String)>,
}

fn dashboard_queries() -> Queries {
    let mut q = Queries {
        exprs: Vec::new(),
        label_values: Vec::new(),
    };
    let dir = repo().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dashboards/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "expected the SRE and business dashboards");
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).expect("read dashboard"))
            .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
        assert!(
            d["uid"].is_string() && d["title"].is_string(),
            "{name}: uid/title"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: Grafana 10+ schemaVersion"
        );
        let mut ids = BTreeSet::new();
        let mut stack: Vec<&Value> = d["panels"].as_array().expect("panels").iter().collect();
        while let Some(p) = stack.pop() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{name}: duplicate panel id ({title})"
            );
            if let Some(children) = p["panels"].as_array() {
                stack.extend(children);
            }
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            assert!(!targets.is_empty(), "{name}: panel {title:?} has no query");
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: panel {title:?} has a target without expr"));
                q.exprs
                    .push((name.clone(), title.clone(), expr.to_string()));
            }
        }
        for v in d["templating"]["list"].as_array().expect("templating.list") {
            let query = v["query"]["query"].as_str().or(v["query"].as_str());
            if let Some(inner) = query
                .filter(|_| v["type"] == "query")
                .and_then(|s| s.strip_prefix("label_values("))
                .and_then(|s| s.strip_suffix(')'))
            {
                let (metric, label) = inner.rsplit_once(',').expect("label_values(metric, label)");
                q.label_values.push((
                    name.clone(),
                    substitute(metric.trim()),
                    label.trim().to_string(),
                ));
            }
        }
    }
    q
}

/// Grafana's variables as Prometheus would receive them with "All" selected.
fn substitute(expr: &str) -> String {
    let mut s = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    // Every user variable: `$name` or `${name}` -> the "All" regex.
    while let Some(i) = s.find('$') {
        let rest = &s[i + 1..];
        let (len, braced) = if let Some(r) = rest.strip_prefix('{') {
            (r.find('}').expect("closing brace") + 2, true)
        } else {
            (
                rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len()),
                false,
            )
        };
        assert!(len > usize::from(braced), "a lone `$` in {expr}");
        s.replace_range(i..i + 1 + len, ".*");
    }
    s
}

// ---------------------------------------------------------------------------
// A minimal HTTP client (Prometheus answers large bodies chunked)

fn get(addr: &str, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    if !chunked {
        return Ok((status, body.to_string()));
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n.min(after.len())]);
        rest = after.get(n + 2..).unwrap_or("");
    }
    Ok((status, out))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server on a free port with its own TSDB, killed on drop.
struct Prometheus {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Prometheus {
    fn start(bin: &Path, target: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let rules = repo().join("deploy/alert-rules.yml");
        let config = format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "{}"
scrape_configs:
  - job_name: churnwatch
    static_configs:
      - targets: ["{target}"]
"#,
            rules.display()
        );
        let cfg = dir.0.join("prometheus.yml");
        std::fs::write(&cfg, config).expect("write prometheus.yml");
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.0.join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
        };
        let ready = wait_for(Duration::from_secs(30), || {
            get(&p.addr, "/-/ready").ok().filter(|r| r.0 == 200)
        });
        assert!(ready.is_some(), "prometheus not ready: {}", p.log());
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("prometheus.log")).unwrap_or_default()
    }

    /// `/api/v1/...` as JSON (any status: errors come back as JSON too).
    fn api(&self, path: &str) -> Value {
        let (status, body) = get(&self.addr, path).expect("prometheus answers");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: HTTP {status}, not JSON ({e}): {body}"))
    }

    fn query(&self, expr: &str) -> Value {
        self.api(&format!("/api/v1/query?query={}", url_encode(expr)))
    }

    /// Number of series (or 1 for a scalar) a valid query returned; `Err`
    /// with Prometheus's message when it is invalid.
    fn count(&self, expr: &str) -> Result<usize, String> {
        let r = self.query(expr);
        if r["status"] != "success" {
            return Err(format!("{}: {}", r["errorType"], r["error"]));
        }
        let data = &r["data"];
        Ok(match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => data["result"].as_array().map_or(0, Vec::len),
            _ => 1,
        })
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "churnwatch-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// The service under traffic

fn topic_of(line: &str) -> &'static str {
    let v: Value = serde_json::from_str(line).expect("generated line is JSON");
    match v["type"].as_str().unwrap_or("") {
        "usage" => "product.usage",
        "nps" | "csat" | "ces" | "support_ticket" => "customer.feedback",
        _ => "billing.events",
    }
}

/// Near `end` (inside the default 30-day window): a recovered dunning
/// period, a cancellation, NPS and CSAT answers from paying customers, and
/// two malformed events for the dead-letter panels.
fn scripted_events(generated: &[String], end: i64) -> Vec<(Option<String>, &'static str, String)> {
    let mut paying: Vec<String> = Vec::new();
    for l in generated {
        let v: Value = serde_json::from_str(l).expect("JSON line");
        let id = v["customer_id"].as_str().unwrap_or_default().to_string();
        if v["mrr"].as_i64().is_some_and(|m| m > 0) && !paying.contains(&id) {
            paying.push(id);
        }
    }
    assert!(
        paying.len() >= 3,
        "the generator made too few paying customers"
    );
    let ts = |days_before: i64| format_ts(end - days_before * DAY_MS);
    let (a, b, c) = (&paying[0], &paying[1], &paying[2]);
    let billing = [
        format!(
            r#"{{"type":"payment_failed","customer_id":"{a}","mrr":9900,"currency":"USD","reason":"card_declined","ts":"{}"}}"#,
            ts(3)
        ),
        format!(
            r#"{{"type":"payment_succeeded","customer_id":"{a}","amount":9900,"currency":"USD","ts":"{}"}}"#,
            ts(2)
        ),
        format!(
            r#"{{"type":"subscription_cancelled","customer_id":"{b}","reason":"too_expensive","ts":"{}"}}"#,
            ts(2)
        ),
    ];
    let feedback = [
        format!(
            r#"{{"type":"nps","customer_id":"{c}","score":3,"ts":"{}"}}"#,
            ts(2)
        ),
        format!(
            r#"{{"type":"nps","customer_id":"{a}","score":10,"ts":"{}"}}"#,
            ts(2)
        ),
        format!(
            r#"{{"type":"csat","customer_id":"{c}","score":2,"ts":"{}"}}"#,
            ts(2)
        ),
    ];
    let key = |v: &str| {
        serde_json::from_str::<Value>(v).ok()?["customer_id"]
            .as_str()
            .map(str::to_string)
    };
    let mut out: Vec<_> = billing
        .into_iter()
        .map(|v| (key(&v), "billing.events", v))
        .chain(
            feedback
                .into_iter()
                .map(|v| (key(&v), "customer.feedback", v)),
        )
        .collect();
    for bad in [
        "{not json".to_string(),
        format!(
            r#"{{"type":"nps","customer_id":"{c}","score":42,"ts":"{}"}}"#,
            ts(1)
        ),
    ] {
        out.push((Some(c.clone()), "customer.feedback", bad));
    }
    out
}

/// Produces every line to its topic keyed by customer, all in flight at once.
async fn produce_all(broker: &TestBroker, lines: &[(Option<String>, &'static str, String)]) {
    let producer: FutureProducer = broker
        .client()
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for chunk in lines.chunks(5000) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|(key, topic, value)| {
                let mut r = FutureRecord::<str, str>::to(topic).payload(value);
                if let Some(k) = key {
                    r = r.key(k);
                }
                producer.send(r, Duration::from_secs(30))
            })
            .collect();
        for s in sends {
            s.await.map_err(|(e, _)| e).expect("produce");
        }
    }
}

/// The sum of every sample of `metric` in a text exposition.
fn metric_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_prometheus_scraping_the_service() {
    init_tracing();
    let queries = dashboard_queries();
    let Some(prometheus_bin) = tool("PROMETHEUS_BIN", "prometheus") else {
        return;
    };

    let broker = TestBroker::start();
    broker.create_default_topics(2).await;
    let raw: RawConfig = toml::from_str(&config_toml(&broker.brokers, "127.0.0.1:0", ""))
        .expect("test config parses");
    let cancel = CancellationToken::new();
    let running = app::start(raw.validate().expect("valid config"), cancel.clone())
        .await
        .expect("service starts");
    let target = running.http_addr().to_string();
    let service = tokio::spawn(running.wait());
    // Scraping while traffic flows, so rates are not all zero.
    let prom = tokio::task::block_in_place(|| Prometheus::start(&prometheus_bin, &target));

    // Small, so the test broker takes it in seconds; the generator's stories
    // need more traffic, so a few scripted events below make sure every
    // business ratio has a denominator in the window.
    let opts = GenerateOptions {
        customers: 80,
        days: 90,
        activity_scale: 0.02,
        ..GenerateOptions::default()
    };
    let generated = generate_to_vec(&opts);
    let mut lines: Vec<(Option<String>, &'static str, String)> = generated
        .lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            let key = v["customer_id"].as_str().map(str::to_string);
            (key, topic_of(l), l.clone())
        })
        .collect();
    lines.extend(scripted_events(&generated.lines, opts.end()));
    let t0 = Instant::now();
    produce_all(&broker, &lines).await;
    eprintln!("produced {} events in {:?}", lines.len(), t0.elapsed());

    let total = lines.len() as f64;
    let consumed = tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(240), || {
            let text = get(&target, "/metrics").ok()?.1;
            let n = metric_sum(&text, "churnwatch_events_consumed_total")
                + metric_sum(&text, "churnwatch_events_rejected_total");
            let business = text.contains("churnwatch_business_customers_end{");
            (n >= total && business).then_some(n)
        })
    });
    eprintln!("consumed after {:?}", t0.elapsed());
    assert!(
        consumed.is_some(),
        "the service did not consume all {total} events in time"
    );

    // Business gauges refresh after the last event; give Prometheus a few scrapes.
    let scraped = tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(30), || {
            let r = prom.query(r#"count_over_time(churnwatch_business_customers_end{plan="all",segment="all"}[1m])"#);
            let n = r["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()?;
            (n >= 3.0).then_some(())
        })
    });
    assert!(
        scraped.is_some(),
        "prometheus did not scrape the service: {}",
        prom.log()
    );

    let mut failures = Vec::new();
    let mut checked = 0;
    tokio::task::block_in_place(|| {
        for (file, panel, expr) in &queries.exprs {
            let q = substitute(expr);
            // A little patience for series that appear with the next refresh.
            let mut res = prom.count(&q);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(res, Ok(0)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(500));
                res = prom.count(&q);
            }
            checked += 1;
            match res {
                Ok(0) => failures.push(format!("{file} / {panel}: no data for `{q}`")),
                Ok(_) => {}
                Err(e) => failures.push(format!("{file} / {panel}: invalid `{q}`: {e}")),
            }
        }
        for (file, metric, label) in &queries.label_values {
            let r = prom.api(&format!(
                "/api/v1/label/{label}/values?match[]={}",
                url_encode(metric)
            ));
            if r["data"].as_array().is_none_or(Vec::is_empty) {
                failures.push(format!(
                    "{file}: variable label_values({metric}, {label}) has no values: {r}"
                ));
            }
        }
        // The scripted cancellation and recovered dunning period, merged over
        // both partitions' ledgers.
        for (expr, min) in [
            (
                r#"churnwatch_business_churned_customers{kind="voluntary",plan="all",segment="all"}"#,
                1.0,
            ),
            (
                r#"churnwatch_business_dunning_periods{outcome="recovered",plan="all",segment="all"}"#,
                1.0,
            ),
            (
                r#"churnwatch_business_nps_responses{category="detractor",plan="all",segment="all"}"#,
                1.0,
            ),
            (
                r#"churnwatch_business_customers_start{plan="all",segment="all"}"#,
                10.0,
            ),
        ] {
            let r = prom.query(expr);
            let v = r["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
            if v.is_none_or(|v| v < min) {
                failures.push(format!("expected {expr} >= {min}, got {r}"));
            }
        }
        // The deployment's alerting rules load and evaluate against real series.
        let rules = prom.api("/api/v1/rules");
        let groups = rules["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!groups.is_empty(), "alert rules not loaded: {}", prom.log());
        for g in &groups {
            for r in g["rules"].as_array().into_iter().flatten() {
                if r["health"] != "ok" && r["health"] != "unknown" {
                    failures.push(format!(
                        "rule {} is {}: {}",
                        r["name"], r["health"], r["lastError"]
                    ));
                }
            }
        }
    });
    eprintln!("queried {checked} after {:?}", t0.elapsed());
    assert!(checked >= 40, "only {checked} dashboard queries found");
    assert!(
        failures.is_empty(),
        "{} of {checked} dashboard queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    cancel.cancel();
    service
        .await
        .expect("service task")
        .expect("service stops cleanly");
}

// ---------------------------------------------------------------------------
// Deployment files

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn promtool_accepts_the_prometheus_config_and_alert_rules_and_their_tests_pass() {
    let Some(promtool) = tool("PROMTOOL_BIN", "promtool") else {
        return;
    };
    let deploy = repo().join("deploy");
    run(Command::new(&promtool)
        .args(["check", "config"])
        .arg(deploy.join("prometheus.yml")));
    let rules = run(Command::new(&promtool)
        .args(["check", "rules"])
        .arg(deploy.join("alert-rules.yml")));
    assert!(rules.contains("SUCCESS"), "{rules}");
    let tests = run(Command::new(&promtool).current_dir(&deploy).args([
        "test",
        "rules",
        "alert-rules.test.yml",
    ]));
    assert!(tests.contains("SUCCESS"), "{tests}");
}

#[test]
fn alertmanager_config_is_valid_when_amtool_is_installed() {
    // amtool ships in the optional `prometheus-alertmanager` package.
    let bin = std::env::var_os("AMTOOL_BIN").map_or_else(|| PathBuf::from("amtool"), PathBuf::from);
    if Command::new(&bin).arg("--version").output().is_err() {
        eprintln!("SKIPPED: amtool not found (apt-get install -y prometheus-alertmanager)");
        return;
    }
    run(Command::new(&bin)
        .args(["check-config"])
        .arg(repo().join("deploy/alertmanager.yml")));
}

#[test]
fn the_churnwatch_config_of_the_deployment_is_valid() {
    let text = std::fs::read_to_string(repo().join("deploy/churnwatch.toml")).expect("read");
    let raw: RawConfig = toml::from_str(&text).expect("deploy/churnwatch.toml parses");
    let cfg = raw.validate().expect("deploy/churnwatch.toml is valid");
    assert_eq!(cfg.kafka.brokers, "kafka:9092");
    assert!(
        cfg.http.listen.starts_with("0.0.0.0:"),
        "reachable by Prometheus"
    );
}

/// `docker-compose.yml` and the YAML under `deploy/` parse, and every file a
/// service mounts or builds from exists (`scripts/check-deploy.py`, PyYAML);
/// Grafana provisions exactly the dashboards tested above.
#[test]
fn compose_file_parses_and_references_files_that_exist() {
    let root = repo();
    let has_yaml = Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if has_yaml {
        run(Command::new("python3").arg(root.join("scripts/check-deploy.py")));
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with PyYAML is required on CI (apt-get install -y python3-yaml)"
        );
        eprintln!("SKIPPED: python3 with PyYAML not found (apt-get install -y python3-yaml)");
    }
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).expect("compose");
    assert!(compose.contains("./dashboards:/var/lib/grafana/dashboards"));
    let prov =
        std::fs::read_to_string(root.join("deploy/grafana/provisioning/dashboards/churnwatch.yml"))
            .expect("dashboard provisioning");
    assert!(prov.contains("path: /var/lib/grafana/dashboards"), "{prov}");
}
