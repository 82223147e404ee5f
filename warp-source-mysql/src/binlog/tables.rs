//! The tables a feed serves, looked up by the names the binlog's table maps carry, and
//! the parents read only for their children's foreign-key actions.

use std::collections::HashMap;

use crate::ddl_scope::NameCase;
use crate::discover::MysqlTable;
use crate::foreign_keys::Cascades;

/// The tables a feed serves; a table whose stream cannot go on is taken out (`None`).
pub(super) type Served = Vec<Option<MysqlTable>>;

pub(super) struct ServedTables {
    pub(super) tables: Served,
    /// Tables past this index are parents read only for their children's cascades:
    /// nothing of their own is handed out.
    count: usize,
    /// Served tables by name, in the server's name comparison (`names`).
    by_name: HashMap<String, usize>,
    pub(super) names: NameCase,
    /// The foreign-key actions on the served tables.
    pub(super) cascades: Cascades,
    /// The server logs the rows its foreign-key actions change (MySQL 9.6+ SQL-layer
    /// foreign keys): nothing to reproduce.
    cascades_logged: bool,
}

impl ServedTables {
    pub(super) fn new(
        mut tables: Vec<MysqlTable>,
        parents: Vec<MysqlTable>,
        names: NameCase,
        cascades_logged: bool,
    ) -> Self {
        let count = tables.len();
        tables.extend(parents);
        let by_name = (tables.iter().enumerate())
            .map(|(i, t)| (names.key(&t.schema.id.name), i))
            .collect();
        let tables: Served = tables.into_iter().map(Some).collect();
        Self {
            cascades: Cascades::among(&tables, count, cascades_logged),
            tables,
            count,
            by_name,
            names,
            cascades_logged,
        }
    }

    /// The index of the table `database`.`table` of a table map, while it is served.
    pub(super) fn index_of(&self, database: &str, ours: &str, table: &str) -> Option<usize> {
        if !self.names.same(database, ours) {
            return None;
        }
        let &index = self.by_name.get(&self.names.key(table))?;
        self.tables[index].is_some().then_some(index)
    }

    /// Whether the table at `index` is a parent read for its children alone.
    pub(super) fn is_parent_only(&self, index: usize) -> bool {
        index >= self.count
    }

    pub(super) fn name(&self, index: usize) -> String {
        self.tables[index]
            .as_ref()
            .map_or_else(String::new, |t| t.schema.id.to_string())
    }

    /// The indexes of the tables still served.
    pub(super) fn live(&self) -> Vec<usize> {
        (0..self.tables.len())
            .filter(|&i| self.tables[i].is_some())
            .collect()
    }

    /// The served table named `name`, in the server's name comparison.
    pub(super) fn find(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| {
            t.as_ref()
                .is_some_and(|t| self.names.same(&t.schema.id.name, name))
        })
    }

    /// Takes the table at `index` out of the feed.
    pub(super) fn take_out(&mut self, index: usize) {
        if let Some(slot) = self.tables.get_mut(index) {
            *slot = None;
        }
    }

    /// Foreign keys come and go with DDL, and a dropped table acts on nothing.
    pub(super) fn refresh_cascades(&mut self) {
        self.cascades = Cascades::among(&self.tables, self.count, self.cascades_logged);
    }
}
