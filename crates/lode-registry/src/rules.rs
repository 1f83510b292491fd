//! Storage of the rules engine: rules and the named destinations their actions forward to.
//!
//! The registry keeps these records and enforces the per-account rule limit; what an
//! action or a destination configuration means belongs to the rules runtime, so both are
//! stored as JSON text the registry does not interpret.

use chrono::{DateTime, Utc};

use crate::{BoxFuture, Result};

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRecord {
    /// Opaque id, unique over all accounts.
    pub id: String,
    /// The account owning it.
    pub account_id: String,
    /// The rule's display name.
    pub name: String,
    /// The rule's SQL statement.
    pub sql: String,
    /// Whether the runtime evaluates it.
    pub enabled: bool,
    /// Its actions, a JSON array.
    pub actions: String,
    /// Where messages that failed after retries go, a JSON object.
    pub error_action: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a caller sets when creating or replacing a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRule {
    pub name: String,
    pub sql: String,
    pub enabled: bool,
    /// A JSON array.
    pub actions: String,
    /// A JSON object.
    pub error_action: Option<String>,
}

/// A stored destination: a named, reusable connection an action forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRecord {
    /// Opaque id, unique over all accounts.
    pub id: String,
    /// The account owning it.
    pub account_id: String,
    /// Unique within the account.
    pub name: String,
    /// What it connects to (`http`, `postgres`, …).
    pub kind: String,
    /// Settings and credentials, a JSON object.
    pub config: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a caller sets when creating or replacing a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDestination {
    pub name: String,
    pub kind: String,
    /// A JSON object.
    pub config: String,
}

/// Rules and destinations, behind [`crate::RegistryStore::rules`].
///
/// Lookups return `Ok(None)` for a missing object; updates and deletions of a missing
/// object fail with `RuleNotFound` or `DestinationNotFound`.
pub trait RuleStore: Send + Sync {
    /// Creates a rule, refusing it when the account already has `limit` rules.
    fn create_rule<'a>(
        &'a self,
        account_id: &'a str,
        rule: NewRule,
        limit: u64,
    ) -> BoxFuture<'a, Result<RuleRecord>>;
    fn get_rule<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<RuleRecord>>>;
    /// The rules of one account, or of every account with `None`, by id.
    fn list_rules<'a>(
        &'a self,
        account_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<RuleRecord>>>;
    /// Replaces a rule's name, SQL, state and actions.
    fn update_rule<'a>(&'a self, id: &'a str, rule: NewRule) -> BoxFuture<'a, Result<RuleRecord>>;
    fn set_rule_enabled<'a>(
        &'a self,
        id: &'a str,
        enabled: bool,
    ) -> BoxFuture<'a, Result<RuleRecord>>;
    fn delete_rule<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Creates a destination; its name must be new in the account.
    fn create_destination<'a>(
        &'a self,
        account_id: &'a str,
        destination: NewDestination,
    ) -> BoxFuture<'a, Result<DestinationRecord>>;
    fn get_destination<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<DestinationRecord>>>;
    /// The destinations of one account, or of every account with `None`, by id.
    fn list_destinations<'a>(
        &'a self,
        account_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<DestinationRecord>>>;
    fn update_destination<'a>(
        &'a self,
        id: &'a str,
        destination: NewDestination,
    ) -> BoxFuture<'a, Result<DestinationRecord>>;
    fn delete_destination<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// A new rule or destination id: `r` or `d` and 20 alphanumerics.
pub(crate) fn generate_id(prefix: char) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!(
        "{prefix}{}",
        Alphanumeric.sample_string(&mut rand::rng(), 20)
    )
}

/// Implements [`RuleStore`] for one backend type (with `pool` and `begin_write`).
macro_rules! rules_backend {
    ($store:ident, $db:ty) => {
        mod rule_store {
            use sqlx::Row;

            use super::$store;
            use crate::backend::{from_ms, is_fk_violation, is_unique_violation, now, to_ms};
            use crate::rules::{
                DestinationRecord, NewDestination, NewRule, RuleRecord, RuleStore, generate_id,
            };
            use crate::{BoxFuture, RegistryError, Result};

            type DbRow = <$db as sqlx::Database>::Row;

            macro_rules! rule_cols {
                () => {
                    "id, account_id, name, sql, enabled, actions, error_action, created_at, \
                     updated_at"
                };
            }
            macro_rules! dest_cols {
                () => {
                    "id, account_id, name, kind, config, created_at, updated_at"
                };
            }

            fn rule_from_row(r: &DbRow) -> Result<RuleRecord> {
                Ok(RuleRecord {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    name: r.try_get("name")?,
                    sql: r.try_get("sql")?,
                    enabled: r.try_get("enabled")?,
                    actions: r.try_get("actions")?,
                    error_action: r.try_get("error_action")?,
                    created_at: from_ms(r.try_get("created_at")?)?,
                    updated_at: from_ms(r.try_get("updated_at")?)?,
                })
            }

            fn destination_from_row(r: &DbRow) -> Result<DestinationRecord> {
                Ok(DestinationRecord {
                    id: r.try_get("id")?,
                    account_id: r.try_get("account_id")?,
                    name: r.try_get("name")?,
                    kind: r.try_get("kind")?,
                    config: r.try_get("config")?,
                    created_at: from_ms(r.try_get("created_at")?)?,
                    updated_at: from_ms(r.try_get("updated_at")?)?,
                })
            }

            fn name_taken(e: sqlx::Error, name: &str) -> RegistryError {
                if is_unique_violation(&e) {
                    RegistryError::DestinationAlreadyExists(name.to_owned())
                } else {
                    e.into()
                }
            }

            impl RuleStore for $store {
                fn create_rule<'a>(
                    &'a self,
                    account_id: &'a str,
                    rule: NewRule,
                    limit: u64,
                ) -> BoxFuture<'a, Result<RuleRecord>> {
                    Box::pin(async move {
                        let mut tx = self.begin_write().await?;
                        let done = sqlx::query(
                            "UPDATE accounts SET rule_count = rule_count + 1 \
                             WHERE id = $1 AND rule_count < $2",
                        )
                        .bind(account_id)
                        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                        .execute(&mut *tx)
                        .await?;
                        if done.rows_affected() == 0 {
                            let exists: Option<String> =
                                sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1")
                                    .bind(account_id)
                                    .fetch_optional(&mut *tx)
                                    .await?;
                            return Err(match exists {
                                None => RegistryError::AccountNotFound(account_id.to_owned()),
                                Some(_) => RegistryError::RulesPerAccountExceeded {
                                    account_id: account_id.to_owned(),
                                    limit,
                                },
                            });
                        }
                        let at = to_ms(now());
                        let row = sqlx::query(concat!(
                            "INSERT INTO rules (",
                            rule_cols!(),
                            ") \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ",
                            rule_cols!()
                        ))
                        .bind(generate_id('r'))
                        .bind(account_id)
                        .bind(&rule.name)
                        .bind(&rule.sql)
                        .bind(rule.enabled)
                        .bind(&rule.actions)
                        .bind(&rule.error_action)
                        .bind(at)
                        .fetch_one(&mut *tx)
                        .await?;
                        let record = rule_from_row(&row)?;
                        tx.commit().await?;
                        Ok(record)
                    })
                }

                fn get_rule<'a>(
                    &'a self,
                    id: &'a str,
                ) -> BoxFuture<'a, Result<Option<RuleRecord>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "SELECT ",
                            rule_cols!(),
                            " FROM rules WHERE id = $1"
                        ))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| rule_from_row(&r)).transpose()
                    })
                }

                fn list_rules<'a>(
                    &'a self,
                    account_id: Option<&'a str>,
                ) -> BoxFuture<'a, Result<Vec<RuleRecord>>> {
                    Box::pin(async move {
                        let rows = match account_id {
                            Some(a) => {
                                sqlx::query(concat!(
                                    "SELECT ",
                                    rule_cols!(),
                                    " FROM rules WHERE account_id = $1 \
                                     ORDER BY id"
                                ))
                                .bind(a)
                                .fetch_all(&self.pool)
                                .await?
                            }
                            None => {
                                sqlx::query(concat!(
                                    "SELECT ",
                                    rule_cols!(),
                                    " FROM rules ORDER BY id"
                                ))
                                .fetch_all(&self.pool)
                                .await?
                            }
                        };
                        rows.iter().map(rule_from_row).collect()
                    })
                }

                fn update_rule<'a>(
                    &'a self,
                    id: &'a str,
                    rule: NewRule,
                ) -> BoxFuture<'a, Result<RuleRecord>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "UPDATE rules SET name = $2, sql = $3, enabled = $4, actions = $5, \
                             error_action = $6, updated_at = $7 WHERE id = $1 \
                             RETURNING ",
                            rule_cols!()
                        ))
                        .bind(id)
                        .bind(&rule.name)
                        .bind(&rule.sql)
                        .bind(rule.enabled)
                        .bind(&rule.actions)
                        .bind(&rule.error_action)
                        .bind(to_ms(now()))
                        .fetch_optional(&self.pool)
                        .await?;
                        match row {
                            Some(r) => rule_from_row(&r),
                            None => Err(RegistryError::RuleNotFound(id.to_owned())),
                        }
                    })
                }

                fn set_rule_enabled<'a>(
                    &'a self,
                    id: &'a str,
                    enabled: bool,
                ) -> BoxFuture<'a, Result<RuleRecord>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "UPDATE rules SET enabled = $2, updated_at = $3 WHERE id = $1 \
                             RETURNING ",
                            rule_cols!()
                        ))
                        .bind(id)
                        .bind(enabled)
                        .bind(to_ms(now()))
                        .fetch_optional(&self.pool)
                        .await?;
                        match row {
                            Some(r) => rule_from_row(&r),
                            None => Err(RegistryError::RuleNotFound(id.to_owned())),
                        }
                    })
                }

                fn delete_rule<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
                    Box::pin(async move {
                        let mut tx = self.begin_write().await?;
                        let account: Option<String> = sqlx::query_scalar(
                            "DELETE FROM rules WHERE id = $1 RETURNING account_id",
                        )
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let Some(account) = account else {
                            return Err(RegistryError::RuleNotFound(id.to_owned()));
                        };
                        sqlx::query(
                            "UPDATE accounts SET rule_count = rule_count - 1 \
                             WHERE id = $1 AND rule_count > 0",
                        )
                        .bind(&account)
                        .execute(&mut *tx)
                        .await?;
                        tx.commit().await?;
                        Ok(())
                    })
                }

                fn create_destination<'a>(
                    &'a self,
                    account_id: &'a str,
                    destination: NewDestination,
                ) -> BoxFuture<'a, Result<DestinationRecord>> {
                    Box::pin(async move {
                        let at = to_ms(now());
                        let row = sqlx::query(concat!(
                            "INSERT INTO destinations (",
                            dest_cols!(),
                            ") \
                             VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
                            dest_cols!()
                        ))
                        .bind(generate_id('d'))
                        .bind(account_id)
                        .bind(&destination.name)
                        .bind(&destination.kind)
                        .bind(&destination.config)
                        .bind(at)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| {
                            if is_fk_violation(&e) {
                                RegistryError::AccountNotFound(account_id.to_owned())
                            } else {
                                name_taken(e, &destination.name)
                            }
                        })?;
                        destination_from_row(&row)
                    })
                }

                fn get_destination<'a>(
                    &'a self,
                    id: &'a str,
                ) -> BoxFuture<'a, Result<Option<DestinationRecord>>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "SELECT ",
                            dest_cols!(),
                            " FROM destinations WHERE id = $1"
                        ))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                        row.map(|r| destination_from_row(&r)).transpose()
                    })
                }

                fn list_destinations<'a>(
                    &'a self,
                    account_id: Option<&'a str>,
                ) -> BoxFuture<'a, Result<Vec<DestinationRecord>>> {
                    Box::pin(async move {
                        let rows = match account_id {
                            Some(a) => {
                                sqlx::query(concat!(
                                    "SELECT ",
                                    dest_cols!(),
                                    " FROM destinations WHERE account_id = $1 \
                                     ORDER BY id"
                                ))
                                .bind(a)
                                .fetch_all(&self.pool)
                                .await?
                            }
                            None => {
                                sqlx::query(concat!(
                                    "SELECT ",
                                    dest_cols!(),
                                    " FROM destinations ORDER BY id"
                                ))
                                .fetch_all(&self.pool)
                                .await?
                            }
                        };
                        rows.iter().map(destination_from_row).collect()
                    })
                }

                fn update_destination<'a>(
                    &'a self,
                    id: &'a str,
                    destination: NewDestination,
                ) -> BoxFuture<'a, Result<DestinationRecord>> {
                    Box::pin(async move {
                        let row = sqlx::query(concat!(
                            "UPDATE destinations SET name = $2, kind = $3, config = $4, \
                             updated_at = $5 WHERE id = $1 RETURNING ",
                            dest_cols!()
                        ))
                        .bind(id)
                        .bind(&destination.name)
                        .bind(&destination.kind)
                        .bind(&destination.config)
                        .bind(to_ms(now()))
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(|e| name_taken(e, &destination.name))?;
                        match row {
                            Some(r) => destination_from_row(&r),
                            None => Err(RegistryError::DestinationNotFound(id.to_owned())),
                        }
                    })
                }

                fn delete_destination<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<()>> {
                    Box::pin(async move {
                        let done = sqlx::query("DELETE FROM destinations WHERE id = $1")
                            .bind(id)
                            .execute(&self.pool)
                            .await?;
                        if done.rows_affected() == 0 {
                            return Err(RegistryError::DestinationNotFound(id.to_owned()));
                        }
                        Ok(())
                    })
                }
            }
        }
    };
}

pub(crate) use rules_backend;
