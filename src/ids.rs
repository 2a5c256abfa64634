//! Validation of the ids that become path components.
//!
//! Application and executor ids name directories under the data dir, so they are checked before
//! any file is touched: a conservative alphabet rules out `/`, NUL and `..`-style traversal.

use std::fmt;

/// Longest accepted application or executor id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Why an id was refused; `kind` says which id ("app_id", "executor_id").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidId {
    pub kind: &'static str,
    /// The offending value, shortened so a hostile id cannot flood the logs.
    pub value: String,
    pub reason: &'static str,
}

/// Checks that `value` is safe to use as a single path component.
pub fn validate_id(kind: &'static str, value: &str) -> Result<(), InvalidId> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_ID_LEN {
        Some("longer than 128 bytes")
    } else if value == "." || value == ".." {
        Some("must not be a relative path component")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(InvalidId {
            kind,
            value: value.chars().take(64).collect(),
            reason,
        }),
    }
}

/// A validated application id.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct AppId(String);

/// A validated executor id.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ExecutorId(String);

macro_rules! id_type {
    ($ty:ident, $kind:literal) => {
        impl $ty {
            pub fn parse(value: &str) -> Result<Self, InvalidId> {
                validate_id($kind, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $ty {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                validate_id($kind, &value)?;
                Ok(Self(value))
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }

        /// Lookups by the raw string need no parsing (or allocation): an invalid string is
        /// simply not found.
        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(AppId, "app_id");
id_type!(ExecutorId, "executor_id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spark_style_ids() {
        for ok in [
            "app-20261121111108-0000",
            "spark-7f3a9c",
            "0",
            "driver",
            "a.b_c-d",
        ] {
            assert!(AppId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_ids_that_could_escape_the_data_dir() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "/abs",
            "a\0b",
            "a b",
            "é",
            long.as_str(),
        ] {
            let err = ExecutorId::parse(bad).unwrap_err();
            assert_eq!(err.kind, "executor_id");
        }
        assert!(AppId::parse(&"a".repeat(MAX_ID_LEN)).is_ok());
    }
}
