//! Compatibility levels and the check of a new schema against a subject's history.

use serde::{Deserialize, Serialize};

use crate::schema::ParsedSchema;

/// Confluent's compatibility levels. BACKWARD: the new schema reads data written with the
/// previous one; FORWARD: the previous schema reads data written with the new one; FULL:
/// both. The transitive levels check against every live version, the others against the
/// latest only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    pub fn parse(s: &str) -> Option<CompatibilityLevel> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

/// Checks `new` against `previous` (a subject's live versions, oldest first) under `level`.
/// Returns the reasons it is incompatible, each prefixed with the version it fails against;
/// empty when it is compatible.
pub fn check(
    level: CompatibilityLevel,
    new: &ParsedSchema,
    previous: &[(i32, &ParsedSchema)],
) -> Vec<String> {
    let against: &[(i32, &ParsedSchema)] = if level.transitive() {
        previous
    } else {
        match previous.last() {
            Some(last) => std::slice::from_ref(last),
            None => &[],
        }
    };
    let mut reasons = Vec::new();
    // newest first, as Confluent reports them
    for (version, old) in against.iter().rev() {
        if level.backward() {
            for r in ParsedSchema::incompatibilities(new, old) {
                reasons.push(format!(
                    "{r} (new schema reading data written with version {version})"
                ));
            }
        }
        if level.forward() {
            for r in ParsedSchema::incompatibilities(old, new) {
                reasons.push(format!(
                    "{r} (version {version} reading data written with the new schema)"
                ));
            }
        }
    }
    reasons
}
