//! Source positions: opaque to the engine and the sink, parsed back only by the source
//! that wrote them.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A source's typed reading of a position, shared by the position's clones.
type Typed = Arc<OnceLock<Arc<dyn Any + Send + Sync>>>;

/// A point in a source's change log (binlog file/offset or GTID set, resume token,
/// watermark). Stored as JSON in the checkpoint; printed in `status`. The source that
/// wrote it keeps its typed reading beside the JSON ([`Position::typed`]), so the engine's
/// many comparisons of one position decode it at most once.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Position {
    value: serde_json::Value,
    #[serde(skip)]
    typed: Typed,
}

impl Position {
    /// Encodes a source's own position type.
    pub fn encode<T: Serialize>(value: &T) -> Result<Self> {
        serde_json::to_value(value)
            .map(Self::from_json)
            .map_err(|e| Error::Position(e.to_string()))
    }

    /// Decodes a position back into the source's own type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.value.clone())
            .map_err(|e| Error::Position(format!("cannot read position {self} back: {e}")))
    }

    /// Keeps `typed`, the value this position was encoded from, as its typed reading.
    pub fn with_typed<T: Send + Sync + 'static>(self, typed: T) -> Self {
        let _ = self.typed.set(Arc::new(typed));
        self
    }

    /// The position read as the source's type `T`: decoded by `decode` the first time
    /// (or given by [`Position::with_typed`]), then kept with the position and its clones.
    pub fn typed<T: Send + Sync + 'static>(
        &self,
        decode: impl FnOnce(&Self) -> Result<T>,
    ) -> Result<Arc<T>> {
        if let Some(kept) = self.typed.get() {
            if let Ok(t) = Arc::clone(kept).downcast::<T>() {
                return Ok(t);
            }
            // Read as another type (a source's two kinds of position): not kept.
            return decode(self).map(Arc::new);
        }
        let t = Arc::new(decode(self)?);
        let _ = self.typed.set(Arc::clone(&t) as Arc<dyn Any + Send + Sync>);
        Ok(t)
    }

    pub fn as_json(&self) -> &serde_json::Value {
        &self.value
    }

    pub fn from_json(value: serde_json::Value) -> Self {
        Self {
            value,
            typed: Typed::default(),
        }
    }
}

impl PartialEq for Position {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({})", self.value)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value)
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

    #[test]
    fn a_position_is_decoded_once_and_its_clones_share_the_reading() {
        let decodes = std::cell::Cell::new(0);
        let decode = |p: &Position| {
            decodes.set(decodes.get() + 1);
            p.decode::<BinlogPos>()
        };
        let p = Position::encode(&BinlogPos {
            file: "f".into(),
            pos: 7,
        })
        .unwrap();
        let copy = p.clone();
        assert_eq!(p.typed(decode).unwrap().pos, 7);
        assert_eq!(copy.typed(decode).unwrap().pos, 7);
        assert_eq!(
            decodes.get(),
            1,
            "decoded once for the position and its clone"
        );

        let made = BinlogPos {
            file: "g".into(),
            pos: 9,
        };
        let q = Position::encode(&made).unwrap().with_typed(made);
        assert_eq!(q.typed(decode).unwrap().pos, 9);
        assert_eq!(
            decodes.get(),
            1,
            "a position made from its value is never decoded"
        );
        assert_eq!(q, Position::from_json(q.as_json().clone()), "equal by JSON");
    }
}
