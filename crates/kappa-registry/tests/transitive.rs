//! Compatibility levels over a subject's history of three versions, for each format: the
//! non-transitive levels check the latest version only, the transitive ones every version.
//! The first two versions are registered as under NONE, so the third can be compatible with
//! the second and not with the first.

use kappa_registry::compat::{check, CompatibilityLevel as L};
use kappa_registry::schema::{ParsedSchema, SchemaType};

fn parse(t: SchemaType, text: &str) -> ParsedSchema {
    ParsedSchema::parse(t, text, &[]).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// For each level: whether `new` may follow `history` (oldest first).
fn verdicts(t: SchemaType, history: &[&str], new: &str) -> Vec<(L, bool)> {
    let parsed: Vec<ParsedSchema> = history.iter().map(|s| parse(t, s)).collect();
    let previous: Vec<(i32, &ParsedSchema)> = parsed
        .iter()
        .enumerate()
        .map(|(i, p)| (i as i32 + 1, p))
        .collect();
    let new = parse(t, new);
    L::ALL
        .iter()
        .map(|&level| (level, check(level, &new, &previous).is_empty()))
        .collect()
}

fn expect(t: SchemaType, history: &[&str], new: &str, compatible_under: &[L]) {
    for (level, ok) in verdicts(t, history, new) {
        assert_eq!(
            ok,
            compatible_under.contains(&level),
            "{t:?} {history:?} then {new}: under {level:?} expected {}",
            if ok { "incompatible" } else { "compatible" }
        );
    }
}

#[test]
fn avro_promotions_over_three_versions() {
    // int -> long is a promotion for readers; string -> long is not
    expect(
        SchemaType::Avro,
        &[r#""string""#, r#""int""#],
        r#""long""#,
        &[L::None, L::Backward],
    );
    expect(
        SchemaType::Avro,
        &[r#""string""#, r#""long""#],
        r#""int""#,
        &[L::None, L::Forward],
    );
    // records: v1 {x: int}, v2 {} , v3 {x: string = ""}: reads v2's data (default), not v1's
    expect(
        SchemaType::Avro,
        &[
            r#"{"type":"record","name":"R","fields":[{"name":"x","type":"int"}]}"#,
            r#"{"type":"record","name":"R","fields":[]}"#,
        ],
        r#"{"type":"record","name":"R","fields":[{"name":"x","type":"string","default":""}]}"#,
        &[L::None, L::Backward, L::Forward, L::Full],
    );
}

#[test]
fn json_schema_widening_over_three_versions() {
    expect(
        SchemaType::Json,
        &[r#"{"type":"string"}"#, r#"{"type":"integer"}"#],
        r#"{"type":"number"}"#,
        &[L::None, L::Backward],
    );
    expect(
        SchemaType::Json,
        &[r#"{"type":"string"}"#, r#"{"type":"number"}"#],
        r#"{"type":"integer"}"#,
        &[L::None, L::Forward],
    );
}

#[test]
fn protobuf_wire_compatible_scalars_over_three_versions() {
    let v = |t: &str| format!("syntax = \"proto3\";\nmessage M {{ {t} a = 1; }}\n");
    // int32 and int64 share a wire type: compatible both ways; string does not
    expect(
        SchemaType::Protobuf,
        &[&v("string"), &v("int32")],
        &v("int64"),
        &[L::None, L::Backward, L::Forward, L::Full],
    );
}

#[test]
fn a_type_change_between_formats_is_incompatible() {
    let avro = parse(SchemaType::Avro, r#""string""#);
    let json = parse(SchemaType::Json, r#"{"type":"string"}"#);
    assert!(!check(L::Backward, &json, &[(1, &avro)]).is_empty());
    assert!(check(L::None, &json, &[(1, &avro)]).is_empty());
}
