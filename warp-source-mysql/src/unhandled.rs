//! Binlog events the reader does not turn into changes, and what each means: skipped
//! only when it can carry no row of a replicated table, refused (with the setting to
//! change) when it could. An event we cannot decode is never skipped silently.

/// What to do with an event the decoder returns no data for (a type it does not know).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecoded {
    /// MariaDB bookkeeping without rows: annotate, binlog checkpoint, GTID list,
    /// encryption start.
    Ignorable,
    /// MariaDB `log_bin_compress`: a compressed query or rows event.
    Compressed,
    Unknown(u8),
}

/// MariaDB's event type codes above MySQL's range.
const ANNOTATE_ROWS: u8 = 160;
const START_ENCRYPTION: u8 = 164;
const QUERY_COMPRESSED: u8 = 165;
const DELETE_ROWS_COMPRESSED: u8 = 171;

pub fn classify(type_code: u8) -> Undecoded {
    match type_code {
        ANNOTATE_ROWS..=START_ENCRYPTION => Undecoded::Ignorable,
        QUERY_COMPRESSED..=DELETE_ROWS_COMPRESSED => Undecoded::Compressed,
        other => Undecoded::Unknown(other),
    }
}

/// The permanent error for an event that cannot be applied, with what to change.
pub fn refusal(table: &str, what: Refused) -> warp_core::Error {
    let (message, hint) = match what {
        Refused::Compressed => (
            "the binlog holds compressed events (MariaDB log_bin_compress=ON), which this reader cannot decode".to_owned(),
            "set log_bin_compress=OFF on the server, then resync the table from a position after the compressed events",
        ),
        Refused::PartialUpdate => (
            "the binlog holds partial JSON updates (binlog_row_value_options=PARTIAL_JSON), which carry no full row image".to_owned(),
            "set binlog_row_value_options='' on the server, then resync the table",
        ),
        Refused::Unknown(code) => (
            format!("binlog event type {code} cannot be decoded by this version of cartridge-warp"),
            "report the server version; a newer cartridge-warp may read it",
        ),
    };
    warp_core::Error::Table {
        table: table.to_owned(),
        message,
        hint: Some(hint.to_owned()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Compressed,
    PartialUpdate,
    Unknown(u8),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_bookkeeping_is_skipped_and_compression_or_the_unknown_refused() {
        for code in [160, 161, 163, 164] {
            assert_eq!(classify(code), Undecoded::Ignorable, "{code}");
        }
        for code in 165..=171 {
            assert_eq!(classify(code), Undecoded::Compressed, "{code}");
        }
        assert_eq!(classify(172), Undecoded::Unknown(172));
        let e = refusal("shop.t", Refused::Compressed);
        assert!(!e.is_transient());
        assert!(e.hint().unwrap().contains("log_bin_compress=OFF"));
    }
}
