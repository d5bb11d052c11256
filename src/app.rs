//! Wires the service together and owns shutdown: config, topic checks, the
//! consume loop, the outbox and the HTTP server run as tasks in one
//! [`JoinSet`] and stop on one [`CancellationToken`].

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigErrors, RawConfig};
use crate::kafka::admin::{self, TopicError};
use crate::kafka::consumer::{self, ConsumeError, ConsumerLoop};
use crate::kafka::producer::{self, Outbox, ProducerError};
use crate::metrics::Metrics;
pub use crate::shared::{SharedState, Status};

/// Why the service could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The topics are missing or not co-partitioned.
    #[error(transparent)]
    Topics(#[from] TopicError),
    /// The producer could not be created.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The consume loop failed.
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free address with --listen or http.listen")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
    /// Metrics registration failed (a bug).
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Tasks did not stop within `shutdown_grace`.
    #[error(
        "shutdown took longer than shutdown_grace ({0:?}); unacknowledged work is redone after restart"
    )]
    ShutdownTimedOut(Duration),
    /// A task panicked (a bug).
    #[error("task failed: {0}")]
    Task(String),
}

/// Flag values that override file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--brokers`.
    pub brokers: Option<String>,
    /// `--listen`.
    pub listen: Option<String>,
}

/// Loads file + `CHURNWATCH_*` env + flags and validates, listing every problem
/// (environment and file problems together).
pub fn load_config(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &Overrides,
) -> Result<Config, ConfigErrors> {
    let raw = match path {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    finish_config(raw, env, flags)
}

/// Applies `CHURNWATCH_*` variables and flags over `raw` and validates,
/// listing every problem (env and file alike) at once.
pub fn finish_config(
    raw: RawConfig,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &Overrides,
) -> Result<Config, ConfigErrors> {
    crate::config::finish(raw, env, |raw| {
        if let Some(b) = &flags.brokers {
            raw.kafka.brokers = Some(b.clone());
        }
        if let Some(l) = &flags.listen {
            raw.http.listen = Some(l.clone());
        }
    })
}

/// A started service.
pub struct Running {
    http_addr: SocketAddr,
    cancel: CancellationToken,
    stop_retrying: CancellationToken,
    tasks: JoinSet<Result<(), AppError>>,
    grace: Duration,
    shared: Arc<SharedState>,
    metrics: Metrics,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

/// Checks topics, binds HTTP and starts the consume loop. Returns once the
/// service is up; cancel `cancel` to stop it, then [`Running::wait`].
pub async fn start(cfg: Config, cancel: CancellationToken) -> Result<Running, AppError> {
    let cfg = Arc::new(cfg);
    let k = cfg.kafka.clone();
    let partitions =
        tokio::task::spawn_blocking(move || admin::check_topics(&k, Duration::from_secs(10)))
            .await
            .map_err(|e| AppError::Task(e.to_string()))??;
    tracing::info!(partitions, "input topics are co-partitioned");

    let metrics = Metrics::new()?.with_max_label_values(cfg.max_label_values);
    metrics.register_input_topics(&[
        cfg.kafka.usage_topic.as_str(),
        cfg.kafka.billing_topic.as_str(),
        cfg.kafka.feedback_topic.as_str(),
    ]);
    let shared = Arc::new(SharedState::default());
    let listener = tokio::net::TcpListener::bind(&cfg.http.listen)
        .await
        .map_err(|source| AppError::Listen {
            addr: cfg.http.listen.clone(),
            source,
        })?;
    let http_addr = listener.local_addr().map_err(AppError::Http)?;

    let stop_retrying = CancellationToken::new();
    let producer = producer::create_producer(&cfg.kafka)?;
    let outbox = Outbox::new(producer, metrics.clone(), stop_retrying.clone());
    let group = consumer::create_consumer(&cfg, &metrics)?;
    let consume = ConsumerLoop::new(
        cfg.clone(),
        group,
        outbox,
        metrics.clone(),
        shared.clone(),
        cancel.clone(),
    )
    .map_err(|e| AppError::Task(format!("cannot start the engine thread: {e}")))?;

    let mut tasks = JoinSet::new();
    tasks.spawn(async move { consume.run().await.map_err(AppError::from) });
    let router = crate::http::router(crate::http::HttpState {
        shared: shared.clone(),
        metrics: metrics.clone(),
        api_token: cfg.http.api_token.clone(),
        ready_max_lag: cfg.http.ready_max_lag,
    });
    let http_cancel = cancel.clone();
    tasks.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(http_cancel.cancelled_owned())
            .await
            .map_err(AppError::Http)
    });
    tracing::info!(http = %http_addr, "churnwatch running");
    Ok(Running {
        http_addr,
        cancel,
        stop_retrying,
        tasks,
        grace: Duration::from_millis(cfg.shutdown_grace.max(0) as u64),
        shared,
        metrics,
    })
}

impl Running {
    /// The bound HTTP address (useful with port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The engines and status the HTTP API reads (for `demo`'s live summary).
    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    /// The service's metrics (for `demo`'s live summary and benchmarks).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Waits until cancelled (or a task fails, which cancels the rest), then
    /// gives the tasks `shutdown_grace` to finish.
    pub async fn wait(mut self) -> Result<(), AppError> {
        let mut first_error = None;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                res = self.tasks.join_next() => match res {
                    None => break,
                    Some(r) => {
                        if let Some(e) = flatten(r) {
                            tracing::error!(error = %e, "task failed; shutting down");
                            first_error.get_or_insert(e);
                            self.cancel.cancel();
                        }
                    }
                },
            }
        }
        tracing::info!(grace_ms = self.grace.as_millis() as u64, "shutting down");
        // Retrying outputs give up a little before the grace ends, so the
        // final commit still happens inside it.
        let stop = self.stop_retrying.clone();
        let soft = self.grace.mul_f32(0.8);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(soft).await;
            stop.cancel();
        });
        let drained = tokio::time::timeout(self.grace, async {
            while let Some(r) = self.tasks.join_next().await {
                if let Some(e) = flatten(r) {
                    tracing::error!(error = %e, "task failed during shutdown");
                    first_error.get_or_insert(e);
                }
            }
        })
        .await;
        stopper.abort();
        if drained.is_err() {
            self.tasks.abort_all();
            return Err(first_error.unwrap_or(AppError::ShutdownTimedOut(self.grace)));
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped cleanly");
                Ok(())
            }
        }
    }
}

fn flatten(r: Result<Result<(), AppError>, tokio::task::JoinError>) -> Option<AppError> {
    match r {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(AppError::Task(e.to_string())),
    }
}

/// Runs the service until `cancel` (see [`start`] and [`Running::wait`]).
pub async fn run(cfg: Config, cancel: CancellationToken) -> Result<(), AppError> {
    start(cfg, cancel).await?.wait().await
}

/// Cancels `cancel` on SIGINT or SIGTERM.
pub fn cancel_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the service");
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("signal received");
        cancel.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_env_and_every_problem_is_listed() {
        let flags = Overrides {
            brokers: Some("k1:9092".into()),
            listen: Some("nowhere".into()),
        };
        let err = load_config(
            None,
            [("CHURNWATCH_DUNING_GRACE".to_string(), "1d".to_string())],
            &flags,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("CHURNWATCH_DUNING_GRACE"), "{err}");
        assert!(err.contains("http.listen"), "{err}");
        let cfg = load_config(
            None,
            [("CHURNWATCH_BROKERS".to_string(), "env:1".to_string())],
            &flags_ok(),
        )
        .unwrap();
        assert_eq!(cfg.kafka.brokers, "k1:9092");
    }

    fn flags_ok() -> Overrides {
        Overrides {
            brokers: Some("k1:9092".into()),
            listen: None,
        }
    }
}
