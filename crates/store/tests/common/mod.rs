//! The harness the store's integration tests share: a fresh, migrated database on
//! SQLite (a temporary file) and on PostgreSQL (a fresh schema on the server at
//! `UBTC_TEST_DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`), removed
//! when the test ends, and `on_both_backends!`, which runs each test on both. An
//! unreachable PostgreSQL fails the PostgreSQL tests.

// Every test file is its own crate and compiles this whole module, but uses only part
// of it (admin.rs reads `Harness::raw`, conformance.rs builds stores by hand, ...);
// without this each test binary would warn about the parts it leaves unused.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use ubtc_store::{PgStore, SqliteStore, Store};

pub const PG_URL_DEFAULT: &str = "postgres://root@127.0.0.1:5432/test";

/// Removes the test database when the test ends, also when it panicked.
pub enum Cleanup {
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        match self {
            Cleanup::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Cleanup::Postgres { url, schema } => {
                // Drop runs outside any runtime we may block: use a thread with its own.
                let (url, schema) = (url.clone(), schema.clone());
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        if let Ok(store) = PgStore::connect(&url, 1).await {
                            let _ = store.drop_schema(&schema).await;
                        }
                    })
                })
                .join();
            }
        }
    }
}

pub fn pg_url() -> String {
    std::env::var("UBTC_TEST_DATABASE_URL").unwrap_or_else(|_| PG_URL_DEFAULT.to_owned())
}

/// A migrated store on a fresh temporary SQLite file.
pub async fn sqlite_store(max_readers: u32) -> (SqliteStore, Cleanup) {
    let path = std::env::temp_dir().join(format!(
        "ubtc-store-test-{}.db",
        uuid::Uuid::new_v4().simple()
    ));
    // Made before connecting, so that the file goes also when connecting panics.
    let cleanup = Cleanup::Sqlite(path.clone());
    let store = SqliteStore::connect(&format!("sqlite:{}", path.display()), max_readers)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    (store, cleanup)
}

/// A migrated store in a fresh PostgreSQL schema.
pub async fn pg_store(max_connections: u32) -> (PgStore, Cleanup) {
    let url = pg_url();
    let schema = format!("ubtc_test_{}", uuid::Uuid::new_v4().simple());
    let store = match PgStore::connect_in_schema_with(&url, &schema, max_connections).await {
        Ok(store) => store,
        Err(e) => panic!(
            "PostgreSQL is required for the PostgreSQL conformance tests and is not reachable at {url} \
             (set UBTC_TEST_DATABASE_URL): {e}"
        ),
    };
    let cleanup = Cleanup::Postgres { url, schema };
    store.migrate().await.unwrap();
    (store, cleanup)
}

/// Direct access to the database, for tests that work behind the store's back (e.g.
/// tampering with the audit log).
pub enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// One test's database; dropping it removes the database.
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub raw: Raw,
    _cleanup: Cleanup,
}

pub async fn sqlite_harness() -> Harness {
    let (store, cleanup) = sqlite_store(4).await;
    Harness {
        raw: Raw::Sqlite(store.pool().clone()),
        store: Arc::new(store),
        _cleanup: cleanup,
    }
}

pub async fn pg_harness() -> Harness {
    let (store, cleanup) = pg_store(10).await;
    Harness {
        raw: Raw::Postgres(store.pool().clone()),
        store: Arc::new(store),
        _cleanup: cleanup,
    }
}

/// What a test function takes: the store alone (`Arc<dyn Store>`) or the whole
/// harness (`&Harness`); `on_both_backends!` picks it from the function's signature.
pub trait FromHarness<'a> {
    fn from_harness(h: &'a Harness) -> Self;
}

impl<'a> FromHarness<'a> for Arc<dyn Store> {
    fn from_harness(h: &'a Harness) -> Self {
        h.store.clone()
    }
}

impl<'a> FromHarness<'a> for &'a Harness {
    fn from_harness(h: &'a Harness) -> Self {
        h
    }
}

/// Each test is an `async fn` taking `Arc<dyn Store>` or `&Harness`; this writes one
/// `#[tokio::test]` per backend for each, in modules `sqlite` and `postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = $crate::common::sqlite_harness().await;
                    super::$name($crate::common::FromHarness::from_harness(&h)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = $crate::common::pg_harness().await;
                    super::$name($crate::common::FromHarness::from_harness(&h)).await;
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;
