//! The `churnwatch` binary: parses the command line and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use churnwatch::app::{self, Overrides};
use churnwatch::kafka::follow::{self, FollowOptions};

/// Real-time churn and retention monitor: Kafka in, alerts and Prometheus metrics out.
#[derive(Debug, Parser)]
#[command(name = "churnwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Replay a JSONL file of events and report alerts, customers and business metrics.
    Backtest(churnwatch::backtest::BacktestArgs),
    /// Generate realistic, seeded usage/billing/feedback traffic as JSONL, plus story labels
    /// (or produce it to Kafka with --brokers).
    Generate {
        #[command(flatten)]
        args: churnwatch::generate::GenerateArgs,
        #[command(flatten)]
        kafka: churnwatch::kafka::loadgen::KafkaTarget,
    },
    /// Try it: an embedded Kafka, generated live traffic in accelerated time, the service,
    /// /metrics and the API, with a live summary until Ctrl-C.
    Demo(churnwatch::demo::DemoArgs),
    /// Run the service against Kafka: consume the input topics, publish alerts, serve HTTP.
    Run {
        /// TOML config file (keys can also come from CHURNWATCH_* variables).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Kafka bootstrap servers (overrides kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        /// HTTP listen address (overrides http.listen).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Check a configuration and print every problem (exit code 2 when invalid).
    CheckConfig {
        /// TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print alerts from the alert topic, one readable line each (or JSON).
    Alerts {
        /// Keep waiting for new alerts.
        #[arg(long)]
        follow: bool,
        /// Print the raw CloudEvent JSON, one per line.
        #[arg(long)]
        json: bool,
        /// Start at the oldest retained alert (default: only new ones).
        #[arg(long)]
        from_beginning: bool,
        /// Kafka bootstrap servers (overrides kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        /// Alert topic (overrides kafka.alerts_topic).
        #[arg(long)]
        topic: Option<String>,
        /// TOML config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CHURNWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let json = std::env::var("CHURNWATCH_LOG_FORMAT").is_ok_and(|v| v == "json");
    // Colour only for a person at a terminal: not in files, pipes or
    // journald.
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Offline commands need no runtime or logging setup.
    match cli.command {
        Commands::Backtest(args) => report(churnwatch::backtest::run(&args).map(|_| ())),
        Commands::Generate { args, kafka } if kafka.brokers.is_none() => {
            report(churnwatch::generate::run(&args).map(|summary| {
                // stdout may carry the events, so the summary goes to stderr.
                eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
            }))
        }
        command => run_service(command),
    }
}

fn report<E: std::fmt::Display>(r: Result<(), E>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("churnwatch: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_service(command: Commands) -> ExitCode {
    // The demo prints its own summary; service logs would drown it.
    init_tracing(match command {
        Commands::Demo(_) => "warn,rdkafka=error",
        _ => "info,rdkafka=warn",
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Commands) -> anyhow::Result<ExitCode> {
    match cmd {
        Commands::Backtest(_) => Ok(ExitCode::FAILURE),
        Commands::Generate { args, kafka } => {
            let cancel = CancellationToken::new();
            app::cancel_on_signals(cancel.clone());
            match churnwatch::kafka::loadgen::run_to_kafka(&args, &kafka, std::env::vars(), cancel)
                .await
            {
                Ok(r) => {
                    eprintln!("{}", serde_json::to_string(&r).unwrap_or_default());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("churnwatch: {e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Commands::Demo(args) => {
            let cancel = CancellationToken::new();
            app::cancel_on_signals(cancel.clone());
            match churnwatch::demo::run(&args, cancel).await {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e @ churnwatch::demo::DemoError::Config(_)) => {
                    eprint!("{e}");
                    Ok(ExitCode::from(2))
                }
                Err(e) => Err(e.into()),
            }
        }
        Commands::Run {
            config,
            brokers,
            listen,
        } => {
            let flags = Overrides { brokers, listen };
            let cfg = match app::load_config(config.as_deref(), std::env::vars(), &flags) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let cancel = CancellationToken::new();
            app::cancel_on_signals(cancel.clone());
            app::run(cfg, cancel).await?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::CheckConfig { config } => {
            match app::load_config(config.as_deref(), std::env::vars(), &Overrides::default()) {
                Ok(c) => {
                    println!(
                        "# configuration OK; every effective value (this file gives the same configuration)"
                    );
                    if c.http.api_token.is_some() {
                        println!("# http.api_token is set (not shown)");
                    }
                    print!("{}", toml::to_string(&c.effective())?);
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprint!("{e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Commands::Alerts {
            follow,
            json,
            from_beginning,
            brokers,
            topic,
            config,
        } => {
            let flags = Overrides {
                brokers,
                listen: None,
            };
            let mut cfg = match app::load_config(config.as_deref(), std::env::vars(), &flags) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if let Some(t) = topic {
                cfg.kafka.alerts_topic = t;
            }
            let opts = FollowOptions {
                follow,
                json,
                from_beginning,
            };
            let cancel = CancellationToken::new();
            app::cancel_on_signals(cancel.clone());
            tokio::task::spawn_blocking(move || {
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                follow::follow(&cfg.kafka, &opts, &cancel, &mut out)
            })
            .await??;
            Ok(ExitCode::SUCCESS)
        }
    }
}
