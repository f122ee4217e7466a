//! The audit trail's queries, one place for both SQL stores: the `WHERE`
//! of a filter (only the conditions given, so each variant uses its index:
//! `(account, at)` or `(at)`) and the order of a page. A store numbers the
//! parameters its own way (`?1`, `$1`).

use rcpat::model::{AuditFilter, AuditKind, TwoFactorMethod};

/// A parameter of the `WHERE` clause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Int(i64),
}

/// The columns a page reads, in the order [`Row`] takes them.
pub const COLUMNS: &str =
    "at, account, kind, token_name, token_last_part, method, address, user_agent, host_id, count";

/// Newest first; ties, the one stored last first.
pub const ORDER: &str = "ORDER BY at DESC, id DESC";

/// `WHERE …` (or nothing) for `filter`, with placeholders from `placeholder(n)`
/// (1-based), and its parameters in order.
pub fn where_clause(
    filter: &AuditFilter,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<Param>) {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(account) = &filter.account {
        params.push(Param::Text(account.clone()));
        conditions.push(format!("account = {}", placeholder(params.len())));
    }
    if let Some(since) = filter.since {
        params.push(Param::Int(i64::try_from(since).unwrap_or(i64::MAX)));
        conditions.push(format!("at >= {}", placeholder(params.len())));
    }
    if let Some(kind) = filter.kind {
        params.push(Param::Text(kind.name().to_string()));
        conditions.push(format!("kind = {}", placeholder(params.len())));
    }
    if conditions.is_empty() {
        (String::new(), params)
    } else {
        (format!("WHERE {}", conditions.join(" AND ")), params)
    }
}

/// A kind or method as stored; an unknown name is corrupt data.
pub fn kind(name: &str) -> Result<AuditKind, crate::Error> {
    AuditKind::from_name(name).ok_or(crate::Error::Corrupt("an audit event of an unknown kind"))
}

pub fn method(name: Option<&str>) -> Result<Option<TwoFactorMethod>, crate::Error> {
    name.map(|n| {
        TwoFactorMethod::from_name(n)
            .ok_or(crate::Error::Corrupt("an audit event of an unknown method"))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_conditions_given() {
        let (sql, params) = where_clause(&AuditFilter::default(), |n| format!("?{n}"));
        assert_eq!((sql.as_str(), params.len()), ("", 0));
        let filter = AuditFilter {
            account: Some("u1".into()),
            since: None,
            kind: Some(AuditKind::TokenRemoved),
        };
        let (sql, params) = where_clause(&filter, |n| format!("${n}"));
        assert_eq!(sql, "WHERE account = $1 AND kind = $2");
        assert_eq!(
            params,
            [
                Param::Text("u1".into()),
                Param::Text("token-removed".into())
            ]
        );
    }
}
