//! Test support: a real Kafka-protocol broker (Tansu) per test, and small
//! produce / read / HTTP helpers.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// librdkafka settings that keep Tansu responsive (defaults stall on it).
pub const FAST_FETCH: [(&str, &str); 2] =
    [("fetch.wait.max.ms", "1"), ("fetch.queue.backoff.ms", "10")];

/// Where the tansu binary is: `TANSU_BIN`, `~/.cargo/bin/tansu`, or PATH.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".cargo/bin/tansu");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("tansu")
}

/// A free TCP port on 127.0.0.1 (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// A Tansu broker on a free port, in memory, killed on drop.
pub struct TestBroker {
    child: Child,
    /// `host:port` for `bootstrap.servers`.
    pub brokers: String,
    /// The broker's log file.
    pub log: PathBuf,
}

impl TestBroker {
    /// Starts the broker and waits until it answers metadata.
    pub fn start() -> TestBroker {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("churnwatch-tansu-{port}.log"));
        let out = std::fs::File::create(&log).expect("create broker log");
        let err = out.try_clone().expect("clone log handle");
        let bin = tansu_bin();
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tansu ({}): {e}; run scripts/test.sh or set TANSU_BIN",
                    bin.display()
                )
            });
        let b = TestBroker {
            child,
            brokers: format!("127.0.0.1:{port}"),
            log,
        };
        b.wait_ready();
        b
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let consumer: BaseConsumer = self.client().create().expect("metadata client");
        loop {
            if consumer
                .fetch_metadata(None, Duration::from_secs(1))
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not answer metadata on {} within 20s; see {}",
                self.brokers,
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The broker's process id (benchmarks read its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Client settings for this broker.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in FAST_FETCH {
            c.set(k, v);
        }
        c
    }

    /// Creates topics with the given partition counts.
    pub async fn create_topics(&self, topics: &[(&str, i32)]) {
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().expect("admin client");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(t, n)| NewTopic::new(t, *n, TopicReplication::Fixed(1)))
            .collect();
        let res = admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .expect("create_topics request");
        for r in res {
            r.expect("topic created");
        }
    }

    /// The five default topics, each with `partitions` partitions.
    pub async fn create_default_topics(&self, partitions: i32) {
        self.create_topics(&[
            ("product.usage", partitions),
            ("billing.events", partitions),
            ("customer.feedback", partitions),
            ("churnwatch.alerts", partitions),
            ("churnwatch.dlq", partitions),
        ])
        .await;
    }

    /// Produces `(key, value)` pairs to `topic` (partition 0 when `partition` is
    /// set, else by key), waiting for each acknowledgement.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<i32>,
        records: &[(Option<&str>, &str)],
    ) {
        let producer: FutureProducer = self.client().create().expect("producer");
        for (key, value) in records {
            let mut r = FutureRecord::<str, str>::to(topic).payload(value);
            if let Some(k) = key {
                r = r.key(k);
            }
            if let Some(p) = partition {
                r = r.partition(p);
            }
            producer
                .send(r, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    }

    /// Reads every message of `topic` from the beginning; waits until at least
    /// `min` are there (or `timeout`).
    pub fn read_all(&self, topic: &str, min: usize, timeout: Duration) -> Vec<Record> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.read_once(topic);
            if got.len() >= min || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn read_once(&self, topic: &str) -> Vec<Record> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "churnwatch-test-reader")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()
            .expect("reader");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .expect("metadata");
        let parts: Vec<i32> = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        let mut tpl = TopicPartitionList::new();
        for p in &parts {
            tpl.add_partition_offset(topic, *p, Offset::Beginning)
                .expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        let mut eof = std::collections::HashSet::new();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while eof.len() < parts.len() && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|x| {
                                    (
                                        x.key.to_string(),
                                        String::from_utf8_lossy(x.value.unwrap_or(&[]))
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(Record {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        headers,
                    });
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    eof.insert(p);
                }
                _ => {}
            }
        }
        out
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key as text.
    pub key: Option<String>,
    /// Value bytes.
    pub payload: Vec<u8>,
    /// Headers as text.
    pub headers: Vec<(String, String)>,
}

impl Record {
    /// A header's value.
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.0 == k).map(|h| h.1.as_str())
    }

    /// The value parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("record is JSON")
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|b| b.1.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A config file for a test: this broker, fast fetch, a unique group.
pub fn config_toml(brokers: &str, listen: &str, extra: &str) -> String {
    format!(
        r#"
shutdown_grace = "20s"
{extra}
[kafka]
brokers = "{brokers}"
group_id = "churnwatch-test"
fetch_wait_max_ms = 1
fetch_queue_backoff_ms = 10
commit_interval = "200ms"
idle_timeout = "30s"
[http]
listen = "{listen}"
"#
    )
}

/// Sum of a metric family's samples in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Logs to the test output when `CHURNWATCH_LOG` is set.
pub fn init_tracing() {
    if let Ok(f) = std::env::var("CHURNWATCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(f))
            .with_test_writer()
            .try_init();
    }
}
