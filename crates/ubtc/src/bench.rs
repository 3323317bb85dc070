//! `ubtc bench …`: benchmarks that print figures, each beside a baseline measured in
//! the same run (this machine is shared and noisy; ratios travel, absolute figures
//! do not).

use std::path::Path;
use std::time::Duration;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// BIP-322 / multisig signing and verification against raw secp256k1 ECDSA.
    Sign {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Milliseconds spent on each case.
        #[arg(long, default_value_t = 1500)]
        ms: u64,
    },
    /// Signed validations per second with 2-of-3 guardians over loopback HTTP, beside
    /// the single-key local signer in the same run, and p50/p99 of one signing round.
    Guardians {
        #[arg(long)]
        json: bool,
        /// Statements signed by each side.
        #[arg(long, default_value_t = 400)]
        count: usize,
        /// Signing rounds in flight at once (as many as pipeline workers).
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Validations per second through intake → claim → sign → store, on PostgreSQL
    /// with 1 and 16 workers and on SQLite, beside the same SQL issued directly.
    Pipeline {
        #[arg(long)]
        json: bool,
        /// Validations per case.
        #[arg(long, default_value_t = 3000)]
        count: u64,
        /// PostgreSQL server to use (a throw-away schema is created and dropped).
        #[arg(
            long,
            env = "UBTC_BENCH_DATABASE_URL",
            default_value = "postgres://root@127.0.0.1:5432/test"
        )]
        pg_url: String,
    },
}

#[path = "bench_pipeline.rs"]
mod pipeline;

pub async fn run(_config_path: Option<&Path>, what: BenchCommand) -> anyhow::Result<()> {
    match what {
        BenchCommand::Guardians {
            json,
            count,
            concurrency,
        } => {
            let report = ubtc_guardian::bench::bench_guardians(count, concurrency).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        BenchCommand::Pipeline {
            json,
            count,
            pg_url,
        } => {
            let report = pipeline::run(&pg_url, count).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
        BenchCommand::Sign { json, ms } => {
            let report = tokio::task::spawn_blocking(move || {
                ubtc_bitcoin::bench::bench_sign(Duration::from_millis(ms))
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{report}");
            }
            Ok(())
        }
    }
}
