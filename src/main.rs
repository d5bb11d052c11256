//! The `churnwatch` binary: parses the command line and calls into the library.

use clap::{Parser, Subcommand};

/// Real-time churn and retention monitor for SaaS.
#[derive(Parser, Debug)]
#[command(name = "churnwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Generate realistic, seeded usage/billing/feedback traffic as JSONL, plus story labels.
    Generate(churnwatch::generate::GenerateArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Commands::Generate(args) => {
            let summary = churnwatch::generate::run(&args)?;
            // stdout may carry the events, so the summary goes to stderr.
            eprintln!("{}", serde_json::to_string(&summary)?);
        }
    }
    Ok(())
}
