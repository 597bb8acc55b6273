//! JSON Schema (draft 4 to 2020-12): parsing, canonical form, compatibility by Confluent's
//! rules.
//!
//! Parsing checks the text against its draft's meta-schema (chosen by `$schema`, draft-07
//! when absent or unknown, as Confluent does), then loads it into the schema model that
//! Confluent's check works on (the one its JSON Schema library builds): every object
//! becomes one typed schema (string, number, object, array, enum, combined, ...) or a
//! synthetic `allOf` of several, and `$ref`s are resolved against local definitions and
//! the referenced schemas. Compatibility walks two such models side by side and reports
//! Confluent's difference types; a change is compatible when every difference is in
//! Confluent's (strict) set of compatible changes.
//!
//! Everything here reads input from the network: recursion over the JSON is bounded by
//! serde_json's nesting limit, `$ref` cycles are cut by memoising the pairs being compared,
//! and the comparison has a depth and work budget past which it answers "incompatible".

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::schema::{Dependency, InvalidSchema};

/// A parsed JSON Schema with the schemas it references.
#[derive(Debug, Clone)]
pub struct JsonSchema {
    canonical: String,
    normalized: String,
    model: Arc<Model>,
}

impl JsonSchema {
    /// Parses `text` (an object or a boolean) and checks it against its draft's meta-schema.
    /// `dependencies` are the schemas its `$ref`s may name, by the URL used in `$ref`.
    pub fn parse(text: &str, dependencies: &[Dependency]) -> Result<JsonSchema, InvalidSchema> {
        let root = read_document(text, "schema")?;
        let draft = Draft::of(&root, Draft::D7);
        meta_validate(&root, draft, "schema")?;
        let mut docs = vec![(root, draft)];
        for dep in dependencies {
            let what = format!("referenced schema \"{}\"", dep.name);
            let value = read_document(&dep.schema, &what)?;
            // A referenced schema without `$schema` is read in the referring schema's draft.
            let dep_draft = Draft::of(&value, draft);
            meta_validate(&value, dep_draft, &what)?;
            docs.push((value, dep_draft));
        }
        let names: Vec<&str> = dependencies.iter().map(|d| d.name.as_str()).collect();
        let model = Model::build(docs, &names)?;
        Ok(JsonSchema {
            canonical: minify(text),
            normalized: normalize(model.root_value()),
            model: Arc::new(model),
        })
    }

    /// The text as written, without insignificant whitespace (key order kept).
    pub fn canonical(&self) -> String {
        self.canonical.clone()
    }

    /// An order-independent form: object keys sorted, and the arrays that are sets
    /// (`required`, `type`, `enum`, property dependencies) sorted and deduplicated.
    /// Arrays of subschemas keep their order since `$ref`s may point into them by index.
    pub fn normalized(&self) -> String {
        self.normalized.clone()
    }
}

/// Why data written with `writer` may not validate against `reader`, by Confluent's rules:
/// the incompatible differences of its diff with `writer` as the original schema and
/// `reader` as the update. Empty when compatible.
pub fn incompatibilities(reader: &JsonSchema, writer: &JsonSchema) -> Vec<String> {
    let outcome = diff(&writer.model, &reader.model);
    let mut seen = HashSet::new();
    let mut out: Vec<String> = Vec::new();
    if outcome.exhausted {
        out.push(
            "the schemas are too large or too deeply nested to check for compatibility".to_string(),
        );
    }
    for d in &outcome.diffs.bad {
        let message = format!(
            "{} at #/{}: {}",
            d.change.name(),
            d.path,
            d.change.explain()
        );
        if seen.insert(message.clone()) {
            out.push(message);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Reading and validating documents
// ---------------------------------------------------------------------------------------

/// Longest message kept from a meta-schema error: they quote the offending value.
const MAX_ERROR_LEN: usize = 300;

fn read_document(text: &str, what: &str) -> Result<Value, InvalidSchema> {
    // serde_json refuses nesting deeper than 128, which bounds every recursion below.
    let value: Value = serde_json::from_str(text)
        .map_err(|e| InvalidSchema(format!("the {what} is not valid JSON: {e}")))?;
    match value {
        Value::Object(_) | Value::Bool(_) => Ok(value),
        other => Err(InvalidSchema(format!(
            "the {what} must be a JSON object or a boolean, not {}",
            json_type(&other)
        ))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Draft {
    D4,
    D6,
    D7,
    D201909,
    D202012,
}

impl Draft {
    /// The draft named by `$schema`, `default` when there is none; an unknown URL falls
    /// back to draft-07 as Confluent's loader does.
    fn of(value: &Value, default: Draft) -> Draft {
        let Some(url) = value.get("$schema").and_then(Value::as_str) else {
            return default;
        };
        let url = url.strip_suffix('#').unwrap_or(url);
        let url = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(url);
        match url {
            "json-schema.org/draft-04/schema" | "json-schema.org/schema" => Draft::D4,
            "json-schema.org/draft-06/schema" => Draft::D6,
            "json-schema.org/draft/2019-09/schema" => Draft::D201909,
            "json-schema.org/draft/2020-12/schema" => Draft::D202012,
            _ => Draft::D7,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Draft::D4 => "draft-04",
            Draft::D6 => "draft-06",
            Draft::D7 => "draft-07",
            Draft::D201909 => "draft 2019-09",
            Draft::D202012 => "draft 2020-12",
        }
    }

    fn id_keyword(self) -> &'static str {
        if self == Draft::D4 {
            "id"
        } else {
            "$id"
        }
    }

    fn modern(self) -> bool {
        self >= Draft::D201909
    }
}

fn meta_validate(value: &Value, draft: Draft, what: &str) -> Result<(), InvalidSchema> {
    let result = match draft {
        Draft::D4 => jsonschema::draft4::meta::validate(value),
        Draft::D6 => jsonschema::draft6::meta::validate(value),
        Draft::D7 => jsonschema::draft7::meta::validate(value),
        Draft::D201909 => jsonschema::draft201909::meta::validate(value),
        Draft::D202012 => jsonschema::draft202012::meta::validate(value),
    };
    result.map_err(|e| {
        InvalidSchema(format!(
            "the {what} is not a valid {} JSON Schema at #{}: {}",
            draft.name(),
            e.instance_path(),
            truncate(&e.to_string(), MAX_ERROR_LEN)
        ))
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Removes the whitespace between JSON tokens; `text` is already known to be valid JSON.
fn minify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// Serialises with sorted keys (serde_json's map is ordered) after sorting set-like arrays.
fn normalize(value: &Value) -> String {
    normalize_schema(value).to_string()
}

fn normalize_schema(value: &Value) -> Value {
    let Value::Object(map) = value else {
        return value.clone();
    };
    let mut out = Map::new();
    for (key, v) in map {
        let normalized = match key.as_str() {
            "properties" | "patternProperties" | "definitions" | "$defs" | "dependentSchemas" => {
                map_values(v, normalize_schema)
            }
            "dependencies" | "dependentRequired" => map_values(v, |d| match d {
                Value::Array(_) => sorted_set(d),
                _ => normalize_schema(d),
            }),
            "required" | "type" | "enum" => sorted_set(v),
            "allOf" | "anyOf" | "oneOf" | "prefixItems" | "items" => match v {
                Value::Array(items) => Value::Array(items.iter().map(normalize_schema).collect()),
                _ => normalize_schema(v),
            },
            "additionalProperties"
            | "additionalItems"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames"
            | "unevaluatedItems"
            | "unevaluatedProperties" => normalize_schema(v),
            _ => v.clone(),
        };
        out.insert(key.clone(), normalized);
    }
    Value::Object(out)
}

fn map_values(value: &Value, f: impl Fn(&Value) -> Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), f(v))).collect()),
        other => other.clone(),
    }
}

fn sorted_set(value: &Value) -> Value {
    let Value::Array(items) = value else {
        return value.clone();
    };
    let mut keyed: Vec<(String, Value)> =
        items.iter().map(|v| (v.to_string(), v.clone())).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    Value::Array(keyed.into_iter().map(|(_, v)| v).collect())
}

// ---------------------------------------------------------------------------------------
// URIs and `$ref` targets
// ---------------------------------------------------------------------------------------

/// Base URI of a document without `$id`, as the `jsonschema` crate uses.
const DEFAULT_BASE: &str = "json-schema:///";

fn resolve_uri(base: &str, reference: &str) -> Option<String> {
    let base = jsonschema::Uri::parse(base).ok()?;
    jsonschema::uri::resolve_against(&base, reference)
        .ok()
        .map(|u| u.as_str().to_string())
}

fn split_fragment(uri: &str) -> (&str, &str) {
    match uri.split_once('#') {
        Some((resource, fragment)) => (resource, fragment),
        None => (uri, ""),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Where a subschema is: its document, JSON pointer and the base URI in effect there.
#[derive(Clone, Debug)]
struct Loc {
    doc: usize,
    ptr: String,
    base: String,
}

impl Loc {
    fn display(&self) -> String {
        format!("#{}", self.ptr)
    }
}

/// The base URI inside `value` given the one around it: `$id` (draft-04: `id`) moves it,
/// except a bare `#name`, which is an anchor.
fn child_base(value: &Value, base: &str, draft: Draft) -> String {
    if let Some(id) = value.get(draft.id_keyword()).and_then(Value::as_str) {
        if !id.starts_with('#') {
            if let Some(resolved) = resolve_uri(base, id) {
                return split_fragment(&resolved).0.to_string();
            }
        }
    }
    base.to_string()
}

/// The schema resources and anchors of every document, by absolute URI.
#[derive(Default)]
struct Index {
    resources: HashMap<String, Loc>,
    anchors: HashMap<String, Loc>,
    /// Dependency names as written, for `$ref`s that are not valid URI references.
    names: HashMap<String, Loc>,
}

/// Keywords whose values are data, not schemas: an `$id` inside them is not one.
const DATA_KEYWORDS: [&str; 4] = ["enum", "const", "default", "examples"];

impl Index {
    fn walk(&mut self, value: &Value, loc: &Loc, draft: Draft) {
        match value {
            Value::Object(map) => {
                if let Some(id) = map.get(draft.id_keyword()).and_then(Value::as_str) {
                    if let Some(anchor) = id.strip_prefix('#') {
                        if !anchor.is_empty() {
                            self.anchors
                                .insert(format!("{}#{anchor}", loc.base), loc.clone());
                        }
                    } else {
                        self.resources.insert(loc.base.clone(), loc.clone());
                        if let Some((_, anchor)) = id.split_once('#') {
                            if !anchor.is_empty() && !anchor.starts_with('/') {
                                self.anchors
                                    .insert(format!("{}#{anchor}", loc.base), loc.clone());
                            }
                        }
                    }
                }
                if draft.modern() {
                    for key in ["$anchor", "$dynamicAnchor"] {
                        if let Some(anchor) = map.get(key).and_then(Value::as_str) {
                            self.anchors
                                .insert(format!("{}#{anchor}", loc.base), loc.clone());
                        }
                    }
                }
                for (key, child) in map {
                    if DATA_KEYWORDS.contains(&key.as_str()) {
                        continue;
                    }
                    let child_loc = Loc {
                        doc: loc.doc,
                        ptr: format!("{}/{}", loc.ptr, escape_token(key)),
                        base: child_base(child, &loc.base, draft),
                    };
                    self.walk(child, &child_loc, draft);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    let child_loc = Loc {
                        doc: loc.doc,
                        ptr: format!("{}/{i}", loc.ptr),
                        base: child_base(child, &loc.base, draft),
                    };
                    self.walk(child, &child_loc, draft);
                }
            }
            _ => {}
        }
    }

    /// The subschema `reference` names from a place whose base URI is `base`.
    fn resolve<'a>(
        &self,
        docs: &'a [(Value, Draft)],
        reference: &str,
        base: &str,
    ) -> Option<(Loc, &'a Value)> {
        let (resource, fragment) = if let Some(fragment) = reference.strip_prefix('#') {
            (self.resources.get(base)?.clone(), fragment.to_string())
        } else {
            let absolute = resolve_uri(base, reference);
            let found = absolute.as_deref().and_then(|abs| {
                let (res, frag) = split_fragment(abs);
                self.resources
                    .get(res)
                    .map(|loc| (loc.clone(), frag.to_string()))
            });
            match found {
                Some(found) => found,
                None => {
                    let (name, frag) = split_fragment(reference);
                    (self.names.get(name)?.clone(), frag.to_string())
                }
            }
        };
        let fragment = percent_decode(&fragment);
        if fragment.is_empty() {
            let value = docs.get(resource.doc)?.0.pointer(&resource.ptr)?;
            return Some((resource, value));
        }
        if fragment.starts_with('/') {
            if let Some(found) = walk_pointer(docs, &resource, &fragment) {
                return Some(found);
            }
            // Confluent copies top-level `definitions` into `$defs`, so `#/$defs/X` also
            // finds a body written under `definitions`.
            let alias = fragment.strip_prefix("/$defs/")?;
            return walk_pointer(docs, &resource, &format!("/definitions/{alias}"));
        }
        let key = format!("{}#{fragment}", resource.base);
        let loc = self.anchors.get(&key)?.clone();
        let value = docs.get(loc.doc)?.0.pointer(&loc.ptr)?;
        Some((loc, value))
    }
}

fn walk_pointer<'a>(
    docs: &'a [(Value, Draft)],
    from: &Loc,
    pointer: &str,
) -> Option<(Loc, &'a Value)> {
    let (doc, draft) = docs.get(from.doc)?;
    let mut value = doc.pointer(&from.ptr)?;
    let mut loc = from.clone();
    for raw in pointer.split('/').skip(1) {
        let token = raw.replace("~1", "/").replace("~0", "~");
        value = match value {
            Value::Object(map) => map.get(&token)?,
            Value::Array(items) => items.get(token.parse::<usize>().ok()?)?,
            _ => return None,
        };
        loc = Loc {
            doc: loc.doc,
            ptr: format!("{}/{}", loc.ptr, escape_token(&token)),
            base: child_base(value, &loc.base, *draft),
        };
    }
    Some((loc, value))
}

// ---------------------------------------------------------------------------------------
// The schema model
// ---------------------------------------------------------------------------------------

type NodeId = usize;

#[derive(Debug)]
struct Model {
    docs: Vec<(Value, Draft)>,
    nodes: Vec<Node>,
    root: NodeId,
}

#[derive(Debug, Default)]
struct Node {
    kind: Kind,
    id: Option<String>,
    title: Option<String>,
    description: Option<String>,
    default: Option<Value>,
    /// `"connect.type": "bytes"`: Kafka Connect's decimals may change type freely.
    connect_bytes: bool,
    /// Where it was read from, to tell duplicate subschemas of a combined schema apart.
    source: Source,
}

#[derive(Debug, Default, Clone)]
struct Source {
    doc: usize,
    ptr: String,
    /// Which part of the object at `ptr` this is, when an object holds several.
    part: u32,
}

#[derive(Debug, Default)]
enum Kind {
    /// `{}`, `true`, or an object without keywords that validate anything.
    #[default]
    Empty,
    False,
    Ref(NodeId),
    String {
        min_length: Option<f64>,
        max_length: Option<f64>,
        pattern: Option<String>,
    },
    Number(Box<NumberKind>),
    Boolean,
    Null,
    Enum(Vec<Value>),
    Const(Value),
    Combined {
        criterion: Criterion,
        subschemas: Vec<NodeId>,
    },
    Not(NodeId),
    Object(Box<ObjectKind>),
    Array(Box<ArrayKind>),
    Conditional,
}

#[derive(Debug, Default)]
struct NumberKind {
    integer: bool,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
    multiple_of: Option<Decimal>,
}

#[derive(Debug, Default)]
struct ObjectKind {
    properties: BTreeMap<String, NodeId>,
    required: BTreeSet<String>,
    /// False for `additionalProperties: false`; absent and `true` both permit.
    permits_additional: bool,
    additional: Option<NodeId>,
    pattern_properties: BTreeMap<String, NodeId>,
    property_dependencies: BTreeMap<String, BTreeSet<String>>,
    schema_dependencies: BTreeMap<String, NodeId>,
    unevaluated: Option<NodeId>,
    min_properties: Option<f64>,
    max_properties: Option<f64>,
}

#[derive(Debug, Default)]
struct ArrayKind {
    all_items: Option<NodeId>,
    tuple: Vec<NodeId>,
    permits_additional: bool,
    additional: Option<NodeId>,
    unevaluated: Option<NodeId>,
    min_items: Option<f64>,
    max_items: Option<f64>,
    unique: bool,
    min_contains: Option<f64>,
    max_contains: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Criterion {
    All,
    Any,
    One,
}

impl Criterion {
    fn keyword(self) -> &'static str {
        match self {
            Criterion::All => "allOf",
            Criterion::Any => "anyOf",
            Criterion::One => "oneOf",
        }
    }
}

/// A JSON number as digits and a power of ten, so that `multipleOf` divisibility is exact.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    mantissa: u128,
    exponent: i32,
    approx: f64,
}

impl Decimal {
    fn parse(number: &serde_json::Number) -> Option<Decimal> {
        let approx = number.as_f64()?;
        let text = number.to_string();
        let (digits, exp) = match text.split_once(['e', 'E']) {
            Some((d, e)) => (d, e.parse::<i32>().ok()?),
            None => (text.as_str(), 0),
        };
        let digits = digits.strip_prefix('-').unwrap_or(digits);
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let mut mantissa: u128 = 0;
        for c in int.chars().chain(frac.chars()) {
            let d = c.to_digit(10)?;
            mantissa = mantissa.checked_mul(10)?.checked_add(u128::from(d))?;
        }
        let frac_len = i32::try_from(frac.len()).ok()?;
        Some(Decimal {
            mantissa,
            exponent: exp.checked_sub(frac_len)?,
            approx,
        })
    }

    fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    fn scaled_to(self, exponent: i32) -> Option<u128> {
        let shift = u32::try_from(self.exponent.checked_sub(exponent)?).ok()?;
        self.mantissa.checked_mul(10u128.checked_pow(shift)?)
    }

    fn same(self, other: Decimal) -> bool {
        let e = self.exponent.min(other.exponent);
        match (self.scaled_to(e), other.scaled_to(e)) {
            (Some(a), Some(b)) => a == b,
            _ => self.approx == other.approx,
        }
    }

    /// Whether `self` is a whole multiple of `divisor` (which is not zero).
    fn is_multiple_of(self, divisor: Decimal) -> bool {
        let e = self.exponent.min(divisor.exponent);
        match (self.scaled_to(e), divisor.scaled_to(e)) {
            (Some(a), Some(b)) if b != 0 => a % b == 0,
            _ => (self.approx / divisor.approx).fract() == 0.0,
        }
    }
}

/// Part numbers of the pieces an object can hold, for `Source::part`.
mod part {
    pub const WHOLE: u32 = 0;
    pub const ENUM: u32 = 1;
    pub const COMBINED: u32 = 2; // + 0, 1, 2 for allOf, anyOf, oneOf
    pub const NOT: u32 = 5;
    pub const CONST: u32 = 6;
    pub const TYPE: u32 = 7;
    pub const ARRAY: u32 = 8;
    pub const OBJECT: u32 = 9;
    pub const NUMBER: u32 = 10;
    pub const STRING: u32 = 11;
    pub const CONDITIONAL: u32 = 12;
    pub const REF: u32 = 13;
    pub const TYPE_MEMBER: u32 = 32; // + index in the `type` array
}

const NUMBER_KEYWORDS: [&str; 5] = [
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

fn string_keywords(draft: Draft) -> &'static [&'static str] {
    // Confluent's 2019-09/2020-12 loader ignores `format`, so it alone is no string schema.
    if draft.modern() {
        &["minLength", "maxLength", "pattern"]
    } else {
        &["minLength", "maxLength", "pattern", "format"]
    }
}

fn array_keywords(draft: Draft) -> &'static [&'static str] {
    match draft {
        Draft::D4 => &[
            "items",
            "additionalItems",
            "minItems",
            "maxItems",
            "uniqueItems",
        ],
        Draft::D6 | Draft::D7 => &[
            "items",
            "additionalItems",
            "minItems",
            "maxItems",
            "uniqueItems",
            "contains",
        ],
        Draft::D201909 | Draft::D202012 => &[
            "items",
            "prefixItems",
            "additionalItems",
            "minItems",
            "maxItems",
            "uniqueItems",
            "contains",
            "unevaluatedItems",
        ],
    }
}

fn object_keywords(draft: Draft) -> &'static [&'static str] {
    match draft {
        Draft::D4 => &[
            "properties",
            "required",
            "minProperties",
            "maxProperties",
            "dependencies",
            "patternProperties",
            "additionalProperties",
        ],
        Draft::D6 | Draft::D7 => &[
            "properties",
            "required",
            "minProperties",
            "maxProperties",
            "dependencies",
            "patternProperties",
            "additionalProperties",
            "propertyNames",
        ],
        Draft::D201909 | Draft::D202012 => &[
            "properties",
            "required",
            "minProperties",
            "maxProperties",
            "dependencies",
            "dependentRequired",
            "dependentSchemas",
            "patternProperties",
            "additionalProperties",
            "propertyNames",
            "unevaluatedProperties",
        ],
    }
}

/// Longest chain of `$ref`s to `$ref`s followed before giving up.
const MAX_REF_CHAIN: usize = 64;

impl Model {
    fn build(docs: Vec<(Value, Draft)>, names: &[&str]) -> Result<Model, InvalidSchema> {
        let mut index = Index::default();
        let mut roots = Vec::with_capacity(docs.len());
        let root_base = docs
            .first()
            .map(|(v, d)| child_base(v, DEFAULT_BASE, *d))
            .unwrap_or_else(|| DEFAULT_BASE.to_string());
        for (i, (value, draft)) in docs.iter().enumerate() {
            let base = if i == 0 {
                root_base.clone()
            } else {
                // As Confluent registers them: the name resolved against the root's `$id`.
                let name = names.get(i - 1).copied().unwrap_or_default();
                let named = resolve_uri(&root_base, name)
                    .map(|u| split_fragment(&u).0.to_string())
                    .unwrap_or_else(|| name.to_string());
                let loc = Loc {
                    doc: i,
                    ptr: String::new(),
                    base: named.clone(),
                };
                index.resources.insert(named.clone(), loc.clone());
                if let Some(plain) = resolve_uri(DEFAULT_BASE, name) {
                    index
                        .resources
                        .insert(split_fragment(&plain).0.to_string(), loc.clone());
                }
                index.names.insert(split_fragment(name).0.to_string(), loc);
                child_base(value, &named, *draft)
            };
            let loc = Loc {
                doc: i,
                ptr: String::new(),
                base,
            };
            index.resources.insert(loc.base.clone(), loc.clone());
            index.walk(value, &loc, *draft);
            roots.push(loc);
        }
        let mut builder = Builder {
            docs: &docs,
            index: &index,
            nodes: Vec::new(),
            built: HashMap::new(),
            pending: Vec::new(),
            patterns: HashSet::new(),
        };
        let root_loc = roots.into_iter().next().unwrap_or(Loc {
            doc: 0,
            ptr: String::new(),
            base: DEFAULT_BASE.to_string(),
        });
        let root_value = docs.first().map(|(v, _)| v).unwrap_or(&Value::Bool(true));
        let root = builder.alloc(&root_loc, part::WHOLE);
        builder.fill(root, root_value, &root_loc, 0)?;
        while let Some((slot, value, loc)) = builder.pending.pop() {
            builder.fill(slot, value, &loc, 0)?;
        }
        let nodes = builder.nodes;
        check_ref_chains(&nodes)?;
        Ok(Model { docs, nodes, root })
    }

    fn root_value(&self) -> &Value {
        self.docs
            .first()
            .map(|(v, _)| v)
            .unwrap_or(&Value::Bool(true))
    }

    /// Follows `$ref`s to the schema they name.
    fn deref(&self, mut id: NodeId) -> NodeId {
        for _ in 0..MAX_REF_CHAIN {
            match self.nodes.get(id).map(|n| &n.kind) {
                Some(Kind::Ref(target)) => id = *target,
                _ => break,
            }
        }
        id
    }

    fn source_value(&self, source: &Source) -> Option<&Value> {
        self.docs.get(source.doc)?.0.pointer(&source.ptr)
    }
}

/// A `$ref` that only leads to other `$ref`s names no schema at all.
fn check_ref_chains(nodes: &[Node]) -> Result<(), InvalidSchema> {
    for node in nodes {
        let Kind::Ref(mut target) = node.kind else {
            continue;
        };
        let mut steps = 0;
        while let Some(Kind::Ref(next)) = nodes.get(target).map(|n| &n.kind) {
            steps += 1;
            if steps > MAX_REF_CHAIN {
                return Err(InvalidSchema(format!(
                    "the $ref at #{} only leads to $refs (a cycle or too long a chain)",
                    node.source.ptr
                )));
            }
            target = *next;
        }
    }
    Ok(())
}

/// Deepest nesting of subschemas read (serde_json's limit of 128 comes first).
const MAX_BUILD_DEPTH: usize = 200;

struct Builder<'a> {
    docs: &'a [(Value, Draft)],
    index: &'a Index,
    nodes: Vec<Node>,
    /// Node already made for a location, so that `$ref`s to it share it (and cycles end).
    built: HashMap<(usize, String), NodeId>,
    pending: Vec<(NodeId, &'a Value, Loc)>,
    patterns: HashSet<String>,
}

impl<'a> Builder<'a> {
    fn alloc(&mut self, loc: &Loc, part: u32) -> NodeId {
        self.nodes.push(Node {
            source: Source {
                doc: loc.doc,
                ptr: loc.ptr.clone(),
                part,
            },
            ..Node::default()
        });
        self.nodes.len() - 1
    }

    fn draft(&self, loc: &Loc) -> Draft {
        self.docs.get(loc.doc).map_or(Draft::D7, |(_, d)| *d)
    }

    fn child(
        &mut self,
        value: &'a Value,
        parent: &Loc,
        tokens: &[&str],
        depth: usize,
    ) -> Result<NodeId, InvalidSchema> {
        let mut ptr = parent.ptr.clone();
        for token in tokens {
            ptr.push('/');
            ptr.push_str(&escape_token(token));
        }
        let loc = Loc {
            doc: parent.doc,
            ptr,
            base: child_base(value, &parent.base, self.draft(parent)),
        };
        let slot = self.alloc(&loc, part::WHOLE);
        self.fill(slot, value, &loc, depth + 1)?;
        Ok(slot)
    }

    fn fill(
        &mut self,
        slot: NodeId,
        value: &'a Value,
        loc: &Loc,
        depth: usize,
    ) -> Result<(), InvalidSchema> {
        if depth > MAX_BUILD_DEPTH {
            return Err(InvalidSchema(format!(
                "the schema nests too deeply at {}",
                loc.display()
            )));
        }
        self.built.insert((loc.doc, loc.ptr.clone()), slot);
        let map = match value {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => {
                self.set_kind(slot, Kind::False);
                return Ok(());
            }
            Value::Object(map) => map,
            other => {
                return Err(InvalidSchema(format!(
                    "{} is {}, not a schema",
                    loc.display(),
                    json_type(other)
                )))
            }
        };
        let draft = self.draft(loc);
        let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
        let (id, title, description) =
            (text(draft.id_keyword()), text("title"), text("description"));
        let default = map.get("default").cloned();
        let connect_bytes = map.get("connect.type").and_then(Value::as_str) == Some("bytes");

        let reference = match map.get("$ref") {
            Some(Value::String(r)) => Some(r.as_str()),
            _ if draft.modern() => map
                .get("$dynamicRef")
                .or_else(|| map.get("$recursiveRef"))
                .and_then(Value::as_str),
            _ => None,
        };
        let kind = if let Some(reference) = reference {
            let target = self.ref_target(reference, loc)?;
            let rest = if draft.modern() {
                self.extract(map, loc, depth)?
            } else {
                Vec::new()
            };
            if rest.is_empty() {
                Kind::Ref(target)
            } else {
                // From 2019-09 on, `$ref` applies together with its sibling keywords.
                let mut parts = vec![(Kind::Ref(target), part::REF)];
                parts.extend(rest);
                self.combine(parts, loc)
            }
        } else {
            let mut parts = self.extract(map, loc, depth)?;
            match parts.len() {
                0 => Kind::Empty,
                1 => parts.pop().map_or(Kind::Empty, |(k, _)| k),
                _ => self.combine(parts, loc),
            }
        };
        if let Some(node) = self.nodes.get_mut(slot) {
            node.kind = kind;
            node.id = id;
            node.title = title;
            node.description = description;
            node.default = default;
            node.connect_bytes = connect_bytes;
        }
        Ok(())
    }

    fn set_kind(&mut self, slot: NodeId, kind: Kind) {
        if let Some(node) = self.nodes.get_mut(slot) {
            node.kind = kind;
        }
    }

    /// Several schemas read from one object: a synthetic `allOf` of them.
    fn combine(&mut self, parts: Vec<(Kind, u32)>, loc: &Loc) -> Kind {
        let mut subschemas = Vec::with_capacity(parts.len());
        for (kind, part) in parts {
            let id = self.alloc(loc, part);
            self.set_kind(id, kind);
            subschemas.push(id);
        }
        Kind::Combined {
            criterion: Criterion::All,
            subschemas,
        }
    }

    fn ref_target(&mut self, reference: &str, loc: &Loc) -> Result<NodeId, InvalidSchema> {
        let Some((target, value)) = self.index.resolve(self.docs, reference, &loc.base) else {
            return Err(InvalidSchema(format!(
                "the $ref \"{}\" at {} names no schema here or among the references",
                truncate(reference, MAX_ERROR_LEN),
                loc.display()
            )));
        };
        let key = (target.doc, target.ptr.clone());
        if let Some(&id) = self.built.get(&key) {
            return Ok(id);
        }
        let slot = self.alloc(&target, part::WHOLE);
        self.built.insert(key, slot);
        self.pending.push((slot, value, target));
        Ok(slot)
    }

    /// The schemas Confluent's loader reads from one object, each with its part number.
    fn extract(
        &mut self,
        map: &'a Map<String, Value>,
        loc: &Loc,
        depth: usize,
    ) -> Result<Vec<(Kind, u32)>, InvalidSchema> {
        let draft = self.draft(loc);
        let mut parts = Vec::new();
        if let Some(Value::Array(values)) = map.get("enum") {
            parts.push((Kind::Enum(values.clone()), part::ENUM));
        }
        for (offset, criterion) in [Criterion::All, Criterion::Any, Criterion::One]
            .into_iter()
            .enumerate()
        {
            if let Some(Value::Array(items)) = map.get(criterion.keyword()) {
                let mut subschemas = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    subschemas.push(self.child(
                        item,
                        loc,
                        &[criterion.keyword(), &i.to_string()],
                        depth,
                    )?);
                }
                let tag = part::COMBINED + u32::try_from(offset).unwrap_or(0);
                parts.push((
                    Kind::Combined {
                        criterion,
                        subschemas,
                    },
                    tag,
                ));
            }
        }
        if let Some(not) = map.get("not") {
            parts.push((Kind::Not(self.child(not, loc, &["not"], depth)?), part::NOT));
        }
        if draft != Draft::D4 {
            if let Some(value) = map.get("const") {
                parts.push((Kind::Const(value.clone()), part::CONST));
            }
        }
        // Keywords read by an explicit `type` are not sniffed again below.
        let mut consumed: HashSet<&str> = HashSet::new();
        match map.get("type") {
            Some(Value::String(t)) => {
                let kind = self.typed(t, map, loc, depth, &mut consumed)?;
                parts.push((kind, part::TYPE));
            }
            Some(Value::Array(types)) => {
                let mut members = Vec::with_capacity(types.len());
                for (i, t) in types.iter().enumerate() {
                    let Value::String(t) = t else { continue };
                    let kind = self.typed(t, map, loc, depth, &mut consumed)?;
                    let id = self.alloc(loc, part::TYPE_MEMBER + u32::try_from(i).unwrap_or(0));
                    self.set_kind(id, kind);
                    members.push(id);
                }
                parts.push((
                    Kind::Combined {
                        criterion: Criterion::Any,
                        subschemas: members,
                    },
                    part::TYPE,
                ));
            }
            _ => {}
        }
        let has = |keywords: &[&str]| {
            keywords
                .iter()
                .any(|k| !consumed.contains(k) && map.contains_key(*k))
        };
        let sniff_array = has(array_keywords(draft));
        let sniff_object = has(object_keywords(draft));
        let sniff_number = has(&NUMBER_KEYWORDS);
        let sniff_string = has(string_keywords(draft));
        let sniff_conditional = draft >= Draft::D7 && has(&["if", "then", "else"]);
        if sniff_array {
            parts.push((
                Kind::Array(Box::new(self.array(map, loc, depth)?)),
                part::ARRAY,
            ));
        }
        if sniff_object {
            parts.push((
                Kind::Object(Box::new(self.object(map, loc, depth)?)),
                part::OBJECT,
            ));
        }
        if sniff_number {
            parts.push((
                Kind::Number(Box::new(number(map, false, draft))),
                part::NUMBER,
            ));
        }
        if sniff_string {
            parts.push((self.string(map, loc)?, part::STRING));
        }
        if sniff_conditional {
            // Not compared (Confluent does not), but read so that their `$ref`s resolve.
            for key in ["if", "then", "else"] {
                if let Some(v) = map.get(key) {
                    self.child(v, loc, &[key], depth)?;
                }
            }
            parts.push((Kind::Conditional, part::CONDITIONAL));
        }
        Ok(parts)
    }

    fn typed(
        &mut self,
        t: &str,
        map: &'a Map<String, Value>,
        loc: &Loc,
        depth: usize,
        consumed: &mut HashSet<&'static str>,
    ) -> Result<Kind, InvalidSchema> {
        let draft = self.draft(loc);
        Ok(match t {
            "string" => {
                consumed.extend(string_keywords(draft));
                self.string(map, loc)?
            }
            "integer" | "number" => {
                consumed.extend(NUMBER_KEYWORDS);
                Kind::Number(Box::new(number(map, t == "integer", draft)))
            }
            "boolean" => Kind::Boolean,
            "null" => Kind::Null,
            "array" => {
                consumed.extend(array_keywords(draft));
                Kind::Array(Box::new(self.array(map, loc, depth)?))
            }
            "object" => {
                consumed.extend(object_keywords(draft));
                Kind::Object(Box::new(self.object(map, loc, depth)?))
            }
            _ => Kind::Empty,
        })
    }

    fn check_pattern(&mut self, pattern: &str, loc: &Loc) -> Result<(), InvalidSchema> {
        if self.patterns.contains(pattern) {
            return Ok(());
        }
        if let Err(e) = jsonschema::options().build(&serde_json::json!({ "pattern": pattern })) {
            return Err(InvalidSchema(format!(
                "invalid regular expression at {}: {}",
                loc.display(),
                truncate(&e.to_string(), MAX_ERROR_LEN)
            )));
        }
        self.patterns.insert(pattern.to_string());
        Ok(())
    }

    fn string(&mut self, map: &Map<String, Value>, loc: &Loc) -> Result<Kind, InvalidSchema> {
        let pattern = map
            .get("pattern")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(p) = &pattern {
            self.check_pattern(p, loc)?;
        }
        Ok(Kind::String {
            min_length: map.get("minLength").and_then(Value::as_f64),
            max_length: map.get("maxLength").and_then(Value::as_f64),
            pattern,
        })
    }

    fn array(
        &mut self,
        map: &'a Map<String, Value>,
        loc: &Loc,
        depth: usize,
    ) -> Result<ArrayKind, InvalidSchema> {
        let draft = self.draft(loc);
        let mut array = ArrayKind {
            permits_additional: true,
            min_items: map.get("minItems").and_then(Value::as_f64),
            max_items: map.get("maxItems").and_then(Value::as_f64),
            unique: map.get("uniqueItems") == Some(&Value::Bool(true)),
            ..ArrayKind::default()
        };
        if draft == Draft::D202012 {
            if let Some(Value::Array(prefix)) = map.get("prefixItems") {
                for (i, item) in prefix.iter().enumerate() {
                    array.tuple.push(self.child(
                        item,
                        loc,
                        &["prefixItems", &i.to_string()],
                        depth,
                    )?);
                }
            }
            // As Confluent reads 2020-12: `items` is the schema of the items after
            // `prefixItems` (of all items without them); `false` closes, `true` is absent.
            match map.get("items") {
                Some(Value::Bool(false)) => array.permits_additional = false,
                Some(Value::Bool(true)) | None => {}
                Some(items) => {
                    let id = self.child(items, loc, &["items"], depth)?;
                    if map.contains_key("prefixItems") {
                        array.additional = Some(id);
                    } else {
                        array.all_items = Some(id);
                    }
                }
            }
        } else {
            match map.get("items") {
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        array.tuple.push(self.child(
                            item,
                            loc,
                            &["items", &i.to_string()],
                            depth,
                        )?);
                    }
                }
                Some(items) => array.all_items = Some(self.child(items, loc, &["items"], depth)?),
                None => {}
            }
            match map.get("additionalItems") {
                Some(Value::Bool(permits)) => array.permits_additional = *permits,
                Some(schema) => {
                    array.additional =
                        Some(self.child(schema, loc, &["additionalItems"], depth)?);
                }
                None => {}
            }
        }
        if draft != Draft::D4 {
            if let Some(contains) = map.get("contains") {
                self.child(contains, loc, &["contains"], depth)?;
                if draft.modern() {
                    // Confluent's 2019+ loader gives `contains` its default `minContains: 1`.
                    array.min_contains = Some(
                        map.get("minContains")
                            .and_then(Value::as_f64)
                            .unwrap_or(1.0),
                    );
                    array.max_contains = map.get("maxContains").and_then(Value::as_f64);
                }
            }
        }
        if !draft.modern() {
            array.min_contains = map.get("minContains").and_then(Value::as_f64);
            array.max_contains = map.get("maxContains").and_then(Value::as_f64);
        }
        if draft.modern() {
            if let Some(u) = map.get("unevaluatedItems") {
                array.unevaluated = Some(self.child(u, loc, &["unevaluatedItems"], depth)?);
            }
        }
        Ok(array)
    }

    fn object(
        &mut self,
        map: &'a Map<String, Value>,
        loc: &Loc,
        depth: usize,
    ) -> Result<ObjectKind, InvalidSchema> {
        let draft = self.draft(loc);
        let mut object = ObjectKind {
            permits_additional: true,
            min_properties: map.get("minProperties").and_then(Value::as_f64),
            max_properties: map.get("maxProperties").and_then(Value::as_f64),
            ..ObjectKind::default()
        };
        if let Some(Value::Object(properties)) = map.get("properties") {
            for (name, schema) in properties {
                // Confluent's loader skips a property named like `$id` unless it is an object.
                if name == draft.id_keyword() && !schema.is_object() {
                    continue;
                }
                let id = self.child(schema, loc, &["properties", name], depth)?;
                object.properties.insert(name.clone(), id);
            }
        }
        if let Some(Value::Array(required)) = map.get("required") {
            object.required = required
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
        }
        match map.get("additionalProperties") {
            Some(Value::Bool(permits)) => object.permits_additional = *permits,
            Some(schema) => {
                object.additional =
                    Some(self.child(schema, loc, &["additionalProperties"], depth)?);
            }
            None => {}
        }
        if let Some(Value::Object(patterns)) = map.get("patternProperties") {
            for (pattern, schema) in patterns {
                self.check_pattern(pattern, loc)?;
                let id = self.child(schema, loc, &["patternProperties", pattern], depth)?;
                object.pattern_properties.insert(pattern.clone(), id);
            }
        }
        let mut dependency_keywords = vec!["dependencies"];
        if draft.modern() {
            dependency_keywords.extend(["dependentRequired", "dependentSchemas"]);
        }
        for keyword in dependency_keywords {
            let Some(Value::Object(dependencies)) = map.get(keyword) else {
                continue;
            };
            for (name, dependency) in dependencies {
                match dependency {
                    Value::Array(names) => {
                        let names: BTreeSet<String> = names
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect();
                        // An empty list adds nothing to Confluent's model.
                        if !names.is_empty() {
                            object
                                .property_dependencies
                                .entry(name.clone())
                                .or_default()
                                .extend(names);
                        }
                    }
                    schema => {
                        let id = self.child(schema, loc, &[keyword, name], depth)?;
                        object.schema_dependencies.insert(name.clone(), id);
                    }
                }
            }
        }
        if draft != Draft::D4 {
            if let Some(names) = map.get("propertyNames") {
                self.child(names, loc, &["propertyNames"], depth)?;
            }
        }
        if draft.modern() {
            if let Some(u) = map.get("unevaluatedProperties") {
                object.unevaluated = Some(self.child(u, loc, &["unevaluatedProperties"], depth)?);
            }
        }
        Ok(object)
    }
}

fn number(map: &Map<String, Value>, integer: bool, draft: Draft) -> NumberKind {
    let limit = |key: &str| map.get(key).and_then(Value::as_f64);
    NumberKind {
        integer,
        minimum: limit("minimum"),
        maximum: limit("maximum"),
        // Draft-04's boolean `exclusiveMinimum`/`exclusiveMaximum` only qualify the limits,
        // and Confluent does not compare them.
        exclusive_minimum: if draft == Draft::D4 {
            None
        } else {
            limit("exclusiveMinimum")
        },
        exclusive_maximum: if draft == Draft::D4 {
            None
        } else {
            limit("exclusiveMaximum")
        },
        multiple_of: match map.get("multipleOf") {
            Some(Value::Number(n)) => Decimal::parse(n),
            _ => None,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Differences
// ---------------------------------------------------------------------------------------

/// Confluent's difference types, each with whether its strict policy deems it compatible.
macro_rules! changes {
    ($($variant:ident = $name:literal, $compatible:literal;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        enum Change { $($variant),* }

        impl Change {
            fn name(self) -> &'static str {
                match self { $(Change::$variant => $name),* }
            }

            fn compatible(self) -> bool {
                match self { $(Change::$variant => $compatible),* }
            }
        }
    };
}

changes! {
    IdChanged = "ID_CHANGED", true;
    DescriptionChanged = "DESCRIPTION_CHANGED", true;
    TitleChanged = "TITLE_CHANGED", true;
    DefaultChanged = "DEFAULT_CHANGED", true;
    SchemaAdded = "SCHEMA_ADDED", false;
    SchemaRemoved = "SCHEMA_REMOVED", true;
    TypeExtended = "TYPE_EXTENDED", true;
    TypeNarrowed = "TYPE_NARROWED", false;
    TypeChanged = "TYPE_CHANGED", false;
    MaxLengthAdded = "MAX_LENGTH_ADDED", false;
    MaxLengthRemoved = "MAX_LENGTH_REMOVED", true;
    MaxLengthIncreased = "MAX_LENGTH_INCREASED", true;
    MaxLengthDecreased = "MAX_LENGTH_DECREASED", false;
    MinLengthAdded = "MIN_LENGTH_ADDED", false;
    MinLengthRemoved = "MIN_LENGTH_REMOVED", true;
    MinLengthIncreased = "MIN_LENGTH_INCREASED", false;
    MinLengthDecreased = "MIN_LENGTH_DECREASED", true;
    PatternAdded = "PATTERN_ADDED", false;
    PatternRemoved = "PATTERN_REMOVED", true;
    PatternChanged = "PATTERN_CHANGED", false;
    MaximumAdded = "MAXIMUM_ADDED", false;
    MaximumRemoved = "MAXIMUM_REMOVED", true;
    MaximumIncreased = "MAXIMUM_INCREASED", true;
    MaximumDecreased = "MAXIMUM_DECREASED", false;
    MinimumAdded = "MINIMUM_ADDED", false;
    MinimumRemoved = "MINIMUM_REMOVED", true;
    MinimumIncreased = "MINIMUM_INCREASED", false;
    MinimumDecreased = "MINIMUM_DECREASED", true;
    ExclusiveMaximumAdded = "EXCLUSIVE_MAXIMUM_ADDED", false;
    ExclusiveMaximumRemoved = "EXCLUSIVE_MAXIMUM_REMOVED", true;
    ExclusiveMaximumIncreased = "EXCLUSIVE_MAXIMUM_INCREASED", true;
    ExclusiveMaximumDecreased = "EXCLUSIVE_MAXIMUM_DECREASED", false;
    ExclusiveMinimumAdded = "EXCLUSIVE_MINIMUM_ADDED", false;
    ExclusiveMinimumRemoved = "EXCLUSIVE_MINIMUM_REMOVED", true;
    ExclusiveMinimumIncreased = "EXCLUSIVE_MINIMUM_INCREASED", false;
    ExclusiveMinimumDecreased = "EXCLUSIVE_MINIMUM_DECREASED", true;
    MultipleOfAdded = "MULTIPLE_OF_ADDED", false;
    MultipleOfRemoved = "MULTIPLE_OF_REMOVED", true;
    MultipleOfExpanded = "MULTIPLE_OF_EXPANDED", false;
    MultipleOfReduced = "MULTIPLE_OF_REDUCED", true;
    MultipleOfChanged = "MULTIPLE_OF_CHANGED", false;
    RequiredAttributeAdded = "REQUIRED_ATTRIBUTE_ADDED", false;
    RequiredAttributeWithDefaultAdded = "REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED", true;
    RequiredAttributeRemoved = "REQUIRED_ATTRIBUTE_REMOVED", true;
    MaxPropertiesAdded = "MAX_PROPERTIES_ADDED", false;
    MaxPropertiesRemoved = "MAX_PROPERTIES_REMOVED", true;
    MaxPropertiesIncreased = "MAX_PROPERTIES_INCREASED", true;
    MaxPropertiesDecreased = "MAX_PROPERTIES_DECREASED", false;
    MinPropertiesAdded = "MIN_PROPERTIES_ADDED", false;
    MinPropertiesRemoved = "MIN_PROPERTIES_REMOVED", true;
    MinPropertiesIncreased = "MIN_PROPERTIES_INCREASED", false;
    MinPropertiesDecreased = "MIN_PROPERTIES_DECREASED", true;
    AdditionalPropertiesAdded = "ADDITIONAL_PROPERTIES_ADDED", true;
    AdditionalPropertiesRemoved = "ADDITIONAL_PROPERTIES_REMOVED", false;
    AdditionalPropertiesExtended = "ADDITIONAL_PROPERTIES_EXTENDED", true;
    AdditionalPropertiesNarrowed = "ADDITIONAL_PROPERTIES_NARROWED", false;
    DependencyArrayAdded = "DEPENDENCY_ARRAY_ADDED", false;
    DependencyArrayRemoved = "DEPENDENCY_ARRAY_REMOVED", true;
    DependencyArrayExtended = "DEPENDENCY_ARRAY_EXTENDED", false;
    DependencyArrayNarrowed = "DEPENDENCY_ARRAY_NARROWED", true;
    DependencyArrayChanged = "DEPENDENCY_ARRAY_CHANGED", false;
    DependencySchemaAdded = "DEPENDENCY_SCHEMA_ADDED", false;
    DependencySchemaRemoved = "DEPENDENCY_SCHEMA_REMOVED", true;
    RequiredPropertyAddedToOpenContentModel = "REQUIRED_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", false;
    RequiredPropertyWithDefaultAddedToOpenContentModel =
        "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_OPEN_CONTENT_MODEL", false;
    OptionalPropertyAddedToOpenContentModel = "OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL", false;
    PropertyWithEmptySchemaAddedToOpenContentModel =
        "PROPERTY_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL", true;
    RequiredPropertyAddedToUnopenContentModel =
        "REQUIRED_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL", false;
    RequiredPropertyWithDefaultAddedToUnopenContentModel =
        "REQUIRED_PROPERTY_WITH_DEFAULT_ADDED_TO_UNOPEN_CONTENT_MODEL", true;
    OptionalPropertyAddedToUnopenContentModel =
        "OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL", true;
    PropertyRemovedFromOpenContentModel = "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL", true;
    PropertyWithFalseRemovedFromClosedContentModel =
        "PROPERTY_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL", true;
    PropertyRemovedFromClosedContentModel = "PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL", false;
    PropertyRemovedIsCoveredByPartiallyOpenContentModel =
        "PROPERTY_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", true;
    PropertyRemovedNotCoveredByPartiallyOpenContentModel =
        "PROPERTY_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", false;
    PropertyAddedIsCoveredByPartiallyOpenContentModel =
        "PROPERTY_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", true;
    PropertyAddedNotCoveredByPartiallyOpenContentModel =
        "PROPERTY_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", false;
    UnevaluatedPropertiesAdded = "UNEVALUATED_PROPERTIES_ADDED", true;
    UnevaluatedPropertiesRemoved = "UNEVALUATED_PROPERTIES_REMOVED", false;
    UnevaluatedPropertiesExtended = "UNEVALUATED_PROPERTIES_EXTENDED", true;
    UnevaluatedPropertiesNarrowed = "UNEVALUATED_PROPERTIES_NARROWED", false;
    MaxItemsAdded = "MAX_ITEMS_ADDED", false;
    MaxItemsRemoved = "MAX_ITEMS_REMOVED", true;
    MaxItemsIncreased = "MAX_ITEMS_INCREASED", true;
    MaxItemsDecreased = "MAX_ITEMS_DECREASED", false;
    MinItemsAdded = "MIN_ITEMS_ADDED", false;
    MinItemsRemoved = "MIN_ITEMS_REMOVED", true;
    MinItemsIncreased = "MIN_ITEMS_INCREASED", false;
    MinItemsDecreased = "MIN_ITEMS_DECREASED", true;
    MaxContainsAdded = "MAX_CONTAINS_ADDED", false;
    MaxContainsRemoved = "MAX_CONTAINS_REMOVED", true;
    MaxContainsIncreased = "MAX_CONTAINS_INCREASED", true;
    MaxContainsDecreased = "MAX_CONTAINS_DECREASED", false;
    MinContainsAdded = "MIN_CONTAINS_ADDED", false;
    MinContainsRemoved = "MIN_CONTAINS_REMOVED", true;
    MinContainsIncreased = "MIN_CONTAINS_INCREASED", false;
    MinContainsDecreased = "MIN_CONTAINS_DECREASED", true;
    UniqueItemsAdded = "UNIQUE_ITEMS_ADDED", false;
    UniqueItemsRemoved = "UNIQUE_ITEMS_REMOVED", true;
    AdditionalItemsAdded = "ADDITIONAL_ITEMS_ADDED", true;
    AdditionalItemsRemoved = "ADDITIONAL_ITEMS_REMOVED", false;
    AdditionalItemsExtended = "ADDITIONAL_ITEMS_EXTENDED", true;
    AdditionalItemsNarrowed = "ADDITIONAL_ITEMS_NARROWED", false;
    UnevaluatedItemsAdded = "UNEVALUATED_ITEMS_ADDED", true;
    UnevaluatedItemsRemoved = "UNEVALUATED_ITEMS_REMOVED", false;
    UnevaluatedItemsExtended = "UNEVALUATED_ITEMS_EXTENDED", true;
    UnevaluatedItemsNarrowed = "UNEVALUATED_ITEMS_NARROWED", false;
    ItemAddedToOpenContentModel = "ITEM_ADDED_TO_OPEN_CONTENT_MODEL", false;
    ItemWithEmptySchemaAddedToOpenContentModel =
        "ITEM_WITH_EMPTY_SCHEMA_ADDED_TO_OPEN_CONTENT_MODEL", true;
    ItemAddedToClosedContentModel = "ITEM_ADDED_TO_CLOSED_CONTENT_MODEL", true;
    ItemRemovedFromOpenContentModel = "ITEM_REMOVED_FROM_OPEN_CONTENT_MODEL", true;
    ItemWithFalseRemovedFromClosedContentModel =
        "ITEM_WITH_FALSE_REMOVED_FROM_CLOSED_CONTENT_MODEL", true;
    ItemRemovedFromClosedContentModel = "ITEM_REMOVED_FROM_CLOSED_CONTENT_MODEL", false;
    ItemRemovedIsCoveredByPartiallyOpenContentModel =
        "ITEM_REMOVED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", true;
    ItemRemovedNotCoveredByPartiallyOpenContentModel =
        "ITEM_REMOVED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", false;
    ItemAddedIsCoveredByPartiallyOpenContentModel =
        "ITEM_ADDED_IS_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", true;
    ItemAddedNotCoveredByPartiallyOpenContentModel =
        "ITEM_ADDED_NOT_COVERED_BY_PARTIALLY_OPEN_CONTENT_MODEL", false;
    EnumArrayExtended = "ENUM_ARRAY_EXTENDED", true;
    EnumArrayNarrowed = "ENUM_ARRAY_NARROWED", false;
    EnumArrayChanged = "ENUM_ARRAY_CHANGED", false;
    CombinedTypeExtended = "COMBINED_TYPE_EXTENDED", true;
    CombinedTypeChanged = "COMBINED_TYPE_CHANGED", false;
    ProductTypeExtended = "PRODUCT_TYPE_EXTENDED", false;
    ProductTypeNarrowed = "PRODUCT_TYPE_NARROWED", true;
    SumTypeExtended = "SUM_TYPE_EXTENDED", true;
    SumTypeNarrowed = "SUM_TYPE_NARROWED", false;
    CombinedTypeSubschemasChanged = "COMBINED_TYPE_SUBSCHEMAS_CHANGED", false;
    NotTypeExtended = "NOT_TYPE_EXTENDED", false;
    NotTypeNarrowed = "NOT_TYPE_NARROWED", true;
}

impl Change {
    /// What an incompatible difference means, with the writer's schema as the original
    /// and the reader's as the update.
    fn explain(self) -> &'static str {
        use Change::*;
        match self {
            SchemaAdded => "the reader constrains a part the writer leaves free",
            TypeNarrowed => "the reader accepts only integers where the writer allows any number",
            TypeChanged | CombinedTypeChanged => "the reader's type differs from the writer's",
            MaxLengthAdded | MinLengthAdded | PatternAdded | MaximumAdded | MinimumAdded
            | ExclusiveMaximumAdded | ExclusiveMinimumAdded | MultipleOfAdded
            | MaxPropertiesAdded | MinPropertiesAdded | MaxItemsAdded | MinItemsAdded
            | MaxContainsAdded | MinContainsAdded | UniqueItemsAdded | DependencyArrayAdded
            | DependencySchemaAdded => "the reader has a constraint the writer lacks",
            MinLengthIncreased | MinimumIncreased | ExclusiveMinimumIncreased
            | MinPropertiesIncreased | MinItemsIncreased | MinContainsIncreased => {
                "the reader's lower bound is above the writer's"
            }
            MaxLengthDecreased | MaximumDecreased | ExclusiveMaximumDecreased
            | MaxPropertiesDecreased | MaxItemsDecreased | MaxContainsDecreased => {
                "the reader's upper bound is below the writer's"
            }
            MultipleOfExpanded | MultipleOfChanged => {
                "the reader's multipleOf does not divide the writer's"
            }
            PatternChanged => "the reader's pattern differs from the writer's",
            DependencyArrayExtended | DependencyArrayChanged => {
                "the reader requires properties the writer's dependency does not"
            }
            RequiredAttributeAdded => "the reader requires a property the writer does not",
            AdditionalPropertiesRemoved | UnevaluatedPropertiesRemoved => {
                "the reader forbids properties the writer allows"
            }
            AdditionalPropertiesNarrowed | UnevaluatedPropertiesNarrowed => {
                "the reader constrains properties the writer allows freely"
            }
            AdditionalItemsRemoved | UnevaluatedItemsRemoved => {
                "the reader forbids items the writer allows"
            }
            AdditionalItemsNarrowed | UnevaluatedItemsNarrowed => {
                "the reader constrains items the writer allows freely"
            }
            RequiredPropertyAddedToOpenContentModel
            | RequiredPropertyWithDefaultAddedToOpenContentModel
            | OptionalPropertyAddedToOpenContentModel => {
                "the reader declares a property that the writer's open content model lets be anything"
            }
            RequiredPropertyAddedToUnopenContentModel => {
                "the reader requires a property that the writer does not declare"
            }
            PropertyRemovedFromClosedContentModel => {
                "the reader's closed content model lacks a property the writer declares"
            }
            PropertyRemovedNotCoveredByPartiallyOpenContentModel => {
                "the reader lacks a property the writer declares, and its additional or pattern \
                 properties do not accept it"
            }
            PropertyAddedNotCoveredByPartiallyOpenContentModel => {
                "the reader declares a property that the writer's additional or pattern \
                 properties allow with another schema"
            }
            ItemAddedToOpenContentModel => {
                "the reader constrains a tuple item that the writer's open content model lets be anything"
            }
            ItemRemovedFromClosedContentModel => {
                "the reader's closed tuple lacks an item the writer declares"
            }
            ItemRemovedNotCoveredByPartiallyOpenContentModel => {
                "the reader lacks a tuple item the writer declares, and its additional items do not accept it"
            }
            ItemAddedNotCoveredByPartiallyOpenContentModel => {
                "the reader declares a tuple item that the writer's additional items allow with another schema"
            }
            EnumArrayNarrowed => "the reader allows fewer values than the writer",
            EnumArrayChanged => "the reader's allowed values differ from the writer's",
            ProductTypeExtended => "the reader's allOf has more subschemas than the writer's",
            SumTypeNarrowed => "the reader's anyOf/oneOf has fewer subschemas than the writer's",
            CombinedTypeSubschemasChanged => {
                "the writer's subschemas are not all matched by compatible reader subschemas"
            }
            NotTypeExtended => "the reader's `not` excludes more than the writer's",
            _ => "a compatible change",
        }
    }
}

#[derive(Debug, Clone)]
struct Difference {
    change: Change,
    /// Relative to the pair being compared, without the leading `#/`.
    path: String,
}

/// Most differences of each kind kept per compared pair: only whether there is an
/// incompatible one matters, and DAG-shaped schemas would otherwise repeat them without end.
const MAX_DIFFERENCES: usize = 50;

#[derive(Debug, Default)]
struct Diffs {
    bad: Vec<Difference>,
    ok: Vec<Difference>,
}

impl Diffs {
    fn add(&mut self, change: Change, path: &str) {
        self.push(Difference {
            change,
            path: path.to_string(),
        });
    }

    fn push(&mut self, d: Difference) {
        let list = if d.change.compatible() {
            &mut self.ok
        } else {
            &mut self.bad
        };
        if list.len() < MAX_DIFFERENCES {
            list.push(d);
        }
    }

    fn extend_rebased(&mut self, other: &Diffs, prefix: &str) {
        for d in other.bad.iter().chain(&other.ok) {
            self.push(Difference {
                change: d.change,
                path: join(prefix, &d.path),
            });
        }
    }

    fn append(&mut self, other: Diffs) {
        for d in other.bad.into_iter().chain(other.ok) {
            self.push(d);
        }
    }

    fn is_compatible(&self) -> bool {
        self.bad.is_empty()
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}/{path}"),
    }
}

// ---------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------

/// A node of one of the two models being compared (0: original, 1: update).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct At {
    model: u8,
    id: NodeId,
}

type PairDiffs = HashMap<(At, At), Rc<Diffs>>;

/// Deepest nesting of compared pairs. The search for matching subschemas of unions can
/// chain through many distinct pairs, so the comparison runs on a thread of its own with
/// room for this (about 4 KiB a level in debug builds).
const MAX_COMPARE_DEPTH: usize = 10_000;
const COMPARE_STACK_BYTES: usize = 96 << 20;
/// Depth allowed when no thread can be started and the caller's stack is used.
const INLINE_COMPARE_DEPTH: usize = 100;
/// Most pair comparisons (memoised or not) and copied differences over all fixpoint
/// passes: about a second of work.
const MAX_COMPARE_STEPS: usize = 1_000_000;
/// Most fixpoint passes (each one only adds pairs known to be incompatible).
const MAX_PASSES: usize = 32;

struct Outcome {
    diffs: Diffs,
    exhausted: bool,
}

/// Confluent's `SchemaDiff.compare(original, update)`.
fn diff(original: &Model, update: &Model) -> Outcome {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("json-schema-compat".to_string())
            .stack_size(COMPARE_STACK_BYTES)
            .spawn_scoped(scope, || diff_within(original, update, MAX_COMPARE_DEPTH));
        match worker {
            Ok(handle) => handle.join().unwrap_or(Outcome {
                diffs: Diffs::default(),
                exhausted: true,
            }),
            Err(_) => diff_within(original, update, INLINE_COMPARE_DEPTH),
        }
    })
}

fn diff_within(original: &Model, update: &Model, max_depth: usize) -> Outcome {
    let models = [original, update];
    let o = At {
        model: 0,
        id: original.root,
    };
    let u = At {
        model: 1,
        id: update.root,
    };
    let mut regexes = HashMap::new();
    let mut steps = 0;
    let mut seed: PairDiffs = HashMap::new();
    let mut passes = 0;
    loop {
        passes += 1;
        let mut checker = Checker {
            models,
            memo: HashMap::new(),
            in_progress: HashSet::new(),
            seed: &seed,
            optimistic: false,
            steps,
            depth: 0,
            max_depth,
            exhausted: false,
            regexes: &mut regexes,
        };
        let mut out = Diffs::default();
        checker.compare(o, u, "", &mut out);
        steps = checker.steps;
        if checker.exhausted {
            return Outcome {
                diffs: out,
                exhausted: true,
            };
        }
        // Cycles were assumed compatible; that holds unless a pair assumed so turned out
        // incompatible, in which case compare again with those pairs known (a fixpoint).
        let incompatible: PairDiffs = checker
            .memo
            .iter()
            .filter(|(_, d)| !d.is_compatible())
            .map(|(k, d)| (*k, d.clone()))
            .collect();
        let settled = !checker.optimistic
            || (incompatible.len() == seed.len()
                && incompatible.keys().all(|k| seed.contains_key(k)));
        if settled {
            return Outcome {
                diffs: out,
                exhausted: false,
            };
        }
        if passes >= MAX_PASSES {
            return Outcome {
                diffs: out,
                exhausted: true,
            };
        }
        seed = incompatible;
    }
}

struct Checker<'m, 's> {
    models: [&'m Model; 2],
    /// Differences of each pair compared so far, relative to the pair.
    memo: PairDiffs,
    /// Pairs being compared further up: meeting one again is a `$ref` cycle.
    in_progress: HashSet<(At, At)>,
    /// Pairs a previous pass found incompatible.
    seed: &'s PairDiffs,
    /// Whether a cycle was assumed compatible in this pass.
    optimistic: bool,
    steps: usize,
    depth: usize,
    max_depth: usize,
    exhausted: bool,
    regexes: &'s mut HashMap<String, Option<jsonschema::Validator>>,
}

impl<'m> Checker<'m, '_> {
    fn node(&self, at: At) -> &'m Node {
        static EMPTY: Node = Node {
            kind: Kind::Empty,
            id: None,
            title: None,
            description: None,
            default: None,
            connect_bytes: false,
            source: Source {
                doc: 0,
                ptr: String::new(),
                part: 0,
            },
        };
        self.models[usize::from(at.model)]
            .nodes
            .get(at.id)
            .unwrap_or(&EMPTY)
    }

    fn deref(&self, at: At) -> At {
        At {
            model: at.model,
            id: self.models[usize::from(at.model)].deref(at.id),
        }
    }

    fn compare_opt(&mut self, o: Option<At>, u: Option<At>, path: &str, out: &mut Diffs) {
        match (o, u) {
            (None, None) => {}
            (None, Some(_)) => out.add(Change::SchemaAdded, path),
            (Some(_), None) => out.add(Change::SchemaRemoved, path),
            (Some(o), Some(u)) => self.compare(o, u, path, out),
        }
    }

    fn compare(&mut self, o: At, u: At, path: &str, out: &mut Diffs) {
        self.steps += 1;
        if self.steps > MAX_COMPARE_STEPS {
            self.exhausted = true;
        }
        if self.exhausted {
            return;
        }
        let o = self.deref(o);
        let u = self.deref(u);
        let relative = self.memoized(o, u);
        // Copying differences is work too: a shared definition's are copied to every use.
        self.steps += relative.bad.len() + relative.ok.len();
        out.extend_rebased(&relative, path);
    }

    fn memoized(&mut self, o: At, u: At) -> Rc<Diffs> {
        if let Some(d) = self.memo.get(&(o, u)) {
            return d.clone();
        }
        if !self.in_progress.insert((o, u)) {
            if let Some(d) = self.seed.get(&(o, u)) {
                return d.clone();
            }
            self.optimistic = true;
            return Rc::default();
        }
        if self.depth >= self.max_depth {
            self.exhausted = true;
            self.in_progress.remove(&(o, u));
            return Rc::default();
        }
        self.depth += 1;
        let mut diffs = Diffs::default();
        self.compare_types(o, u, &mut diffs);
        self.depth -= 1;
        self.in_progress.remove(&(o, u));
        let diffs = Rc::new(diffs);
        // A truncated comparison must not be reused as if it were complete.
        if !self.exhausted {
            self.memo.insert((o, u), diffs.clone());
        }
        diffs
    }

    fn sub(&self, at: At, id: NodeId) -> At {
        At {
            model: at.model,
            id,
        }
    }

    fn compare_types(&mut self, o: At, u: At, out: &mut Diffs) {
        let (on, un) = (self.node(o), self.node(u));
        match (&on.kind, &un.kind) {
            (Kind::Combined { .. }, Kind::Combined { .. }) => {}
            (
                _,
                Kind::Combined {
                    criterion,
                    subschemas,
                },
            ) => {
                if let [only] = subschemas.as_slice() {
                    // A union of one is its member.
                    let mut sub = Diffs::default();
                    self.compare(o, self.sub(u, *only), "", &mut sub);
                    if sub.is_compatible() {
                        out.append(sub);
                        return;
                    }
                } else if *criterion != Criterion::All {
                    for &s in subschemas {
                        let mut sub = Diffs::default();
                        self.compare(o, self.sub(u, s), "", &mut sub);
                        if sub.is_compatible() {
                            out.append(sub);
                            out.add(Change::SumTypeExtended, "");
                            return;
                        }
                    }
                }
            }
            (
                Kind::Combined {
                    criterion,
                    subschemas,
                },
                _,
            ) => {
                if let [only] = subschemas.as_slice() {
                    let mut sub = Diffs::default();
                    self.compare(self.sub(o, *only), u, "", &mut sub);
                    if sub.is_compatible() {
                        out.append(sub);
                        return;
                    }
                } else if *criterion == Criterion::All {
                    for &s in subschemas {
                        let mut sub = Diffs::default();
                        self.compare(self.sub(o, s), u, "", &mut sub);
                        if sub.is_compatible() {
                            out.append(sub);
                            out.add(Change::ProductTypeNarrowed, "");
                            return;
                        }
                    }
                }
            }
            _ => {}
        }
        if class(&on.kind) != class(&un.kind) {
            if matches!(on.kind, Kind::False) || matches!(un.kind, Kind::Empty) {
                return;
            }
            if on.connect_bytes && un.connect_bytes {
                return;
            }
            out.add(Change::TypeChanged, "");
            return;
        }
        if on.id != un.id {
            out.add(Change::IdChanged, "");
        }
        if on.title != un.title {
            out.add(Change::TitleChanged, "");
        }
        if on.description != un.description {
            out.add(Change::DescriptionChanged, "");
        }
        if on.default != un.default {
            out.add(Change::DefaultChanged, "");
        }
        match (&on.kind, &un.kind) {
            (
                Kind::String {
                    min_length: omin,
                    max_length: omax,
                    pattern: op,
                },
                Kind::String {
                    min_length: umin,
                    max_length: umax,
                    pattern: up,
                },
            ) => {
                limit(
                    out,
                    "maxLength",
                    *omax,
                    *umax,
                    [
                        Change::MaxLengthAdded,
                        Change::MaxLengthRemoved,
                        Change::MaxLengthIncreased,
                        Change::MaxLengthDecreased,
                    ],
                );
                limit(
                    out,
                    "minLength",
                    *omin,
                    *umin,
                    [
                        Change::MinLengthAdded,
                        Change::MinLengthRemoved,
                        Change::MinLengthIncreased,
                        Change::MinLengthDecreased,
                    ],
                );
                match (op, up) {
                    (None, Some(_)) => out.add(Change::PatternAdded, "pattern"),
                    (Some(_), None) => out.add(Change::PatternRemoved, "pattern"),
                    (Some(a), Some(b)) if a != b => out.add(Change::PatternChanged, "pattern"),
                    _ => {}
                }
            }
            (Kind::Number(a), Kind::Number(b)) => compare_numbers(a, b, out),
            (Kind::Const(a), Kind::Const(b)) if a != b => {
                out.add(Change::EnumArrayChanged, "const");
            }
            (Kind::Enum(a), Kind::Enum(b)) => compare_enums(a, b, out),
            (
                Kind::Combined {
                    criterion: oc,
                    subschemas: os,
                },
                Kind::Combined {
                    criterion: uc,
                    subschemas: us,
                },
            ) => self.compare_combined(o, u, (*oc, os), (*uc, us), out),
            (Kind::Not(a), Kind::Not(b)) => {
                // Reversed: the reader must exclude no more than the writer does.
                let mut sub = Diffs::default();
                self.compare(self.sub(u, *b), self.sub(o, *a), "", &mut sub);
                let change = if sub.is_compatible() {
                    Change::NotTypeNarrowed
                } else {
                    Change::NotTypeExtended
                };
                out.add(change, "not");
            }
            (Kind::Object(a), Kind::Object(b)) => self.compare_objects(o, u, a, b, out),
            (Kind::Array(a), Kind::Array(b)) => self.compare_arrays(o, u, a, b, out),
            _ => {}
        }
    }

    fn same_source(&self, a: At, b: At) -> bool {
        let model = self.models[usize::from(a.model)];
        let (sa, sb) = (&self.node(a).source, &self.node(b).source);
        if sa.part != sb.part {
            return false;
        }
        match (model.source_value(sa), model.source_value(sb)) {
            (Some(va), Some(vb)) => va == vb,
            _ => false,
        }
    }

    /// Subschemas without duplicates (equal JSON), first occurrences in order.
    fn distinct(&self, at: At, subschemas: &[NodeId]) -> Vec<At> {
        let mut out: Vec<At> = Vec::with_capacity(subschemas.len());
        for &s in subschemas {
            let s = self.sub(at, s);
            if !out.iter().any(|&seen| self.same_source(seen, s)) {
                out.push(s);
            }
        }
        out
    }

    fn compare_combined(
        &mut self,
        o: At,
        u: At,
        (oc, os): (Criterion, &[NodeId]),
        (uc, us): (Criterion, &[NodeId]),
        out: &mut Diffs,
    ) {
        if oc != uc {
            let (o_single, u_single) = (os.len() == 1, us.len() == 1);
            let extended = uc == Criterion::Any
                || (o_single && u_single)
                || (o_single && uc == Criterion::One)
                || (u_single && oc == Criterion::All);
            if !extended {
                out.add(Change::CombinedTypeChanged, "");
                return;
            }
            out.add(Change::CombinedTypeExtended, "");
        }
        let os = self.distinct(o, os);
        let us = self.distinct(u, us);
        if os.len() < us.len() {
            let change = if uc == Criterion::All {
                Change::ProductTypeExtended
            } else {
                Change::SumTypeExtended
            };
            out.add(change, "");
        } else if os.len() > us.len() {
            let change = if oc == Criterion::All {
                Change::ProductTypeNarrowed
            } else {
                Change::SumTypeNarrowed
            };
            out.add(change, "");
        }
        let mut edges = Vec::new();
        for (i, &a) in os.iter().enumerate() {
            let path = format!("{}/{i}", oc.keyword());
            for (j, &b) in us.iter().enumerate() {
                let mut sub = Diffs::default();
                self.compare(a, b, &path, &mut sub);
                if sub.is_compatible() {
                    edges.push((i, j, sub));
                }
            }
        }
        let pairs: Vec<(usize, usize)> = edges.iter().map(|(i, j, _)| (*i, *j)).collect();
        let matched = max_matching(os.len(), us.len(), &pairs);
        let count = matched.len();
        let mut edges: Vec<Option<Diffs>> = edges.into_iter().map(|(_, _, d)| Some(d)).collect();
        for e in matched {
            if let Some(d) = edges.get_mut(e).and_then(Option::take) {
                out.append(d);
            }
        }
        if count < os.len().min(us.len()) {
            out.add(Change::CombinedTypeSubschemasChanged, "");
        }
    }

    fn is_empty(&self, at: At) -> bool {
        matches!(self.node(at).kind, Kind::Empty)
    }

    fn is_false(&self, at: At) -> bool {
        matches!(self.node(at).kind, Kind::False)
    }

    fn pattern_matches(&mut self, pattern: &str, name: &str) -> bool {
        let validator = self.regexes.entry(pattern.to_string()).or_insert_with(|| {
            jsonschema::options()
                .build(&serde_json::json!({ "pattern": pattern }))
                .ok()
        });
        validator
            .as_ref()
            .is_some_and(|v| v.is_valid(&Value::String(name.to_string())))
    }

    /// Fully open: anything may appear besides the declared properties.
    fn object_open(&self, at: At, object: &ObjectKind) -> bool {
        object.permits_additional
            && object.additional.is_none()
            && object.pattern_properties.is_empty()
            && object
                .unevaluated
                .is_none_or(|n| self.is_empty(self.sub(at, n)))
    }

    /// The schema an undeclared property `name` must match in a partially open model.
    fn object_partial(&mut self, at: At, object: &ObjectKind, name: &str) -> Option<At> {
        for (pattern, &schema) in &object.pattern_properties {
            if self.pattern_matches(pattern, name) {
                return Some(self.sub(at, schema));
            }
        }
        if let Some(additional) = object.additional {
            return Some(self.sub(at, additional));
        }
        if object.permits_additional {
            if let Some(u) = object.unevaluated.map(|n| self.sub(at, n)) {
                if !self.is_false(u) && !self.is_empty(u) {
                    return Some(u);
                }
            }
        }
        None
    }

    fn has_default(&self, at: At) -> bool {
        self.node(at).default.is_some()
    }

    fn compare_objects(&mut self, o: At, u: At, a: &ObjectKind, b: &ObjectKind, out: &mut Diffs) {
        for name in a.properties.keys() {
            let Some(&uid) = b.properties.get(name) else {
                continue;
            };
            let path = format!("required/{}", escape_token(name));
            match (a.required.contains(name), b.required.contains(name)) {
                (true, false) => out.add(Change::RequiredAttributeRemoved, &path),
                (false, true) if self.has_default(self.sub(u, uid)) => {
                    out.add(Change::RequiredAttributeWithDefaultAdded, &path);
                }
                (false, true) => out.add(Change::RequiredAttributeAdded, &path),
                _ => {}
            }
        }
        let names: BTreeSet<&String> = a.properties.keys().chain(b.properties.keys()).collect();
        for name in names {
            let path = format!("properties/{}", escape_token(name));
            let op = a.properties.get(name).map(|&id| self.sub(o, id));
            let up = b.properties.get(name).map(|&id| self.sub(u, id));
            match (op, up) {
                (Some(op), None) => {
                    if self.object_open(u, b) {
                        out.add(Change::PropertyRemovedFromOpenContentModel, &path);
                    } else if let Some(partial) = self.object_partial(u, b, name) {
                        let mut sub = Diffs::default();
                        self.compare(op, partial, &path, &mut sub);
                        let change = if sub.is_compatible() {
                            Change::PropertyRemovedIsCoveredByPartiallyOpenContentModel
                        } else {
                            Change::PropertyRemovedNotCoveredByPartiallyOpenContentModel
                        };
                        out.append(sub);
                        out.add(change, &path);
                    } else if self.is_false(op) {
                        out.add(
                            Change::PropertyWithFalseRemovedFromClosedContentModel,
                            &path,
                        );
                    } else {
                        out.add(Change::PropertyRemovedFromClosedContentModel, &path);
                    }
                }
                (None, Some(up)) => {
                    let required = b.required.contains(name);
                    if self.object_open(o, a) {
                        let change = if self.is_empty(up) {
                            Change::PropertyWithEmptySchemaAddedToOpenContentModel
                        } else if required && self.has_default(up) {
                            Change::RequiredPropertyWithDefaultAddedToOpenContentModel
                        } else if required {
                            Change::RequiredPropertyAddedToOpenContentModel
                        } else {
                            Change::OptionalPropertyAddedToOpenContentModel
                        };
                        out.add(change, &path);
                    } else {
                        if let Some(partial) = self.object_partial(o, a, name) {
                            let mut sub = Diffs::default();
                            self.compare(partial, up, &path, &mut sub);
                            let change = if sub.is_compatible() {
                                Change::PropertyAddedIsCoveredByPartiallyOpenContentModel
                            } else {
                                Change::PropertyAddedNotCoveredByPartiallyOpenContentModel
                            };
                            out.append(sub);
                            out.add(change, &path);
                        }
                        let change = if required && self.has_default(up) {
                            Change::RequiredPropertyWithDefaultAddedToUnopenContentModel
                        } else if required {
                            Change::RequiredPropertyAddedToUnopenContentModel
                        } else {
                            Change::OptionalPropertyAddedToUnopenContentModel
                        };
                        out.add(change, &path);
                    }
                }
                (Some(op), Some(up)) => self.compare(op, up, &path, out),
                (None, None) => {}
            }
        }
        let names: BTreeSet<&String> = a
            .property_dependencies
            .keys()
            .chain(b.property_dependencies.keys())
            .collect();
        for name in names {
            let path = format!("dependencies/{}", escape_token(name));
            match (
                a.property_dependencies.get(name),
                b.property_dependencies.get(name),
            ) {
                (_, None) => out.add(Change::DependencyArrayRemoved, &path),
                (None, Some(_)) => out.add(Change::DependencyArrayAdded, &path),
                (Some(x), Some(y)) if x != y => {
                    let change = if y.is_superset(x) {
                        Change::DependencyArrayExtended
                    } else if x.is_superset(y) {
                        Change::DependencyArrayNarrowed
                    } else {
                        Change::DependencyArrayChanged
                    };
                    out.add(change, &path);
                }
                _ => {}
            }
        }
        let names: BTreeSet<&String> = a
            .schema_dependencies
            .keys()
            .chain(b.schema_dependencies.keys())
            .collect();
        for name in names {
            let path = format!("dependencies/{}", escape_token(name));
            match (
                a.schema_dependencies.get(name),
                b.schema_dependencies.get(name),
            ) {
                (_, None) => out.add(Change::DependencySchemaRemoved, &path),
                (None, Some(_)) => out.add(Change::DependencySchemaAdded, &path),
                (Some(&x), Some(&y)) => self.compare(self.sub(o, x), self.sub(u, y), &path, out),
            }
        }
        self.compare_additional(
            o,
            u,
            (a.permits_additional, b.permits_additional),
            (a.additional, b.additional),
            "additionalProperties",
            [
                Change::AdditionalPropertiesAdded,
                Change::AdditionalPropertiesRemoved,
                Change::AdditionalPropertiesExtended,
                Change::AdditionalPropertiesNarrowed,
            ],
            out,
        );
        self.compare_unevaluated(
            o,
            u,
            (a.unevaluated, b.unevaluated),
            "unevaluatedProperties",
            [
                Change::UnevaluatedPropertiesAdded,
                Change::UnevaluatedPropertiesRemoved,
                Change::UnevaluatedPropertiesExtended,
                Change::UnevaluatedPropertiesNarrowed,
            ],
            out,
        );
        limit(
            out,
            "maxProperties",
            a.max_properties,
            b.max_properties,
            [
                Change::MaxPropertiesAdded,
                Change::MaxPropertiesRemoved,
                Change::MaxPropertiesIncreased,
                Change::MaxPropertiesDecreased,
            ],
        );
        limit(
            out,
            "minProperties",
            a.min_properties,
            b.min_properties,
            [
                Change::MinPropertiesAdded,
                Change::MinPropertiesRemoved,
                Change::MinPropertiesIncreased,
                Change::MinPropertiesDecreased,
            ],
        );
    }

    /// `changes`: added (now allows all), removed (now false), extended, narrowed.
    /// `additionalProperties` / `additionalItems`: allowed or not, then their subschemas.
    #[allow(clippy::too_many_arguments)]
    fn compare_additional(
        &mut self,
        o: At,
        u: At,
        (a_permits, b_permits): (bool, bool),
        (a, b): (Option<NodeId>, Option<NodeId>),
        path: &str,
        [added, removed, extended, narrowed]: [Change; 4],
        out: &mut Diffs,
    ) {
        if a_permits != b_permits {
            out.add(if b_permits { added } else { removed }, path);
            return;
        }
        match (a, b) {
            (None, Some(_)) => out.add(narrowed, path),
            (Some(_), None) => out.add(extended, path),
            (Some(x), Some(y)) => self.compare(self.sub(o, x), self.sub(u, y), path, out),
            (None, None) => {}
        }
    }

    fn compare_unevaluated(
        &mut self,
        o: At,
        u: At,
        (a, b): (Option<NodeId>, Option<NodeId>),
        path: &str,
        [added, removed, extended, narrowed]: [Change; 4],
        out: &mut Diffs,
    ) {
        let a = a.map(|id| self.sub(o, id));
        let b = b.map(|id| self.sub(u, id));
        match (a, b) {
            (None, None) => {}
            (None, Some(b)) => out.add(if self.is_false(b) { removed } else { narrowed }, path),
            (Some(a), None) => out.add(if self.is_false(a) { added } else { extended }, path),
            (Some(a), Some(b)) => {
                if self.is_false(a) && !self.is_false(b) {
                    out.add(added, path);
                } else if !self.is_false(a) && self.is_false(b) {
                    out.add(removed, path);
                } else if self.is_empty(a) && !self.is_empty(b) {
                    out.add(narrowed, path);
                } else if !self.is_empty(a) && self.is_empty(b) {
                    out.add(extended, path);
                } else {
                    self.compare(a, b, path, out);
                }
            }
        }
    }

    fn array_open(&self, at: At, array: &ArrayKind) -> bool {
        array.permits_additional
            && array.additional.is_none()
            && array
                .unevaluated
                .is_none_or(|n| self.is_empty(self.sub(at, n)))
    }

    fn array_partial(&self, at: At, array: &ArrayKind) -> Option<At> {
        if let Some(additional) = array.additional {
            return Some(self.sub(at, additional));
        }
        if array.permits_additional {
            if let Some(u) = array.unevaluated.map(|n| self.sub(at, n)) {
                if !self.is_false(u) && !self.is_empty(u) {
                    return Some(u);
                }
            }
        }
        None
    }

    fn compare_arrays(&mut self, o: At, u: At, a: &ArrayKind, b: &ArrayKind, out: &mut Diffs) {
        let all_a = a.all_items.map(|id| self.sub(o, id));
        let all_b = b.all_items.map(|id| self.sub(u, id));
        self.compare_opt(all_a, all_b, "items", out);
        for i in 0..a.tuple.len().max(b.tuple.len()) {
            let path = format!("items/{i}");
            let oi = a.tuple.get(i).map(|&id| self.sub(o, id));
            let ui = b.tuple.get(i).map(|&id| self.sub(u, id));
            match (oi, ui) {
                (Some(oi), Some(ui)) => self.compare(oi, ui, &path, out),
                (Some(oi), None) => {
                    if self.array_open(u, b) {
                        out.add(Change::ItemRemovedFromOpenContentModel, &path);
                    } else if let Some(partial) = self.array_partial(u, b) {
                        let mut sub = Diffs::default();
                        self.compare(oi, partial, &path, &mut sub);
                        let change = if sub.is_compatible() {
                            Change::ItemRemovedIsCoveredByPartiallyOpenContentModel
                        } else {
                            Change::ItemRemovedNotCoveredByPartiallyOpenContentModel
                        };
                        out.append(sub);
                        out.add(change, &path);
                    } else if self.is_false(oi) {
                        out.add(Change::ItemWithFalseRemovedFromClosedContentModel, &path);
                    } else {
                        out.add(Change::ItemRemovedFromClosedContentModel, &path);
                    }
                }
                (None, Some(ui)) => {
                    if self.array_open(o, a) {
                        let change = if self.is_empty(ui) {
                            Change::ItemWithEmptySchemaAddedToOpenContentModel
                        } else {
                            Change::ItemAddedToOpenContentModel
                        };
                        out.add(change, &path);
                    } else if let Some(partial) = self.array_partial(o, a) {
                        let mut sub = Diffs::default();
                        self.compare(partial, ui, &path, &mut sub);
                        let change = if sub.is_compatible() {
                            Change::ItemAddedIsCoveredByPartiallyOpenContentModel
                        } else {
                            Change::ItemAddedNotCoveredByPartiallyOpenContentModel
                        };
                        out.append(sub);
                        out.add(change, &path);
                    } else {
                        out.add(Change::ItemAddedToClosedContentModel, &path);
                    }
                }
                (None, None) => {}
            }
        }
        self.compare_additional(
            o,
            u,
            (a.permits_additional, b.permits_additional),
            (a.additional, b.additional),
            "additionalItems",
            [
                Change::AdditionalItemsAdded,
                Change::AdditionalItemsRemoved,
                Change::AdditionalItemsExtended,
                Change::AdditionalItemsNarrowed,
            ],
            out,
        );
        self.compare_unevaluated(
            o,
            u,
            (a.unevaluated, b.unevaluated),
            "unevaluatedItems",
            [
                Change::UnevaluatedItemsAdded,
                Change::UnevaluatedItemsRemoved,
                Change::UnevaluatedItemsExtended,
                Change::UnevaluatedItemsNarrowed,
            ],
            out,
        );
        limit(
            out,
            "maxItems",
            a.max_items,
            b.max_items,
            [
                Change::MaxItemsAdded,
                Change::MaxItemsRemoved,
                Change::MaxItemsIncreased,
                Change::MaxItemsDecreased,
            ],
        );
        limit(
            out,
            "minItems",
            a.min_items,
            b.min_items,
            [
                Change::MinItemsAdded,
                Change::MinItemsRemoved,
                Change::MinItemsIncreased,
                Change::MinItemsDecreased,
            ],
        );
        match (a.unique, b.unique) {
            (true, false) => out.add(Change::UniqueItemsRemoved, "uniqueItems"),
            (false, true) => out.add(Change::UniqueItemsAdded, "uniqueItems"),
            _ => {}
        }
        limit(
            out,
            "maxContains",
            a.max_contains,
            b.max_contains,
            [
                Change::MaxContainsAdded,
                Change::MaxContainsRemoved,
                Change::MaxContainsIncreased,
                Change::MaxContainsDecreased,
            ],
        );
        limit(
            out,
            "minContains",
            a.min_contains,
            b.min_contains,
            [
                Change::MinContainsAdded,
                Change::MinContainsRemoved,
                Change::MinContainsIncreased,
                Change::MinContainsDecreased,
            ],
        );
    }
}

/// Which of Confluent's schema classes a kind is (all combined schemas are one class).
fn class(kind: &Kind) -> u8 {
    match kind {
        Kind::Empty => 0,
        Kind::False => 1,
        Kind::Ref(_) => 2,
        Kind::String { .. } => 3,
        Kind::Number(_) => 4,
        Kind::Boolean => 5,
        Kind::Null => 6,
        Kind::Enum(_) => 7,
        Kind::Const(_) => 8,
        Kind::Combined { .. } => 9,
        Kind::Not(_) => 10,
        Kind::Object(_) => 11,
        Kind::Array(_) => 12,
        Kind::Conditional => 13,
    }
}

/// A numeric keyword's change: `[added, removed, increased, decreased]`.
fn limit(out: &mut Diffs, path: &str, a: Option<f64>, b: Option<f64>, changes: [Change; 4]) {
    let [added, removed, increased, decreased] = changes;
    match (a, b) {
        (None, Some(_)) => out.add(added, path),
        (Some(_), None) => out.add(removed, path),
        (Some(x), Some(y)) if x < y => out.add(increased, path),
        (Some(x), Some(y)) if x > y => out.add(decreased, path),
        _ => {}
    }
}

fn compare_numbers(a: &NumberKind, b: &NumberKind, out: &mut Diffs) {
    limit(
        out,
        "maximum",
        a.maximum,
        b.maximum,
        [
            Change::MaximumAdded,
            Change::MaximumRemoved,
            Change::MaximumIncreased,
            Change::MaximumDecreased,
        ],
    );
    limit(
        out,
        "minimum",
        a.minimum,
        b.minimum,
        [
            Change::MinimumAdded,
            Change::MinimumRemoved,
            Change::MinimumIncreased,
            Change::MinimumDecreased,
        ],
    );
    limit(
        out,
        "exclusiveMaximum",
        a.exclusive_maximum,
        b.exclusive_maximum,
        [
            Change::ExclusiveMaximumAdded,
            Change::ExclusiveMaximumRemoved,
            Change::ExclusiveMaximumIncreased,
            Change::ExclusiveMaximumDecreased,
        ],
    );
    limit(
        out,
        "exclusiveMinimum",
        a.exclusive_minimum,
        b.exclusive_minimum,
        [
            Change::ExclusiveMinimumAdded,
            Change::ExclusiveMinimumRemoved,
            Change::ExclusiveMinimumIncreased,
            Change::ExclusiveMinimumDecreased,
        ],
    );
    match (a.multiple_of, b.multiple_of) {
        (None, None) => {}
        (None, Some(_)) => out.add(Change::MultipleOfAdded, "multipleOf"),
        (Some(_), None) => out.add(Change::MultipleOfRemoved, "multipleOf"),
        (Some(x), Some(y)) if x.same(y) => {}
        (Some(x), Some(y)) => {
            let change = if !x.is_zero() && y.is_multiple_of(x) {
                Change::MultipleOfExpanded
            } else if !y.is_zero() && x.is_multiple_of(y) {
                Change::MultipleOfReduced
            } else {
                Change::MultipleOfChanged
            };
            out.add(change, "multipleOf");
        }
    }
    match (a.integer, b.integer) {
        (true, false) => out.add(Change::TypeExtended, ""),
        (false, true) => out.add(Change::TypeNarrowed, ""),
        _ => {}
    }
}

fn compare_enums(a: &[Value], b: &[Value], out: &mut Diffs) {
    let a: HashSet<String> = a.iter().map(Value::to_string).collect();
    let b: HashSet<String> = b.iter().map(Value::to_string).collect();
    if a == b {
        return;
    }
    let change = if b.is_superset(&a) {
        Change::EnumArrayExtended
    } else if a.is_superset(&b) {
        Change::EnumArrayNarrowed
    } else {
        Change::EnumArrayChanged
    };
    out.add(change, "enum");
}

/// A maximum matching of the bipartite graph `edges` (left, right); returns edge indices.
fn max_matching(left: usize, right: usize, edges: &[(usize, usize)]) -> Vec<usize> {
    let mut adjacent: Vec<Vec<(usize, usize)>> = vec![Vec::new(); left];
    for (e, &(l, r)) in edges.iter().enumerate() {
        if let Some(list) = adjacent.get_mut(l) {
            list.push((r, e));
        }
    }
    let mut match_left: Vec<Option<(usize, usize)>> = vec![None; left];
    let mut match_right: Vec<Option<usize>> = vec![None; right];
    for start in 0..left {
        // Breadth-first search for an augmenting path (no recursion: sizes come from input).
        let mut reached_from: Vec<Option<(usize, usize)>> = vec![None; right];
        let mut queue = VecDeque::from([start]);
        let mut free = None;
        'search: while let Some(l) = queue.pop_front() {
            for &(r, e) in adjacent.get(l).map_or(&[][..], Vec::as_slice) {
                if r >= right || reached_from[r].is_some() {
                    continue;
                }
                reached_from[r] = Some((l, e));
                match match_right[r] {
                    None => {
                        free = Some(r);
                        break 'search;
                    }
                    Some(next) => queue.push_back(next),
                }
            }
        }
        let mut r = match free {
            Some(r) => r,
            None => continue,
        };
        while let Some((l, e)) = reached_from[r] {
            let previous = match_left[l];
            match_left[l] = Some((r, e));
            match_right[r] = Some(l);
            match previous {
                Some((prev_r, _)) if l != start => r = prev_r,
                _ => break,
            }
        }
    }
    match_left.into_iter().flatten().map(|(_, e)| e).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> JsonSchema {
        match JsonSchema::parse(text, &[]) {
            Ok(s) => s,
            Err(e) => panic!("{text} should parse: {e}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match JsonSchema::parse(text, &[]) {
            Ok(_) => panic!("{text} should not parse"),
            Err(e) => e.0,
        }
    }

    fn dep(name: &str, schema: &str) -> Dependency {
        Dependency {
            name: name.to_string(),
            schema: schema.to_string(),
        }
    }

    /// Names and paths of every difference (compatible ones too) of `original` -> `update`.
    fn changes(original: &JsonSchema, update: &JsonSchema) -> Vec<String> {
        let outcome = diff(&original.model, &update.model);
        let mut all: Vec<String> = outcome
            .diffs
            .bad
            .iter()
            .chain(&outcome.diffs.ok)
            .map(|d| format!("{} #/{}", d.change.name(), d.path))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn rejects_text_that_is_not_a_schema_document() {
        assert!(parse_err("").contains("not valid JSON"));
        assert!(parse_err("{\"type\": \"string\"").contains("not valid JSON"));
        assert!(parse_err("{} {}").contains("not valid JSON"));
        assert!(parse_err("42").contains("must be a JSON object or a boolean, not a number"));
        assert!(parse_err("\"string\"").contains("not a string"));
        assert!(parse_err("[{}]").contains("not an array"));
        assert!(parse_err("null").contains("not null"));
        parse("true");
        parse("false");
        parse("{}");
    }

    #[test]
    fn rejects_schemas_invalid_for_their_draft() {
        let e = parse_err(r#"{"type": "strin"}"#);
        assert!(e.contains("draft-07") && e.contains("#/type"), "{e}");
        let e = parse_err(r#"{"properties": {"a": {"minLength": -1}}}"#);
        assert!(e.contains("#/properties/a/minLength"), "{e}");
        // Draft-04 wants boolean exclusiveMaximum, draft-06 on a number.
        let d4 = r#"{"$schema": "http://json-schema.org/draft-04/schema#", "maximum": 3, "exclusiveMaximum": true}"#;
        parse(d4);
        let d4_bad =
            r#"{"$schema": "http://json-schema.org/draft-04/schema#", "exclusiveMaximum": 3}"#;
        assert!(parse_err(d4_bad).contains("draft-04"));
        let d6_bad =
            r#"{"$schema": "http://json-schema.org/draft-06/schema#", "exclusiveMaximum": true}"#;
        assert!(parse_err(d6_bad).contains("draft-06"));
        // Draft-04 forbids an empty `required`.
        let d4_required =
            r#"{"$schema": "http://json-schema.org/draft-04/schema#", "required": []}"#;
        assert!(parse_err(d4_required).contains("draft-04"));
        parse(r#"{"$schema": "http://json-schema.org/draft-07/schema#", "required": []}"#);
        let d7_bad = r#"{"$schema": "http://json-schema.org/draft-07/schema#", "required": "a"}"#;
        assert!(parse_err(d7_bad).contains("#/required"));
        let d2019 =
            r#"{"$schema": "https://json-schema.org/draft/2019-09/schema", "minContains": "x"}"#;
        assert!(parse_err(d2019).contains("draft 2019-09"));
        let d2020 =
            r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "prefixItems": {}}"#;
        let e = parse_err(d2020);
        assert!(
            e.contains("draft 2020-12") && e.contains("#/prefixItems"),
            "{e}"
        );
        parse(
            r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "prefixItems": [{}]}"#,
        );
    }

    #[test]
    fn rejects_invalid_regular_expressions() {
        let e = parse_err(r#"{"type": "string", "pattern": "(unclosed"}"#);
        assert!(e.contains("#/pattern") && e.contains("regex"), "{e}");
        let e = parse_err(r#"{"patternProperties": {"[a-": {}}}"#);
        assert!(
            e.contains("regex") || e.contains("regular expression"),
            "{e}"
        );
    }

    #[test]
    fn canonical_strips_whitespace_and_keeps_order_and_strings() {
        let text = "{\n  \"type\" : \"object\",\n  \"title\": \"a  b\\\" c\\\\\",\n  \"properties\": { \"z\": {}, \"a\": {\"enum\": [1, 2]} }\n}\n";
        let s = parse(text);
        assert_eq!(
            s.canonical(),
            r#"{"type":"object","title":"a  b\" c\\","properties":{"z":{},"a":{"enum":[1,2]}}}"#
        );
        assert_eq!(parse(" true ").canonical(), "true");
        assert_eq!(parse(&s.canonical()).canonical(), s.canonical());
    }

    #[test]
    fn normalized_ignores_key_order_and_set_order() {
        let a = parse(
            r#"{"type":"object","required":["b","a"],"properties":{"b":{"type":["null","string"]},"a":{"enum":["y","x"]}}}"#,
        );
        let b = parse(
            r#"{"properties":{"a":{"enum":["x","y"]},"b":{"type":["string","null"]}},"required":["a","b"],"type":"object"}"#,
        );
        assert_eq!(a.normalized(), b.normalized());
        assert_ne!(a.canonical(), b.canonical());
        // Order that matters stays: tuple items and data values.
        let c = parse(r#"{"items":[{"type":"string"},{"type":"number"}],"default":[2,1]}"#);
        let d = parse(r#"{"items":[{"type":"number"},{"type":"string"}],"default":[2,1]}"#);
        assert_ne!(c.normalized(), d.normalized());
        assert!(c.normalized().contains("[2,1]"));
        // A property named like a keyword is still a schema, not a set.
        let e = parse(r#"{"properties":{"required":{"enum":["b","a"]}}}"#);
        assert_eq!(
            e.normalized(),
            r#"{"properties":{"required":{"enum":["a","b"]}}}"#
        );
    }

    #[test]
    fn resolves_local_refs_in_every_draft() {
        parse(
            r##"{"definitions":{"a":{"type":"string"}},"properties":{"x":{"$ref":"#/definitions/a"}}}"##,
        );
        parse(
            r##"{"$schema":"https://json-schema.org/draft/2020-12/schema","$defs":{"a":{"type":"string"}},"properties":{"x":{"$ref":"#/$defs/a"}}}"##,
        );
        // Confluent also finds `#/$defs/X` under `definitions`.
        parse(
            r##"{"definitions":{"a":{"type":"string"}},"properties":{"x":{"$ref":"#/$defs/a"}}}"##,
        );
        parse(
            r##"{"$schema":"http://json-schema.org/draft-04/schema#","definitions":{"a":{"id":"#anchor","type":"string"}},"properties":{"x":{"$ref":"#anchor"}}}"##,
        );
        parse(
            r##"{"$schema":"https://json-schema.org/draft/2019-09/schema","$defs":{"a":{"$anchor":"here","type":"string"}},"properties":{"x":{"$ref":"#here"}}}"##,
        );
        parse(
            r##"{"definitions":{"a b":{"type":"string"}},"properties":{"x":{"$ref":"#/definitions/a%20b"}}}"##,
        );
        let e = parse_err(r##"{"properties":{"x":{"$ref":"#/definitions/missing"}}}"##);
        assert!(
            e.contains("#/definitions/missing") && e.contains("#/properties/x"),
            "{e}"
        );
        let e = parse_err(r#"{"properties":{"x":{"$ref":"other.json"}}}"#);
        assert!(e.contains("other.json"), "{e}");
        let e = parse_err(r#"{"$ref":"https://example.com/remote.json"}"#);
        assert!(e.contains("remote.json"), "{e}");
        let e = parse_err(r##"{"properties":{"x":{"$ref":"#/required"}},"required":["x"]}"##);
        assert!(e.contains("not a schema"), "{e}");
    }

    #[test]
    fn resolves_refs_to_dependencies() {
        let address = r#"{"type":"object","properties":{"street":{"type":"string"}},"definitions":{"zip":{"type":"string","maxLength":10}}}"#;
        let customer = r##"{"type":"object","properties":{"home":{"$ref":"address.json"},"zip":{"$ref":"address.json#/definitions/zip"}}}"##;
        let deps = [dep("address.json", address)];
        let old = JsonSchema::parse(customer, &deps).expect("parses with its reference");
        assert!(
            JsonSchema::parse(customer, &[]).is_err(),
            "the reference is needed"
        );
        // With an `$id`, names resolve against it.
        let with_id = r#"{"$id":"https://example.com/schemas/customer.json","properties":{"home":{"$ref":"address.json"}}}"#;
        JsonSchema::parse(with_id, &deps).expect("resolves against $id");
        let absolute = r#"{"properties":{"home":{"$ref":"https://example.com/address.json"}}}"#;
        JsonSchema::parse(
            absolute,
            &[dep("https://example.com/address.json", address)],
        )
        .expect("absolute names");
        // A referenced schema may use the next one.
        let street = r#"{"type":"string"}"#;
        let address2 = r#"{"properties":{"street":{"$ref":"street.json"}}}"#;
        JsonSchema::parse(
            r#"{"$ref":"address.json"}"#,
            &[dep("street.json", street), dep("address.json", address2)],
        )
        .expect("transitive references");
        // Changes inside the referenced schema count.
        let narrowed = r#"{"type":"object","properties":{"street":{"type":"string"}},"definitions":{"zip":{"type":"string","maxLength":5}}}"#;
        let new = JsonSchema::parse(customer, &[dep("address.json", narrowed)]).expect("parses");
        let problems = incompatibilities(&new, &old);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("MAX_LENGTH_DECREASED at #/properties/zip/maxLength"));
        assert!(incompatibilities(&old, &new).is_empty());
        let e = JsonSchema::parse(customer, &[dep("address.json", "{not json")]).unwrap_err();
        assert!(e.0.contains("referenced schema \"address.json\""), "{e}");
    }

    #[test]
    fn rejects_ref_cycles_without_a_schema() {
        let e = parse_err(r##"{"$ref":"#"}"##);
        assert!(e.contains("only leads to $refs"), "{e}");
        let e = parse_err(
            r##"{"definitions":{"a":{"$ref":"#/definitions/b"},"b":{"$ref":"#/definitions/a"}},"$ref":"#/definitions/a"}"##,
        );
        assert!(e.contains("only leads to $refs"), "{e}");
    }

    #[test]
    fn recursive_schemas_compare_and_terminate() {
        let tree = r##"{"definitions":{"node":{"type":"object","properties":{"value":{"type":"string"},"children":{"type":"array","items":{"$ref":"#/definitions/node"}}}}},"$ref":"#/definitions/node"}"##;
        let a = parse(tree);
        let b = parse(tree);
        assert!(incompatibilities(&a, &b).is_empty());
        let changed = tree.replace(
            r#""value":{"type":"string"}"#,
            r#""value":{"type":"number"}"#,
        );
        let c = parse(&changed);
        let problems = incompatibilities(&c, &a);
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("TYPE_CHANGED at #/properties/value")),
            "{problems:?}"
        );
        // Self-reference through the root.
        let list =
            r##"{"type":"object","properties":{"next":{"$ref":"#"},"v":{"type":"integer"}}}"##;
        let l1 = parse(list);
        let l2 = parse(&list.replace("integer", "number"));
        assert!(incompatibilities(&l2, &l1).is_empty());
        assert!(!incompatibilities(&l1, &l2).is_empty());
    }

    /// Mutually recursive unions, as in Confluent's regression test: a change deep in the
    /// cycle must still be found (the fixpoint), and the check must stay fast.
    #[test]
    fn recursive_unions_do_not_mask_incompatibilities() {
        let schema = |t0: &str, t1: &str| {
            let object = |id: &str, target: &str| {
                format!(
                    r##"{{"type":"object","properties":{{"id":{{"type":"{id}"}},"ref":{{"oneOf":[{{"$ref":"#/definitions/{target}"}}]}}}}}}"##
                )
            };
            format!(
                r##"{{"type":"object","definitions":{{"T0":{},"T1":{},"T2":{}}},"properties":{{"root":{{"oneOf":[{{"$ref":"#/definitions/T0"}},{{"$ref":"#/definitions/T1"}}]}}}}}}"##,
                object(t0, "T2"),
                object(t1, "T2"),
                object("integer", "T0")
            )
        };
        let original = parse(&schema("integer", "boolean"));
        let update = parse(&schema("boolean", "number"));
        assert!(!incompatibilities(&update, &original).is_empty());

        let names = ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L"];
        let union = names
            .iter()
            .map(|n| format!(r##"{{"$ref":"#/definitions/{n}"}}"##))
            .collect::<Vec<_>>()
            .join(",");
        let defs = names
            .iter()
            .map(|n| {
                format!(
                    r#""{n}":{{"type":"object","properties":{{"id":{{"type":"string"}},"u":{{"oneOf":[{union}]}},"r":{{"oneOf":[{union}]}}}}}}"#
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        let trade = format!(
            r#"{{"type":"object","definitions":{{{defs}}},"properties":{{"product":{{"oneOf":[{union}]}}}}}}"#
        );
        let a = parse(&trade);
        let b = parse(&trade);
        let started = std::time::Instant::now();
        let problems = incompatibilities(&a, &b);
        assert!(problems.is_empty(), "{problems:?}");
        let changed = trade.replacen(r#""id":{"type":"string"}"#, r#""id":{"type":"number"}"#, 1);
        let c = parse(&changed);
        assert!(!incompatibilities(&c, &a).is_empty());
        assert!(
            started.elapsed().as_secs() < 20,
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn deep_nesting_is_refused_or_handled_without_overflow() {
        // Beyond serde_json's nesting limit: a clean error.
        let deep = format!(
            "{}{}",
            r#"{"not":"#.repeat(200),
            "{}".to_string() + &"}".repeat(200)
        );
        assert!(JsonSchema::parse(&deep, &[]).is_err());
        // Just within it: parses and compares (run on a small stack like a server thread's).
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                for depth in [10, 40, 60] {
                    let nested = |leaf: &str| {
                        format!(
                            "{}{}{}",
                            r#"{"properties":{"a":"#.repeat(depth),
                            leaf,
                            "}}".repeat(depth)
                        )
                    };
                    let a =
                        JsonSchema::parse(&nested(r#"{"type":"string"}"#), &[]).expect("parses");
                    let b =
                        JsonSchema::parse(&nested(r#"{"type":"number"}"#), &[]).expect("parses");
                    assert!(!incompatibilities(&a, &b).is_empty());
                    assert!(incompatibilities(&a, &a.clone()).is_empty());
                }
                let nots = format!("{}{{}}{}", r#"{"not":"#.repeat(126), "}".repeat(126));
                let n = JsonSchema::parse(&nots, &[]).expect("parses");
                assert!(incompatibilities(&n, &n.clone()).is_empty());
            })
            .expect("thread");
        assert!(handle.join().is_ok());
    }

    #[test]
    fn long_ref_chains_are_followed_or_bounded() {
        let chain = |n: usize, leaf: &str| {
            let mut defs = Vec::new();
            for i in 0..n {
                let next = if i + 1 < n {
                    format!(r##"{{"$ref":"#/definitions/d{}"}}"##, i + 1)
                } else {
                    format!(r#"{{"type":"{leaf}"}}"#)
                };
                defs.push(format!(r#""d{i}":{{"properties":{{"x":{next}}}}}"#));
            }
            let text = format!(
                r##"{{"definitions":{{{}}},"$ref":"#/definitions/d0"}}"##,
                defs.join(",")
            );
            JsonSchema::parse(&text, &[]).expect("parses")
        };
        let problems = incompatibilities(&chain(400, "number"), &chain(400, "string"));
        let path = "#/".to_string() + &"properties/x/".repeat(400);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with(&format!("TYPE_CHANGED at {}:", &path[..path.len() - 1])));
        // Deeper than the comparison goes: reported as too complex, not a crash.
        let problems = incompatibilities(&chain(12_000, "number"), &chain(12_000, "string"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("too large or too deeply nested")),
            "{problems:?}"
        );
    }

    /// Mutations of valid schemas (truncations, byte flips, splices) must only ever give
    /// `Ok` or `Err`, and whatever parses must compare against the original.
    #[test]
    fn malformed_and_mutated_inputs_never_panic() {
        let seeds = [
            r##"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"a":{"type":["string","null"],"maxLength":3},"b":{"$ref":"#/definitions/b"}},"required":["a"],"additionalProperties":false,"definitions":{"b":{"oneOf":[{"type":"integer"},{"enum":[1,"x",null]}]}}}"##,
            r##"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"array","prefixItems":[{"const":1},{"$ref":"#/$defs/n"}],"items":false,"$defs":{"n":{"type":"number","multipleOf":0.5,"exclusiveMinimum":0}}}"##,
            r#"{"$schema":"http://json-schema.org/draft-04/schema#","dependencies":{"a":["b"],"c":{"not":{"required":["d"]}}},"patternProperties":{"^x-":{"type":"string","pattern":"^[a-z]+$"}}}"#,
            r##"{"anyOf":[{"$ref":"#"},{"type":"null"}],"if":{"minimum":1},"then":{"maximum":3}}"##,
        ];
        let originals: Vec<JsonSchema> = seeds.iter().map(|s| parse(s)).collect();
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |bound: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            usize::try_from(rng % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
        };
        let fragments = [
            "{",
            "}",
            "[",
            "]",
            "\"",
            ",",
            ":",
            "null",
            "true",
            "-1",
            "1e999",
            "\"$ref\":\"#\"",
            "\"$ref\":\"#/definitions/b\"",
            "\"type\":\"object\"",
            "\\u0000",
            "\"",
            "{\"$ref\":\"#\"}",
        ];
        let mut parsed = 0;
        for round in 0..3000 {
            let seed = seeds[round % seeds.len()];
            let mut bytes = seed.as_bytes().to_vec();
            for _ in 0..1 + next(3) {
                match next(4) {
                    0 => bytes.truncate(next(bytes.len() + 1)),
                    1 if !bytes.is_empty() => {
                        let i = next(bytes.len());
                        bytes[i] = b" {}[]\":,#/-0a"[next(13)];
                    }
                    2 => {
                        let at = next(bytes.len() + 1);
                        let f = fragments[next(fragments.len())].as_bytes();
                        bytes.splice(at..at, f.iter().copied());
                    }
                    _ if !bytes.is_empty() => {
                        let at = next(bytes.len());
                        let len = next(bytes.len() - at + 1);
                        bytes.drain(at..at + len);
                    }
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Ok(s) = JsonSchema::parse(&text, &[]) {
                parsed += 1;
                let _ = s.canonical();
                let _ = s.normalized();
                let original = &originals[round % originals.len()];
                let _ = incompatibilities(&s, original);
                let _ = incompatibilities(original, &s);
            }
        }
        assert!(parsed > 0, "some mutations should still be schemas");
    }

    #[test]
    fn difference_paths_and_names_follow_confluent() {
        let o = parse(r#"{"properties":{"foo":{"type":"string"}}}"#);
        let u = parse(r#"{"properties":{"bar":{"type":"string"}}}"#);
        assert_eq!(
            changes(&o, &u),
            [
                "OPTIONAL_PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL #/properties/bar",
                "PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL #/properties/foo",
            ]
        );
        let o = parse(r#"{"allOf":[{"type":"string"},{"enum":["red"]}]}"#);
        let u = parse(r#"{"allOf":[{"enum":["red","blue"]},{"type":"string"}]}"#);
        assert_eq!(changes(&o, &u), ["ENUM_ARRAY_EXTENDED #/allOf/1/enum"]);
        let o = parse(r#"{"type":"string","maxLength":3}"#);
        let u = parse(r#"{"oneOf":[{"type":"number"},{"type":"string"}]}"#);
        assert_eq!(
            changes(&o, &u),
            ["MAX_LENGTH_REMOVED #/maxLength", "SUM_TYPE_EXTENDED #/"]
        );
        let o = parse(r#"{"type":"number","multipleOf":0.5}"#);
        let u = parse(r#"{"type":"number","multipleOf":10}"#);
        assert_eq!(changes(&o, &u), ["MULTIPLE_OF_EXPANDED #/multipleOf"]);
        let u = parse(r#"{"type":"number","multipleOf":0.50}"#);
        assert!(changes(&o, &u).is_empty());
        let o = parse(r#"{"type":"number","multipleOf":0.3}"#);
        let u = parse(r#"{"type":"number","multipleOf":0.1}"#);
        assert_eq!(changes(&o, &u), ["MULTIPLE_OF_REDUCED #/multipleOf"]);
    }

    #[test]
    fn messages_name_the_difference_and_its_path() {
        let old = parse(r#"{"type":"object","properties":{"email":{"type":"string"}}}"#);
        let new = parse(
            r#"{"type":"object","properties":{"email":{"type":"string"}},"required":["email"]}"#,
        );
        let problems = incompatibilities(&new, &old);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("REQUIRED_ATTRIBUTE_ADDED at #/required/email: "));
        let old = parse(r#"{"properties":{"price":{"type":"number"}}}"#);
        let new = parse(r#"{"properties":{"price":{"type":"integer"}}}"#);
        let problems = incompatibilities(&new, &old);
        assert!(
            problems[0].starts_with("TYPE_NARROWED at #/properties/price: "),
            "{problems:?}"
        );
        assert!(incompatibilities(&old, &new).is_empty());
    }

    #[test]
    fn connect_decimals_may_change_between_string_and_number() {
        let a = parse(
            r#"{"type":"string","connect.type":"bytes","title":"org.apache.kafka.connect.data.Decimal"}"#,
        );
        let b = parse(
            r#"{"type":"number","connect.type":"bytes","title":"org.apache.kafka.connect.data.Decimal"}"#,
        );
        assert!(incompatibilities(&b, &a).is_empty());
    }
}
