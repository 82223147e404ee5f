//! Source positions: opaque to the engine and the sink, parsed back only by the source
//! that wrote them.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A point in a source's change log (binlog file/offset or GTID set, resume token,
/// watermark). Stored as JSON in the checkpoint; printed in `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position(serde_json::Value);

impl Position {
    /// Encodes a source's own position type.
    pub fn encode<T: Serialize>(value: &T) -> Result<Self> {
        serde_json::to_value(value)
            .map(Self)
            .map_err(|e| Error::Position(e.to_string()))
    }

    /// Decodes a position back into the source's own type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.0.clone())
            .map_err(|e| Error::Position(format!("cannot read position {self} back: {e}")))
    }

    pub fn as_json(&self) -> &serde_json::Value {
        &self.0
    }

    pub fn from_json(value: serde_json::Value) -> Self {
        Self(value)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct BinlogPos {
        file: String,
        pos: u64,
    }

    #[test]
    fn positions_round_trip_and_print() {
        let p = Position::encode(&BinlogPos {
            file: "mysql-bin.000003".into(),
            pos: 4,
        })
        .unwrap();
        assert_eq!(p.to_string(), r#"{"file":"mysql-bin.000003","pos":4}"#);
        assert_eq!(p.decode::<BinlogPos>().unwrap().pos, 4);
        assert!(p.decode::<u64>().is_err());
    }
}
