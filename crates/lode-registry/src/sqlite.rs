//! The embedded backend: one SQLite file in the data directory.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::backend::{Migration, registry_backend, run_migrations};

const MIGRATIONS: [Migration; 8] = [
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "product_documents",
        sql: include_str!("../migrations/sqlite/0002_product_documents.sql"),
    },
    Migration {
        version: 3,
        name: "rules",
        sql: include_str!("../migrations/sqlite/0003_rules.sql"),
    },
    Migration {
        version: 4,
        name: "groups",
        sql: include_str!("../migrations/sqlite/0004_groups.sql"),
    },
    Migration {
        version: 5,
        name: "shadow",
        sql: include_str!("../migrations/sqlite/0005_shadow.sql"),
    },
    Migration {
        version: 6,
        name: "ota",
        sql: include_str!("../migrations/sqlite/0006_ota.sql"),
    },
    Migration {
        version: 7,
        name: "devconfig",
        sql: include_str!("../migrations/sqlite/0007_devconfig.sql"),
    },
    Migration {
        version: 8,
        name: "topology",
        sql: include_str!("../migrations/sqlite/0008_topology.sql"),
    },
];

/// Connections of the pool: readers run in parallel (WAL), writers queue on
/// SQLite's single write lock (`BEGIN IMMEDIATE` plus the busy timeout).
const POOL_SIZE: u32 = 4;
/// How long a writer waits for the write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Registry in an SQLite file (WAL journal, `synchronous = NORMAL`: a commit
/// survives a crash of the process; foreign keys on).
pub struct SqliteRegistry {
    pool: SqlitePool,
    limits: crate::RegistryLimits,
}

impl SqliteRegistry {
    /// Opens (creating if needed) the registry file at `path` and migrates
    /// its schema to the current version.
    pub async fn open(
        path: impl AsRef<Path>,
        limits: crate::RegistryLimits,
    ) -> crate::Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await?;
        run_migrations!(&pool, sqlx::Sqlite, &MIGRATIONS, None)?;
        Ok(SqliteRegistry { pool, limits })
    }

    /// Closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction holding SQLite's write lock from the start,
    /// so that a read-then-write transaction never fails to upgrade its lock.
    async fn begin_write(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

registry_backend!(SqliteRegistry, sqlx::Sqlite, "sqlite");
crate::rules::rules_backend!(SqliteRegistry, sqlx::Sqlite);
crate::groups::groups_backend!(SqliteRegistry, sqlx::Sqlite);
crate::shadow::shadow_backend!(SqliteRegistry, sqlx::Sqlite);
crate::ota::ota_backend!(SqliteRegistry, sqlx::Sqlite);
crate::devconfig::devconfig_backend!(SqliteRegistry, sqlx::Sqlite);
crate::topology::topology_backend!(SqliteRegistry, sqlx::Sqlite);
