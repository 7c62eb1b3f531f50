//! Compatibility levels, checked the way Confluent's registry checks them (default BACKWARD):
//! BACKWARD, a new schema can read data written with the latest version; FORWARD, the latest
//! version can read data written with the new one; FULL, both; `_TRANSITIVE`, against every
//! version, not only the latest; NONE, no check.

use std::fmt;
use std::str::FromStr;

use apache_avro::schema_compatibility::{Compatibility as Readable, SchemaCompatibility};
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// A subject's (or the registry's) compatibility level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

const LEVELS: [(Compatibility, &str); 7] = [
    (Compatibility::None, "NONE"),
    (Compatibility::Backward, "BACKWARD"),
    (Compatibility::BackwardTransitive, "BACKWARD_TRANSITIVE"),
    (Compatibility::Forward, "FORWARD"),
    (Compatibility::ForwardTransitive, "FORWARD_TRANSITIVE"),
    (Compatibility::Full, "FULL"),
    (Compatibility::FullTransitive, "FULL_TRANSITIVE"),
];

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = LEVELS.iter().find(|(level, _)| level == self).map_or("BACKWARD", |(_, name)| name);
        f.write_str(name)
    }
}

impl FromStr for Compatibility {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        LEVELS
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(text))
            .map(|(level, _)| *level)
            .ok_or_else(|| format!("Invalid compatibility level: {text}"))
    }
}

impl Compatibility {
    /// Whether `new` may follow `versions` (a subject's schemas, oldest first) under this level;
    /// the error says which version it conflicts with and why.
    pub fn check(self, versions: &[&str], new: &str) -> Result<(), String> {
        let transitive = matches!(self, Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive);
        let against = match versions {
            _ if self == Self::None => &[][..],
            _ if transitive => versions,
            [] => versions,
            [.., latest] => std::slice::from_ref(latest),
        };
        let new_schema = Schema::parse_str(new).map_err(|error| format!("invalid Avro schema: {error}"))?;
        let first = versions.len() - against.len();
        for (offset, old) in against.iter().enumerate() {
            let old_schema = Schema::parse_str(old).map_err(|error| format!("stored schema unreadable: {error}"))?;
            let version = first + offset + 1;
            self.check_pair(&old_schema, &new_schema).map_err(|reason| {
                format!("Schema being registered is incompatible with version {version}: {reason}")
            })?;
        }
        Ok(())
    }

    /// `new` against one earlier schema, in this level's direction(s).
    pub fn check_pair(self, old: &Schema, new: &Schema) -> Result<(), String> {
        let backward = !matches!(self, Self::None | Self::Forward | Self::ForwardTransitive);
        let forward = matches!(self, Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive);
        if backward {
            fully_readable(old, new).map_err(|error| format!("the new schema cannot read old data: {error}"))?;
        }
        if forward {
            fully_readable(new, old).map_err(|error| format!("old readers cannot read new data: {error}"))?;
        }
        Ok(())
    }
}

/// Whether `reader` reads everything `writer` writes. apache-avro calls a union some of whose
/// branches cannot be read "partially" compatible; Confluent's registry refuses it, and so do we.
fn fully_readable(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Readable::Full) => Ok(()),
        Ok(Readable::Partial) => Err("some branches of a union cannot be read".into()),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"A","fields":[{"name":"amount","type":"double"}]}"#;
    const STRING_AMOUNT: &str = r#"{"type":"record","name":"A","fields":[{"name":"amount","type":"string"}]}"#;
    const REQUIRED_ADDED: &str =
        r#"{"type":"record","name":"A","fields":[{"name":"amount","type":"double"},{"name":"b","type":"long"}]}"#;
    const OPTIONAL_ADDED: &str = r#"{"type":"record","name":"A","fields":[{"name":"amount","type":"double"},
        {"name":"b","type":["null","long"],"default":null}]}"#;
    const DROPPED: &str = r#"{"type":"record","name":"A","fields":[]}"#;
    const NULLABLE_DOUBLE: &str =
        r#"{"type":"record","name":"A","fields":[{"name":"amount","type":["null","double"]}]}"#;
    const NULLABLE_STRING: &str =
        r#"{"type":"record","name":"A","fields":[{"name":"amount","type":["null","string"]}]}"#;

    /// BACKWARD refuses a changed type and a new field without a default, accepts a new optional
    /// field and a removed field; FORWARD refuses the removal of a field old readers need;
    /// NONE accepts anything; transitive levels look past the latest version.
    #[test]
    fn levels_check_as_confluent_does() {
        let backward = Compatibility::Backward;
        assert!(backward.check(&[V1], STRING_AMOUNT).is_err());
        assert!(backward.check(&[NULLABLE_DOUBLE], NULLABLE_STRING).is_err(), "a union branch changed type");
        assert!(backward.check(&[V1], REQUIRED_ADDED).is_err());
        assert_eq!(backward.check(&[V1], OPTIONAL_ADDED), Ok(()));
        assert_eq!(backward.check(&[V1], DROPPED), Ok(()));
        assert_eq!(backward.check(&[], STRING_AMOUNT), Ok(()));
        assert!(Compatibility::Forward.check(&[V1], DROPPED).is_err());
        assert!(Compatibility::Full.check(&[V1], DROPPED).is_err());
        assert_eq!(Compatibility::Full.check(&[V1], OPTIONAL_ADDED), Ok(()));
        assert_eq!(Compatibility::None.check(&[V1], STRING_AMOUNT), Ok(()));
        assert_eq!(backward.check(&[STRING_AMOUNT, V1], OPTIONAL_ADDED), Ok(()));
        let error = Compatibility::BackwardTransitive.check(&[STRING_AMOUNT, V1], OPTIONAL_ADDED).unwrap_err();
        assert!(error.contains("version 1"), "{error}");
        assert_eq!("full_transitive".parse(), Ok(Compatibility::FullTransitive));
        assert_eq!(Compatibility::ForwardTransitive.to_string(), "FORWARD_TRANSITIVE");
        assert!("SIDEWAYS".parse::<Compatibility>().is_err());
    }
}
