//! Avro schemas: parsing with references, canonical form, and compatibility by the Avro
//! specification's schema-resolution rules.
//!
//! The registry has to agree with Confluent's, which runs the Java Avro library, so this
//! module follows Java Avro 1.11 (`org.apache.avro.Schema` and `SchemaCompatibility`) rather
//! than the apache-avro crate: that crate panics on some invalid names and aliases, resolves
//! names without Java's fall-back to the null namespace (so a referenced type without a
//! namespace cannot be used from a schema that has one), and folds some logical types into
//! variants of their own. Text from the network must not panic the registry, so parsing, the
//! stored text and the check all work on the small model below.
//!
//! - [`AvroSchema::parse`] follows Java's parser: names and namespaces, types usable only
//!   after their definition, types of referenced schemas usable by name, reserved attributes,
//!   and field defaults validated against their type as Confluent does for new schemas.
//! - [`AvroSchema::canonical`] is the text Confluent stores and returns: the schema written
//!   back the way Java's `Schema.toString` writes it (so `{ "type" : "string" }` becomes
//!   `"string"`), with referenced types written by name.
//! - [`incompatibilities`] applies `SchemaCompatibility`'s rules, which Confluent's checker
//!   calls, with messages that name the kind of problem and its path in the reader's schema.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fmt::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::schema::{Dependency, InvalidSchema};

/// A parsed Avro schema with the types of the schemas it references.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    root: Type,
    /// Every named type, those of the referenced schemas first.
    types: Vec<NamedType>,
    canonical: String,
    normalized: String,
}

impl AvroSchema {
    /// Parses `text` with the schemas it references (`dependencies`, each before the schemas
    /// that use it), whose named types it may use by name.
    pub fn parse(text: &str, dependencies: &[Dependency]) -> Result<AvroSchema, InvalidSchema> {
        let mut parser = Parser::default();
        let mut seen = HashSet::new();
        for dependency in dependencies {
            // A schema reachable along two paths may be passed twice; Java would call the
            // second a redefinition.
            if !seen.insert((dependency.name.as_str(), dependency.schema.as_str())) {
                continue;
            }
            parse_json(&dependency.schema)
                .and_then(|json| parser.parse_document(&json))
                .map_err(|e| {
                    InvalidSchema(format!(
                        "referenced schema {:?} is invalid: {e}",
                        dependency.name
                    ))
                })?;
        }
        let referenced = parser.types.len();
        let root = parse_json(text)
            .and_then(|json| parser.parse_document(&json))
            .map_err(InvalidSchema)?;
        let types = parser.types;
        let canonical = Writer::write(&types, referenced, &root, false);
        let normalized = Writer::write(&types, referenced, &root, true);
        Ok(AvroSchema {
            root,
            types,
            canonical,
            normalized,
        })
    }

    /// The schema as Java's `Schema.toString` writes it, which is what Confluent stores,
    /// returns and compares: keys in Avro's order (`type`, `name`, `namespace`, `doc`, then
    /// `fields`/`symbols`/`size`/`items`/`values`, then other attributes as given, then
    /// `aliases`), namespaces only where they change, a primitive without attributes as its
    /// bare name, each named type defined at its first use and named after that, and field
    /// defaults and attributes as given.
    pub fn canonical(&self) -> String {
        self.canonical.clone()
    }

    /// The canonical text of a normalized copy, for `?normalize=true`. The canonical form
    /// already removes whitespace, key order, namespaces written as attributes or in full
    /// names, `{"type":"string"}` for `"string"` and an explicit ascending `order`; this also
    /// sorts the other attributes and the aliases, drops a decimal's `"scale":0`, writes
    /// defaults of `float`/`double` as floating-point numbers (`1` as `1.0`) and sorts the
    /// keys of object defaults. It keeps everything else, doc included as Confluent does, and
    /// never reorders fields, symbols or union branches, which change meaning.
    pub fn normalized(&self) -> String {
        self.normalized.clone()
    }
}

// ---------------------------------------------------------------------------------------
// JSON that keeps the order of keys

/// A JSON value that keeps the order of object keys (serde_json's `Value` is built here
/// without `preserve_order` and sorts them), since attributes are written back as given.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    fn to_compact(&self, sorted: bool) -> String {
        let mut out = String::new();
        write_json(&mut out, self, sorted);
        out
    }

    /// The value for an error message, cut short if long.
    fn preview(&self) -> String {
        let text = self.to_compact(false);
        if text.chars().count() > 60 {
            let short: String = text.chars().take(57).collect();
            format!("{short}...")
        } else {
            text
        }
    }
}

fn get<'j>(object: &'j [(String, Json)], key: &str) -> Option<&'j Json> {
    object.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        Json::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        // A repeated key keeps its first place and takes its last value, as in Jackson.
        let mut entries: Vec<(String, Json)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            match index.get(&key) {
                Some(&i) => entries[i].1 = value,
                None => {
                    index.insert(key.clone(), entries.len());
                    entries.push((key, value));
                }
            }
        }
        Ok(Json::Object(entries))
    }
}

/// serde_json refuses nesting deeper than 128, so nothing below recurses without bound.
fn parse_json(text: &str) -> Result<Json, String> {
    serde_json::from_str::<Json>(text).map_err(|e| format!("not valid JSON: {e}"))
}

/// Compact JSON as Jackson writes it: no whitespace, non-ASCII as is, control characters
/// escaped, floating-point numbers as Java's `Double.toString` writes them.
fn write_json(out: &mut String, value: &Json, sorted: bool) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => write_number(out, n),
        Json::String(s) => write_str(out, s),
        Json::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(out, item, sorted);
            }
            out.push(']');
        }
        Json::Object(entries) => {
            let mut entries: Vec<&(String, Json)> = entries.iter().collect();
            if sorted {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_json(out, value, sorted);
            }
            out.push('}');
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &serde_json::Number) {
    match n.as_f64() {
        Some(f) if n.is_f64() => out.push_str(&java_double(f)),
        _ => {
            let _ = write!(out, "{n}");
        }
    }
}

/// Java's `Double.toString`: plain between 10^-3 and 10^7, otherwise `d.dddE±n`, always
/// with a digit after the point. Rust's `{:e}` gives the same shortest digits.
fn java_double(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    let abs = f.abs();
    let scientific = format!("{abs:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return format!("{f}");
    }
    if (1e-3..1e7).contains(&abs) {
        if exponent >= 0 {
            let whole = exponent as usize + 1;
            if digits.len() > whole {
                format!("{sign}{}.{}", &digits[..whole], &digits[whole..])
            } else {
                format!("{sign}{digits:0<whole$}.0")
            }
        } else {
            let zeros = "0".repeat((-exponent - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        format!("{sign}{first}.{rest}E{exponent}")
    }
}

// ---------------------------------------------------------------------------------------
// The model

type Props = Vec<(String, Json)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primitive {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
}

impl Primitive {
    fn from_name(name: &str) -> Option<Primitive> {
        Some(match name {
            "null" => Primitive::Null,
            "boolean" => Primitive::Boolean,
            "int" => Primitive::Int,
            "long" => Primitive::Long,
            "float" => Primitive::Float,
            "double" => Primitive::Double,
            "bytes" => Primitive::Bytes,
            "string" => Primitive::String,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Primitive::Null => "null",
            Primitive::Boolean => "boolean",
            Primitive::Int => "int",
            Primitive::Long => "long",
            Primitive::Float => "float",
            Primitive::Double => "double",
            Primitive::Bytes => "bytes",
            Primitive::String => "string",
        }
    }
}

/// A schema. Named types are defined once, in [`AvroSchema::types`], and used by index, so
/// recursive types are finite.
#[derive(Debug, Clone)]
enum Type {
    Primitive(Primitive, Props),
    Array(Box<Type>, Props),
    Map(Box<Type>, Props),
    Union(Vec<Type>),
    Named(usize),
}

#[derive(Debug, Clone)]
struct NamedType {
    name: Name,
    doc: Option<String>,
    /// Full names, each once, in the order given.
    aliases: Vec<Name>,
    props: Props,
    kind: NamedKind,
}

#[derive(Debug, Clone)]
enum NamedKind {
    Record {
        error: bool,
        fields: Vec<Field>,
    },
    Enum {
        symbols: Vec<String>,
        default: Option<String>,
    },
    Fixed {
        size: u32,
    },
}

impl NamedKind {
    fn word(&self) -> &'static str {
        match self {
            NamedKind::Record { error: true, .. } => "error",
            NamedKind::Record { .. } => "record",
            NamedKind::Enum { .. } => "enum",
            NamedKind::Fixed { .. } => "fixed",
        }
    }
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: Type,
    doc: Option<String>,
    default: Option<Json>,
    order: Order,
    /// Each once, in the order given; not validated as names, as in Java.
    aliases: Vec<String>,
    props: Props,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Ascending,
    Descending,
    Ignore,
}

/// A name and its namespace, as Java's `Schema.Name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Name {
    name: String,
    space: Option<String>,
}

/// Java writes a name in full where its short form would read as one of these.
const TYPE_NAMES: &[&str] = &[
    "record", "enum", "array", "map", "union", "fixed", "string", "bytes", "int", "long", "float",
    "double", "boolean", "null",
];

impl Name {
    /// A dotted name carries its own namespace; otherwise `space` applies. Only the last
    /// part is validated: Java does not validate namespaces, and Confluent accepts
    /// namespaces such as `com.my-company`.
    fn new(name: &str, space: Option<&str>) -> Result<Name, String> {
        let (short, space) = match name.rfind('.') {
            Some(dot) => (&name[dot + 1..], Some(&name[..dot])),
            None => (name, space),
        };
        validate_name(short)?;
        Ok(Name {
            name: short.to_string(),
            space: space.filter(|s| !s.is_empty()).map(str::to_string),
        })
    }

    fn full(&self) -> String {
        match &self.space {
            Some(space) => format!("{space}.{}", self.name),
            None => self.name.clone(),
        }
    }

    /// Java's `getQualified`: the short name inside its own namespace.
    fn qualified(&self, enclosing: Option<&str>) -> String {
        match (&self.space, enclosing) {
            (Some(space), Some(enclosing))
                if space == enclosing && !TYPE_NAMES.contains(&self.name.as_str()) =>
            {
                self.name.clone()
            }
            _ => self.full(),
        }
    }
}

/// Java's rule (`Character.isLetter`, `isLetterOrDigit`), a little wider than the
/// specification's ASCII one, since Confluent accepts such names.
fn validate_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = match chars.next() {
        None => return Err("a name may not be empty".to_string()),
        Some(first) => {
            (first.is_alphabetic() || first == '_')
                && chars.all(|c| c.is_alphanumeric() || c == '_')
        }
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid name {name:?}: a name starts with a letter or '_' and has only letters, \
             digits and '_'"
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

/// Attributes with a meaning in a schema object; the others are kept as properties.
const SCHEMA_RESERVED: &[&str] = &[
    "doc",
    "fields",
    "items",
    "name",
    "namespace",
    "size",
    "symbols",
    "values",
    "type",
    "aliases",
];
const FIELD_RESERVED: &[&str] = &["default", "doc", "name", "order", "type", "aliases"];

fn props(object: &[(String, Json)], reserved: &[&str], also_reserved: Option<&str>) -> Props {
    object
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()) && also_reserved != Some(k.as_str()))
        .cloned()
        .collect()
}

/// An error message with the JSON path where it arose.
fn at(path: &str, message: impl fmt::Display) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{message} (at {path})")
    }
}

fn optional_string(
    object: &[(String, Json)],
    key: &str,
    path: &str,
) -> Result<Option<String>, String> {
    match get(object, key) {
        // Java takes null for absent, as some generators write it.
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(at(
            path,
            format!("\"{key}\" must be a string, not {}", other.kind()),
        )),
    }
}

#[derive(Default)]
struct Parser {
    types: Vec<NamedType>,
    by_name: HashMap<String, usize>,
    /// The namespace of the innermost named type being defined.
    space: Option<String>,
    /// Fields with a default: (type, field, path), checked once all types are complete.
    defaults: Vec<(usize, usize, String)>,
}

impl Parser {
    fn parse_document(&mut self, json: &Json) -> Result<Type, String> {
        self.space = None;
        let root = self.parse(json, "")?;
        self.check_defaults()?;
        Ok(root)
    }

    fn parse(&mut self, json: &Json, path: &str) -> Result<Type, String> {
        match json {
            Json::String(name) => self.reference(name, path),
            Json::Object(object) => self.parse_object(object, path),
            Json::Array(branches) => self.parse_union(branches, path),
            other => Err(at(
                path,
                format!(
                    "a schema is a type name, an object or an array of union branches, not {}",
                    other.kind()
                ),
            )),
        }
    }

    /// Java's `Names.get`: the name in the current namespace, else in the null namespace.
    fn lookup(&self, name: &str) -> Option<usize> {
        let full = match name.rfind('.') {
            Some(0) => name[1..].to_string(),
            Some(_) => name.to_string(),
            None => match &self.space {
                Some(space) => format!("{space}.{name}"),
                None => name.to_string(),
            },
        };
        self.by_name
            .get(&full)
            .or_else(|| self.by_name.get(name))
            .copied()
    }

    fn reference(&self, name: &str, path: &str) -> Result<Type, String> {
        if let Some(primitive) = Primitive::from_name(name) {
            return Ok(Type::Primitive(primitive, Vec::new()));
        }
        self.lookup(name).map(Type::Named).ok_or_else(|| {
            at(
                path,
                format!(
                    "unknown type {name:?}: not a primitive type, nor a named type defined \
                     before this point or in a referenced schema"
                ),
            )
        })
    }

    fn parse_object(&mut self, object: &[(String, Json)], path: &str) -> Result<Type, String> {
        let ty = match get(object, "type") {
            Some(Json::String(ty)) => ty.as_str(),
            Some(other) => {
                return Err(at(
                    path,
                    format!(
                        "\"type\" must be a string, not {}: a nested schema goes in a field's \
                         \"type\", an array's \"items\" or a map's \"values\"",
                        other.kind()
                    ),
                ))
            }
            None => return Err(at(path, "a schema object needs a \"type\"")),
        };
        if let Some(primitive) = Primitive::from_name(ty) {
            return Ok(Type::Primitive(
                primitive,
                props(object, SCHEMA_RESERVED, None),
            ));
        }
        match ty {
            "record" | "error" => self.parse_record(object, ty == "error", path),
            "enum" => self.parse_enum(object, path),
            "fixed" => self.parse_fixed(object, path),
            "array" | "map" => {
                let key = if ty == "array" { "items" } else { "values" };
                let inner = get(object, key)
                    .ok_or_else(|| at(path, format!("{ty} schema without \"{key}\"")))?;
                let inner = Box::new(self.parse(inner, &format!("{path}/{key}"))?);
                let props = props(object, SCHEMA_RESERVED, None);
                Ok(if ty == "array" {
                    Type::Array(inner, props)
                } else {
                    Type::Map(inner, props)
                })
            }
            // `{"type": "Name"}` uses a named type, as Java allows; other keys are ignored.
            _ => self.reference(ty, path),
        }
    }

    /// Registers a record, enum or fixed by its name before its body is parsed, so that a
    /// record's fields may refer to it.
    fn define(&mut self, object: &[(String, Json)], path: &str) -> Result<usize, String> {
        let space = match get(object, "namespace") {
            None | Some(Json::Null) => self.space.clone(),
            Some(Json::String(space)) => Some(space.clone()),
            Some(other) => {
                return Err(at(
                    path,
                    format!("\"namespace\" must be a string, not {}", other.kind()),
                ))
            }
        };
        let doc = optional_string(object, "doc", path)?;
        let name = match get(object, "name") {
            Some(Json::String(name)) => name,
            Some(other) => {
                return Err(at(
                    path,
                    format!("\"name\" must be a string, not {}", other.kind()),
                ))
            }
            None => return Err(at(path, "a record, enum or fixed needs a \"name\"")),
        };
        let name = Name::new(name, space.as_deref()).map_err(|e| at(path, e))?;
        let full = name.full();
        if Primitive::from_name(&full).is_some() {
            return Err(at(path, format!("a named type may not be called {full:?}")));
        }
        if self.by_name.contains_key(&full) {
            return Err(at(path, format!("type {full:?} is defined twice")));
        }
        let aliases = match get(object, "aliases") {
            None => Vec::new(),
            Some(Json::Array(items)) => {
                let mut seen = HashSet::new();
                let mut aliases = Vec::new();
                for item in items {
                    let alias = item
                        .as_str()
                        .ok_or_else(|| at(path, "\"aliases\" must be an array of strings"))?;
                    // Relative aliases are in the type's own namespace.
                    let alias = Name::new(alias, name.space.as_deref())
                        .map_err(|e| at(path, format!("invalid alias: {e}")))?;
                    if seen.insert(alias.full()) {
                        aliases.push(alias);
                    }
                }
                aliases
            }
            Some(_) => return Err(at(path, "\"aliases\" must be an array of strings")),
        };
        let index = self.types.len();
        self.types.push(NamedType {
            name,
            doc,
            aliases,
            props: Vec::new(),
            kind: NamedKind::Record {
                error: false,
                fields: Vec::new(),
            },
        });
        self.by_name.insert(full, index);
        Ok(index)
    }

    fn parse_record(
        &mut self,
        object: &[(String, Json)],
        error: bool,
        path: &str,
    ) -> Result<Type, String> {
        let index = self.define(object, path)?;
        let Some(Json::Array(items)) = get(object, "fields") else {
            return Err(at(path, "a record needs a \"fields\" array"));
        };
        // Types defined inside a record default to its namespace.
        let enclosing = std::mem::replace(&mut self.space, self.types[index].name.space.clone());
        let mut fields: Vec<Field> = Vec::with_capacity(items.len());
        let mut names = HashSet::new();
        let record = self.types[index].name.full();
        for (i, item) in items.iter().enumerate() {
            let field_path = format!("{path}/fields/{i}");
            let field = self.parse_field(item, &record, &field_path)?;
            if !names.insert(field.name.clone()) {
                return Err(at(
                    &field_path,
                    format!("duplicate field {:?} in record {record}", field.name),
                ));
            }
            if field.default.is_some() {
                self.defaults.push((index, fields.len(), field_path));
            }
            fields.push(field);
        }
        self.space = enclosing;
        let named = &mut self.types[index];
        named.props = props(object, SCHEMA_RESERVED, None);
        named.kind = NamedKind::Record { error, fields };
        Ok(Type::Named(index))
    }

    fn parse_field(&mut self, json: &Json, record: &str, path: &str) -> Result<Field, String> {
        let Json::Object(object) = json else {
            return Err(at(
                path,
                format!("a field must be an object, not {}", json.kind()),
            ));
        };
        let name = match get(object, "name") {
            Some(Json::String(name)) => name.clone(),
            _ => return Err(at(path, "a field needs a \"name\" string")),
        };
        validate_name(&name).map_err(|e| at(path, format!("invalid field name: {e}")))?;
        let doc = optional_string(object, "doc", path)?;
        let type_json = get(object, "type")
            .ok_or_else(|| at(path, format!("field {name:?} has no \"type\"")))?;
        let ty = self.parse(type_json, &format!("{path}/type"))?;
        let order = match get(object, "order") {
            None => Order::Ascending,
            Some(Json::String(order)) => match order.to_ascii_uppercase().as_str() {
                "ASCENDING" => Order::Ascending,
                "DESCENDING" => Order::Descending,
                "IGNORE" => Order::Ignore,
                _ => {
                    return Err(at(
                        path,
                        format!(
                            "field {name:?}: \"order\" is \"ascending\", \"descending\" or \
                             \"ignore\", not {order:?}"
                        ),
                    ))
                }
            },
            Some(other) => {
                return Err(at(
                    path,
                    format!("\"order\" must be a string, not {}", other.kind()),
                ))
            }
        };
        let default = match get(object, "default") {
            None => None,
            // Java reads a string default of a float or double field as a number.
            Some(Json::String(text))
                if matches!(ty, Type::Primitive(Primitive::Float | Primitive::Double, _)) =>
            {
                Some(float_from_text(text).ok_or_else(|| {
                    at(
                        path,
                        format!(
                            "invalid default value for field {name:?} of {record}: {text:?} is \
                             not a number"
                        ),
                    )
                })?)
            }
            Some(value) => Some(value.clone()),
        };
        let aliases = match get(object, "aliases") {
            None => Vec::new(),
            Some(Json::Array(items)) => {
                let mut seen = HashSet::new();
                let mut aliases = Vec::new();
                for item in items {
                    let alias = item
                        .as_str()
                        .ok_or_else(|| at(path, "\"aliases\" must be an array of strings"))?;
                    if seen.insert(alias) {
                        aliases.push(alias.to_string());
                    }
                }
                aliases
            }
            Some(_) => return Err(at(path, "\"aliases\" must be an array of strings")),
        };
        Ok(Field {
            name,
            ty,
            doc,
            default,
            order,
            aliases,
            props: props(object, FIELD_RESERVED, None),
        })
    }

    fn parse_enum(&mut self, object: &[(String, Json)], path: &str) -> Result<Type, String> {
        let index = self.define(object, path)?;
        let Some(Json::Array(items)) = get(object, "symbols") else {
            return Err(at(path, "an enum needs a \"symbols\" array"));
        };
        let mut symbols = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for item in items {
            let symbol = item
                .as_str()
                .ok_or_else(|| at(path, "enum symbols must be strings"))?;
            validate_name(symbol).map_err(|e| at(path, format!("invalid enum symbol: {e}")))?;
            if !seen.insert(symbol) {
                return Err(at(path, format!("duplicate enum symbol {symbol:?}")));
            }
            symbols.push(symbol.to_string());
        }
        let default = match get(object, "default") {
            None | Some(Json::Null) => None,
            Some(Json::String(default)) if seen.contains(default.as_str()) => Some(default.clone()),
            Some(other) => {
                return Err(at(
                    path,
                    format!(
                        "the enum's default {} is not one of its symbols",
                        other.preview()
                    ),
                ))
            }
        };
        let named = &mut self.types[index];
        named.props = props(object, SCHEMA_RESERVED, Some("default"));
        named.kind = NamedKind::Enum { symbols, default };
        Ok(Type::Named(index))
    }

    fn parse_fixed(&mut self, object: &[(String, Json)], path: &str) -> Result<Type, String> {
        let index = self.define(object, path)?;
        let size = match get(object, "size") {
            Some(Json::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        }
        .filter(|size| i32::try_from(*size).is_ok())
        .ok_or_else(|| {
            at(
                path,
                "a fixed needs a \"size\": a non-negative 32-bit integer",
            )
        })?;
        let named = &mut self.types[index];
        named.props = props(object, SCHEMA_RESERVED, None);
        named.kind = NamedKind::Fixed { size };
        Ok(Type::Named(index))
    }

    fn parse_union(&mut self, items: &[Json], path: &str) -> Result<Type, String> {
        let mut branches = Vec::with_capacity(items.len());
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let branch_path = format!("{path}/{i}");
            let branch = self.parse(item, &branch_path)?;
            // Java tells branches apart by these names, so a union holds one of each.
            let key = match &branch {
                Type::Union(_) => {
                    return Err(at(&branch_path, "a union may not directly contain a union"))
                }
                Type::Primitive(primitive, _) => primitive.name().to_string(),
                Type::Array(..) => "array".to_string(),
                Type::Map(..) => "map".to_string(),
                Type::Named(index) => self.types[*index].name.full(),
            };
            if !seen.insert(key.clone()) {
                return Err(at(
                    &branch_path,
                    format!("a union may not have two branches of type {key}"),
                ));
            }
            branches.push(branch);
        }
        Ok(Type::Union(branches))
    }

    fn check_defaults(&mut self) -> Result<(), String> {
        for (index, field, path) in std::mem::take(&mut self.defaults) {
            let named = &self.types[index];
            let NamedKind::Record { fields, .. } = &named.kind else {
                continue;
            };
            let Some(field) = fields.get(field) else {
                continue;
            };
            let Some(default) = &field.default else {
                continue;
            };
            // NaN and the infinities, read from strings by `float_from_text`, are numbers.
            if matches!(
                (&field.ty, default),
                (
                    Type::Primitive(Primitive::Float | Primitive::Double, _),
                    Json::String(_)
                )
            ) {
                continue;
            }
            check_default(&self.types, &field.ty, default).map_err(|why| {
                at(
                    &path,
                    format!(
                        "invalid default value for field {:?} of {}: {why}",
                        field.name,
                        named.name.full()
                    ),
                )
            })?;
        }
        Ok(())
    }
}

/// Java's `Double.valueOf` for a float field's string default: a number, or NaN and the
/// infinities, which Java writes back as strings.
fn float_from_text(text: &str) -> Option<Json> {
    let trimmed = text.trim_matches(|c: char| c <= ' ');
    let (negative, unsigned) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    match unsigned {
        "NaN" => return Some(Json::String("NaN".to_string())),
        "Infinity" if negative => return Some(Json::String("-Infinity".to_string())),
        "Infinity" => return Some(Json::String("Infinity".to_string())),
        _ => {}
    }
    let number = trimmed
        .strip_suffix(['f', 'F', 'd', 'D'])
        .unwrap_or(trimmed);
    // Rust also reads "inf" and "nan", which Java does not.
    if number
        .chars()
        .any(|c| c.is_alphabetic() && c != 'e' && c != 'E')
    {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    if value.is_infinite() {
        let name = if value > 0.0 { "Infinity" } else { "-Infinity" };
        return Some(Json::String(name.to_string()));
    }
    serde_json::Number::from_f64(value).map(Json::Number)
}

fn is_byte_string(s: &str) -> bool {
    s.chars().all(|c| (c as u32) <= 0xFF)
}

/// Whether `value` is a valid default for `ty`: Java's rules, where a union's default
/// matches its first branch (the specification's rule up to 1.11, which Confluent's Avro
/// applies), plus what Java leaves to read time: an enum default must be a symbol, and bytes
/// and fixed defaults strings of code points up to U+00FF, of the fixed's size.
fn check_default(types: &[NamedType], ty: &Type, value: &Json) -> Result<(), String> {
    let valid = match ty {
        Type::Primitive(primitive, _) => match primitive {
            Primitive::Null => matches!(value, Json::Null),
            Primitive::Boolean => matches!(value, Json::Bool(_)),
            Primitive::Int => matches!(value, Json::Number(n)
                if n.as_i64().is_some_and(|i| i32::try_from(i).is_ok())),
            Primitive::Long => matches!(value, Json::Number(n) if n.as_i64().is_some()),
            Primitive::Float | Primitive::Double => matches!(value, Json::Number(_)),
            Primitive::Bytes => matches!(value, Json::String(s) if is_byte_string(s)),
            Primitive::String => matches!(value, Json::String(_)),
        },
        Type::Array(items, _) => {
            let Json::Array(elements) = value else {
                return Err(expected(types, ty, value));
            };
            for (i, element) in elements.iter().enumerate() {
                check_default(types, items, element).map_err(|e| format!("element {i}: {e}"))?;
            }
            true
        }
        Type::Map(values, _) => {
            let Json::Object(entries) = value else {
                return Err(expected(types, ty, value));
            };
            for (key, entry) in entries {
                check_default(types, values, entry).map_err(|e| format!("key {key:?}: {e}"))?;
            }
            true
        }
        Type::Union(branches) => {
            return match branches.first() {
                Some(first) => check_default(types, first, value)
                    .map_err(|e| format!("{e} (a union's default matches its first branch)")),
                None => Err("an empty union has no values".to_string()),
            }
        }
        Type::Named(index) => match types.get(*index).map(|t| &t.kind) {
            Some(NamedKind::Record { fields, .. }) => {
                let Json::Object(entries) = value else {
                    return Err(expected(types, ty, value));
                };
                let entries: HashMap<&str, &Json> =
                    entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
                for field in fields {
                    match entries.get(field.name.as_str()) {
                        Some(entry) => check_default(types, &field.ty, entry)
                            .map_err(|e| format!("field {:?}: {e}", field.name))?,
                        None if field.default.is_some() => {}
                        None => {
                            return Err(format!(
                                "no value for field {:?}, which has no default",
                                field.name
                            ))
                        }
                    }
                }
                true
            }
            Some(NamedKind::Enum { symbols, .. }) => {
                matches!(value, Json::String(s) if symbols.contains(s))
            }
            Some(NamedKind::Fixed { size }) => matches!(value, Json::String(s)
                if is_byte_string(s) && s.chars().count() == *size as usize),
            None => false,
        },
    };
    if valid {
        Ok(())
    } else {
        Err(expected(types, ty, value))
    }
}

fn expected(types: &[NamedType], ty: &Type, value: &Json) -> String {
    let what = match ty {
        Type::Primitive(primitive, _) => match primitive {
            Primitive::Null => "null".to_string(),
            Primitive::Boolean => "a boolean".to_string(),
            Primitive::Int => "an int (an integer of 32 bits)".to_string(),
            Primitive::Long => "a long (an integer of 64 bits)".to_string(),
            Primitive::Float | Primitive::Double => "a number".to_string(),
            Primitive::Bytes => "a string of code points up to U+00FF for bytes".to_string(),
            Primitive::String => "a string".to_string(),
        },
        Type::Array(..) => "an array".to_string(),
        Type::Map(..) => "an object for a map".to_string(),
        Type::Union(_) => "a value of the union's first branch".to_string(),
        Type::Named(index) => match types.get(*index) {
            Some(NamedType {
                name,
                kind: NamedKind::Record { .. },
                ..
            }) => {
                format!("an object for record {}", name.full())
            }
            Some(NamedType {
                name,
                kind: NamedKind::Enum { symbols, .. },
                ..
            }) => {
                format!(
                    "one of the symbols of enum {}: [{}]",
                    name.full(),
                    symbols.join(", ")
                )
            }
            Some(NamedType {
                name,
                kind: NamedKind::Fixed { size },
                ..
            }) => format!(
                "a string of {size} code points up to U+00FF for fixed {}",
                name.full()
            ),
            None => "a value".to_string(),
        },
    };
    format!("expected {what}, got {}", value.preview())
}

// ---------------------------------------------------------------------------------------
// Writing: Java's `Schema.toString`

struct Writer<'a> {
    types: &'a [NamedType],
    /// Types already written, which are then written by name.
    written: Vec<bool>,
    full_names: HashSet<String>,
    /// The namespace of the innermost record being written.
    space: Option<String>,
    normalize: bool,
    out: String,
}

impl<'a> Writer<'a> {
    /// Types before `referenced` belong to referenced schemas and are written by name.
    fn write(types: &'a [NamedType], referenced: usize, root: &Type, normalize: bool) -> String {
        let mut writer = Writer {
            types,
            written: (0..types.len()).map(|i| i < referenced).collect(),
            full_names: types.iter().map(|t| t.name.full()).collect(),
            space: None,
            normalize,
            out: String::new(),
        };
        writer.ty(root);
        writer.out
    }

    fn ty(&mut self, ty: &Type) {
        match ty {
            Type::Primitive(primitive, props) => {
                if props.is_empty() {
                    write_str(&mut self.out, primitive.name());
                } else {
                    self.out.push_str("{\"type\":");
                    write_str(&mut self.out, primitive.name());
                    self.props(props);
                    self.out.push('}');
                }
            }
            Type::Array(inner, props) | Type::Map(inner, props) => {
                let (name, key) = match ty {
                    Type::Array(..) => ("array", "items"),
                    _ => ("map", "values"),
                };
                let _ = write!(self.out, "{{\"type\":\"{name}\",\"{key}\":");
                self.ty(inner);
                self.props(props);
                self.out.push('}');
            }
            Type::Union(branches) => {
                self.out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.ty(branch);
                }
                self.out.push(']');
            }
            Type::Named(index) => self.named(*index),
        }
    }

    fn named(&mut self, index: usize) {
        let types = self.types;
        let Some(named) = types.get(index) else {
            return;
        };
        if self.written[index] {
            let mut name = named.name.qualified(self.space.as_deref());
            // Java writes a type of the null namespace by its bare name, which would read
            // as a type of the enclosing namespace if one has that name; ".N" cannot.
            if let (None, Some(space)) = (&named.name.space, &self.space) {
                if self.full_names.contains(&format!("{space}.{name}")) {
                    name = format!(".{name}");
                }
            }
            write_str(&mut self.out, &name);
            return;
        }
        self.written[index] = true;
        let _ = write!(self.out, "{{\"type\":\"{}\",\"name\":", named.kind.word());
        write_str(&mut self.out, &named.name.name);
        match (&named.name.space, &self.space) {
            (Some(space), enclosing) if enclosing.as_ref() != Some(space) => {
                self.out.push_str(",\"namespace\":");
                write_str(&mut self.out, space);
            }
            (None, Some(_)) => self.out.push_str(",\"namespace\":\"\""),
            _ => {}
        }
        let enclosing = match named.kind {
            NamedKind::Record { .. } => {
                Some(std::mem::replace(&mut self.space, named.name.space.clone()))
            }
            _ => None,
        };
        if let Some(doc) = &named.doc {
            self.out.push_str(",\"doc\":");
            write_str(&mut self.out, doc);
        }
        match &named.kind {
            NamedKind::Record { fields, .. } => {
                self.out.push_str(",\"fields\":[");
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.field(field);
                }
                self.out.push(']');
            }
            NamedKind::Enum { symbols, default } => {
                self.out.push_str(",\"symbols\":[");
                for (i, symbol) in symbols.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    write_str(&mut self.out, symbol);
                }
                self.out.push(']');
                if let Some(default) = default {
                    self.out.push_str(",\"default\":");
                    write_str(&mut self.out, default);
                }
            }
            NamedKind::Fixed { size } => {
                let _ = write!(self.out, ",\"size\":{size}");
            }
        }
        self.props(&named.props);
        let space = named.name.space.as_deref();
        let aliases: Vec<String> = named.aliases.iter().map(|a| a.qualified(space)).collect();
        self.aliases(aliases);
        self.out.push('}');
        if let Some(enclosing) = enclosing {
            self.space = enclosing;
        }
    }

    fn field(&mut self, field: &Field) {
        self.out.push_str("{\"name\":");
        write_str(&mut self.out, &field.name);
        self.out.push_str(",\"type\":");
        self.ty(&field.ty);
        if let Some(doc) = &field.doc {
            self.out.push_str(",\"doc\":");
            write_str(&mut self.out, doc);
        }
        if let Some(default) = &field.default {
            self.out.push_str(",\"default\":");
            if self.normalize {
                let default = normalize_default(self.types, &field.ty, default);
                write_json(&mut self.out, &default, true);
            } else {
                write_json(&mut self.out, default, false);
            }
        }
        match field.order {
            Order::Ascending => {}
            Order::Descending => self.out.push_str(",\"order\":\"descending\""),
            Order::Ignore => self.out.push_str(",\"order\":\"ignore\""),
        }
        self.aliases(field.aliases.clone());
        self.props(&field.props);
        self.out.push('}');
    }

    fn aliases(&mut self, mut aliases: Vec<String>) {
        if aliases.is_empty() {
            return;
        }
        if self.normalize {
            aliases.sort();
            aliases.dedup();
        }
        self.out.push_str(",\"aliases\":[");
        for (i, alias) in aliases.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            write_str(&mut self.out, alias);
        }
        self.out.push(']');
    }

    fn props(&mut self, props: &Props) {
        let mut props: Vec<&(String, Json)> = props.iter().collect();
        if self.normalize {
            props.sort_by(|a, b| a.0.cmp(&b.0));
            // A decimal's scale is 0 when not given.
            let decimal = props
                .iter()
                .any(|(k, v)| k == "logicalType" && v.as_str() == Some("decimal"));
            props.retain(|(k, v)| {
                !(decimal && k == "scale" && matches!(v, Json::Number(n) if n.as_u64() == Some(0)))
            });
        }
        for (key, value) in props {
            self.out.push(',');
            write_str(&mut self.out, key);
            self.out.push(':');
            write_json(&mut self.out, value, self.normalize);
        }
    }
}

/// A default as its type reads it: floating-point for `float` and `double`, whatever was
/// written (`1` or `1.0`).
fn normalize_default(types: &[NamedType], ty: &Type, value: &Json) -> Json {
    match (ty, value) {
        (Type::Primitive(Primitive::Float | Primitive::Double, _), Json::Number(n)) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| value.clone(), Json::Number),
        (Type::Array(items, _), Json::Array(elements)) => Json::Array(
            elements
                .iter()
                .map(|e| normalize_default(types, items, e))
                .collect(),
        ),
        (Type::Map(values, _), Json::Object(entries)) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), normalize_default(types, values, v)))
                .collect(),
        ),
        (Type::Union(branches), _) => match branches.first() {
            Some(first) => normalize_default(types, first, value),
            None => value.clone(),
        },
        (Type::Named(index), Json::Object(entries)) => match types.get(*index).map(|t| &t.kind) {
            Some(NamedKind::Record { fields, .. }) => {
                let by_name: HashMap<&str, &Type> =
                    fields.iter().map(|f| (f.name.as_str(), &f.ty)).collect();
                Json::Object(
                    entries
                        .iter()
                        .map(|(k, v)| {
                            let v = match by_name.get(k.as_str()) {
                                Some(ty) => normalize_default(types, ty, v),
                                None => v.clone(),
                            };
                            (k.clone(), v)
                        })
                        .collect(),
                )
            }
            _ => value.clone(),
        },
        _ => value.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Compatibility

/// Why data written with `writer` cannot be read with `reader`; empty when it can.
///
/// The rules are those of Java's `SchemaCompatibility`, which Confluent's checker calls:
/// promotions int→long/float/double, long→float/double, float→double and string↔bytes;
/// records, enums and fixed match by unqualified name or by a reader alias for the writer's
/// full name; a reader field matches the writer field of its name or of one of its aliases,
/// needs a default when there is none, and writer fields the reader lacks are skipped; an
/// enum reader needs every writer symbol unless it has a default; fixed sizes must be equal;
/// arrays and maps compare items and values; every branch of a writer union must be readable,
/// and a reader union reads a writer type when one of its branches can. Logical types are
/// read as their underlying types, as Confluent does. A pair of named types met again while
/// being checked is taken as compatible, which ends recursion.
pub fn incompatibilities(reader: &AvroSchema, writer: &AvroSchema) -> Vec<String> {
    let mut checker = Checker {
        reader: &reader.types,
        writer: &writer.types,
        memo: HashMap::new(),
        depth: 0,
        steps: 0,
        gave_up: None,
    };
    let mut found = checker.check(&reader.root, &writer.root, "");
    // Giving up inside a reader union's branch reads as a missing branch; say why.
    if let Some(gave_up) = checker.gave_up {
        found.push(gave_up);
    }
    dedup(found).into_iter().map(|i| i.to_string()).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Incompatibility {
    kind: &'static str,
    path: String,
    message: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{} at {path}: {}", self.kind, self.message)
    }
}

fn dedup(found: Vec<Incompatibility>) -> Vec<Incompatibility> {
    let mut seen = HashSet::new();
    found
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

/// Deeper than this the check stops and reports it, rather than risk the stack.
const MAX_CHECK_DEPTH: usize = 200;
/// Pairs compared before giving up, against schemas built to make the check slow.
const MAX_CHECK_STEPS: usize = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array,
    Map,
    Union,
    Record,
    Enum,
    Fixed,
}

fn kind(types: &[NamedType], ty: &Type) -> Kind {
    match ty {
        Type::Primitive(primitive, _) => match primitive {
            Primitive::Null => Kind::Null,
            Primitive::Boolean => Kind::Boolean,
            Primitive::Int => Kind::Int,
            Primitive::Long => Kind::Long,
            Primitive::Float => Kind::Float,
            Primitive::Double => Kind::Double,
            Primitive::Bytes => Kind::Bytes,
            Primitive::String => Kind::String,
        },
        Type::Array(..) => Kind::Array,
        Type::Map(..) => Kind::Map,
        Type::Union(_) => Kind::Union,
        Type::Named(index) => match types.get(*index).map(|t| &t.kind) {
            Some(NamedKind::Enum { .. }) => Kind::Enum,
            Some(NamedKind::Fixed { .. }) => Kind::Fixed,
            _ => Kind::Record,
        },
    }
}

/// A type as messages name it: Java's type names, with the full name of a named type.
fn describe(types: &[NamedType], ty: &Type) -> String {
    let kind = format!("{:?}", kind(types, ty)).to_uppercase();
    match ty {
        Type::Named(index) => match types.get(*index) {
            Some(named) => format!("{kind} {}", named.name.full()),
            None => kind,
        },
        _ => kind,
    }
}

struct Checker<'a> {
    reader: &'a [NamedType],
    writer: &'a [NamedType],
    /// Pairs of named types (reader, writer): `None` while being checked.
    memo: HashMap<(usize, usize), Option<Vec<Incompatibility>>>,
    depth: usize,
    steps: usize,
    gave_up: Option<Incompatibility>,
}

impl Checker<'_> {
    fn check(&mut self, reader: &Type, writer: &Type, path: &str) -> Vec<Incompatibility> {
        self.steps += 1;
        if self.depth >= MAX_CHECK_DEPTH || self.steps > MAX_CHECK_STEPS {
            let gave_up = Incompatibility {
                kind: "SCHEMA_TOO_COMPLEX",
                path: path.to_string(),
                message: format!(
                    "the schemas nest more than {MAX_CHECK_DEPTH} levels or need more than \
                     {MAX_CHECK_STEPS} comparisons; not checked"
                ),
            };
            self.gave_up.get_or_insert_with(|| gave_up.clone());
            return vec![gave_up];
        }
        self.depth += 1;
        let found = match (reader, writer) {
            (Type::Named(r), Type::Named(w)) => match self.memo.get(&(*r, *w)) {
                Some(None) => Vec::new(),
                Some(Some(found)) => found.clone(),
                None => {
                    self.memo.insert((*r, *w), None);
                    let found = self.calculate(reader, writer, path);
                    self.memo.insert((*r, *w), Some(found.clone()));
                    found
                }
            },
            _ => self.calculate(reader, writer, path),
        };
        self.depth -= 1;
        found
    }

    fn calculate(&mut self, reader: &Type, writer: &Type, path: &str) -> Vec<Incompatibility> {
        let (reader_kind, writer_kind) = (kind(self.reader, reader), kind(self.writer, writer));
        if reader_kind == writer_kind {
            return match (reader, writer) {
                (Type::Array(r, _), Type::Array(w, _)) => {
                    self.check(r, w, &format!("{path}/items"))
                }
                (Type::Map(r, _), Type::Map(w, _)) => self.check(r, w, &format!("{path}/values")),
                (Type::Union(readers), Type::Union(branches)) => {
                    let mut found = Vec::new();
                    for (i, branch) in branches.iter().enumerate() {
                        if let Some(closest) = self.read_by_union(readers, branch, path) {
                            found.push(Incompatibility {
                                kind: "MISSING_UNION_BRANCH",
                                path: path.to_string(),
                                message: format!(
                                    "the reader's union has no branch that reads the writer's \
                                     branch {i}, {}",
                                    describe(self.writer, branch)
                                ),
                            });
                            found.extend(closest);
                        }
                    }
                    dedup(found)
                }
                (Type::Named(r), Type::Named(w)) => self.named(*r, *w, path),
                _ => Vec::new(),
            };
        }
        if let Type::Union(branches) = writer {
            let mut found = Vec::new();
            for branch in branches {
                found.extend(self.check(reader, branch, path));
            }
            return dedup(found);
        }
        // The promotions of the specification.
        if matches!(
            (reader_kind, writer_kind),
            (Kind::Long, Kind::Int)
                | (Kind::Float, Kind::Int | Kind::Long)
                | (Kind::Double, Kind::Int | Kind::Long | Kind::Float)
                | (Kind::Bytes, Kind::String)
                | (Kind::String, Kind::Bytes)
        ) {
            return Vec::new();
        }
        if let Type::Union(branches) = reader {
            let Some(closest) = self.read_by_union(branches, writer, path) else {
                return Vec::new();
            };
            let mut found = vec![Incompatibility {
                kind: "MISSING_UNION_BRANCH",
                path: path.to_string(),
                message: format!(
                    "the reader's union has no branch that reads the writer's {}",
                    describe(self.writer, writer)
                ),
            }];
            found.extend(closest);
            return found;
        }
        vec![Incompatibility {
            kind: "TYPE_MISMATCH",
            path: path.to_string(),
            message: format!(
                "reader type {} does not match writer type {}",
                describe(self.reader, reader),
                describe(self.writer, writer)
            ),
        }]
    }

    /// `None` when a branch of the reader's union reads `writer`; else why the branch of
    /// the writer's kind and name does not, if there is one.
    fn read_by_union(
        &mut self,
        branches: &[Type],
        writer: &Type,
        path: &str,
    ) -> Option<Vec<Incompatibility>> {
        // Any branch will do; trying the likeliest first saves work in unions of many
        // records.
        let mut order: Vec<(u8, usize)> = (0..branches.len())
            .map(|i| (self.likeliness(&branches[i], writer), i))
            .collect();
        order.sort_unstable();
        let mut closest = Vec::new();
        for (likeliness, i) in order {
            let found = self.check(&branches[i], writer, &format!("{path}/{i}"));
            if found.is_empty() {
                return None;
            }
            if likeliness == 0 {
                closest = found;
            }
        }
        Some(closest)
    }

    /// 0 for a reader branch of the writer's kind and name, 1 of its kind, 2 otherwise.
    fn likeliness(&self, reader: &Type, writer: &Type) -> u8 {
        if kind(self.reader, reader) != kind(self.writer, writer) {
            return 2;
        }
        match (reader, writer) {
            (Type::Named(r), Type::Named(w)) => match (self.reader.get(*r), self.writer.get(*w)) {
                (Some(r), Some(w)) if r.name.name == w.name.name => 0,
                _ => 1,
            },
            _ => 0,
        }
    }

    fn named(&mut self, reader: usize, writer: usize, path: &str) -> Vec<Incompatibility> {
        let (readers, writers) = (self.reader, self.writer);
        let (Some(r), Some(w)) = (readers.get(reader), writers.get(writer)) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        let writer_name = w.name.full();
        if r.name.name != w.name.name && !r.aliases.iter().any(|a| a.full() == writer_name) {
            found.push(Incompatibility {
                kind: "NAME_MISMATCH",
                path: format!("{path}/name"),
                message: format!(
                    "reader name {} does not match writer name {writer_name}, nor does any \
                     reader alias",
                    r.name.full()
                ),
            });
        }
        match (&r.kind, &w.kind) {
            (NamedKind::Fixed { size: r_size }, NamedKind::Fixed { size: w_size })
                if r_size != w_size =>
            {
                found.push(Incompatibility {
                    kind: "FIXED_SIZE_MISMATCH",
                    path: format!("{path}/size"),
                    message: format!("reader size {r_size} does not match writer size {w_size}"),
                });
            }
            (
                NamedKind::Enum {
                    symbols: r_symbols,
                    default,
                },
                NamedKind::Enum {
                    symbols: w_symbols, ..
                },
            ) => {
                let known: HashSet<&str> = r_symbols.iter().map(String::as_str).collect();
                let missing: Vec<&str> = w_symbols
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !known.contains(s))
                    .collect();
                if !missing.is_empty() && default.is_none() {
                    found.push(Incompatibility {
                        kind: "MISSING_ENUM_SYMBOLS",
                        path: format!("{path}/symbols"),
                        message: format!(
                            "[{}]: writer symbols that the reader's enum {} lacks, and it has \
                             no default",
                            missing.join(", "),
                            r.name.full()
                        ),
                    });
                }
            }
            (
                NamedKind::Record {
                    fields: r_fields, ..
                },
                NamedKind::Record {
                    fields: w_fields, ..
                },
            ) => {
                let by_name: HashMap<&str, usize> = w_fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (f.name.as_str(), i))
                    .collect();
                for (position, field) in r_fields.iter().enumerate() {
                    let field_path = format!("{path}/fields/{position}");
                    let mut matches: Vec<usize> = by_name
                        .get(field.name.as_str())
                        .copied()
                        .into_iter()
                        .collect();
                    for alias in &field.aliases {
                        if let Some(&i) = by_name.get(alias.as_str()) {
                            if !matches.contains(&i) {
                                matches.push(i);
                            }
                        }
                    }
                    match matches.as_slice() {
                        [] if field.default.is_none() => found.push(Incompatibility {
                            kind: "READER_FIELD_MISSING_DEFAULT_VALUE",
                            path: field_path,
                            message: format!(
                                "field '{}' has no default value and is missing in the \
                                 writer's schema",
                                field.name
                            ),
                        }),
                        [] => {}
                        [i] => {
                            let found_here = self.check(
                                &field.ty,
                                &w_fields[*i].ty,
                                &format!("{field_path}/type"),
                            );
                            found.extend(found_here);
                        }
                        several => {
                            let names: Vec<&str> =
                                several.iter().map(|&i| w_fields[i].name.as_str()).collect();
                            found.push(Incompatibility {
                                kind: "READER_FIELD_AMBIGUOUS",
                                path: field_path,
                                message: format!(
                                    "field '{}' matches several writer fields by name or \
                                     alias: {}",
                                    field.name,
                                    names.join(", ")
                                ),
                            });
                        }
                    }
                }
            }
            _ => {}
        }
        dedup(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> AvroSchema {
        parse_with(text, &[])
    }

    fn parse_with(text: &str, dependencies: &[Dependency]) -> AvroSchema {
        AvroSchema::parse(text, dependencies).unwrap_or_else(|e| panic!("rejected {text}: {e}"))
    }

    /// Asserts that `text` is rejected with a message containing `fragment`.
    fn rejects(text: &str, fragment: &str) {
        match AvroSchema::parse(text, &[]) {
            Ok(schema) => panic!("accepted {text} as {}", schema.canonical()),
            Err(e) => assert!(
                e.0.contains(fragment),
                "error for {text} is {:?}, wanted {fragment:?}",
                e.0
            ),
        }
    }

    fn dep(name: &str, schema: &str) -> Dependency {
        Dependency {
            name: name.to_string(),
            schema: schema.to_string(),
        }
    }

    /// Record `t.R` with the given fields.
    fn rec(fields: &str) -> String {
        named_rec("R", fields)
    }

    fn named_rec(name: &str, fields: &str) -> String {
        format!(r#"{{"type":"record","name":"{name}","namespace":"t","fields":[{fields}]}}"#)
    }

    /// Record `t.R` with one field `a` of the given type.
    fn one(ty: &str) -> String {
        rec(&format!(r#"{{"name":"a","type":{ty}}}"#))
    }

    // ---- compatibility table ----

    struct Case {
        what: &'static str,
        old: String,
        new: String,
        old_deps: Vec<Dependency>,
        new_deps: Vec<Dependency>,
        /// New schema reading old data: `None` if compatible, else a fragment of a message.
        backward: Option<&'static str>,
        /// Old schema reading new data.
        forward: Option<&'static str>,
    }

    fn case(
        what: &'static str,
        old: impl Into<String>,
        new: impl Into<String>,
        backward: Option<&'static str>,
        forward: Option<&'static str>,
    ) -> Case {
        Case {
            what,
            old: old.into(),
            new: new.into(),
            old_deps: Vec::new(),
            new_deps: Vec::new(),
            backward,
            forward,
        }
    }

    impl Case {
        fn deps(mut self, old: Vec<Dependency>, new: Vec<Dependency>) -> Case {
            self.old_deps = old;
            self.new_deps = new;
            self
        }
    }

    const OK: Option<&str> = None;

    fn enum_field(symbols: &str, extra: &str) -> String {
        one(&format!(
            r#"{{"type":"enum","name":"E","symbols":[{symbols}]{extra}}}"#
        ))
    }

    fn nested(inner_fields: &str) -> String {
        one(&format!(
            r#"{{"type":"record","name":"Inner","fields":[{inner_fields}]}}"#
        ))
    }

    fn list(value: &str, extra: &str) -> String {
        format!(
            r#"{{"type":"record","name":"Node","namespace":"t","fields":[{{"name":"value","type":{value}}},{{"name":"next","type":["null","Node"],"default":null}}{extra}]}}"#
        )
    }

    const ADDRESS_V1: &str = r#"{"type":"record","name":"Address","namespace":"t","fields":[{"name":"street","type":"string"}]}"#;
    const ADDRESS_V2: &str = r#"{"type":"record","name":"Address","namespace":"t","fields":[{"name":"street","type":"string"},{"name":"zip","type":"string","default":""}]}"#;
    const STATUS_V1: &str =
        r#"{"type":"enum","name":"Status","namespace":"t","symbols":["A","B","C"]}"#;
    const STATUS_V2: &str =
        r#"{"type":"enum","name":"Status","namespace":"t","symbols":["A","B"]}"#;

    fn cases() -> Vec<Case> {
        let a_int = r#"{"name":"a","type":"int"}"#;
        let decimal = |p: u32, s: u32| {
            one(&format!(
                r#"{{"type":"bytes","logicalType":"decimal","precision":{p},"scale":{s}}}"#
            ))
        };
        vec![
            case("identical record", one(r#""int""#), one(r#""int""#), OK, OK),
            case(
                "field added with a default",
                rec(a_int),
                rec(&format!(r#"{a_int},{{"name":"b","type":"string","default":"x"}}"#)),
                OK,
                OK,
            ),
            case(
                "field added without a default",
                rec(a_int),
                rec(&format!(r#"{a_int},{{"name":"b","type":"string"}}"#)),
                Some("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1: field 'b' has no default value and is missing in the writer's schema"),
                OK,
            ),
            case(
                "field with a default removed",
                rec(&format!(r#"{a_int},{{"name":"b","type":"string","default":"x"}}"#)),
                rec(a_int),
                OK,
                OK,
            ),
            case(
                "field without a default removed",
                rec(&format!(r#"{a_int},{{"name":"b","type":"string"}}"#)),
                rec(a_int),
                OK,
                Some("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1: field 'b'"),
            ),
            case(
                "optional field added with a null default",
                rec(a_int),
                rec(&format!(r#"{a_int},{{"name":"b","type":["null","string"],"default":null}}"#)),
                OK,
                OK,
            ),
            case("int to long", one(r#""int""#), one(r#""long""#), OK,
                Some("TYPE_MISMATCH at /fields/0/type: reader type INT does not match writer type LONG")),
            case("int to float", one(r#""int""#), one(r#""float""#), OK,
                Some("reader type INT does not match writer type FLOAT")),
            case("int to double", one(r#""int""#), one(r#""double""#), OK,
                Some("reader type INT does not match writer type DOUBLE")),
            case("long to float", one(r#""long""#), one(r#""float""#), OK,
                Some("reader type LONG does not match writer type FLOAT")),
            case("long to double", one(r#""long""#), one(r#""double""#), OK,
                Some("reader type LONG does not match writer type DOUBLE")),
            case("float to double", one(r#""float""#), one(r#""double""#), OK,
                Some("reader type FLOAT does not match writer type DOUBLE")),
            case("long to int", one(r#""long""#), one(r#""int""#),
                Some("TYPE_MISMATCH at /fields/0/type: reader type INT does not match writer type LONG"), OK),
            case("double to float", one(r#""double""#), one(r#""float""#),
                Some("reader type FLOAT does not match writer type DOUBLE"), OK),
            case("string to bytes", one(r#""string""#), one(r#""bytes""#), OK, OK),
            case("bytes to string", one(r#""bytes""#), one(r#""string""#), OK, OK),
            case("int to string", one(r#""int""#), one(r#""string""#),
                Some("reader type STRING does not match writer type INT"),
                Some("reader type INT does not match writer type STRING")),
            case("boolean to int", one(r#""boolean""#), one(r#""int""#),
                Some("reader type INT does not match writer type BOOLEAN"),
                Some("reader type BOOLEAN does not match writer type INT")),
            case("enum symbol added", enum_field(r#""A","B""#, ""), enum_field(r#""A","B","C""#, ""), OK,
                Some("MISSING_ENUM_SYMBOLS at /fields/0/type/symbols: [C]")),
            case("enum symbol removed", enum_field(r#""A","B","C""#, ""), enum_field(r#""A","B""#, ""),
                Some("MISSING_ENUM_SYMBOLS at /fields/0/type/symbols: [C]"), OK),
            case(
                "enum symbol added, both with a default",
                enum_field(r#""A","B""#, r#","default":"A""#),
                enum_field(r#""A","B","C""#, r#","default":"A""#),
                OK,
                OK,
            ),
            case(
                "enum symbol removed, the new enum with a default",
                enum_field(r#""A","B","C""#, ""),
                enum_field(r#""A","B""#, r#","default":"A""#),
                OK,
                OK,
            ),
            case("enum symbols reordered", enum_field(r#""A","B","C""#, ""), enum_field(r#""C","B","A""#, ""), OK, OK),
            case(
                "enum renamed",
                enum_field(r#""A""#, ""),
                one(r#"{"type":"enum","name":"E2","symbols":["A"]}"#),
                Some("NAME_MISMATCH at /fields/0/type/name: reader name t.E2 does not match writer name t.E"),
                Some("NAME_MISMATCH at /fields/0/type/name"),
            ),
            case(
                "enum renamed with an alias for the old name",
                enum_field(r#""A""#, ""),
                one(r#"{"type":"enum","name":"E2","aliases":["E"],"symbols":["A"]}"#),
                OK,
                Some("NAME_MISMATCH at /fields/0/type/name"),
            ),
            case(
                "union branch added",
                one(r#"["null","string"]"#),
                one(r#"["null","string","int"]"#),
                OK,
                Some("MISSING_UNION_BRANCH at /fields/0/type: the reader's union has no branch that reads the writer's branch 2, INT"),
            ),
            case(
                "union branch removed",
                one(r#"["null","string","int"]"#),
                one(r#"["null","string"]"#),
                Some("MISSING_UNION_BRANCH at /fields/0/type"),
                OK,
            ),
            case("type widened to a union", one(r#""string""#), one(r#"["null","string"]"#), OK,
                Some("TYPE_MISMATCH at /fields/0/type: reader type STRING does not match writer type NULL")),
            case("union narrowed to a type", one(r#"["null","string"]"#), one(r#""string""#),
                Some("reader type STRING does not match writer type NULL"), OK),
            case("union branches reordered", one(r#"["null","string"]"#), one(r#"["string","null"]"#), OK, OK),
            case("union branch promoted", one(r#"["null","int"]"#), one(r#"["null","long"]"#), OK,
                Some("MISSING_UNION_BRANCH at /fields/0/type")),
            case("type to a union with a wider branch", one(r#""int""#), one(r#"["null","long"]"#), OK,
                Some("reader type INT does not match writer type LONG")),
            case("union of promotable types to one type", one(r#"["int","long"]"#), one(r#""double""#), OK,
                Some("MISSING_UNION_BRANCH at /fields/0/type: the reader's union has no branch that reads the writer's DOUBLE")),
            case("union of null and string to bytes", one(r#"["null","string"]"#), one(r#""bytes""#),
                Some("reader type BYTES does not match writer type NULL"), OK),
            case("record renamed", rec(a_int), named_rec("S", a_int),
                Some("NAME_MISMATCH at /name: reader name t.S does not match writer name t.R"),
                Some("NAME_MISMATCH at /name")),
            case(
                "record renamed with an alias for the old name",
                rec(a_int),
                format!(r#"{{"type":"record","name":"S","namespace":"t","aliases":["R"],"fields":[{a_int}]}}"#),
                OK,
                Some("NAME_MISMATCH at /name"),
            ),
            case(
                "record renamed with an alias in another namespace",
                rec(a_int),
                format!(r#"{{"type":"record","name":"S","namespace":"t","aliases":["u.R"],"fields":[{a_int}]}}"#),
                Some("NAME_MISMATCH at /name"),
                Some("NAME_MISMATCH at /name"),
            ),
            case(
                "namespace changed (names match unqualified)",
                rec(a_int),
                format!(r#"{{"type":"record","name":"u.R","fields":[{a_int}]}}"#),
                OK,
                OK,
            ),
            case(
                "field renamed with an alias for the old name",
                rec(a_int),
                rec(r#"{"name":"b","type":"int","aliases":["a"]}"#),
                OK,
                Some("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/0: field 'a'"),
            ),
            case(
                "field renamed without an alias",
                rec(a_int),
                rec(r#"{"name":"b","type":"int"}"#),
                Some("field 'b' has no default value"),
                Some("field 'a' has no default value"),
            ),
            case(
                "fields reordered",
                rec(&format!(r#"{a_int},{{"name":"b","type":"string"}}"#)),
                rec(&format!(r#"{{"name":"b","type":"string"}},{a_int}"#)),
                OK,
                OK,
            ),
            case(
                "field default changed",
                rec(r#"{"name":"a","type":"int","default":1}"#),
                rec(r#"{"name":"a","type":"int","default":2}"#),
                OK,
                OK,
            ),
            case(
                "nested record gains a field with a default",
                nested(r#"{"name":"x","type":"int"}"#),
                nested(r#"{"name":"x","type":"int"},{"name":"y","type":"int","default":0}"#),
                OK,
                OK,
            ),
            case(
                "nested record field changes type",
                nested(r#"{"name":"x","type":"int"}"#),
                nested(r#"{"name":"x","type":"string"}"#),
                Some("TYPE_MISMATCH at /fields/0/type/fields/0/type: reader type STRING does not match writer type INT"),
                Some("TYPE_MISMATCH at /fields/0/type/fields/0/type"),
            ),
            case(
                "nested record gains a field without a default",
                nested(r#"{"name":"x","type":"int"}"#),
                nested(r#"{"name":"x","type":"int"},{"name":"y","type":"int"}"#),
                Some("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/0/type/fields/1: field 'y'"),
                OK,
            ),
            case("array items promoted", one(r#"{"type":"array","items":"int"}"#), one(r#"{"type":"array","items":"long"}"#), OK,
                Some("TYPE_MISMATCH at /fields/0/type/items")),
            case("array items changed", one(r#"{"type":"array","items":"int"}"#), one(r#"{"type":"array","items":"string"}"#),
                Some("TYPE_MISMATCH at /fields/0/type/items"),
                Some("TYPE_MISMATCH at /fields/0/type/items")),
            case("map values promoted", one(r#"{"type":"map","values":"float"}"#), one(r#"{"type":"map","values":"double"}"#), OK,
                Some("TYPE_MISMATCH at /fields/0/type/values: reader type FLOAT does not match writer type DOUBLE")),
            case("array to map", one(r#"{"type":"array","items":"string"}"#), one(r#"{"type":"map","values":"string"}"#),
                Some("reader type MAP does not match writer type ARRAY"),
                Some("reader type ARRAY does not match writer type MAP")),
            case(
                "array of records gains a field with a default",
                one(r#"{"type":"array","items":{"type":"record","name":"Item","fields":[{"name":"x","type":"int"}]}}"#),
                one(r#"{"type":"array","items":{"type":"record","name":"Item","fields":[{"name":"x","type":"int"},{"name":"y","type":"string","default":""}]}}"#),
                OK,
                OK,
            ),
            case(
                "fixed size changed",
                one(r#"{"type":"fixed","name":"F","size":16}"#),
                one(r#"{"type":"fixed","name":"F","size":32}"#),
                Some("FIXED_SIZE_MISMATCH at /fields/0/type/size: reader size 32 does not match writer size 16"),
                Some("FIXED_SIZE_MISMATCH at /fields/0/type/size: reader size 16 does not match writer size 32"),
            ),
            case(
                "fixed renamed",
                one(r#"{"type":"fixed","name":"F","size":16}"#),
                one(r#"{"type":"fixed","name":"G","size":16}"#),
                Some("NAME_MISMATCH at /fields/0/type/name"),
                Some("NAME_MISMATCH at /fields/0/type/name"),
            ),
            case(
                "fixed to bytes",
                one(r#"{"type":"fixed","name":"F","size":16}"#),
                one(r#""bytes""#),
                Some("reader type BYTES does not match writer type FIXED t.F"),
                Some("reader type FIXED t.F does not match writer type BYTES"),
            ),
            case(
                "logical type added to long",
                one(r#""long""#),
                one(r#"{"type":"long","logicalType":"timestamp-millis"}"#),
                OK,
                OK,
            ),
            case("decimal precision and scale changed (read as bytes)", decimal(10, 2), decimal(12, 4), OK, OK),
            case(
                "date to timestamp-millis (read as int to long)",
                one(r#"{"type":"int","logicalType":"date"}"#),
                one(r#"{"type":"long","logicalType":"timestamp-millis"}"#),
                OK,
                Some("reader type INT does not match writer type LONG"),
            ),
            case("uuid to plain string", one(r#"{"type":"string","logicalType":"uuid"}"#), one(r#""string""#), OK, OK),
            case(
                "recursive list widens its value and gains a field",
                list(r#""int""#, ""),
                list(r#""long""#, r#",{"name":"label","type":"string","default":""}"#),
                OK,
                Some("TYPE_MISMATCH at /fields/0/type: reader type INT does not match writer type LONG"),
            ),
            case(
                "recursive list changes its value",
                list(r#""int""#, ""),
                list(r#""string""#, ""),
                Some("TYPE_MISMATCH at /fields/0/type"),
                Some("TYPE_MISMATCH at /fields/0/type"),
            ),
            case(
                "mutually recursive records, one gains a field with a default",
                r#"{"type":"record","name":"A","namespace":"t","fields":[{"name":"b","type":["null",{"type":"record","name":"B","fields":[{"name":"a","type":["null","A"]}]}]}]}"#,
                r#"{"type":"record","name":"A","namespace":"t","fields":[{"name":"b","type":["null",{"type":"record","name":"B","fields":[{"name":"a","type":["null","A"]},{"name":"c","type":"int","default":0}]}]}]}"#,
                OK,
                OK,
            ),
            case("top-level int to long", r#""int""#, r#""long""#, OK,
                Some("TYPE_MISMATCH at /: reader type INT does not match writer type LONG")),
            case("top-level string to int", r#""string""#, r#"{"type":"int"}"#,
                Some("TYPE_MISMATCH at /"), Some("TYPE_MISMATCH at /")),
            case(
                "top-level record to a nullable union",
                rec(a_int),
                format!(r#"["null",{}]"#, rec(a_int)),
                OK,
                Some("TYPE_MISMATCH at /: reader type RECORD t.R does not match writer type NULL"),
            ),
            case(
                "record inside a union changes a field's type",
                format!(r#"["null",{}]"#, rec(a_int)),
                format!(r#"["null",{}]"#, one(r#""string""#)),
                Some("TYPE_MISMATCH at /1/fields/0/type: reader type STRING does not match writer type INT"),
                Some("MISSING_UNION_BRANCH at /: the reader's union has no branch that reads the writer's branch 1, RECORD t.R"),
            ),
            case(
                "field becomes optional",
                one(r#""string""#),
                rec(r#"{"name":"a","type":["null","string"],"default":null}"#),
                OK,
                Some("reader type STRING does not match writer type NULL"),
            ),
            case(
                "field alias matching a second writer field",
                rec(&format!(r#"{a_int},{{"name":"b","type":"int"}}"#)),
                rec(r#"{"name":"a","type":"int","aliases":["b"]}"#),
                Some("READER_FIELD_AMBIGUOUS at /fields/0: field 'a' matches several writer fields by name or alias: a, b"),
                Some("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1: field 'b'"),
            ),
            case(
                "record declared as an error",
                rec(a_int),
                format!(r#"{{"type":"error","name":"R","namespace":"t","fields":[{a_int}]}}"#),
                OK,
                OK,
            ),
            case("enum to string", enum_field(r#""A""#, ""), one(r#""string""#),
                Some("reader type STRING does not match writer type ENUM t.E"),
                Some("reader type ENUM t.E does not match writer type STRING")),
            case(
                "referenced record gains a field with a default",
                one(r#""Address""#),
                one(r#""Address""#),
                OK,
                OK,
            )
            .deps(vec![dep("t.Address", ADDRESS_V1)], vec![dep("t.Address", ADDRESS_V2)]),
            case(
                "referenced enum loses a symbol",
                one(r#""t.Status""#),
                one(r#""t.Status""#),
                Some("MISSING_ENUM_SYMBOLS at /fields/0/type/symbols: [C]"),
                OK,
            )
            .deps(vec![dep("t.Status", STATUS_V1)], vec![dep("t.Status", STATUS_V2)]),
            case(
                "inline definition replaced by a reference",
                one(ADDRESS_V1),
                one(r#""Address""#),
                OK,
                OK,
            )
            .deps(Vec::new(), vec![dep("t.Address", ADDRESS_V1)]),
            case(
                "reference replaced by a changed inline definition",
                one(r#""Address""#),
                one(r#"{"type":"record","name":"Address","fields":[{"name":"street","type":"bytes"},{"name":"city","type":"string"}]}"#),
                Some("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/0/type/fields/1: field 'city'"),
                OK,
            )
            .deps(vec![dep("t.Address", ADDRESS_V1)], Vec::new()),
        ]
    }

    fn verdict(
        reader: &AvroSchema,
        writer: &AvroSchema,
        expected: Option<&str>,
    ) -> Result<(), String> {
        let found = incompatibilities(reader, writer);
        match expected {
            None if found.is_empty() => Ok(()),
            None => Err(format!("expected compatible, got {found:?}")),
            Some(_) if found.is_empty() => Err("expected incompatible, got compatible".to_string()),
            Some(fragment) if found.iter().any(|m| m.contains(fragment)) => Ok(()),
            Some(fragment) => Err(format!(
                "expected a message with {fragment:?}, got {found:?}"
            )),
        }
    }

    #[test]
    fn compatibility_table() {
        let cases = cases();
        assert!(cases.len() >= 45, "{} cases", cases.len());
        let mut failures = Vec::new();
        for case in &cases {
            let old = parse_with(&case.old, &case.old_deps);
            let new = parse_with(&case.new, &case.new_deps);
            if let Err(e) = verdict(&new, &old, case.backward) {
                failures.push(format!("{} BACKWARD: {e}", case.what));
            }
            if let Err(e) = verdict(&old, &new, case.forward) {
                failures.push(format!("{} FORWARD: {e}", case.what));
            }
        }
        assert!(
            failures.is_empty(),
            "{} failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn every_table_schema_reads_itself_and_round_trips() {
        for case in cases() {
            for (text, deps) in [(&case.old, &case.old_deps), (&case.new, &case.new_deps)] {
                let schema = parse_with(text, deps);
                let found = incompatibilities(&schema, &schema);
                let ambiguous = found
                    .iter()
                    .all(|m| m.starts_with("READER_FIELD_AMBIGUOUS"));
                assert!(
                    found.is_empty() || ambiguous,
                    "{}: {text} cannot read itself: {found:?}",
                    case.what
                );
                let again = parse_with(&schema.canonical(), deps);
                assert_eq!(again.canonical(), schema.canonical(), "{}", case.what);
                assert!(
                    incompatibilities(&again, &schema).is_empty() || ambiguous,
                    "{}",
                    case.what
                );
                let normal = parse_with(&schema.normalized(), deps);
                assert_eq!(normal.canonical(), schema.normalized(), "{}", case.what);
                assert_eq!(normal.normalized(), schema.normalized(), "{}", case.what);
            }
        }
    }

    /// What the Rust Avro library, which other parts of a pipeline may use, makes of the
    /// stored text: it must parse it (it lacks "error" and Java's null-namespace fall-back).
    #[test]
    fn canonical_text_parses_with_apache_avro() {
        for case in cases() {
            for (text, deps) in [(&case.old, &case.old_deps), (&case.new, &case.new_deps)] {
                if text.contains("\"error\"") {
                    continue;
                }
                let canonical = parse_with(text, deps).canonical();
                let referenced: Vec<String> =
                    deps.iter().map(|d| parse(&d.schema).canonical()).collect();
                let parsed = std::panic::catch_unwind(|| {
                    apache_avro::Schema::parse_str_with_list(&canonical, &referenced)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                });
                assert!(
                    matches!(parsed, Ok(Ok(()))),
                    "{}: {canonical}: {parsed:?}",
                    case.what
                );
            }
        }
    }

    // ---- parsing ----

    #[test]
    fn accepts_every_kind_of_type() {
        let schema = parse(
            r#"{
              "type": "record", "name": "Everything", "namespace": "com.acme", "doc": "all",
              "aliases": ["Old"],
              "fields": [
                {"name": "n", "type": "null", "default": null},
                {"name": "b", "type": "boolean", "default": true},
                {"name": "i", "type": "int", "default": -2147483648},
                {"name": "l", "type": "long", "default": 9223372036854775807},
                {"name": "f", "type": "float", "default": 1},
                {"name": "d", "type": "double", "default": "NaN"},
                {"name": "by", "type": "bytes", "default": "\u00ff\u0000"},
                {"name": "s", "type": "string", "default": "", "aliases": ["str"], "order": "descending"},
                {"name": "arr", "type": {"type": "array", "items": "int"}, "default": [1, 2]},
                {"name": "m", "type": {"type": "map", "values": "long"}, "default": {"k": 1}},
                {"name": "u", "type": ["null", "string"], "default": null},
                {"name": "e", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "GREEN"], "default": "RED"}, "default": "GREEN"},
                {"name": "fx", "type": {"type": "fixed", "name": "Md5", "size": 2}, "default": "ab"},
                {"name": "inner", "type": {"type": "record", "name": "Inner", "fields": [
                    {"name": "x", "type": "int"}, {"name": "y", "type": "int", "default": 0}]},
                  "default": {"x": 1}},
                {"name": "again", "type": "Inner"},
                {"name": "full", "type": "com.acme.Color"},
                {"name": "dec", "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2}},
                {"name": "decf", "type": {"type": "fixed", "name": "Dec", "size": 8, "logicalType": "decimal", "precision": 18}},
                {"name": "uuid", "type": {"type": "string", "logicalType": "uuid"}},
                {"name": "date", "type": {"type": "int", "logicalType": "date"}},
                {"name": "tm", "type": {"type": "int", "logicalType": "time-millis"}},
                {"name": "tu", "type": {"type": "long", "logicalType": "time-micros"}},
                {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "tsu", "type": {"type": "long", "logicalType": "timestamp-micros"}},
                {"name": "lts", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
                {"name": "dur", "type": {"type": "fixed", "name": "Duration", "size": 12, "logicalType": "duration"}},
                {"name": "unknown_logical", "type": {"type": "string", "logicalType": "made-up"}},
                {"name": "self", "type": ["null", "Everything"], "default": null},
                {"name": "by_object", "type": {"type": "Inner"}}
              ]
            }"#,
        );
        assert!(schema.canonical().starts_with(
            r#"{"type":"record","name":"Everything","namespace":"com.acme","doc":"all","fields":[{"name":"n","type":"null","default":null},"#
        ));
        assert!(schema
            .canonical()
            .ends_with(r#"{"name":"by_object","type":"Inner"}],"aliases":["Old"]}"#));
        assert!(schema
            .canonical()
            .contains(r#"{"name":"again","type":"Inner"}"#));
        assert!(schema
            .canonical()
            .contains(r#"{"name":"d","type":"double","default":"NaN"}"#));
    }

    #[test]
    fn rejects_invalid_schemas_with_a_reason() {
        rejects("{", "not valid JSON");
        rejects(r#""string" trailing"#, "not valid JSON");
        rejects("", "not valid JSON");
        rejects("42", "a schema is a type name, an object or an array");
        rejects("null", "a schema is a type name");
        rejects(r#""strin""#, r#"unknown type "strin""#);
        rejects(&one(r#""Strin""#), r#"unknown type "Strin""#);
        rejects(&one(r#""Strin""#), "(at /fields/0/type)");
        rejects(r#"{"fields":[]}"#, "needs a \"type\"");
        rejects(r#"{"type":{"type":"string"}}"#, "\"type\" must be a string");
        rejects(r#"{"type":"record","fields":[]}"#, "needs a \"name\"");
        rejects(
            r#"{"type":"record","name":"R"}"#,
            "a record needs a \"fields\" array",
        );
        rejects(
            r#"{"type":"record","name":"R","fields":{}}"#,
            "a record needs a \"fields\" array",
        );
        rejects(&rec(r#""a""#), "a field must be an object");
        rejects(&rec(r#"{"type":"int"}"#), "a field needs a \"name\"");
        rejects(&rec(r#"{"name":"a"}"#), "field \"a\" has no \"type\"");
        rejects(
            &rec(r#"{"name":"a","type":"int"},{"name":"a","type":"string"}"#),
            "duplicate field \"a\" in record t.R",
        );
        rejects(
            r#"{"type":"record","name":"1abc","fields":[]}"#,
            "invalid name \"1abc\"",
        );
        rejects(
            r#"{"type":"record","name":"a.b-c","fields":[]}"#,
            "invalid name \"b-c\"",
        );
        rejects(
            r#"{"type":"record","name":"a.","fields":[]}"#,
            "a name may not be empty",
        );
        rejects(&rec(r#"{"name":"a-b","type":"int"}"#), "invalid field name");
        rejects(
            r#"{"type":"enum","name":"E","symbols":["A B"]}"#,
            "invalid enum symbol",
        );
        rejects(
            r#"{"type":"enum","name":"E","symbols":["A","A"]}"#,
            "duplicate enum symbol \"A\"",
        );
        rejects(
            r#"{"type":"enum","name":"E","symbols":["A",1]}"#,
            "enum symbols must be strings",
        );
        rejects(
            r#"{"type":"enum","name":"E"}"#,
            "an enum needs a \"symbols\" array",
        );
        rejects(
            r#"{"type":"enum","name":"E","symbols":["A"],"default":"B"}"#,
            "default \"B\" is not one of its symbols",
        );
        rejects(r#"{"type":"fixed","name":"F"}"#, "a fixed needs a \"size\"");
        rejects(
            r#"{"type":"fixed","name":"F","size":-1}"#,
            "a fixed needs a \"size\"",
        );
        rejects(
            r#"{"type":"fixed","name":"F","size":1.5}"#,
            "a fixed needs a \"size\"",
        );
        rejects(
            r#"{"type":"fixed","name":"F","size":2147483648}"#,
            "a fixed needs a \"size\"",
        );
        rejects(r#"{"type":"array"}"#, "array schema without \"items\"");
        rejects(r#"{"type":"map"}"#, "map schema without \"values\"");
        rejects(
            r#"["null",["int"]]"#,
            "a union may not directly contain a union",
        );
        rejects(r#"["string","string"]"#, "two branches of type string");
        rejects(
            r#"[{"type":"array","items":"int"},{"type":"array","items":"long"}]"#,
            "two branches of type array",
        );
        rejects(
            r#"["int",{"type":"int","logicalType":"date"}]"#,
            "two branches of type int",
        );
        rejects(
            r#"[{"type":"record","name":"R","fields":[]},{"type":"record","name":"R","fields":[]}]"#,
            "type \"R\" is defined twice",
        );
        rejects(
            r#"{"type":"record","name":"int","fields":[]}"#,
            "may not be called \"int\"",
        );
        rejects(
            r#"{"type":"record","name":"R","namespace":1,"fields":[]}"#,
            "\"namespace\" must be a string",
        );
        rejects(
            r#"{"type":"record","name":"R","doc":[],"fields":[]}"#,
            "\"doc\" must be a string",
        );
        rejects(
            r#"{"type":"record","name":"R","aliases":"S","fields":[]}"#,
            "\"aliases\" must be an array",
        );
        rejects(
            r#"{"type":"record","name":"R","aliases":["9S"],"fields":[]}"#,
            "invalid alias",
        );
        rejects(
            &rec(r#"{"name":"a","type":"int","order":"up"}"#),
            "\"order\" is \"ascending\"",
        );
        rejects(
            &rec(r#"{"name":"a","type":"int","aliases":[1]}"#),
            "\"aliases\" must be an array of strings",
        );
        rejects(&"[".repeat(100_000), "not valid JSON");
    }

    #[test]
    fn rejects_defaults_that_do_not_match_their_type() {
        let bad = [
            (r#""int""#, r#""x""#, "expected an int"),
            (r#""int""#, "2147483648", "expected an int"),
            (r#""int""#, "1.0", "expected an int"),
            (r#""long""#, "1.5", "expected a long"),
            (r#""long""#, "9223372036854775808", "expected a long"),
            (r#""string""#, "1", "expected a string, got 1"),
            (r#""boolean""#, r#""true""#, "expected a boolean"),
            (r#""null""#, "0", "expected null"),
            (r#""bytes""#, r#""\u0100""#, "code points up to U+00FF"),
            (r#""double""#, r#""one""#, "is not a number"),
            (
                r#"["null","string"]"#,
                r#""x""#,
                "a union's default matches its first branch",
            ),
            (
                r#"["string","null"]"#,
                "null",
                "a union's default matches its first branch",
            ),
            (
                r#"{"type":"array","items":"int"}"#,
                r#"[1,"x"]"#,
                "element 1: expected an int",
            ),
            (
                r#"{"type":"map","values":"int"}"#,
                r#"{"k":"x"}"#,
                "key \"k\": expected an int",
            ),
            (
                r#"{"type":"enum","name":"E","symbols":["A"]}"#,
                r#""Z""#,
                "one of the symbols of enum t.E: [A]",
            ),
            (
                r#"{"type":"fixed","name":"F","size":2}"#,
                r#""abc""#,
                "a string of 2 code points",
            ),
            (
                r#"{"type":"record","name":"I","fields":[{"name":"x","type":"int"}]}"#,
                "{}",
                "no value for field \"x\", which has no default",
            ),
            (
                r#"{"type":"record","name":"I","fields":[{"name":"x","type":"int"}]}"#,
                r#"{"x":"1"}"#,
                "field \"x\": expected an int",
            ),
        ];
        for (ty, default, why) in bad {
            let text = rec(&format!(
                r#"{{"name":"a","type":{ty},"default":{default}}}"#
            ));
            rejects(&text, "invalid default value for field \"a\" of t.R");
            rejects(&text, why);
            rejects(&text, "(at /fields/0)");
        }
    }

    #[test]
    fn float_defaults_given_as_strings_are_read_as_java_reads_them() {
        for (text, written) in [
            ("1.5", "1.5"),
            (" 2 ", "2.0"),
            ("1e7", "1.0E7"),
            ("NaN", "\"NaN\""),
            ("-Infinity", "\"-Infinity\""),
            ("1e999", "\"Infinity\""),
        ] {
            let schema = parse(&rec(&format!(
                r#"{{"name":"d","type":"double","default":"{text}"}}"#
            )));
            assert!(
                schema
                    .canonical()
                    .contains(&format!(r#""default":{written}}}"#)),
                "{text}: {}",
                schema.canonical()
            );
        }
        rejects(
            &rec(r#"{"name":"d","type":"double","default":"inf"}"#),
            "is not a number",
        );
    }

    #[test]
    fn names_resolve_as_in_java() {
        // A nested type inherits the enclosing record's namespace; "namespace": "" leaves it.
        let schema = parse(
            r#"{"type":"record","name":"R","namespace":"a","fields":[
                {"name":"e","type":{"type":"enum","name":"E","symbols":["X"]}},
                {"name":"n","type":{"type":"enum","name":"N","namespace":"","symbols":["X"]}},
                {"name":"e2","type":"a.E"},
                {"name":"n2","type":"N"}]}"#,
        );
        let names: Vec<String> = schema.types.iter().map(|t| t.name.full()).collect();
        assert_eq!(names, ["a.R", "a.E", "N"]);
        // A referenced type in the null namespace is found from a schema that has one.
        let order = parse_with(
            r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"c","type":"Customer"}]}"#,
            &[dep(
                "Customer",
                r#"{"type":"record","name":"Customer","fields":[{"name":"id","type":"long"}]}"#,
            )],
        );
        assert_eq!(
            order.canonical(),
            r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"c","type":"Customer"}]}"#
        );
        // A type is usable only after its definition.
        rejects(
            r#"["Later",{"type":"record","name":"Later","fields":[]}]"#,
            "unknown type \"Later\"",
        );
        // A null namespace or doc counts as absent, as in Java.
        let nulls = parse(
            r#"{"type":"record","name":"R","namespace":"a","fields":[{"name":"e","type":{"type":"enum","name":"E","namespace":null,"doc":null,"symbols":["X"],"default":null}}]}"#,
        );
        assert_eq!(
            nulls.canonical(),
            r#"{"type":"record","name":"R","namespace":"a","fields":[{"name":"e","type":{"type":"enum","name":"E","symbols":["X"]}}]}"#
        );
        assert_eq!(nulls.types[1].name.full(), "a.E");
        // A namespace is not validated, as in Java and Confluent.
        let dashed =
            parse(r#"{"type":"record","name":"R","namespace":"com.my-company","fields":[]}"#);
        assert_eq!(dashed.types[0].name.full(), "com.my-company.R");
    }

    #[test]
    fn references_make_their_types_usable() {
        let country = dep(
            "t.Country",
            r#"{"type":"enum","name":"Country","namespace":"t","symbols":["FR","US"]}"#,
        );
        let address = dep(
            "t.Address",
            r#"{"type":"record","name":"Address","namespace":"t","fields":[
                {"name":"country","type":"Country"},
                {"name":"kind","type":{"type":"enum","name":"Kind","symbols":["HOME","WORK"]}}]}"#,
        );
        let deps = [country.clone(), address.clone(), address.clone()];
        let order = parse_with(
            r#"{"type":"record","name":"Order","namespace":"t","fields":[
                {"name":"ship","type":"Address"},{"name":"bill","type":"t.Address"},
                {"name":"from","type":"Country"},{"name":"kind","type":"t.Kind"}]}"#,
            &deps,
        );
        // Referenced types are not inlined: the stored text names them.
        assert_eq!(
            order.canonical(),
            r#"{"type":"record","name":"Order","namespace":"t","fields":[{"name":"ship","type":"Address"},{"name":"bill","type":"Address"},{"name":"from","type":"Country"},{"name":"kind","type":"Kind"}]}"#
        );
        assert!(incompatibilities(&order, &order).is_empty());
        // Compatibility sees through references.
        let other = parse(
            r#"{"type":"record","name":"Order","namespace":"t","fields":[
                {"name":"ship","type":{"type":"record","name":"Address","fields":[{"name":"country","type":"string"}]}}]}"#,
        );
        assert_eq!(
            incompatibilities(&other, &order),
            ["TYPE_MISMATCH at /fields/0/type/fields/0/type: reader type STRING does not match writer type ENUM t.Country"]
        );
        // Without the references, or with one out of order, the names are unknown.
        let text = r#"{"type":"record","name":"Order","namespace":"t","fields":[{"name":"ship","type":"Address"}]}"#;
        let missing = AvroSchema::parse(text, &[]).unwrap_err();
        assert!(missing.0.contains("unknown type \"Address\""), "{missing}");
        let out_of_order =
            AvroSchema::parse(text, &[address.clone(), country.clone()]).unwrap_err();
        assert!(
            out_of_order
                .0
                .contains("referenced schema \"t.Address\" is invalid: unknown type \"Country\""),
            "{out_of_order}"
        );
        // A bad reference is named; a schema may not redefine a referenced type.
        let bad = AvroSchema::parse(text, &[dep("t.Address", "{")]).unwrap_err();
        assert!(
            bad.0
                .starts_with("referenced schema \"t.Address\" is invalid: not valid JSON"),
            "{bad}"
        );
        let redefined = AvroSchema::parse(ADDRESS_V1, &[dep("t.Address", ADDRESS_V1)]).unwrap_err();
        assert!(
            redefined.0.contains("type \"t.Address\" is defined twice"),
            "{redefined}"
        );
    }

    // ---- canonical form ----

    #[test]
    fn canonical_is_what_java_writes() {
        let cases = [
            (r#"{ "type" : "string" }"#, r#""string""#),
            (r#" "long" "#, r#""long""#),
            (r#"["null", {"type":"int"}]"#, r#"["null","int"]"#),
            (
                r#"{"fields":[{"type":"int","name":"a","doc":"the a","default":1,"order":"ascending","x":[1, {"b":2,"a":1}]}],"name":"R","namespace":"com.x","type":"record","doc":"a record"}"#,
                r#"{"type":"record","name":"R","namespace":"com.x","doc":"a record","fields":[{"name":"a","type":"int","doc":"the a","default":1,"x":[1,{"b":2,"a":1}]}]}"#,
            ),
            (
                r#"{"type":"record","name":"com.x.Outer","fields":[
                    {"name":"same","type":{"type":"enum","name":"E","symbols":["A"]}},
                    {"name":"other","type":{"type":"fixed","name":"F","namespace":"org.y","size":2}},
                    {"name":"none","type":{"type":"record","name":"N","namespace":"","fields":[]}},
                    {"name":"again","type":"E"},
                    {"name":"againF","type":"org.y.F"},
                    {"name":"againN","type":"N"}]}"#,
                r#"{"type":"record","name":"Outer","namespace":"com.x","fields":[{"name":"same","type":{"type":"enum","name":"E","symbols":["A"]}},{"name":"other","type":{"type":"fixed","name":"F","namespace":"org.y","size":2}},{"name":"none","type":{"type":"record","name":"N","namespace":"","fields":[]}},{"name":"again","type":"E"},{"name":"againF","type":"org.y.F"},{"name":"againN","type":"N"}]}"#,
            ),
            (
                r#"{"type":"bytes","precision":4,"logicalType":"decimal","scale":2}"#,
                r#"{"type":"bytes","precision":4,"logicalType":"decimal","scale":2}"#,
            ),
            (
                r#"{"aliases":["Old","other.Older","n.Old"],"type":"enum","default":"B","symbols":["A","B"],"name":"E","namespace":"n","doc":"d","x-prop":true}"#,
                r#"{"type":"enum","name":"E","namespace":"n","doc":"d","symbols":["A","B"],"default":"B","x-prop":true,"aliases":["Old","other.Older"]}"#,
            ),
            (
                r#"{"size":16,"type":"fixed","name":"a.b.Hash","aliases":["a.b.record"]}"#,
                r#"{"type":"fixed","name":"Hash","namespace":"a.b","size":16,"aliases":["a.b.record"]}"#,
            ),
            (
                r#"{"items":"int","type":"array","x":1,"name":"ignored"}"#,
                r#"{"type":"array","items":"int","x":1}"#,
            ),
            (
                r#"{"type":"map","values":{"type":"string","avro.java.string":"String"}}"#,
                r#"{"type":"map","values":{"type":"string","avro.java.string":"String"}}"#,
            ),
            (
                r#"{"type":"error","name":"Oops","fields":[{"name":"a","type":"int","aliases":["b","b"],"order":"DESCENDING"}]}"#,
                r#"{"type":"error","name":"Oops","fields":[{"name":"a","type":"int","order":"descending","aliases":["b"]}]}"#,
            ),
            (
                "{\"type\":\"record\",\"name\":\"R\",\"doc\":\"caf\\u00e9 \\\"q\\\" \\n\\u0001\\/\",\"fields\":[]}",
                "{\"type\":\"record\",\"name\":\"R\",\"doc\":\"café \\\"q\\\" \\n\\u0001/\",\"fields\":[]}",
            ),
            (
                r#"{"type":"record","name":"R","fields":[{"name":"a","type":"double","default":10000000.0},{"name":"b","type":"double","default":0.00012},{"name":"c","type":"float","default":1},{"name":"d","type":"double","default":-2.5E2}]}"#,
                r#"{"type":"record","name":"R","fields":[{"name":"a","type":"double","default":1.0E7},{"name":"b","type":"double","default":1.2E-4},{"name":"c","type":"float","default":1},{"name":"d","type":"double","default":-250.0}]}"#,
            ),
            (
                r#"{"type":"record","name":"R","namespace":"a","fields":[{"name":"x","type":{"type":"record","name":"record","fields":[]}},{"name":"y","type":"a.record"}]}"#,
                r#"{"type":"record","name":"R","namespace":"a","fields":[{"name":"x","type":{"type":"record","name":"record","fields":[]}},{"name":"y","type":"a.record"}]}"#,
            ),
            (
                r#"{"type":"record","name":"a.R","fields":[{"name":"n","type":{"type":"enum","name":"N","namespace":"","symbols":["X"]}},{"name":"m","type":{"type":"enum","name":"N","symbols":["Y"]}},{"name":"o","type":".N"},{"name":"p","type":"N"}]}"#,
                r#"{"type":"record","name":"R","namespace":"a","fields":[{"name":"n","type":{"type":"enum","name":"N","namespace":"","symbols":["X"]}},{"name":"m","type":{"type":"enum","name":"N","symbols":["Y"]}},{"name":"o","type":".N"},{"name":"p","type":"N"}]}"#,
            ),
            (
                r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","dup":1,"dup":2}]}"#,
                r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int","dup":2}]}"#,
            ),
        ];
        for (text, canonical) in cases {
            assert_eq!(parse(text).canonical(), canonical, "for {text}");
            assert_eq!(
                parse(canonical).canonical(),
                canonical,
                "not a fixed point: {canonical}"
            );
        }
    }

    #[test]
    fn java_double_matches_double_to_string() {
        for (value, text) in [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (100.0, "100.0"),
            (1.5, "1.5"),
            (0.001, "0.001"),
            (0.000_999, "9.99E-4"),
            (1_234_567.5, "1234567.5"),
            (9_999_999.0, "9999999.0"),
            (10_000_000.0, "1.0E7"),
            (12_345_678.9, "1.23456789E7"),
            (-1.0e300, "-1.0E300"),
            (f64::MIN_POSITIVE, "2.2250738585072014E-308"),
        ] {
            assert_eq!(java_double(value), text, "{value}");
        }
    }

    // ---- normalized form ----

    #[test]
    fn normalized_is_equal_for_cosmetic_differences() {
        let variants = [
            r#"{"type":"record","name":"R","namespace":"t","aliases":["X","Y"],"b":1,"a":{"y":1,"x":2},"fields":[{"name":"s","type":"string"},{"name":"d","type":"double","default":1},{"name":"m","type":{"type":"bytes","logicalType":"decimal","precision":4,"scale":0}},{"name":"r","type":{"type":"map","values":"double"},"default":{"b":1,"a":2.5}}]}"#,
            r#"{ "namespace" : "t", "type" : "record", "name" : "R", "a":{"x":2,"y":1}, "b":1, "aliases":["Y","X","Y"],
                "fields" : [ {"type":{"type":"string"},"name":"s","order":"ascending"},
                             {"name":"d","type":"double","default":1.0},
                             {"name":"m","type":{"precision":4,"logicalType":"decimal","type":"bytes"}},
                             {"name":"r","type":{"type":"map","values":"double"},"default":{"a":2.5,"b":1.0}} ] }"#,
            r#"{"type":"record","name":"t.R","aliases":["t.X","t.Y"],"a":{"y":1,"x":2},"b":1,"fields":[{"name":"s","type":"string"},{"name":"d","type":{"type":"double"},"default":1E0},{"name":"m","type":{"type":"bytes","logicalType":"decimal","scale":0,"precision":4}},{"name":"r","type":{"type":"map","values":"double"},"default":{"a":2.5,"b":1}}]}"#,
        ];
        let normalized: Vec<String> = variants.iter().map(|v| parse(v).normalized()).collect();
        assert_eq!(
            normalized[0],
            r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"s","type":"string"},{"name":"d","type":"double","default":1.0},{"name":"m","type":{"type":"bytes","logicalType":"decimal","precision":4}},{"name":"r","type":{"type":"map","values":"double"},"default":{"a":2.5,"b":1.0}}],"a":{"x":2,"y":1},"b":1,"aliases":["X","Y"]}"#
        );
        assert_eq!(normalized[1], normalized[0]);
        assert_eq!(normalized[2], normalized[0]);
        // The canonical forms keep what was written, so they differ.
        assert_ne!(
            parse(variants[0]).canonical(),
            parse(variants[1]).canonical()
        );
    }

    #[test]
    fn normalized_keeps_what_matters() {
        let base = rec(
            r#"{"name":"a","type":"int","default":1},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#,
        );
        let changed = [
            rec(
                r#"{"name":"a","type":"int","default":2},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#,
            ),
            rec(
                r#"{"name":"a","type":"int"},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#,
            ),
            rec(
                r#"{"name":"a","type":"int","default":1,"aliases":["z"]},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#,
            ),
            rec(
                r#"{"name":"a","type":{"type":"int","logicalType":"date"},"default":1},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#,
            ),
            rec(
                r#"{"name":"a","type":"int","default":1},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}}"#,
            ),
            rec(
                r#"{"name":"a","type":"int","default":1},{"name":"e","type":{"type":"enum","name":"E","symbols":["B","A"]}}"#,
            ),
            rec(
                r#"{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}},{"name":"a","type":"int","default":1}"#,
            ),
            rec(
                r#"{"name":"a","type":"int","default":1,"doc":"d"},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#,
            ),
            rec(
                r#"{"name":"a","type":"int","default":1,"order":"ignore"},{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}"#,
            ),
        ];
        let base = parse(&base).normalized();
        for text in changed {
            assert_ne!(parse(&text).normalized(), base, "{text}");
        }
    }

    // ---- robustness ----

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    const TOKENS: &[&str] = &[
        "\"",
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "null",
        "\"int\"",
        "\"record\"",
        "\"enum\"",
        "\"fixed\"",
        "\"array\"",
        "\"map\"",
        "\"R\"",
        "\"t.R\"",
        "\"Inner\"",
        "-1",
        "1e999",
        "1.5",
        "\"\"",
        "\"\\u0000\"",
        "{\"type\":\"R\"}",
        "[\"null\",\"R\"]",
        "\"default\":{},",
        "\"aliases\":[\"a\"],",
        "\"namespace\":\"\",",
        "\"size\":-1,",
        "\"symbols\":[],",
        "\"fields\":[],",
        "\"é\"",
        "\"default\":[1],",
        "\"order\":\"ignore\",",
    ];

    const WORDS: &[&str] = &[
        "type",
        "name",
        "namespace",
        "fields",
        "symbols",
        "items",
        "values",
        "size",
        "default",
        "aliases",
        "record",
        "error",
        "enum",
        "fixed",
        "array",
        "map",
        "null",
        "int",
        "long",
        "float",
        "double",
        "bytes",
        "string",
        "boolean",
        "R",
        "t.R",
        "Node",
        "Inner",
        "E",
        "a",
        "b",
        "",
        "1x",
        "A",
    ];

    fn mutate(rng: &mut Rng, text: &str) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        let at = rng.below(chars.len() + 1);
        // Pairs of quotes that open and close a string (the corpus escapes none).
        let quotes: Vec<usize> = (0..chars.len()).filter(|&i| chars[i] == '"').collect();
        let literal = |rng: &mut Rng| {
            let i = 2 * rng.below(quotes.len() / 2);
            (quotes[i] + 1, quotes[i + 1])
        };
        match rng.below(8) {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                chars.splice(at..at, token.chars());
            }
            // Mostly: a string literal becomes a word that means something, which keeps
            // the JSON valid and so reaches the parser's and the checker's rules.
            2..=4 if quotes.len() >= 2 => {
                let (from, to) = literal(rng);
                let word = WORDS[rng.below(WORDS.len())];
                chars.splice(from..to, word.chars());
            }
            5 => chars.truncate(at),
            6 if quotes.len() >= 4 => {
                let (a, b) = (literal(rng), literal(rng));
                let (first, second) = if a.0 < b.0 { (a, b) } else { (b, a) };
                if first.1 < second.0 {
                    let one: Vec<char> = chars[first.0..first.1].to_vec();
                    let two: Vec<char> = chars[second.0..second.1].to_vec();
                    chars.splice(second.0..second.1, one);
                    chars.splice(first.0..first.1, two);
                }
            }
            _ => {
                let from = rng.below(chars.len() + 1);
                let to = (from + rng.below(40)).min(chars.len());
                let copy: Vec<char> = chars[from..to].to_vec();
                chars.splice(at..at, copy);
            }
        }
        chars.into_iter().collect()
    }

    #[test]
    fn never_panics_on_mutated_schemas() {
        let mut corpus: Vec<String> = Vec::new();
        for case in cases() {
            if case.old_deps.is_empty() && case.new_deps.is_empty() {
                corpus.push(case.old);
                corpus.push(case.new);
            }
        }
        corpus.push(r#"{"type":"record","name":"R","namespace":"t","fields":[{"name":"a","type":{"type":"record","name":"Inner","fields":[{"name":"x","type":"int","default":1}]},"default":{"x":2}},{"name":"b","type":["null","Inner","t.R"],"default":null},{"name":"c","type":{"type":"fixed","name":"F","size":2},"default":"ab"},{"name":"d","type":{"type":"map","values":{"type":"array","items":"double"}},"default":{"k":[1,2.5]}}]}"#.to_string());
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut accepted, mut rejected) = (0, 0);
        for original_text in &corpus {
            let original = parse(original_text);
            for _ in 0..400 {
                let mut text = original_text.clone();
                for _ in 0..=rng.below(3) {
                    text = mutate(&mut rng, &text);
                }
                match AvroSchema::parse(&text, &[]) {
                    Err(e) => {
                        assert!(!e.0.is_empty());
                        rejected += 1;
                    }
                    Ok(schema) => {
                        accepted += 1;
                        let canonical = schema.canonical();
                        let again = AvroSchema::parse(&canonical, &[])
                            .unwrap_or_else(|e| panic!("{text} gave {canonical}, rejected: {e}"));
                        assert_eq!(again.canonical(), canonical, "from {text}");
                        let normal = AvroSchema::parse(&schema.normalized(), &[])
                            .unwrap_or_else(|e| panic!("{text} normalized rejected: {e}"));
                        assert_eq!(normal.normalized(), schema.normalized(), "from {text}");
                        let itself = incompatibilities(&schema, &schema);
                        assert!(
                            itself
                                .iter()
                                .all(|m| m.starts_with("READER_FIELD_AMBIGUOUS")),
                            "{text} cannot read itself: {itself:?}"
                        );
                        incompatibilities(&schema, &original);
                        incompatibilities(&original, &schema);
                    }
                }
            }
        }
        // Both paths were exercised, not just the error one.
        assert!(
            accepted > 2000 && rejected > 5000,
            "accepted {accepted}, rejected {rejected}"
        );
    }

    #[test]
    fn deep_and_wide_schemas_stay_within_bounds() {
        // Nesting within serde_json's limit parses and checks; beyond it is an error.
        let deep = format!(
            "{}\"int\"{}",
            r#"{"type":"array","items":"#.repeat(100),
            "}".repeat(100)
        );
        let schema = parse(&deep);
        assert!(incompatibilities(&schema, &schema).is_empty());
        rejects(
            &format!(
                "{}\"int\"{}",
                r#"{"type":"array","items":"#.repeat(200),
                "}".repeat(200)
            ),
            "not valid JSON",
        );

        // A long chain of records, each using the one before, defined side by side in a
        // union: the check stops at its depth limit rather than overflow the stack.
        let mut branches = vec![r#"{"type":"record","name":"T0","fields":[]}"#.to_string()];
        for i in 1..400 {
            branches.push(format!(
                r#"{{"type":"record","name":"T{i}","fields":[{{"name":"a","type":"T{}"}}]}}"#,
                i - 1
            ));
        }
        let chain = parse(&format!("[{}]", branches.join(",")));
        let last = parse_with(r#""T399""#, &[dep("chain", &chain.canonical())]);
        let found = incompatibilities(&last, &last);
        assert!(
            found.iter().all(|m| m.starts_with("SCHEMA_TOO_COMPLEX")) && !found.is_empty(),
            "{found:?}"
        );

        // A union of many records: each writer branch finds its reader branch by name
        // first instead of comparing every pair.
        let records: Vec<String> = (0..300)
            .map(|i| {
                let fields: Vec<String> = (0..20)
                    .map(|j| format!(r#"{{"name":"f{j}","type":"int"}}"#))
                    .collect();
                format!(
                    r#"{{"type":"record","name":"E{i}","fields":[{}]}}"#,
                    fields.join(",")
                )
            })
            .collect();
        let events = parse(&format!("[{}]", records.join(",")));
        assert!(incompatibilities(&events, &events).is_empty());

        // Many fields and symbols are handled without quadratic blow-ups.
        let fields: Vec<String> = (0..20_000)
            .map(|i| format!(r#"{{"name":"f{i}","type":"int","default":{i}}}"#))
            .collect();
        let wide = parse(&rec(&fields.join(",")));
        assert!(incompatibilities(&wide, &parse(&rec(""))).is_empty());
        assert!(incompatibilities(&wide, &wide).is_empty());
    }
}
