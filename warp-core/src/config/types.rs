//! Small value types of the configuration, each with its own validation message.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::mask::mask_secrets;

/// A strictly positive integer (batch sizes, intervals, pool sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PositiveInt(u64);

impl PositiveInt {
    pub const MIN: Self = Self(1);

    pub const fn new(v: u64) -> Option<Self> {
        if v == 0 {
            None
        } else {
            Some(Self(v))
        }
    }

    pub const fn get(self) -> u64 {
        self.0
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for PositiveInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v =
            i64::deserialize(d).map_err(|_| de::Error::custom("expected a positive integer"))?;
        u64::try_from(v)
            .ok()
            .and_then(Self::new)
            .ok_or_else(|| de::Error::custom(format!("expected a positive integer, got {v}")))
    }
}

/// A non-negative number of seconds; fractions allowed (`0.5`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Seconds(f64);

impl Seconds {
    pub const fn from_secs(v: u64) -> Self {
        Self(v as f64)
    }

    pub const fn from_secs_f64(v: f64) -> Self {
        Self(v)
    }

    pub fn as_duration(self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.0)
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v =
            f64::deserialize(d).map_err(|_| de::Error::custom("expected a number of seconds"))?;
        if v.is_finite() && v >= 0.0 {
            Ok(Self(v))
        } else {
            Err(de::Error::custom(format!(
                "expected a non-negative number of seconds, got {v}"
            )))
        }
    }
}

/// A size in bytes, written as a number or with a unit: `100MB`, `512KiB`, `1G`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().ok()?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            _ => return None,
        };
        n.checked_mul(mult).filter(|&b| b > 0).map(Self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| {
            de::Error::custom(format!(
                "expected a size such as 100MB, 512KiB or 1048576, got {text:?}"
            ))
        })
    }
}

/// A credential-bearing string. Its `Debug` and `Display` mask the password, so a
/// config struct can be logged or printed without leaking it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The raw value, for handing to a driver. Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", mask_secrets(&self.0))
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_secrets(&self.0))
    }
}

/// Log level, accepted case-insensitively (`INFO` in the seed Deployment, `info` in
/// `RUST_LOG` habits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub const NAMES: &'static [&'static str] = &["trace", "debug", "info", "warn", "error"];

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" | "critical" => Self::Error,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| de::Error::unknown_variant(&text, Self::NAMES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("100MB"), Some(ByteSize(100_000_000)));
        assert_eq!(ByteSize::parse("1 KiB"), Some(ByteSize(1024)));
        assert_eq!(ByteSize::parse("4096"), Some(ByteSize(4096)));
        assert_eq!(ByteSize::parse("0MB"), None);
        assert_eq!(ByteSize::parse("ten"), None);
        assert_eq!(ByteSize::parse("5 parsecs"), None);
    }

    #[test]
    fn secret_never_prints_password() {
        let s = Secret::new("mysql://root:hunter2@db:3306/app");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "mysql://root:hunter2@db:3306/app");
    }

    #[test]
    fn log_levels_are_case_insensitive() {
        assert_eq!(LogLevel::parse("INFO"), Some(LogLevel::Info));
        assert_eq!(LogLevel::parse("Warning"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse("loud"), None);
        assert_eq!(LogLevel::Warn.as_str(), "warn");
    }
}
