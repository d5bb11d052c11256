//! The `churnwatch` binary: parses the command line and calls into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Real-time churn and retention monitor for SaaS.
#[derive(Parser)]
#[command(name = "churnwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replay a JSONL file of events and report alerts, customers and business metrics.
    Backtest(churnwatch::backtest::BacktestArgs),
    /// Generate realistic, seeded usage/billing/feedback traffic as JSONL, plus story labels.
    Generate(churnwatch::generate::GenerateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Backtest(args) => churnwatch::backtest::run(&args).map(|_| ()).map_err(Into::into),
        Command::Generate(args) => churnwatch::generate::run(&args).map_err(Into::into).and_then(|summary| {
            // stdout may carry the events, so the summary goes to stderr.
            eprintln!("{}", serde_json::to_string(&summary)?);
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("churnwatch: {e:#}");
            ExitCode::from(2)
        }
    }
}
