//! BigQuery's rule for a table that requires a partition filter, as its documentation
//! states it: a query reading the table is refused unless the `WHERE` of the `SELECT`
//! that reads it has at least one `AND`ed predicate referencing only the partitioning
//! column (`(p = 1 OR f = 2)` does not count). The emulator stores the setting but does
//! not enforce it, so the fault proxy applies this rule in its place.

use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions, BinaryOperator, Expr, ObjectName, Query, SetExpr, TableFactor, Visit,
    Visitor,
};
use sqlparser::dialect::BigQueryDialect;
use sqlparser::parser::Parser;

/// One table and its partitioning column (`_PARTITIONTIME` for ingestion time).
#[derive(Debug, Clone)]
pub struct PartitionRule {
    pub table: String,
    pub column: String,
}

impl PartitionRule {
    /// The service's refusal of `sql`, or `None` when it may run.
    pub fn refusal(&self, sql: &str) -> Option<String> {
        let statements = match Parser::parse_sql(&BigQueryDialect {}, sql) {
            Ok(s) => s,
            Err(e) => return Some(format!("the test proxy cannot parse the query: {e}")),
        };
        let mut check = Check {
            rule: self,
            unfiltered: false,
        };
        let _ = statements.visit(&mut check);
        check.unfiltered.then(|| {
            format!(
                "Cannot query over table '{}' without a filter over column(s) '{}' that can be used for partition elimination",
                self.table, self.column
            )
        })
    }

    fn names(&self, name: &ObjectName) -> bool {
        // `project.dataset.table` arrives as one quoted identifier or as parts.
        name.0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| i.value.rsplit('.').next() == Some(self.table.as_str()))
    }

    fn qualifies(&self, predicate: &Expr) -> bool {
        let mut columns = Vec::new();
        let _ = visit_expressions(predicate, |e| {
            match e {
                Expr::Identifier(i) => columns.push(i.value.clone()),
                Expr::CompoundIdentifier(parts) => {
                    columns.extend(parts.last().map(|i| i.value.clone()))
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        !columns.is_empty() && columns.iter().all(|c| c.eq_ignore_ascii_case(&self.column))
    }
}

fn conjuncts<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            conjuncts(left, out);
            conjuncts(right, out);
        }
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            conjuncts(inner, out)
        }
        other => out.push(other),
    }
}

struct Check<'a> {
    rule: &'a PartitionRule,
    unfiltered: bool,
}

impl Visitor for Check<'_> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let SetExpr::Select(select) = query.body.as_ref() else {
            return ControlFlow::Continue(());
        };
        let reads = select
            .from
            .iter()
            .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
            .any(|r| matches!(r, TableFactor::Table { name, .. } if self.rule.names(name)));
        let mut predicates = Vec::new();
        if let Some(w) = &select.selection {
            conjuncts(w, &mut predicates);
        }
        if reads && !predicates.iter().any(|p| self.rule.qualifies(p)) {
            self.unfiltered = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples() {
        let rule = PartitionRule {
            table: "t".into(),
            column: "partition_id".into(),
        };
        let ok = [
            "SELECT * FROM `p.d.t` WHERE partition_id = 'foo'",
            "SELECT * FROM `p.d.t` WHERE partition_id = 'foo' AND f = 'bar'",
            "SELECT k FROM (SELECT k FROM `p.d.t` WHERE (partition_id IS NULL OR partition_id <= 5)) WHERE k > 1",
            "SELECT * FROM `p.d.other`",
        ];
        for sql in ok {
            assert_eq!(rule.refusal(sql), None, "{sql}");
        }
        let refused = [
            "SELECT * FROM `p.d.t`",
            "SELECT * FROM `p.d.t` WHERE (partition_id = 'foo' OR f = 'bar')",
            "SELECT k FROM (SELECT k FROM `p.d.t`) WHERE partition_id = 1",
            "SELECT MAX(u) FROM `p.d.t` WHERE u IS NOT NULL",
        ];
        for sql in refused {
            assert!(rule.refusal(sql).is_some(), "{sql}");
        }
    }
}
