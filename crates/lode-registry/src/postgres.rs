//! The PostgreSQL backend, for deployments sharing state between nodes.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::backend::{Migration, registry_backend, run_migrations};

const MIGRATIONS: [Migration; 8] = [
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "product_documents",
        sql: include_str!("../migrations/postgres/0002_product_documents.sql"),
    },
    Migration {
        version: 3,
        name: "rules",
        sql: include_str!("../migrations/postgres/0003_rules.sql"),
    },
    Migration {
        version: 4,
        name: "groups",
        sql: include_str!("../migrations/postgres/0004_groups.sql"),
    },
    Migration {
        version: 5,
        name: "shadow",
        sql: include_str!("../migrations/postgres/0005_shadow.sql"),
    },
    Migration {
        version: 6,
        name: "ota",
        sql: include_str!("../migrations/postgres/0006_ota.sql"),
    },
    Migration {
        version: 7,
        name: "devconfig",
        sql: include_str!("../migrations/postgres/0007_devconfig.sql"),
    },
    Migration {
        version: 8,
        name: "topology",
        sql: include_str!("../migrations/postgres/0008_topology.sql"),
    },
];

/// Serializes concurrent migrations of several nodes (held until commit).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7264935116012345)";

/// Connections of the pool.
const POOL_SIZE: u32 = 10;

/// Registry in PostgreSQL (tables in the connection's `search_path`).
pub struct PgRegistry {
    pool: PgPool,
    limits: crate::RegistryLimits,
}

impl PgRegistry {
    /// Connects to `url` (`postgres://user@host:port/db`) and migrates the
    /// schema to the current version.
    pub async fn connect(url: &str, limits: crate::RegistryLimits) -> crate::Result<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?, limits).await
    }

    /// Like [`PgRegistry::connect`], with explicit options (for example
    /// `.options([("search_path", "my_schema")])`).
    pub async fn connect_with(
        options: PgConnectOptions,
        limits: crate::RegistryLimits,
    ) -> crate::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await?;
        run_migrations!(&pool, sqlx::Postgres, &MIGRATIONS, Some(MIGRATION_LOCK))?;
        Ok(PgRegistry { pool, limits })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> crate::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

registry_backend!(PgRegistry, sqlx::Postgres, "postgres");
crate::rules::rules_backend!(PgRegistry, sqlx::Postgres);
crate::groups::groups_backend!(PgRegistry, sqlx::Postgres);
crate::shadow::shadow_backend!(PgRegistry, sqlx::Postgres);
crate::ota::ota_backend!(PgRegistry, sqlx::Postgres);
crate::devconfig::devconfig_backend!(PgRegistry, sqlx::Postgres);
crate::topology::topology_backend!(PgRegistry, sqlx::Postgres);
