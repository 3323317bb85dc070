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
    /// Makes and verifies a reserve attestation over 100, 1,000 and 10,000 UTXOs:
    /// signing and verification in process beside raw ECDSA verification of the same
    /// signatures, then the real 2-of-3 guardian round over loopback HTTP.
    Attest {
        #[arg(long)]
        json: bool,
        /// UTXO counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1_000, 10_000])]
        sizes: Vec<usize>,
    },
    /// Signed validations per second with 2-of-3 guardians over loopback HTTP, beside
    /// the single-key local signer in the same run, and p50/p99 of one signing round;
    /// then the whole pipeline with each signer, three interleaved runs, median ratio.
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
    /// `GET /v1/reserves/history`'s query over a year of minute snapshots on
    /// PostgreSQL, by day, by hour, and one day by minute.
    History {
        #[arg(long)]
        json: bool,
        /// PostgreSQL server to use (a throw-away schema is created and dropped).
        #[arg(
            long,
            env = "UBTC_BENCH_DATABASE_URL",
            default_value = "postgres://root@127.0.0.1:5432/test"
        )]
        pg_url: String,
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
        BenchCommand::History { json, pg_url } => {
            let report = history(&pg_url).await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "reserve history over a year of minute snapshots (525,600 rows), PostgreSQL"
                );
                for c in &report {
                    println!("  {:<28} {:>6} points  {:>8.1} ms", c.range, c.points, c.ms);
                }
            }
            Ok(())
        }
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
        BenchCommand::Attest { json, sizes } => {
            let offline = {
                let sizes = sizes.clone();
                tokio::task::spawn_blocking(move || ubtc_bitcoin::bench::bench_attest(&sizes))
                    .await?
            };
            let round = ubtc_guardian::bench_attest::bench_attest_round(&sizes).await;
            if json {
                let mut value = serde_json::to_value(&offline)?;
                if let Some(o) = value.as_object_mut() {
                    o.insert("guardian_round".into(), serde_json::to_value(&round)?);
                }
                println!("{}", serde_json::to_string(&value)?);
            } else {
                print!("{offline}");
                print!("{round}");
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

#[derive(Debug, serde::Serialize)]
pub struct HistoryCase {
    pub range: &'static str,
    pub points: usize,
    /// Median of five runs.
    pub ms: f64,
}

async fn history(pg_url: &str) -> anyhow::Result<Vec<HistoryCase>> {
    use ubtc_core::Timestamp;
    use ubtc_store::{HistoryBucket, PgStore, Store};
    const MINUTES_PER_YEAR: i64 = 525_600;
    let schema = format!("ubtc_bench_{}", uuid::Uuid::new_v4().simple());
    let store = PgStore::connect_in_schema_with(pg_url, &schema, 2).await?;
    store.migrate().await?;
    let end = Timestamp::now().as_millis();
    ubtc_store::baseline::seed_minute_history_pg(store.pool(), end, MINUTES_PER_YEAR).await?;
    let year_ago = Timestamp::from_millis(end - MINUTES_PER_YEAR * 60_000);
    let day_ago = Timestamp::from_millis(end - 24 * 3_600_000);
    let mut out = Vec::new();
    for (range, from, bucket) in [
        ("a year by day", year_ago, HistoryBucket::Day),
        (
            "a year by hour (1500 max)",
            Timestamp::from_millis(end - 1_500 * 3_600_000),
            HistoryBucket::Hour,
        ),
        ("a day by minute", day_ago, HistoryBucket::Minute),
    ] {
        let mut times = Vec::new();
        let mut points = 0;
        for _ in 0..5 {
            let started = std::time::Instant::now();
            points = store
                .reserve_history(from, Timestamp::from_millis(end + 1), bucket, 1_500)
                .await?
                .len();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        out.push(HistoryCase {
            range,
            points,
            ms: times[2],
        });
    }
    let admin = PgStore::connect(pg_url, 1).await?;
    admin.drop_schema(&schema).await?;
    Ok(out)
}
