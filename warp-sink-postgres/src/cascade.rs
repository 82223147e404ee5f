//! Foreign-key actions the source database performed itself (no row event records them),
//! reproduced on the child's landing table in the child's own order: the live rows that
//! hold the parent's old values are deleted (soft or hard, per the table), set to null,
//! or set to the parent's new values, with their versions bumped as for any change.

use warp_core::config::DeletionStrategy;
use warp_core::{Cascade, CascadeAction};

use crate::encode::literal_of;
use crate::error::{Result, SinkError};
use crate::ident::{fit, literal, qualified, quote};
use crate::landed::{Landed, LandedColumn, OP, SOURCE_TS, UPDATED_AT, VERSION};

/// The one statement that performs `c` on `landed`.
pub fn statement(landed: &Landed, c: &Cascade, deletion: DeletionStrategy) -> Result<String> {
    let columns = find(landed, c, &c.columns)?;
    let alive = format!("NOT t.{}", landed.is_deleted());
    // This table's rows holding the parent's values (a chain's values are the first
    // middle table's, not this table's: see `through`).
    let matching = || -> Result<String> {
        Ok(columns
            .iter()
            .zip(&c.matching)
            .map(|(col, v)| Ok(format!("t.{} = {}", col.ident, literal_of(v, &col.ty)?)))
            .collect::<Result<Vec<_>>>()?
            .join(" AND "))
    };
    let ts = c.source_ts.map_or_else(
        || "NULL".to_owned(),
        |t| format!("{}::timestamptz", literal(&t.to_rfc3339())),
    );
    let bump = format!(
        "{v} = t.{v} + 1, {u} = now(), {s} = {ts}",
        v = quote(VERSION),
        u = quote(UPDATED_AT),
        s = quote(SOURCE_TS)
    );
    // A table that references itself loses whole subtrees: the rows found, then the rows
    // referencing those, level after level (UNION stops at a cycle).
    let (with, target) = match (&c.action, &c.recursive_on) {
        (CascadeAction::Delete, Some(referenced)) => {
            let referenced = find(landed, c, referenced)?;
            let refs = |prefix: &str| {
                referenced
                    .iter()
                    .map(|col| format!("{prefix}{}", col.ident))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let link = columns
                .iter()
                .zip(&referenced)
                .map(|(child, parent)| format!("t.{} = d.{}", child.ident, parent.ident))
                .collect::<Vec<_>>()
                .join(" AND ");
            let with = format!(
                "WITH RECURSIVE doomed AS (SELECT {t_refs} FROM {table} t WHERE {matching} AND {alive} \
                 UNION SELECT {t_refs} FROM {table} t JOIN doomed d ON {link} WHERE {alive}) ",
                t_refs = refs("t."),
                table = landed.table,
                matching = matching()?,
            );
            let target = format!(
                "({}) IN (SELECT {} FROM doomed) AND {alive}",
                refs("t."),
                refs("")
            );
            (with, target)
        }
        _ if !c.via.is_empty() => {
            let cols = columns
                .iter()
                .map(|col| format!("t.{}", col.ident))
                .collect::<Vec<_>>()
                .join(", ");
            (
                String::new(),
                format!("({cols}) IN ({}) AND {alive}", through(c)?),
            )
        }
        _ => (String::new(), format!("{} AND {alive}", matching()?)),
    };
    let table = &landed.table;
    Ok(match (&c.action, deletion) {
        (CascadeAction::Delete, DeletionStrategy::Hard) => {
            format!("{with}DELETE FROM {table} t WHERE {target}")
        }
        (CascadeAction::Delete, DeletionStrategy::Soft) => format!(
            "{with}UPDATE {table} t SET {d} = true, {da} = now(), {op} = 'd', {bump} WHERE {target}",
            d = landed.is_deleted(),
            da = landed.deleted_at(),
            op = quote(OP),
        ),
        (CascadeAction::SetNull, _) => set(table, &columns, &vec![None; columns.len()], &bump, &target)?,
        (CascadeAction::Set(values), _) => {
            let values: Vec<Option<&warp_core::Value>> = values.iter().map(Some).collect();
            set(table, &columns, &values, &bump, &target)?
        }
    })
}

/// The referenced columns of the rows of the last middle table the action went through:
/// the rows of the first that held the parent's values, then the rows of each next one
/// that referenced those — deleted ones included, since the source deleted them in the
/// same transaction (the engine waited for each to apply it).
fn through(c: &Cascade) -> Result<String> {
    let mut inner: Option<String> = None;
    for (i, hop) in c.via.iter().enumerate() {
        let (schema, table) = hop.landed.as_ref().ok_or_else(|| {
            SinkError::Invalid(format!(
                "foreign key {}: where {} lands is unknown",
                c.constraint, hop.table
            ))
        })?;
        let alias = format!("h{i}");
        let name = |n: &String| format!("{alias}.{}", quote(&fit(n)));
        let cols: Vec<String> = hop.columns.iter().map(name).collect();
        let cond = match inner {
            None => {
                if hop.types.len() != cols.len() || c.matching.len() != cols.len() {
                    return Err(SinkError::Invalid(format!(
                        "foreign key {}: {} columns, {} types and {} values",
                        c.constraint,
                        cols.len(),
                        hop.types.len(),
                        c.matching.len()
                    )));
                }
                cols.iter()
                    .zip(&c.matching)
                    .zip(&hop.types)
                    .map(|((col, v), ty)| Ok(format!("{col} = {}", literal_of(v, ty)?)))
                    .collect::<Result<Vec<_>>>()?
                    .join(" AND ")
            }
            Some(previous) => format!("({}) IN ({previous})", cols.join(", ")),
        };
        let refs: Vec<String> = hop.referenced.iter().map(name).collect();
        inner = Some(format!(
            "SELECT {} FROM {} {alias} WHERE {cond}",
            refs.join(", "),
            qualified(&fit(schema), &fit(table))
        ));
    }
    inner
        .ok_or_else(|| SinkError::Invalid(format!("foreign key {}: no middle table", c.constraint)))
}

fn set(
    table: &str,
    columns: &[&LandedColumn],
    values: &[Option<&warp_core::Value>],
    bump: &str,
    target: &str,
) -> Result<String> {
    let assignments = columns
        .iter()
        .zip(values)
        .map(|(col, v)| {
            let v = match v {
                Some(v) => literal_of(v, &col.ty)?,
                None => "NULL".to_owned(),
            };
            Ok(format!("{} = {v}", col.ident))
        })
        .collect::<Result<Vec<_>>>()?
        .join(", ");
    Ok(format!(
        "UPDATE {table} t SET {assignments}, {} = 'u', {bump} WHERE {target}",
        quote(OP)
    ))
}

fn find<'a>(landed: &'a Landed, c: &Cascade, names: &[String]) -> Result<Vec<&'a LandedColumn>> {
    names
        .iter()
        .map(|n| {
            landed
                .columns
                .iter()
                .find(|col| col.name == *n)
                .ok_or_else(|| {
                    SinkError::Invalid(format!(
                        "foreign key {}: {} has no column {n} to find the referencing rows by",
                        c.constraint, landed.table
                    ))
                })
        })
        .collect()
}
