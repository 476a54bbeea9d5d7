//! The statements on the FreeRADIUS tables. Both databases take the same SQL (`$n`
//! parameters); the few differences (write locks, start-time arithmetic) are chosen by
//! [`Dialect`]. Every function works inside the caller's transaction.

use sqlx::{AnyConnection, Row};

use super::config::{AttributeRow, PasswordAttribute};
use super::db::Dialect;

/// Attributes in `radcheck` that hold a password in one form or another: a password change
/// replaces all of them, so an old hash never stays valid beside the new one.
const PASSWORD_ATTRIBUTES: &str =
    "('Cleartext-Password', 'User-Password', 'Password-With-Header', \
     'Crypt-Password', 'MD5-Password', 'SMD5-Password', 'SHA-Password', 'SSHA-Password', \
     'SHA1-Password', 'SSHA1-Password', 'SHA2-Password', 'SHA2-224-Password', \
     'SHA2-256-Password', 'SHA2-384-Password', 'SHA2-512-Password', 'SSHA2-224-Password', \
     'SSHA2-256-Password', 'SSHA2-384-Password', 'SSHA2-512-Password', 'NT-Password', \
     'LM-Password')";

/// The tables and columns the module reads or writes, checked by `test_connection`.
pub const TABLES: [(&str, &str); 6] = [
    ("radcheck", "username, attribute, op, value"),
    ("radreply", "username, attribute, op, value"),
    ("radusergroup", "username, groupname, priority"),
    ("radgroupcheck", "groupname, attribute, op, value"),
    ("radgroupreply", "groupname, attribute, op, value"),
    (
        "radacct",
        "username, acctstarttime, acctinputoctets, acctoutputoctets",
    ),
];

/// The statement that opens a writing transaction. SQLite takes the write lock at once,
/// so two writers never both read and then fail to upgrade; FreeRADIUS waits on it with
/// its busy timeout.
pub fn begin_statement(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    }
}

/// Serialises writers of one group's rows (or one user's) on PostgreSQL until the
/// transaction ends, so that two creates of the same package cannot both rewrite the
/// group and leave its rows doubled. SQLite's `BEGIN IMMEDIATE` already serialises.
pub async fn lock(conn: &mut AnyConnection, dialect: Dialect, name: &str) -> sqlx::Result<()> {
    if dialect == Dialect::Postgres {
        // The lock function returns `void`, which the Any driver cannot decode: count it.
        sqlx::query("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock($1)) AS l")
            .bind(lock_key(name))
            .fetch_one(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A stable 64-bit key for an advisory lock, namespaced so that other users of advisory
/// locks in the same database are unlikely to collide.
fn lock_key(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("provisio-radius:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Whether the user has any row in the tables that make an account.
pub async fn user_exists(conn: &mut AnyConnection, username: &str) -> sqlx::Result<bool> {
    let row = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM radcheck WHERE username = $1) \
              + (SELECT COUNT(*) FROM radusergroup WHERE username = $1) \
              + (SELECT COUNT(*) FROM radreply WHERE username = $1)",
    )
    .bind(username)
    .fetch_one(&mut *conn)
    .await?;
    Ok(row.try_get::<i64, _>(0)? > 0)
}

/// The user's password rows, as `(attribute, value)`.
pub async fn passwords(
    conn: &mut AnyConnection,
    username: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    let rows = sqlx::query(&format!(
        "SELECT attribute, value FROM radcheck WHERE username = $1 \
         AND attribute IN {PASSWORD_ATTRIBUTES} ORDER BY id"
    ))
    .bind(username)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Replaces every password row of the user with one.
pub async fn set_password(
    conn: &mut AnyConnection,
    username: &str,
    attribute: PasswordAttribute,
    value: &str,
) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "DELETE FROM radcheck WHERE username = $1 AND attribute IN {PASSWORD_ATTRIBUTES}"
    ))
    .bind(username)
    .execute(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO radcheck (username, attribute, op, value) VALUES ($1, $2, ':=', $3)")
        .bind(username)
        .bind(attribute.name())
        .bind(value)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Makes the user a member of `group` at `priority` and of no other group except `keep`
/// (the suspend group, so that a package change does not lift a suspension).
pub async fn set_package_group(
    conn: &mut AnyConnection,
    username: &str,
    group: &str,
    keep: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM radusergroup WHERE username = $1 AND groupname <> $2")
        .bind(username)
        .bind(keep.unwrap_or(""))
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO radusergroup (username, groupname, priority) VALUES ($1, $2, $3)")
        .bind(username)
        .bind(group)
        .bind(PACKAGE_PRIORITY)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The package group's priority; the suspend group's 0 comes before it, so FreeRADIUS
/// reads the reject first.
pub const PACKAGE_PRIORITY: i32 = 1;
pub const SUSPEND_PRIORITY: i32 = 0;

/// Replaces the user's own reply rows.
pub async fn set_user_reply(
    conn: &mut AnyConnection,
    username: &str,
    rows: &[AttributeRow],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM radreply WHERE username = $1")
        .bind(username)
        .execute(&mut *conn)
        .await?;
    for r in rows {
        sqlx::query(
            "INSERT INTO radreply (username, attribute, op, value) VALUES ($1, $2, $3, $4)",
        )
        .bind(username)
        .bind(&r.attribute)
        .bind(r.op)
        .bind(&r.value)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Which group table.
#[derive(Debug, Clone, Copy)]
pub enum GroupTable {
    Reply,
    Check,
}

impl GroupTable {
    fn name(self) -> &'static str {
        match self {
            Self::Reply => "radgroupreply",
            Self::Check => "radgroupcheck",
        }
    }
}

/// Makes the group's rows in `table` exactly `rows`. Rows that already match are left
/// alone (no churn of ids, nothing for FreeRADIUS to see half-done); otherwise the set is
/// replaced. The caller holds the group's lock.
pub async fn sync_group(
    conn: &mut AnyConnection,
    table: GroupTable,
    group: &str,
    rows: &[AttributeRow],
) -> sqlx::Result<()> {
    let t = table.name();
    let existing = sqlx::query(&format!(
        "SELECT attribute, op, value FROM {t} WHERE groupname = $1 ORDER BY id"
    ))
    .bind(group)
    .fetch_all(&mut *conn)
    .await?;
    let same = existing.len() == rows.len()
        && existing.iter().zip(rows).all(|(e, r)| {
            e.try_get::<String, _>(0).ok().as_deref() == Some(r.attribute.as_str())
                && e.try_get::<String, _>(1).ok().as_deref().map(str::trim) == Some(r.op)
                && e.try_get::<String, _>(2).ok().as_deref() == Some(r.value.as_str())
        });
    if same {
        return Ok(());
    }
    sqlx::query(&format!("DELETE FROM {t} WHERE groupname = $1"))
        .bind(group)
        .execute(&mut *conn)
        .await?;
    for r in rows {
        sqlx::query(&format!(
            "INSERT INTO {t} (groupname, attribute, op, value) VALUES ($1, $2, $3, $4)"
        ))
        .bind(group)
        .bind(&r.attribute)
        .bind(r.op)
        .bind(&r.value)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Suspends through the group: the group rejects (its check row is added if missing) and
/// the user joins it at priority 0.
pub async fn suspend_by_group(
    conn: &mut AnyConnection,
    username: &str,
    group: &str,
) -> sqlx::Result<()> {
    let rejects: i64 = sqlx::query(
        "SELECT COUNT(*) FROM radgroupcheck WHERE groupname = $1 AND attribute = 'Auth-Type' \
         AND LOWER(value) = 'reject'",
    )
    .bind(group)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    if rejects == 0 {
        sqlx::query(
            "INSERT INTO radgroupcheck (groupname, attribute, op, value) \
             VALUES ($1, 'Auth-Type', ':=', 'Reject')",
        )
        .bind(group)
        .execute(&mut *conn)
        .await?;
    }
    let member: i64 =
        sqlx::query("SELECT COUNT(*) FROM radusergroup WHERE username = $1 AND groupname = $2")
            .bind(username)
            .bind(group)
            .fetch_one(&mut *conn)
            .await?
            .try_get(0)?;
    if member == 0 {
        sqlx::query("INSERT INTO radusergroup (username, groupname, priority) VALUES ($1, $2, $3)")
            .bind(username)
            .bind(group)
            .bind(SUSPEND_PRIORITY)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Suspends through the user's own check rows.
pub async fn suspend_by_check(conn: &mut AnyConnection, username: &str) -> sqlx::Result<()> {
    let rejects: i64 = sqlx::query(
        "SELECT COUNT(*) FROM radcheck WHERE username = $1 AND attribute = 'Auth-Type' \
         AND LOWER(value) = 'reject'",
    )
    .bind(username)
    .fetch_one(&mut *conn)
    .await?
    .try_get(0)?;
    if rejects == 0 {
        sqlx::query(
            "INSERT INTO radcheck (username, attribute, op, value) \
             VALUES ($1, 'Auth-Type', ':=', 'Reject')",
        )
        .bind(username)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Lifts a suspension of either kind, whichever the server's method was when it was
/// written.
pub async fn unsuspend(
    conn: &mut AnyConnection,
    username: &str,
    suspend_group: &str,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM radusergroup WHERE username = $1 AND groupname = $2")
        .bind(username)
        .bind(suspend_group)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM radcheck WHERE username = $1 AND attribute = 'Auth-Type' \
         AND LOWER(value) = 'reject'",
    )
    .bind(username)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Removes every row of the user that makes the account. `radacct` stays: it is the
/// history usage and billing are computed from.
pub async fn delete_user(conn: &mut AnyConnection, username: &str) -> sqlx::Result<()> {
    for table in ["radcheck", "radreply", "radusergroup"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE username = $1"))
            .bind(username)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// One account's state as the tables say.
#[derive(Debug, Default, Clone)]
pub struct AccountState {
    /// Groups by priority (then insertion order).
    pub groups: Vec<String>,
    /// An `Auth-Type := Reject` in the user's own check rows.
    pub check_reject: bool,
}

impl AccountState {
    pub fn suspended(&self, suspend_group: &str) -> bool {
        self.check_reject || self.groups.iter().any(|g| g == suspend_group)
    }

    pub fn package(&self, suspend_group: &str) -> Option<String> {
        self.groups.iter().find(|g| *g != suspend_group).cloned()
    }
}

/// The state of every user from `first` to `last` (inclusive, in the database's order).
pub async fn states(
    conn: &mut AnyConnection,
    first: &str,
    last: &str,
) -> sqlx::Result<std::collections::HashMap<String, AccountState>> {
    let mut out: std::collections::HashMap<String, AccountState> = Default::default();
    let groups = sqlx::query(
        "SELECT username, groupname FROM radusergroup WHERE username >= $1 AND username <= $2 \
         ORDER BY username, priority, id",
    )
    .bind(first)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    for r in groups {
        let user: String = r.try_get(0)?;
        out.entry(user).or_default().groups.push(r.try_get(1)?);
    }
    let rejects = sqlx::query(
        "SELECT DISTINCT username FROM radcheck WHERE username >= $1 AND username <= $2 \
         AND attribute = 'Auth-Type' AND LOWER(value) = 'reject'",
    )
    .bind(first)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    for r in rejects {
        let user: String = r.try_get(0)?;
        out.entry(user).or_default().check_reject = true;
    }
    Ok(out)
}

/// Every username with a row in an account table, i.e. what FreeRADIUS could authorise
/// or what is left of an account.
const ACCOUNT_USERS: &str = "SELECT username FROM radcheck \
     UNION SELECT username FROM radusergroup \
     UNION SELECT username FROM radreply";

/// One page of account usernames after `cursor`, in the database's order.
pub async fn account_page(
    conn: &mut AnyConnection,
    cursor: &str,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    let rows = sqlx::query(&format!(
        "SELECT username FROM ({ACCOUNT_USERS}) AS u WHERE username > $1 \
         ORDER BY username LIMIT $2"
    ))
    .bind(cursor)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// `radacct.acctstarttime` as seconds since the epoch. FreeRADIUS's SQLite queries store
/// the epoch number itself; rows written by other tools may hold `YYYY-MM-DD HH:MM:SS`
/// text (UTC), which `strftime` converts.
fn start_epoch(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "(CASE WHEN typeof(acctstarttime) IN ('integer', 'real') THEN acctstarttime \
             ELSE CAST(strftime('%s', acctstarttime) AS INTEGER) END)"
        }
        Dialect::Postgres => "EXTRACT(EPOCH FROM acctstarttime)",
    }
}

/// One page of usernames that are accounts or have sessions starting at or after
/// `since` (seconds since the epoch).
pub async fn usage_page(
    conn: &mut AnyConnection,
    dialect: Dialect,
    cursor: &str,
    limit: i64,
    since: i64,
) -> sqlx::Result<Vec<String>> {
    let start = start_epoch(dialect);
    let rows = sqlx::query(&format!(
        "SELECT username FROM ({ACCOUNT_USERS} \
           UNION SELECT username FROM radacct WHERE username IS NOT NULL AND {start} >= $3) AS u \
         WHERE username > $1 ORDER BY username LIMIT $2"
    ))
    .bind(cursor)
    .bind(limit)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}

/// Octets in and out of sessions that started at or after `since`, per user from
/// `first` to `last`. FreeRADIUS 3 stores the gigawords already folded into the octet
/// columns (`gigawords << 32 | octets`), so the columns are whole byte counts.
pub async fn octets(
    conn: &mut AnyConnection,
    dialect: Dialect,
    first: &str,
    last: &str,
    since: i64,
) -> sqlx::Result<std::collections::HashMap<String, i64>> {
    let start = start_epoch(dialect);
    let rows = sqlx::query(&format!(
        "SELECT username, CAST(COALESCE(SUM(COALESCE(acctinputoctets, 0) \
                + COALESCE(acctoutputoctets, 0)), 0) AS BIGINT) \
         FROM radacct WHERE username >= $1 AND username <= $2 AND {start} >= $3 \
         GROUP BY username"
    ))
    .bind(first)
    .bind(last)
    .bind(since)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
