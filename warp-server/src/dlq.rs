//! `cartridge-warp dlq list|replay|discard` against the destination's dead-letter table.

use warp_core::config::WarpConfig;
use warp_core::{DeadLetter, DeadLetterStatus, ReplayReport};

use crate::error::ServerError;

/// Which entries: ids, or a schema/table, optionally by status.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    pub ids: Vec<i64>,
    pub schema: Option<String>,
    pub table: Option<String>,
    /// `None` for every status.
    pub status: Option<DeadLetterStatus>,
}

#[cfg(feature = "postgres")]
mod imp {
    use warp_core::config::WarpConfig;
    use warp_core::{DeadLetter, ReplayReport, TableId, Target};
    use warp_sink_postgres::dlq::Filter;
    use warp_sink_postgres::PostgresSink;

    use super::DlqFilter;
    use crate::error::ServerError;

    fn sink(config: &WarpConfig) -> Result<PostgresSink, ServerError> {
        Ok(PostgresSink::connect_lazy(&config.destination).map_err(warp_core::Error::from)?)
    }

    fn filter(f: &DlqFilter) -> Filter {
        Filter {
            ids: f.ids.clone(),
            schema: f.schema.clone(),
            table: f.table.clone(),
            status: f.status,
        }
    }

    pub async fn list(config: &WarpConfig, f: &DlqFilter) -> Result<Vec<DeadLetter>, ServerError> {
        Ok(sink(config)?
            .dead_letters(&filter(f))
            .await
            .map_err(warp_core::Error::from)?)
    }

    pub async fn discard(config: &WarpConfig, f: &DlqFilter) -> Result<u64, ServerError> {
        Ok(sink(config)?
            .discard_dead_letters(&filter(f))
            .await
            .map_err(warp_core::Error::from)?)
    }

    pub async fn replay(config: &WarpConfig, f: &DlqFilter) -> Result<ReplayReport, ServerError> {
        // The schemas this configuration runs decide where their tables land.
        let all = config.schemas_to_run(None);
        let target = |schema: &str, table: &str| {
            all.iter()
                .find(|s| s.name == schema)
                .map(|s| Target::new(s, &TableId::new(&s.source_database, table)))
        };
        Ok(sink(config)?
            .replay_dead_letters(&filter(f), target)
            .await
            .map_err(warp_core::Error::from)?)
    }
}

macro_rules! gated {
    ($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty) => {
        pub async fn $name(config: &WarpConfig, $($arg: $ty),*) -> Result<$ret, ServerError> {
            #[cfg(feature = "postgres")]
            {
                imp::$name(config, $($arg),*).await
            }
            #[cfg(not(feature = "postgres"))]
            {
                let _ = (config, $($arg),*);
                Err(ServerError::MissingFeature { feature: "postgres", what: "the postgresql destination that holds dead letters".into() })
            }
        }
    };
}

gated!(list(filter: &DlqFilter) -> Vec<DeadLetter>);
gated!(discard(filter: &DlqFilter) -> u64);
gated!(replay(filter: &DlqFilter) -> ReplayReport);
