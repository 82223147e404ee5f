//! Configuration errors: every issue names its key path, none carries a secret.

use std::fmt;

use crate::mask::mask_secrets;

/// One problem with the configuration, at a key path such as
/// `schemas[0].tables.orders.batch_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl ConfigIssue {
    pub fn new(path: impl Into<String>, message: impl AsRef<str>) -> Self {
        Self {
            path: path.into(),
            message: mask_secrets(message.as_ref()).into_owned(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// All issues found in one configuration (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// Where the configuration came from (file path), for the message.
    pub origin: String,
    pub issues: Vec<ConfigIssue>,
}

impl ConfigErrors {
    pub fn single(origin: &str, issue: ConfigIssue) -> Self {
        Self {
            origin: origin.to_owned(),
            issues: vec![issue],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(
            f,
            "invalid configuration {}: {}",
            self.origin,
            self.issues
                .first()
                .map(ToString::to_string)
                .unwrap_or_default()
        )?;
        for issue in self.issues.iter().skip(1) {
            write!(f, "; {issue}")?;
        }
        if n > 1 {
            write!(f, " ({n} problems)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let keys = ["batch_size", "polling_interval", "parallel_streams"];
        assert_eq!(closest("batch_sise", keys), Some("batch_size"));
        assert_eq!(closest("pollinginterval", keys), Some("polling_interval"));
        assert_eq!(closest("colour", keys), None);
    }
}
