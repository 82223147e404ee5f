//! GTID state of the binlog being read: MariaDB's per-domain GTIDs and MySQL's executed
//! GTID set, stamped on every position handed out so a resume can find its place on
//! another server of the same history.

use mysql_async::binlog::events::EventData;
use mysql_async::prelude::Queryable;

use crate::error::Result;
use crate::gtid_set::{GtidSet, GtidStart};
use crate::position::BinlogPosition;

/// MariaDB's GTID event type.
pub(super) const MARIADB_GTID_EVENT: u8 = 162;

/// MariaDB GTID state, one `domain-server-seq` per domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GtidState(std::collections::BTreeMap<u32, String>);

impl GtidState {
    pub fn parse(text: &str) -> Self {
        Self(
            text.split(',')
                .filter_map(|g| {
                    let g = g.trim();
                    let domain = g.split('-').next()?.parse().ok()?;
                    Some((domain, g.to_owned()))
                })
                .collect(),
        )
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn render(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.values().cloned().collect::<Vec<_>>().join(","))
    }

    /// Records a GTID event: `data` starts with seq_no (u64 LE) and domain (u32 LE).
    fn observe(&mut self, data: &[u8], server_id: u32) {
        if let (Some(seq), Some(domain)) = (data.get(..8), data.get(8..12)) {
            let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
            let domain = u32::from_le_bytes(domain.try_into().unwrap_or_default());
            self.0.insert(domain, format!("{domain}-{server_id}-{seq}"));
        }
    }
}

/// Both servers' GTID bookkeeping as the events pass.
pub(super) struct Gtids {
    /// MariaDB's, from its GTID events.
    mariadb: GtidState,
    /// The MySQL GTID set at the last event read, once known (`gtid_mode=ON`).
    set: Option<GtidSet>,
    /// The server runs `gtid_mode=ON`: a PREVIOUS_GTIDS event starts the set.
    mode: bool,
}

impl Gtids {
    pub(super) fn new(mariadb: GtidState, mysql: &GtidStart) -> Self {
        Self {
            mariadb,
            mode: mysql.follows(),
            set: match mysql {
                GtidStart::Resume(set) => Some(set.clone()),
                _ => None,
            },
        }
    }

    /// A MariaDB GTID event (a type the driver does not decode).
    pub(super) fn observe_mariadb(&mut self, data: &[u8], server_id: u32) {
        self.mariadb.observe(data, server_id);
    }

    /// Follows a MySQL GTID event; false for any other event.
    pub(super) fn observe(&mut self, data: &EventData<'_>) -> bool {
        match data {
            EventData::GtidEvent(g) => {
                if let Some(set) = &mut self.set {
                    set.add(g.sid(), g.tag().map(|t| t.as_str()), g.gno());
                }
            }
            // A transaction without a GTID (a file from before `gtid_mode=ON`): no set
            // describes the positions from here until the next file's.
            EventData::AnonymousGtidEvent(_) => self.set = None,
            EventData::PreviousGtidsEvent(previous) if self.mode => {
                let previous = GtidSet::previous(previous);
                match &mut self.set {
                    Some(set) => set.union(&previous),
                    None => self.set = Some(previous),
                }
            }
            _ => return false,
        }
        true
    }

    /// Writes the GTIDs reached into `position`.
    pub(super) fn stamp(&self, position: &mut BinlogPosition) {
        position.gtid = self.mariadb.render();
        position.gtid_set = self
            .set
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(ToString::to_string);
    }
}

/// Whether `from`'s file/offset is where this server's history has `from`'s GTIDs (on
/// MariaDB; MySQL and positions without a GTID are taken as they are).
pub(super) async fn file_position_matches(
    conn: &mut mysql_async::Conn,
    from: &BinlogPosition,
) -> Result<bool> {
    let Some(want) = &from.gtid else {
        return Ok(true);
    };
    let here: Option<Option<String>> = conn
        .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&from.file, from.pos))
        .await
        .unwrap_or(None);
    Ok(match here.flatten() {
        Some(here) => GtidState::parse(&here) == GtidState::parse(want),
        None => false,
    })
}
