//! JSON Schema compatibility verdicts, as Confluent Schema Registry gives them.
//!
//! Each case is an old and a new schema with the answer for BACKWARD (the new schema reads
//! data written with the old one) and FORWARD (the old schema reads data written with the
//! new one). The cases follow Confluent's JSON Schema diff rules and the examples of its
//! test suite and documentation, including its open/closed/partially open content models.

use kappa_registry::json_schema::{incompatibilities, JsonSchema};
use kappa_registry::schema::Dependency;

/// A verdict: compatible, or incompatible with a message containing the given text.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    Ok,
    Breaks(&'static str),
}
use Verdict::{Breaks, Ok};

struct Case {
    name: &'static str,
    old: &'static str,
    new: &'static str,
    backward: Verdict,
    forward: Verdict,
}

const fn case(
    name: &'static str,
    old: &'static str,
    new: &'static str,
    backward: Verdict,
    forward: Verdict,
) -> Case {
    Case {
        name,
        old,
        new,
        backward,
        forward,
    }
}

const CASES: &[Case] = &[
    // Objects: the content model decides what adding or removing a property means.
    case(
        "optional property added to an open content model",
        r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}"#,
        Breaks("OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL at #/properties/b"),
        Ok,
    ),
    case(
        "property removed from an open content model",
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}}}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
        Ok,
        Breaks("OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL at #/properties/b"),
    ),
    case(
        "optional property added to a closed content model",
        r#"{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}},"additionalProperties":false}"#,
        Ok,
        Breaks("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL at #/properties/b"),
    ),
    case(
        "property removed from a closed content model",
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}},"additionalProperties":false}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}"#,
        Breaks("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL at #/properties/b"),
        Ok,
    ),
    case(
        "required property without default added to a closed content model",
        r#"{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number"}},"required":["b"],"additionalProperties":false}"#,
        Breaks("REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL at #/properties/b"),
        Breaks("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL at #/properties/b"),
    ),
    case(
        "required property with default added to a closed content model",
        r#"{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number","default":0}},"required":["b"],"additionalProperties":false}"#,
        Ok,
        Breaks("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL at #/properties/b"),
    ),
    case(
        "required property with default added to an open content model (strict policy)",
        r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{"type":"number","default":0}},"required":["b"]}"#,
        Breaks("REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL at #/properties/b"),
        Ok,
    ),
    case(
        "property with an empty schema added to an open content model",
        r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"},"b":{}}}"#,
        Ok,
        Ok,
    ),
    case(
        "property with a false schema removed from a closed content model",
        r#"{"properties":{"a":{"type":"string"},"b":false},"additionalProperties":false}"#,
        r#"{"properties":{"a":{"type":"string"}},"additionalProperties":false}"#,
        Ok,
        Ok,
    ),
    case(
        "existing property made required",
        r#"{"type":"object","properties":{"email":{"type":"string"}}}"#,
        r#"{"type":"object","properties":{"email":{"type":"string"}},"required":["email"]}"#,
        Breaks("REQUIRED_ATTRIBUTE_ADDED at #/required/email"),
        Ok,
    ),
    case(
        "existing property made required with a default",
        r#"{"type":"object","properties":{"email":{"type":"string"}}}"#,
        r#"{"type":"object","properties":{"email":{"type":"string","default":""}},"required":["email"]}"#,
        Ok,
        Ok,
    ),
    case(
        "property no longer required",
        r#"{"type":"object","properties":{"email":{"type":"string"}},"required":["email"]}"#,
        r#"{"type":"object","properties":{"email":{"type":"string"}}}"#,
        Ok,
        Breaks("REQUIRED_ATTRIBUTE_ADDED at #/required/email"),
    ),
    case(
        "property added that additionalProperties covers",
        r#"{"properties":{"a":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
        r#"{"properties":{"a":{"type":"string"},"b":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
        Ok,
        Ok,
    ),
    case(
        "property added that additionalProperties does not cover",
        r#"{"properties":{"a":{"type":"string"}},"additionalProperties":{"type":"string"}}"#,
        r#"{"properties":{"a":{"type":"string"},"b":{"type":"number"}},"additionalProperties":{"type":"string"}}"#,
        Breaks("PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL at #/properties/b"),
        Breaks("PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL at #/properties/b"),
    ),
    case(
        "property added that a pattern property covers with a wider type",
        r#"{"properties":{"a":{"type":"string"}},"additionalProperties":false,"patternProperties":{"^S_":{"type":"string"},"^I_":{"type":"integer"}}}"#,
        r#"{"properties":{"a":{"type":"string"},"I_123":{"type":"number"}},"additionalProperties":false,"patternProperties":{"^S_":{"type":"string"},"^I_":{"type":"integer"}}}"#,
        Ok,
        Breaks(
            "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL at #/properties/I_123",
        ),
    ),
    case(
        "additionalProperties false dropped",
        r#"{"type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}"#,
        r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
        Ok,
        Breaks("ADDITIONAL_PROPERTIES_REMOVED at #/additionalProperties"),
    ),
    case(
        "additionalProperties narrowed from true to a schema",
        r#"{"type":"object","additionalProperties":true}"#,
        r#"{"type":"object","additionalProperties":{"type":"number"}}"#,
        Breaks("ADDITIONAL_PROPERTIES_NARROWED at #/additionalProperties"),
        Ok,
    ),
    case(
        "minProperties increased",
        r#"{"type":"object","minProperties":1}"#,
        r#"{"type":"object","minProperties":2}"#,
        Breaks("MIN_PROPERTIES_INCREASED at #/minProperties"),
        Ok,
    ),
    case(
        "maxProperties added",
        r#"{"type":"object"}"#,
        r#"{"type":"object","maxProperties":5}"#,
        Breaks("MAX_PROPERTIES_ADDED at #/maxProperties"),
        Ok,
    ),
    case(
        "property dependency added",
        r#"{"properties":{"a":{"type":"string"},"b":{"type":"string"}}}"#,
        r#"{"properties":{"a":{"type":"string"},"b":{"type":"string"}},"dependencies":{"a":["b"]}}"#,
        Breaks("DEPENDENCY_ARRAY_ADDED at #/dependencies/a"),
        Ok,
    ),
    case(
        "property dependency extended",
        r#"{"properties":{"a":{},"b":{},"c":{}},"dependencies":{"a":["b"]}}"#,
        r#"{"properties":{"a":{},"b":{},"c":{}},"dependencies":{"a":["b","c"]}}"#,
        Breaks("DEPENDENCY_ARRAY_EXTENDED at #/dependencies/a"),
        Ok,
    ),
    case(
        "dependent schema removed (2020-12)",
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","dependentSchemas":{"a":{"required":["b"]}}}"#,
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","dependentSchemas":{}}"#,
        Ok,
        Breaks("DEPENDENCY_SCHEMA_ADDED at #/dependencies/a"),
    ),
    // Types.
    case(
        "property type changed",
        r#"{"properties":{"a":{"type":"string"}}}"#,
        r#"{"properties":{"a":{"type":"number"}}}"#,
        Breaks("TYPE_CHANGED at #/properties/a"),
        Breaks("TYPE_CHANGED at #/properties/a"),
    ),
    case(
        "integer widened to number",
        r#"{"properties":{"price":{"type":"integer"}}}"#,
        r#"{"properties":{"price":{"type":"number"}}}"#,
        Ok,
        Breaks("TYPE_NARROWED at #/properties/price"),
    ),
    case(
        "type made nullable with a type array",
        r#"{"properties":{"a":{"type":"string"}}}"#,
        r#"{"properties":{"a":{"type":["string","null"]}}}"#,
        Ok,
        Breaks("TYPE_CHANGED at #/properties/a"),
    ),
    case(
        "type made nullable with oneOf",
        r#"{"properties":{"a":{"type":"string"}}}"#,
        r#"{"properties":{"a":{"oneOf":[{"type":"null"},{"type":"string"}]}}}"#,
        Ok,
        Breaks("TYPE_CHANGED at #/properties/a"),
    ),
    case(
        "property added inside a nullable object",
        r#"{"type":["object","null"],"properties":{"a":{"type":"string"}}}"#,
        r#"{"type":["object","null"],"properties":{"a":{"type":"string"},"b":{"type":"string"}}}"#,
        Breaks("COMBINED_TYPE_SUBSCHEMAS_CHANGED at #/"),
        Ok,
    ),
    case(
        "anything to the empty schema",
        r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
        r#"{}"#,
        Ok,
        Breaks("TYPE_CHANGED at #/"),
    ),
    case(
        "true schema to false schema",
        "true",
        "false",
        Breaks("TYPE_CHANGED at #/"),
        Ok,
    ),
    case(
        "Kafka Connect decimal moved between string and number",
        r#"{"type":"string","title":"org.apache.kafka.connect.data.Decimal","connect.type":"bytes"}"#,
        r#"{"type":"number","title":"org.apache.kafka.connect.data.Decimal","connect.type":"bytes"}"#,
        Ok,
        Ok,
    ),
    // Strings and numbers.
    case(
        "maxLength decreased",
        r#"{"type":"string","maxLength":10}"#,
        r#"{"type":"string","maxLength":8}"#,
        Breaks("MAX_LENGTH_DECREASED at #/maxLength"),
        Ok,
    ),
    case(
        "minLength increased",
        r#"{"type":"string","minLength":1}"#,
        r#"{"type":"string","minLength":5}"#,
        Breaks("MIN_LENGTH_INCREASED at #/minLength"),
        Ok,
    ),
    case(
        "pattern added",
        r#"{"type":"string"}"#,
        r#"{"type":"string","pattern":"^[a-z]+$"}"#,
        Breaks("PATTERN_ADDED at #/pattern"),
        Ok,
    ),
    case(
        "pattern changed",
        r#"{"type":"string","pattern":"^[a-z]+$"}"#,
        r#"{"type":"string","pattern":"^[a-z0-9]+$"}"#,
        Breaks("PATTERN_CHANGED at #/pattern"),
        Breaks("PATTERN_CHANGED at #/pattern"),
    ),
    case(
        "maximum increased",
        r#"{"type":"number","maximum":10}"#,
        r#"{"type":"number","maximum":20}"#,
        Ok,
        Breaks("MAXIMUM_DECREASED at #/maximum"),
    ),
    case(
        "minimum added",
        r#"{"type":"number"}"#,
        r#"{"type":"number","minimum":0}"#,
        Breaks("MINIMUM_ADDED at #/minimum"),
        Ok,
    ),
    case(
        "exclusiveMinimum lowered",
        r#"{"type":"number","exclusiveMinimum":5}"#,
        r#"{"type":"number","exclusiveMinimum":3}"#,
        Ok,
        Breaks("EXCLUSIVE_MINIMUM_INCREASED at #/exclusiveMinimum"),
    ),
    case(
        "exclusiveMaximum removed",
        r#"{"type":"number","exclusiveMaximum":5}"#,
        r#"{"type":"number"}"#,
        Ok,
        Breaks("EXCLUSIVE_MAXIMUM_ADDED at #/exclusiveMaximum"),
    ),
    case(
        "multipleOf reduced to a divisor",
        r#"{"type":"number","multipleOf":10}"#,
        r#"{"type":"number","multipleOf":5}"#,
        Ok,
        Breaks("MULTIPLE_OF_EXPANDED at #/multipleOf"),
    ),
    case(
        "multipleOf changed to an unrelated value",
        r#"{"type":"number","multipleOf":0.5}"#,
        r#"{"type":"number","multipleOf":0.3}"#,
        Breaks("MULTIPLE_OF_CHANGED at #/multipleOf"),
        Breaks("MULTIPLE_OF_CHANGED at #/multipleOf"),
    ),
    // Enums and const.
    case(
        "enum value added",
        r#"{"enum":["red","green"]}"#,
        r#"{"enum":["red","green","blue"]}"#,
        Ok,
        Breaks("ENUM_ARRAY_NARROWED at #/enum"),
    ),
    case(
        "enum value added to a typed enum",
        r#"{"type":"string","enum":["red","green"]}"#,
        r#"{"type":"string","enum":["red","green","blue"]}"#,
        Ok,
        Breaks("COMBINED_TYPE_SUBSCHEMAS_CHANGED at #/"),
    ),
    case(
        "enum value replaced",
        r#"{"enum":["red","green"]}"#,
        r#"{"enum":["red","blue"]}"#,
        Breaks("ENUM_ARRAY_CHANGED at #/enum"),
        Breaks("ENUM_ARRAY_CHANGED at #/enum"),
    ),
    case(
        "const changed",
        r#"{"properties":{"kind":{"const":"a"}}}"#,
        r#"{"properties":{"kind":{"const":"b"}}}"#,
        Breaks("ENUM_ARRAY_CHANGED at #/properties/kind/const"),
        Breaks("ENUM_ARRAY_CHANGED at #/properties/kind/const"),
    ),
    // Arrays.
    case(
        "items type changed",
        r#"{"type":"array","items":{"type":"string"}}"#,
        r#"{"type":"array","items":{"type":"number"}}"#,
        Breaks("TYPE_CHANGED at #/items"),
        Breaks("TYPE_CHANGED at #/items"),
    ),
    case(
        "items schema added",
        r#"{"type":"array"}"#,
        r#"{"type":"array","items":{"type":"string"}}"#,
        Breaks("SCHEMA_ADDED at #/items"),
        Ok,
    ),
    case(
        "maxItems decreased",
        r#"{"type":"array","maxItems":5}"#,
        r#"{"type":"array","maxItems":3}"#,
        Breaks("MAX_ITEMS_DECREASED at #/maxItems"),
        Ok,
    ),
    case(
        "minItems removed",
        r#"{"type":"array","minItems":1}"#,
        r#"{"type":"array"}"#,
        Ok,
        Breaks("MIN_ITEMS_ADDED at #/minItems"),
    ),
    case(
        "uniqueItems added",
        r#"{"type":"array"}"#,
        r#"{"type":"array","uniqueItems":true}"#,
        Breaks("UNIQUE_ITEMS_ADDED at #/uniqueItems"),
        Ok,
    ),
    case(
        "tuple item added to a closed tuple",
        r#"{"type":"array","items":[{"type":"string"}],"additionalItems":false}"#,
        r#"{"type":"array","items":[{"type":"string"},{"type":"number"}],"additionalItems":false}"#,
        Ok,
        Breaks("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL at #/items/1"),
    ),
    case(
        "tuple item added to an open tuple",
        r#"{"type":"array","items":[{"type":"string"}]}"#,
        r#"{"type":"array","items":[{"type":"string"},{"type":"number"}]}"#,
        Breaks("ITEM_ADDED_TO_OPEN_CONTENT_MODEL at #/items/1"),
        Ok,
    ),
    case(
        "tuple item added that additionalItems covers",
        r#"{"type":"array","items":[{"type":"string"}],"additionalItems":{"type":"number"}}"#,
        r#"{"type":"array","items":[{"type":"string"},{"type":"number"}],"additionalItems":{"type":"number"}}"#,
        Ok,
        Ok,
    ),
    case(
        "prefixItems item added with items false (2020-12)",
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"array","prefixItems":[{"type":"string"}],"items":false}"#,
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"array","prefixItems":[{"type":"string"},{"type":"number"}],"items":false}"#,
        Ok,
        Breaks("ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL at #/items/1"),
    ),
    case(
        "minContains increased (2019-09)",
        r#"{"$schema":"https://json-schema.org/draft/2019-09/schema","type":"array","contains":{"type":"number"},"minContains":1}"#,
        r#"{"$schema":"https://json-schema.org/draft/2019-09/schema","type":"array","contains":{"type":"number"},"minContains":2}"#,
        Breaks("MIN_CONTAINS_INCREASED at #/minContains"),
        Ok,
    ),
    // Combined schemas.
    case(
        "oneOf alternative added",
        r#"{"properties":{"a":{"oneOf":[{"type":"string"}]}}}"#,
        r#"{"properties":{"a":{"oneOf":[{"type":"string"},{"type":"number"}]}}}"#,
        Ok,
        Breaks("SUM_TYPE_NARROWED at #/properties/a"),
    ),
    case(
        "allOf member added",
        r#"{"allOf":[{"type":"string"}]}"#,
        r#"{"allOf":[{"type":"string"},{"maxLength":5}]}"#,
        Breaks("PRODUCT_TYPE_EXTENDED at #/"),
        Ok,
    ),
    case(
        "oneOf relaxed to anyOf",
        r#"{"oneOf":[{"type":"string"},{"type":"number"}]}"#,
        r#"{"anyOf":[{"type":"string"},{"type":"number"}]}"#,
        Ok,
        Breaks("COMBINED_TYPE_CHANGED at #/"),
    ),
    case(
        "oneOf member changed",
        r#"{"oneOf":[{"type":"string"},{"type":"boolean"}]}"#,
        r#"{"oneOf":[{"type":"string"},{"type":"number"}]}"#,
        Breaks("COMBINED_TYPE_SUBSCHEMAS_CHANGED at #/"),
        Breaks("COMBINED_TYPE_SUBSCHEMAS_CHANGED at #/"),
    ),
    case(
        "schema wrapped in a single-member allOf",
        r#"{"properties":{"a":{"type":"string"}}}"#,
        r#"{"properties":{"a":{"allOf":[{"type":"string"}]}}}"#,
        Ok,
        Ok,
    ),
    case(
        "not narrowed",
        r#"{"not":{"type":"number"}}"#,
        r#"{"not":{"type":"integer"}}"#,
        Ok,
        Breaks("NOT_TYPE_EXTENDED at #/not"),
    ),
    case(
        "conditional subschemas are not compared (as in Confluent)",
        r#"{"if":{"properties":{"a":{"const":1}}},"then":{"required":["b"]}}"#,
        r#"{"if":{"properties":{"a":{"const":1}}},"then":{"required":["c"]}}"#,
        Ok,
        Ok,
    ),
    // References.
    case(
        "referenced definition changed type",
        r##"{"type":"array","items":{"$ref":"#/definitions/item"},"definitions":{"item":{"type":"string"}}}"##,
        r##"{"type":"array","items":{"$ref":"#/definitions/item"},"definitions":{"item":{"type":"number"}}}"##,
        Breaks("TYPE_CHANGED at #/items"),
        Breaks("TYPE_CHANGED at #/items"),
    ),
    case(
        "inline schema moved to a definition",
        r#"{"properties":{"a":{"type":"string","maxLength":5}}}"#,
        r##"{"properties":{"a":{"$ref":"#/$defs/short"}},"$defs":{"short":{"type":"string","maxLength":5}}}"##,
        Ok,
        Ok,
    ),
    case(
        "recursive schema with a deep change",
        r##"{"$ref":"#/definitions/node","definitions":{"node":{"type":"object","properties":{"v":{"type":"integer"},"next":{"$ref":"#/definitions/node"}}}}}"##,
        r##"{"$ref":"#/definitions/node","definitions":{"node":{"type":"object","properties":{"v":{"type":"number"},"next":{"$ref":"#/definitions/node"}}}}}"##,
        Ok,
        Breaks("TYPE_NARROWED at #/properties/v"),
    ),
    // Other drafts and annotations.
    case(
        "draft-04 closed model gains an optional property",
        r#"{"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"a":{"type":"string"}},"additionalProperties":false}"#,
        r#"{"$schema":"http://json-schema.org/draft-04/schema#","type":"object","properties":{"a":{"type":"string"},"b":{"type":"string"}},"additionalProperties":false}"#,
        Ok,
        Breaks("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL at #/properties/b"),
    ),
    case(
        "unevaluatedProperties false gains a property (2020-12)",
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","properties":{"a":{"type":"string"}},"unevaluatedProperties":false}"#,
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","properties":{"a":{"type":"string"},"b":{"type":"number"}},"unevaluatedProperties":false}"#,
        Ok,
        Breaks("PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL at #/properties/b"),
    ),
    case(
        "unevaluatedProperties false dropped (2020-12)",
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","unevaluatedProperties":false}"#,
        r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object"}"#,
        Ok,
        Breaks("UNEVALUATED_PROPERTIES_REMOVED at #/unevaluatedProperties"),
    ),
    case(
        "title, description and default changed",
        r#"{"title":"A","description":"old","type":"string","default":"x"}"#,
        r#"{"title":"B","description":"new","type":"string","default":"y"}"#,
        Ok,
        Ok,
    ),
];

fn parse(text: &str, deps: &[Dependency]) -> JsonSchema {
    match JsonSchema::parse(text, deps) {
        Result::Ok(s) => s,
        Err(e) => panic!("{text} should parse: {e}"),
    }
}

/// Checks one direction; returns a description of the mismatch, if any.
fn check(
    name: &str,
    direction: &str,
    reader: &JsonSchema,
    writer: &JsonSchema,
    want: Verdict,
) -> Option<String> {
    let got = incompatibilities(reader, writer);
    match want {
        Ok if got.is_empty() => None,
        Ok => Some(format!(
            "{name}: {direction} should be compatible, got {got:?}"
        )),
        Breaks(_) if got.is_empty() => Some(format!(
            "{name}: {direction} should be incompatible, got none"
        )),
        Breaks(text) if got.iter().any(|m| m.contains(text)) => None,
        Breaks(text) => Some(format!(
            "{name}: {direction} should report {text:?}, got {got:?}"
        )),
    }
}

#[test]
fn confluent_verdicts_for_backward_and_forward() {
    assert!(CASES.len() >= 45);
    let mut failures = Vec::new();
    for case in CASES {
        let old = parse(case.old, &[]);
        let new = parse(case.new, &[]);
        // BACKWARD: the new schema reads the old data; FORWARD: the old one reads new data.
        failures.extend(check(case.name, "BACKWARD", &new, &old, case.backward));
        failures.extend(check(case.name, "FORWARD", &old, &new, case.forward));
        // A schema is always compatible with itself.
        failures.extend(check(case.name, "itself", &new, &parse(case.new, &[]), Ok));
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn changes_inside_referenced_schemas_count() {
    let dep = |schema: &str| Dependency {
        name: "address.json".to_string(),
        schema: schema.to_string(),
    };
    let customer = r##"{"type":"object","properties":{"home":{"$ref":"address.json"},"zip":{"$ref":"address.json#/definitions/zip"}},"additionalProperties":false}"##;
    let v1 = r#"{"type":"object","properties":{"street":{"type":"string"}},"definitions":{"zip":{"type":"string","maxLength":10}}}"#;
    let v2 = r#"{"type":"object","properties":{"street":{"type":"string"}},"definitions":{"zip":{"type":"string","maxLength":5}}}"#;
    let old = parse(customer, &[dep(v1)]);
    let new = parse(customer, &[dep(v2)]);
    let problems = incompatibilities(&new, &old);
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("MAX_LENGTH_DECREASED at #/properties/zip/maxLength")),
        "{problems:?}"
    );
    assert!(incompatibilities(&old, &new).is_empty());
    // The same schema text with the same reference is compatible with itself.
    assert!(incompatibilities(&old, &parse(customer, &[dep(v1)])).is_empty());
}

#[test]
fn unresolvable_references_are_invalid() {
    let err = JsonSchema::parse(r#"{"properties":{"a":{"$ref":"missing.json"}}}"#, &[])
        .expect_err("a $ref to nothing is rejected");
    assert!(err.0.contains("missing.json"), "{err}");
}
