//! Protobuf schemas (proto2, proto3, text or base64 descriptors): parsing without protoc,
//! canonical text, compatibility by Confluent's rules.
//!
//! A schema arrives either as `.proto` text or as the base64 of a serialized
//! `FileDescriptorProto` (what confluent-kafka-python registers), and so does each of its
//! references. Both are compiled by protox into one descriptor pool, in which the schema is
//! the root file and its imports are the references, or the well-known types that protox
//! ships (`google/protobuf/*.proto`) when no reference provides them.
//!
//! The stored text is printed from the compiled descriptor, so the same schema registered as
//! text or as a descriptor stores the same text: type names are printed fully qualified, map
//! entries as `map<K, V>`, `json_name` only where it differs from the default, and comments
//! and formatting of the original text are not kept.
//!
//! Compatibility follows Confluent's `SchemaDiff`: the differences between the writer's
//! schema (Confluent's "original") and the reader's ("update") are listed, and the schemas
//! are compatible when every difference is one of Confluent's compatible changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use base64::Engine as _;
use prost::Message as _;
use prost_reflect::prost_types::{self, FieldDescriptorProto};
use prost_reflect::{
    Cardinality, DescriptorPool, DynamicMessage, EnumDescriptor, ExtensionDescriptor,
    FieldDescriptor, FileDescriptor, Kind, MessageDescriptor, ReflectMessage as _,
    ServiceDescriptor, Value,
};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use protox::Compiler;

use crate::schema::{Dependency, InvalidSchema};

/// Largest field number; reserved and extension ranges ending here print as `max`.
const MAX_FIELD_NUMBER: u32 = 536_870_911;

/// How deep the comparison follows message types defined in imported files (Confluent
/// compares them where a field uses them). Deeper chains are not followed, which bounds the
/// stack for pathological schemas.
const MAX_IMPORTED_TYPE_DEPTH: usize = 64;

#[derive(Debug, Clone)]
pub struct ProtobufSchema {
    /// The schema's file and every file it imports, compiled.
    pool: DescriptorPool,
    /// The name under which the schema's own file is in `pool`.
    root: String,
    canonical: String,
    normalized: String,
}

impl ProtobufSchema {
    /// Parses `.proto` text or a base64 `FileDescriptorProto`, with `dependencies` as the
    /// files it imports (each also text or base64). Errors carry protox's message with the
    /// file name, line and column.
    pub fn parse(text: &str, dependencies: &[Dependency]) -> Result<ProtobufSchema, InvalidSchema> {
        // The input comes from the network and protox and prost-reflect are large: a panic in
        // them (or here) must reject the schema, not take down the request.
        match catch_unwind(AssertUnwindSafe(|| parse_schema(text, dependencies))) {
            Ok(result) => result,
            Err(_) => Err(InvalidSchema(
                "invalid Protobuf schema: the descriptor could not be processed".to_string(),
            )),
        }
    }

    /// The schema as text, printed from its descriptor (see the module documentation).
    pub fn canonical(&self) -> String {
        self.canonical.clone()
    }

    /// Like [`canonical`](Self::canonical), but independent of the order of declarations
    /// whose order does not matter: imports, options, reserved ranges and names sorted;
    /// fields and oneofs by number, enum values by number; enums, services and rpcs by name.
    /// Messages keep their order: serializers name a message by its index in the file (and
    /// nested messages by their index in their message, see `Printer::body_items`).
    pub fn normalized(&self) -> String {
        self.normalized.clone()
    }

    /// The base64 of the schema's `FileDescriptorProto` (`?format=serialized`), with type
    /// names resolved, custom options kept and source locations dropped.
    pub fn serialized(&self) -> String {
        let Some(file) = self.pool.get_file_by_name(&self.root) else {
            return String::new();
        };
        let encoded = file.encode_to_vec();
        let descriptor = prost_types::FileDescriptorProto::default().descriptor();
        let bytes = match DynamicMessage::decode(descriptor, encoded.as_slice()) {
            Ok(mut message) => {
                message.clear_field_by_name("source_code_info");
                message.encode_to_vec()
            }
            Err(_) => prost_types::FileDescriptorProto {
                source_code_info: None,
                ..file.file_descriptor_proto().clone()
            }
            .encode_to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    /// The compiled file of the schema itself.
    fn file(&self) -> Option<FileDescriptor> {
        self.pool.get_file_by_name(&self.root)
    }
}

// ---------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------

fn parse_schema(text: &str, dependencies: &[Dependency]) -> Result<ProtobufSchema, InvalidSchema> {
    let mut files: HashMap<String, String> = HashMap::new();
    for dependency in dependencies {
        files
            .entry(dependency.name.clone())
            .or_insert_with(|| dependency.schema.clone());
    }
    // The schema's own file needs a name that no reference uses.
    let mut root = "schema.proto".to_string();
    let mut suffix = 1;
    while files.contains_key(&root) {
        root = format!("schema_{suffix}.proto");
        suffix += 1;
    }
    files.insert(root.clone(), text.to_string());

    let mut resolver = ChainFileResolver::new();
    resolver.add(SchemaFiles { files });
    resolver.add(GoogleFileResolver::new());
    let mut compiler = Compiler::with_file_resolver(resolver);
    compiler
        .open_file(&root)
        .map_err(|err| InvalidSchema(format!("{err:?}")))?;
    let pool = compiler.descriptor_pool();
    let file = pool
        .get_file_by_name(&root)
        .ok_or_else(|| InvalidSchema("invalid Protobuf schema: file not compiled".to_string()))?;
    let canonical = print_file(&file, false);
    let normalized = print_file(&file, true);
    Ok(ProtobufSchema {
        pool,
        root,
        canonical,
        normalized,
    })
}

/// The schema and its references by import path, for protox.
struct SchemaFiles {
    files: HashMap<String, String>,
}

impl FileResolver for SchemaFiles {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.files.get(name) {
            Some(schema) => open_schema_file(name, schema),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A file given as text or as a base64 `FileDescriptorProto`, named `name` either way.
fn open_schema_file(name: &str, schema: &str) -> Result<File, protox::Error> {
    let Some(mut bytes) = base64_bytes(schema) else {
        return File::from_source(name, schema);
    };
    // The file must be known by the name that imports use, whatever name the descriptor
    // carries: appending field 1 renames it (the last value of a field wins) while keeping
    // the encoded bytes, and with them custom options that prost_types would drop.
    prost::encoding::string::encode(1, &name.to_string(), &mut bytes);
    let file = File::decode_file_descriptor_proto(bytes.as_slice()).map_err(|err| {
        protox::Error::new(PlainError(format!(
            "{name}: neither .proto text nor a base64-encoded FileDescriptorProto: {err}"
        )))
    })?;
    // prost-reflect panics on a syntax it does not know (it labels the error with a file
    // it has not added yet), so those are refused here. An empty syntax is proto2.
    match file.file_descriptor_proto().syntax.as_deref() {
        None | Some("proto2") | Some("proto3") => Ok(file),
        Some("") => {
            prost::encoding::string::encode(12, &"proto2".to_string(), &mut bytes);
            File::decode_file_descriptor_proto(bytes.as_slice())
                .map_err(|err| protox::Error::new(PlainError(format!("{name}: {err}"))))
        }
        Some(syntax) => Err(protox::Error::new(PlainError(format!(
            "{name}: syntax '{syntax}' is not supported (proto2 and proto3 are)"
        )))),
    }
}

/// The bytes of `schema` if it is base64 (standard alphabet, whitespace ignored). Text
/// `.proto` files contain characters outside that alphabet, except trivial ones (a lone
/// comment without spaces) that then fail to decode and are parsed as text.
fn base64_bytes(schema: &str) -> Option<Vec<u8>> {
    let compact: Vec<u8> = schema
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty()
        || !compact
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
    {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

/// An error whose `Debug` is its message, as protox prints custom errors with `Debug`.
struct PlainError(String);

impl fmt::Debug for PlainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for PlainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlainError {}

// ---------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------

/// Prints a compiled file as `.proto` text; `normalized` sorts what order does not matter.
fn print_file(file: &FileDescriptor, normalized: bool) -> String {
    let proto = file.file_descriptor_proto();
    let proto3 = proto.syntax() == "proto3";
    let mut p = Printer {
        out: String::new(),
        normalized,
        proto3,
    };
    p.line(
        0,
        if proto3 {
            "syntax = \"proto3\";"
        } else {
            "syntax = \"proto2\";"
        },
    );
    if !proto.package().is_empty() {
        p.line(0, &format!("package {};", proto.package()));
    }

    let mut imports: Vec<String> = proto
        .dependency
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            let modifier = if proto.public_dependency.contains(&index) {
                "public "
            } else if proto.weak_dependency.contains(&index) {
                "weak "
            } else {
                ""
            };
            format!("import {modifier}{};", quote(name))
        })
        .collect();
    if normalized {
        imports.sort();
        imports.dedup();
    }
    if !imports.is_empty() {
        p.blank();
        for import in &imports {
            p.line(0, import);
        }
    }

    let options = p.options(&file.options());
    if !options.is_empty() {
        p.blank();
        for (name, value) in &options {
            p.line(0, &format!("option {name} = {value};"));
        }
    }

    for message in file.messages() {
        p.blank();
        p.message(&message, 0);
    }
    let mut enums: Vec<EnumDescriptor> = file.enums().collect();
    if normalized {
        enums.sort_by(|a, b| a.name().cmp(b.name()));
    }
    for e in &enums {
        p.blank();
        p.enumeration(e, 0);
    }
    let extensions: Vec<ExtensionDescriptor> = file.extensions().collect();
    if !extensions.is_empty() {
        p.blank();
        p.extend_blocks(extensions, 0);
    }
    let mut services: Vec<ServiceDescriptor> = file.services().collect();
    if normalized {
        services.sort_by(|a, b| a.name().cmp(b.name()));
    }
    for service in &services {
        p.blank();
        p.service(service);
    }
    p.out
}

struct Printer {
    out: String,
    normalized: bool,
    proto3: bool,
}

/// What a message body holds, in the order it is printed.
enum Item {
    Field(FieldDescriptor),
    Oneof(prost_reflect::OneofDescriptor),
    Message(MessageDescriptor),
}

impl Printer {
    fn line(&mut self, depth: usize, text: &str) {
        for _ in 0..depth {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn blank(&mut self) {
        self.out.push('\n');
    }

    fn message(&mut self, message: &MessageDescriptor, depth: usize) {
        self.line(depth, &format!("message {} {{", message.name()));
        self.message_body(message, depth + 1);
        self.line(depth, "}");
    }

    /// A message body in protoc's order: options, reserved, nested messages and enums,
    /// fields (oneofs where their first field is), extension ranges, extensions.
    fn message_body(&mut self, message: &MessageDescriptor, depth: usize) {
        for (name, value) in self.options(&message.options()) {
            // Synthesized for map fields, which print as `map<K, V>`.
            if name != "map_entry" {
                self.line(depth, &format!("option {name} = {value};"));
            }
        }
        let mut ranges: Vec<(u32, u32)> = message
            .reserved_ranges()
            .map(|r| (r.start, r.end.saturating_sub(1)))
            .collect();
        if !ranges.is_empty() {
            if self.normalized {
                ranges.sort_unstable();
            }
            let ranges: Vec<String> = ranges
                .iter()
                .map(|&(start, end)| field_range(start, end))
                .collect();
            self.line(depth, &format!("reserved {};", ranges.join(", ")));
        }
        self.reserved_names(message.reserved_names().collect(), depth);

        let (leading, items) = self.body_items(message);
        for nested in &leading {
            self.message(nested, depth);
        }
        let mut enums: Vec<EnumDescriptor> = message.child_enums().collect();
        if self.normalized {
            enums.sort_by(|a, b| a.name().cmp(b.name()));
        }
        for e in &enums {
            self.enumeration(e, depth);
        }
        for item in items {
            match item {
                Item::Field(field) => self.field(&field, false, depth),
                Item::Oneof(oneof) => {
                    self.line(depth, &format!("oneof {} {{", oneof.name()));
                    for (name, value) in self.options(&oneof.options()) {
                        self.line(depth + 1, &format!("option {name} = {value};"));
                    }
                    let mut fields: Vec<FieldDescriptor> = oneof.fields().collect();
                    if self.normalized {
                        fields.sort_by_key(FieldDescriptor::number);
                    }
                    for field in &fields {
                        self.field(field, true, depth + 1);
                    }
                    self.line(depth, "}");
                }
                Item::Message(nested) => self.message(&nested, depth),
            }
        }

        let mut ranges: Vec<(u32, u32)> = message
            .extension_ranges()
            .map(|r| (r.start, r.end.saturating_sub(1)))
            .collect();
        if !ranges.is_empty() {
            if self.normalized {
                ranges.sort_unstable();
            }
            let ranges: Vec<String> = ranges
                .iter()
                .map(|&(start, end)| field_range(start, end))
                .collect();
            self.line(depth, &format!("extensions {};", ranges.join(", ")));
        }
        let extensions: Vec<ExtensionDescriptor> = message.child_extensions().collect();
        self.extend_blocks(extensions, depth);
    }

    /// The nested messages printed before the fields, then fields, oneofs and the other
    /// nested messages in print order. protoc declares the message of a map or group field
    /// where the field is, so a nested message that follows such a message in the
    /// descriptor is printed after its field: the printed text compiles to the same nested
    /// message indexes, which serializers write into each record. The normalized form sorts
    /// fields by number and places nested messages the same way, which keeps the indexes
    /// unless map or group fields were declared out of number order.
    fn body_items(&self, message: &MessageDescriptor) -> (Vec<MessageDescriptor>, Vec<Item>) {
        let nested: Vec<MessageDescriptor> = message.child_messages().collect();
        let nested_index: HashMap<String, usize> = nested
            .iter()
            .enumerate()
            .map(|(i, m)| (m.full_name().to_string(), i))
            .collect();
        // Nested messages that fields declare (map entries, groups), by field number.
        let mut owned: HashMap<u32, usize> = HashMap::new();
        let mut fields: Vec<FieldDescriptor> = Vec::new();
        for proto in &message.descriptor_proto().field {
            let Some(field) = message.get_field(proto.number().unsigned_abs()) else {
                continue;
            };
            let index =
                declared_message(&field).and_then(|m| nested_index.get(m.full_name()).copied());
            if let Some(index) = index {
                owned.insert(field.number(), index);
            }
            fields.push(field);
        }
        let mut owned_sorted: Vec<usize> = owned.values().copied().collect();
        owned_sorted.sort_unstable();
        // Owned messages print with their fields.
        let mut printed = vec![false; nested.len()];
        for &index in &owned_sorted {
            printed[index] = true;
        }
        let leading_end = owned_sorted.first().copied().unwrap_or(nested.len());
        let mut leading = Vec::new();
        for (index, m) in nested.iter().enumerate().take(leading_end) {
            if !printed[index] {
                printed[index] = true;
                leading.push(m.clone());
            }
        }
        if self.normalized {
            fields.sort_by_key(FieldDescriptor::number);
        }

        let mut items = Vec::new();
        let mut oneofs_done: HashSet<String> = HashSet::new();
        for field in fields {
            let number = field.number();
            match real_oneof(&field) {
                Some(oneof) => {
                    if oneofs_done.insert(oneof.name().to_string()) {
                        items.push(Item::Oneof(oneof));
                    }
                }
                None => items.push(Item::Field(field)),
            }
            // The nested messages declared between this field's message and the next one.
            if let Some(&index) = owned.get(&number) {
                if let Some(&next) = owned_sorted.iter().find(|&&i| i > index) {
                    for (i, m) in nested.iter().enumerate().take(next).skip(index + 1) {
                        if !printed[i] {
                            printed[i] = true;
                            items.push(Item::Message(m.clone()));
                        }
                    }
                }
            }
        }
        for (i, m) in nested.iter().enumerate() {
            if !printed[i] {
                items.push(Item::Message(m.clone()));
            }
        }
        (leading, items)
    }

    fn reserved_names(&mut self, mut names: Vec<&str>, depth: usize) {
        if names.is_empty() {
            return;
        }
        if self.normalized {
            names.sort_unstable();
        }
        let names: Vec<String> = names.iter().map(|n| quote(n)).collect();
        self.line(depth, &format!("reserved {};", names.join(", ")));
    }

    /// One field of a message (or a oneof, where it has no label).
    fn field(&mut self, field: &FieldDescriptor, in_oneof: bool, depth: usize) {
        let proto = field.field_descriptor_proto();
        let mut options = Vec::new();
        if let Some(default) = &proto.default_value {
            options.push(("default".to_string(), default_value(&field.kind(), default)));
        }
        if let Some(json_name) = &proto.json_name {
            if *json_name != default_json_name(field.name()) {
                options.push(("json_name".to_string(), quote(json_name)));
            }
        }
        options.extend(self.options(&field.options()));
        let options = inline_options(&options);

        if let Some((key, value)) = map_types(field) {
            self.line(
                depth,
                &format!(
                    "map<{}, {}> {} = {}{options};",
                    type_name(&key),
                    type_name(&value),
                    field.name(),
                    field.number()
                ),
            );
            return;
        }
        let label = if in_oneof { "" } else { self.label(proto) };
        if let Some(group) = declared_message(field).filter(|_| field.is_group()) {
            self.line(
                depth,
                &format!(
                    "{label}group {} = {}{options} {{",
                    group.name(),
                    field.number()
                ),
            );
            self.message_body(&group, depth + 1);
            self.line(depth, "}");
            return;
        }
        self.line(
            depth,
            &format!(
                "{label}{} {} = {}{options};",
                type_name(&field.kind()),
                field.name(),
                field.number()
            ),
        );
    }

    fn label(&self, proto: &FieldDescriptorProto) -> &'static str {
        use prost_types::field_descriptor_proto::Label;
        match proto.label() {
            Label::Repeated => "repeated ",
            Label::Required => "required ",
            Label::Optional if !self.proto3 || proto.proto3_optional() => "optional ",
            Label::Optional => "",
        }
    }

    /// `extend` blocks for extension fields, one per run of the same extended message.
    fn extend_blocks(&mut self, mut extensions: Vec<ExtensionDescriptor>, depth: usize) {
        if self.normalized {
            extensions.sort_by(|a, b| {
                (a.containing_message().full_name(), a.number())
                    .cmp(&(b.containing_message().full_name(), b.number()))
            });
        }
        let mut current: Option<String> = None;
        for extension in &extensions {
            let extendee = extension.containing_message().full_name().to_string();
            if current.as_deref() != Some(extendee.as_str()) {
                if current.is_some() {
                    self.line(depth, "}");
                }
                self.line(depth, &format!("extend .{extendee} {{"));
                current = Some(extendee);
            }
            let proto = extension.field_descriptor_proto();
            let mut options = Vec::new();
            if let Some(default) = &proto.default_value {
                options.push((
                    "default".to_string(),
                    default_value(&extension.kind(), default),
                ));
            }
            options.extend(self.options(&extension.options()));
            let label = self.label(proto);
            self.line(
                depth + 1,
                &format!(
                    "{label}{} {} = {}{};",
                    type_name(&extension.kind()),
                    proto.name(),
                    extension.number(),
                    inline_options(&options)
                ),
            );
        }
        if current.is_some() {
            self.line(depth, "}");
        }
    }

    fn enumeration(&mut self, e: &EnumDescriptor, depth: usize) {
        self.line(depth, &format!("enum {} {{", e.name()));
        for (name, value) in self.options(&e.options()) {
            self.line(depth + 1, &format!("option {name} = {value};"));
        }
        let mut ranges: Vec<(i32, i32)> = e
            .reserved_ranges()
            .map(|r| (*r.start(), *r.end()))
            .collect();
        if !ranges.is_empty() {
            if self.normalized {
                ranges.sort_unstable();
            }
            let ranges: Vec<String> = ranges
                .iter()
                .map(|&(start, end)| match (start == end, end == i32::MAX) {
                    (true, _) => start.to_string(),
                    (false, true) => format!("{start} to max"),
                    (false, false) => format!("{start} to {end}"),
                })
                .collect();
            self.line(depth + 1, &format!("reserved {};", ranges.join(", ")));
        }
        self.reserved_names(e.reserved_names().collect(), depth + 1);
        let mut values = declared_values(e);
        if self.normalized {
            values.sort_by(|a, b| (a.number(), a.name()).cmp(&(b.number(), b.name())));
        }
        for value in &values {
            let options = inline_options(&self.options(&value.options()));
            self.line(
                depth + 1,
                &format!("{} = {}{options};", value.name(), value.number()),
            );
        }
        self.line(depth, "}");
    }

    fn service(&mut self, service: &ServiceDescriptor) {
        self.line(0, &format!("service {} {{", service.name()));
        for (name, value) in self.options(&service.options()) {
            self.line(1, &format!("option {name} = {value};"));
        }
        let mut methods: Vec<_> = service.methods().collect();
        if self.normalized {
            methods.sort_by(|a, b| a.name().cmp(b.name()));
        }
        for method in &methods {
            let stream = |yes: bool| if yes { "stream " } else { "" };
            let head = format!(
                "rpc {} ({}.{}) returns ({}.{})",
                method.name(),
                stream(method.is_client_streaming()),
                method.input().full_name(),
                stream(method.is_server_streaming()),
                method.output().full_name()
            );
            let options = self.options(&method.options());
            if options.is_empty() {
                self.line(1, &format!("{head};"));
            } else {
                self.line(1, &format!("{head} {{"));
                for (name, value) in &options {
                    self.line(2, &format!("option {name} = {value};"));
                }
                self.line(1, "}");
            }
        }
        self.line(0, "}");
    }

    /// The options set in an options message, as (name, value) pairs: standard options by
    /// field number, then custom options (extensions) by number, one pair per value of a
    /// repeated option. The normalized form sorts them by name.
    fn options(&self, options: &DynamicMessage) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (field, value) in options.fields() {
            if field.name() != "uninterpreted_option" {
                push_option(&mut out, field.name().to_string(), &field.kind(), value);
            }
        }
        for (extension, value) in options.extensions() {
            push_option(
                &mut out,
                format!("(.{})", extension.full_name()),
                &extension.kind(),
                value,
            );
        }
        if self.normalized {
            out.sort_by(|a, b| a.0.cmp(&b.0));
        }
        out
    }
}

fn push_option(out: &mut Vec<(String, String)>, name: String, kind: &Kind, value: &Value) {
    match value {
        Value::List(values) => {
            for value in values {
                out.push((name.clone(), option_value(kind, value)));
            }
        }
        value => out.push((name, option_value(kind, value))),
    }
}

fn option_value(kind: &Kind, value: &Value) -> String {
    match value {
        Value::Bool(v) => v.to_string(),
        Value::I32(v) => v.to_string(),
        Value::I64(v) => v.to_string(),
        Value::U32(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::F32(v) => float(f64::from(*v), format!("{v:?}")),
        Value::F64(v) => float(*v, format!("{v:?}")),
        Value::String(v) => quote(v),
        Value::Bytes(v) => quote_bytes(v),
        Value::EnumNumber(n) => kind
            .as_enum()
            .and_then(|e| e.get_value(*n))
            .map(|v| v.name().to_string())
            .unwrap_or_else(|| n.to_string()),
        Value::Message(m) => {
            let text = m.to_text_format();
            if text.is_empty() {
                "{}".to_string()
            } else {
                format!("{{ {text} }}")
            }
        }
        // Not the value of an option field itself (lists are split by the caller, maps are
        // only found inside message values).
        Value::List(_) | Value::Map(_) => "{}".to_string(),
    }
}

fn float(v: f64, shortest: String) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        shortest
    }
}

/// ` [a = 1, b = "x"]`, or nothing.
fn inline_options(options: &[(String, String)]) -> String {
    if options.is_empty() {
        return String::new();
    }
    let options: Vec<String> = options.iter().map(|(n, v)| format!("{n} = {v}")).collect();
    format!(" [{}]", options.join(", "))
}

fn field_range(start: u32, end: u32) -> String {
    if start == end {
        start.to_string()
    } else if end >= MAX_FIELD_NUMBER {
        format!("{start} to max")
    } else {
        format!("{start} to {end}")
    }
}

/// A field's default value as written in `[default = ...]`.
fn default_value(kind: &Kind, default: &str) -> String {
    match kind {
        Kind::String => quote(default),
        // Descriptors hold bytes defaults already C-escaped.
        Kind::Bytes => format!("\"{default}\""),
        _ => default.to_string(),
    }
}

/// The JSON name protoc derives from a field name (`foo_bar` -> `fooBar`).
fn default_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03o}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out.push('"');
    out
}

/// A type as written in a field: the scalar keyword, or the fully qualified name.
fn type_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".to_string(),
        Kind::Float => "float".to_string(),
        Kind::Int32 => "int32".to_string(),
        Kind::Int64 => "int64".to_string(),
        Kind::Uint32 => "uint32".to_string(),
        Kind::Uint64 => "uint64".to_string(),
        Kind::Sint32 => "sint32".to_string(),
        Kind::Sint64 => "sint64".to_string(),
        Kind::Fixed32 => "fixed32".to_string(),
        Kind::Fixed64 => "fixed64".to_string(),
        Kind::Sfixed32 => "sfixed32".to_string(),
        Kind::Sfixed64 => "sfixed64".to_string(),
        Kind::Bool => "bool".to_string(),
        Kind::String => "string".to_string(),
        Kind::Bytes => "bytes".to_string(),
        Kind::Message(m) => format!(".{}", m.full_name()),
        Kind::Enum(e) => format!(".{}", e.full_name()),
    }
}

/// The key and value types of a map field. Checked by hand rather than with prost-reflect's
/// map accessors, which panic on a map entry without key or value (a crafted descriptor).
fn map_types(field: &FieldDescriptor) -> Option<(Kind, Kind)> {
    if field.cardinality() != Cardinality::Repeated {
        return None;
    }
    let Kind::Message(entry) = field.kind() else {
        return None;
    };
    if !entry.is_map_entry() {
        return None;
    }
    Some((entry.get_field(1)?.kind(), entry.get_field(2)?.kind()))
}

/// The nested message that a map or group field declares along with itself.
fn declared_message(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    let Kind::Message(m) = field.kind() else {
        return None;
    };
    let declared = if field.is_group() {
        m.name().to_ascii_lowercase() == field.name()
    } else {
        map_types(field).is_some()
    };
    let parent = m.parent_message()?;
    (declared && parent.full_name() == field.parent_message().full_name()).then_some(m)
}

/// An enum's values in declaration order (prost-reflect lists them by number).
fn declared_values(e: &EnumDescriptor) -> Vec<prost_reflect::EnumValueDescriptor> {
    let mut values: Vec<_> = e.values().collect();
    values.sort_by_key(|v| v.path().last().copied().unwrap_or_default());
    values
}

/// The oneof a field belongs to, unless it is the synthetic oneof of a proto3 `optional`.
fn real_oneof(field: &FieldDescriptor) -> Option<prost_reflect::OneofDescriptor> {
    field.containing_oneof().filter(|o| !o.is_synthetic())
}

// ---------------------------------------------------------------------------------------
// Compatibility
// ---------------------------------------------------------------------------------------

/// The kinds of difference of Confluent's Protobuf schema diff (its `Difference.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DifferenceType {
    PackageChanged,
    MessageAdded,
    MessageRemoved,
    MessageMoved,
    EnumAdded,
    EnumRemoved,
    EnumConstAdded,
    EnumConstChanged,
    EnumConstRemoved,
    FieldAdded,
    FieldRemoved,
    FieldNameChanged,
    FieldKindChanged,
    FieldScalarKindChanged,
    FieldNamedTypeChanged,
    FieldNumericLabelChanged,
    FieldStringOrBytesLabelChanged,
    RequiredFieldAdded,
    RequiredFieldRemoved,
    OneofAdded,
    OneofRemoved,
    OneofFieldAdded,
    OneofFieldRemoved,
    OneofFieldMovedToTopLevel,
    MultipleFieldsMovedToOneof,
    FieldMovedToExistingOneof,
}

impl DifferenceType {
    /// Confluent's name, e.g. `FIELD_SCALAR_KIND_CHANGED`.
    pub fn as_str(self) -> &'static str {
        use DifferenceType::*;
        match self {
            PackageChanged => "PACKAGE_CHANGED",
            MessageAdded => "MESSAGE_ADDED",
            MessageRemoved => "MESSAGE_REMOVED",
            MessageMoved => "MESSAGE_MOVED",
            EnumAdded => "ENUM_ADDED",
            EnumRemoved => "ENUM_REMOVED",
            EnumConstAdded => "ENUM_CONST_ADDED",
            EnumConstChanged => "ENUM_CONST_CHANGED",
            EnumConstRemoved => "ENUM_CONST_REMOVED",
            FieldAdded => "FIELD_ADDED",
            FieldRemoved => "FIELD_REMOVED",
            FieldNameChanged => "FIELD_NAME_CHANGED",
            FieldKindChanged => "FIELD_KIND_CHANGED",
            FieldScalarKindChanged => "FIELD_SCALAR_KIND_CHANGED",
            FieldNamedTypeChanged => "FIELD_NAMED_TYPE_CHANGED",
            FieldNumericLabelChanged => "FIELD_NUMERIC_LABEL_CHANGED",
            FieldStringOrBytesLabelChanged => "FIELD_STRING_OR_BYTES_LABEL_CHANGED",
            RequiredFieldAdded => "REQUIRED_FIELD_ADDED",
            RequiredFieldRemoved => "REQUIRED_FIELD_REMOVED",
            OneofAdded => "ONEOF_ADDED",
            OneofRemoved => "ONEOF_REMOVED",
            OneofFieldAdded => "ONEOF_FIELD_ADDED",
            OneofFieldRemoved => "ONEOF_FIELD_REMOVED",
            OneofFieldMovedToTopLevel => "ONEOF_FIELD_MOVED_TO_TOP_LEVEL",
            MultipleFieldsMovedToOneof => "MULTIPLE_FIELDS_MOVED_TO_ONEOF",
            FieldMovedToExistingOneof => "FIELD_MOVED_TO_EXISTING_ONEOF",
        }
    }

    /// Whether Confluent counts the difference as compatible (its `COMPATIBLE_CHANGES`).
    pub fn is_compatible(self) -> bool {
        use DifferenceType::*;
        matches!(
            self,
            MessageAdded
                | MessageMoved
                | EnumAdded
                | EnumRemoved
                | EnumConstAdded
                | EnumConstChanged
                | EnumConstRemoved
                | FieldAdded
                | FieldRemoved
                | FieldNameChanged
                | FieldStringOrBytesLabelChanged
                | OneofAdded
                | OneofRemoved
                | OneofFieldAdded
                | OneofFieldMovedToTopLevel
        )
    }
}

impl fmt::Display for DifferenceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One difference between two schemas: its type, Confluent's path to where it is (`#/`
/// then message names, oneof names and field numbers, e.g. `#/Order/1`) and a sentence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub kind: DifferenceType,
    pub path: String,
    pub detail: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} [{}]", self.kind, self.detail, self.path)
    }
}

/// Why data written with `writer` cannot be read with `reader` (empty: it can): the
/// incompatible differences from the writer's schema to the reader's.
pub fn incompatibilities(reader: &ProtobufSchema, writer: &ProtobufSchema) -> Vec<String> {
    differences(writer, reader)
        .into_iter()
        .filter(|d| !d.kind.is_compatible())
        .map(|d| d.to_string())
        .collect()
}

/// Every difference from `original` to `update`, compatible or not, as Confluent's
/// `SchemaDiff.compare(original, update)` finds them.
pub fn differences(original: &ProtobufSchema, update: &ProtobufSchema) -> Vec<Difference> {
    let (Some(o), Some(u)) = (original.file(), update.file()) else {
        return Vec::new();
    };
    let mut diff = Diff {
        original_root: &original.root,
        update_root: &update.root,
        active: Vec::new(),
        memo: HashMap::new(),
        depth: 0,
    };
    let mut scope = Scope::new(Vec::new());
    if o.package_name() != u.package_name() {
        scope.add(
            DifferenceType::PackageChanged,
            &[],
            format!(
                "package changed from '{}' to '{}'",
                o.package_name(),
                u.package_name()
            ),
        );
    }
    diff.types(
        &mut scope,
        o.messages().collect(),
        o.enums().collect(),
        u.messages().collect(),
        u.enums().collect(),
    );
    scope.diffs
}

/// The differences found under one path prefix, without repeats.
struct Scope {
    path: Vec<String>,
    diffs: Vec<Difference>,
    seen: HashSet<(DifferenceType, String)>,
}

impl Scope {
    fn new(path: Vec<String>) -> Scope {
        Scope {
            path,
            diffs: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn add(&mut self, kind: DifferenceType, extra: &[&str], detail: String) {
        let mut parts: Vec<&str> = self.path.iter().map(String::as_str).collect();
        parts.extend_from_slice(extra);
        let path = format!("#/{}", parts.join("/"));
        self.push(Difference { kind, path, detail });
    }

    fn push(&mut self, difference: Difference) {
        if self.seen.insert((difference.kind, difference.path.clone())) {
            self.diffs.push(difference);
        }
    }
}

/// Field label as Confluent's model has it: none in proto3 unless `optional` or `repeated`,
/// none for oneof members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Label {
    Optional,
    Required,
    Repeated,
}

impl Label {
    fn as_str(self) -> &'static str {
        match self {
            Label::Optional => "optional",
            Label::Required => "required",
            Label::Repeated => "repeated",
        }
    }
}

fn confluent_label(field: &FieldDescriptor) -> Option<Label> {
    if real_oneof(field).is_some() {
        return None;
    }
    let proto = field.field_descriptor_proto();
    if proto.proto3_optional() {
        return Some(Label::Optional);
    }
    let proto3 = field.parent_file().file_descriptor_proto().syntax() == "proto3";
    match field.cardinality() {
        Cardinality::Repeated => Some(Label::Repeated),
        _ if proto3 => None,
        Cardinality::Required => Some(Label::Required),
        Cardinality::Optional => Some(Label::Optional),
    }
}

/// Confluent's groups of wire-compatible scalar types (enums count as general numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScalarKind {
    GeneralNumber,
    SignedNumber,
    StringOrBytes,
    Fixed32,
    Fixed64,
    Float,
    Double,
}

impl ScalarKind {
    fn is_numeric(self) -> bool {
        self != ScalarKind::StringOrBytes
    }
}

/// A field's type as the comparison sees it.
enum FieldType {
    Scalar(ScalarKind, String),
    Message(MessageDescriptor),
    Map(Box<FieldType>, Box<FieldType>),
}

impl FieldType {
    fn of_field(field: &FieldDescriptor) -> FieldType {
        match map_types(field) {
            Some((key, value)) => FieldType::Map(
                Box::new(FieldType::of_kind(key)),
                Box::new(FieldType::of_kind(value)),
            ),
            None => FieldType::of_kind(field.kind()),
        }
    }

    /// Without looking into map entries: map keys and values are not maps.
    fn of_kind(kind: Kind) -> FieldType {
        let scalar = |k: ScalarKind| FieldType::Scalar(k, type_name(&kind));
        match &kind {
            Kind::Message(m) => FieldType::Message(m.clone()),
            Kind::Enum(e) => {
                FieldType::Scalar(ScalarKind::GeneralNumber, format!("enum {}", e.full_name()))
            }
            Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool => {
                scalar(ScalarKind::GeneralNumber)
            }
            Kind::Sint32 | Kind::Sint64 => scalar(ScalarKind::SignedNumber),
            Kind::String | Kind::Bytes => scalar(ScalarKind::StringOrBytes),
            Kind::Fixed32 | Kind::Sfixed32 => scalar(ScalarKind::Fixed32),
            Kind::Fixed64 | Kind::Sfixed64 => scalar(ScalarKind::Fixed64),
            Kind::Float => scalar(ScalarKind::Float),
            Kind::Double => scalar(ScalarKind::Double),
        }
    }

    fn class(&self) -> &'static str {
        match self {
            FieldType::Scalar(..) => "scalar",
            FieldType::Message(_) => "message",
            FieldType::Map(..) => "map",
        }
    }

    fn describe(&self) -> String {
        match self {
            FieldType::Scalar(_, name) => name.clone(),
            FieldType::Message(m) => format!("message {}", m.full_name()),
            FieldType::Map(k, v) => format!("map<{}, {}>", k.describe(), v.describe()),
        }
    }
}

/// A message's name without its package, as Confluent compares named types.
fn local_name(full_name: &str, package: &str) -> String {
    if package.is_empty() {
        return full_name.to_string();
    }
    full_name
        .strip_prefix(package)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(full_name)
        .to_string()
}

fn message_local_name(m: &MessageDescriptor) -> String {
    local_name(m.full_name(), m.package_name())
}

/// The field a difference is about, for its sentence.
#[derive(Clone)]
struct FieldRef {
    message: String,
    name: String,
    number: u32,
    part: &'static str,
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}field '{}' (#{}) of message '{}'",
            self.part, self.name, self.number, self.message
        )
    }
}

/// Confluent's `SchemaDiff` over two compiled files.
struct Diff<'s> {
    original_root: &'s str,
    update_root: &'s str,
    /// Original messages whose fields are being compared, to stop on recursive types.
    active: Vec<String>,
    /// Comparisons of imported message types already made, by (original, update) name.
    memo: HashMap<(String, String), Rc<Vec<Difference>>>,
    depth: usize,
}

impl Diff<'_> {
    /// Messages and enums declared side by side (in a file or a message), matched by name.
    fn types(
        &mut self,
        scope: &mut Scope,
        original_messages: Vec<MessageDescriptor>,
        original_enums: Vec<EnumDescriptor>,
        update_messages: Vec<MessageDescriptor>,
        update_enums: Vec<EnumDescriptor>,
    ) {
        // Map entries are not types in .proto text, which is what Confluent compares.
        let index = |messages: Vec<MessageDescriptor>| -> Vec<(String, usize, MessageDescriptor)> {
            messages
                .into_iter()
                .filter(|m| !m.is_map_entry())
                .enumerate()
                .map(|(i, m)| (m.name().to_string(), i, m))
                .collect()
        };
        let original = index(original_messages);
        let update = index(update_messages);
        let original_by_name: HashMap<&str, (usize, &MessageDescriptor)> = original
            .iter()
            .map(|(n, i, m)| (n.as_str(), (*i, m)))
            .collect();
        let update_by_name: HashMap<&str, (usize, &MessageDescriptor)> = update
            .iter()
            .map(|(n, i, m)| (n.as_str(), (*i, m)))
            .collect();
        let mut names: Vec<&str> = original.iter().map(|(n, _, _)| n.as_str()).collect();
        names.extend(
            update
                .iter()
                .map(|(n, _, _)| n.as_str())
                .filter(|n| !original_by_name.contains_key(n)),
        );
        for name in names {
            scope.path.push(name.to_string());
            match (original_by_name.get(name), update_by_name.get(name)) {
                (Some((_, o)), None) => scope.add(
                    DifferenceType::MessageRemoved,
                    &[],
                    format!("message '{}' was removed", message_local_name(o)),
                ),
                (None, Some((_, u))) => scope.add(
                    DifferenceType::MessageAdded,
                    &[],
                    format!("message '{}' was added", message_local_name(u)),
                ),
                (Some((oi, o)), Some((ui, u))) => {
                    self.message(scope, o, u);
                    if oi != ui {
                        // Compatible: a record names its message by index in the schema
                        // of its own id.
                        scope.add(
                            DifferenceType::MessageMoved,
                            &[],
                            format!(
                                "message '{}' moved from position {oi} to {ui}",
                                message_local_name(u)
                            ),
                        );
                    }
                }
                (None, None) => {}
            }
            scope.path.pop();
        }

        let original_enums: BTreeMap<String, EnumDescriptor> = original_enums
            .into_iter()
            .map(|e| (e.name().to_string(), e))
            .collect();
        let update_enums: BTreeMap<String, EnumDescriptor> = update_enums
            .into_iter()
            .map(|e| (e.name().to_string(), e))
            .collect();
        let names: BTreeSet<&String> = original_enums.keys().chain(update_enums.keys()).collect();
        for name in names {
            scope.path.push(name.clone());
            match (original_enums.get(name), update_enums.get(name)) {
                (Some(o), None) => scope.add(
                    DifferenceType::EnumRemoved,
                    &[],
                    format!(
                        "enum '{}' was removed",
                        local_name(o.full_name(), o.package_name())
                    ),
                ),
                (None, Some(u)) => scope.add(
                    DifferenceType::EnumAdded,
                    &[],
                    format!(
                        "enum '{}' was added",
                        local_name(u.full_name(), u.package_name())
                    ),
                ),
                (Some(o), Some(u)) => enum_values(scope, o, u),
                (None, None) => {}
            }
            scope.path.pop();
        }
    }

    /// Confluent's `MessageSchemaDiff`: fields matched by number wherever they are (top
    /// level or in a oneof), oneof changes, then nested types.
    fn message(
        &mut self,
        scope: &mut Scope,
        original: &MessageDescriptor,
        update: &MessageDescriptor,
    ) {
        let key = format!("{}#{}", original.parent_file().name(), original.full_name());
        if !self.active.contains(&key) {
            self.active.push(key);
            self.message_fields(scope, original, update);
            self.active.pop();
        }
        self.types(
            scope,
            original.child_messages().collect(),
            original.child_enums().collect(),
            update.child_messages().collect(),
            update.child_enums().collect(),
        );
    }

    fn message_fields(
        &mut self,
        scope: &mut Scope,
        original: &MessageDescriptor,
        update: &MessageDescriptor,
    ) {
        let message = message_local_name(update);
        let collect = |m: &MessageDescriptor| {
            let mut by_number: BTreeMap<u32, (FieldDescriptor, Option<String>)> = BTreeMap::new();
            let mut oneofs: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            let mut oneof_order: Vec<String> = Vec::new();
            for field in m.fields() {
                let oneof = real_oneof(&field).map(|o| o.name().to_string());
                if let Some(name) = &oneof {
                    if !oneofs.contains_key(name) {
                        oneof_order.push(name.clone());
                    }
                    oneofs.entry(name.clone()).or_default().push(field.number());
                }
                by_number.insert(field.number(), (field, oneof));
            }
            // Declaration order of oneofs, not the order of their lowest field numbers.
            oneof_order.sort_by_key(|name| {
                m.oneofs()
                    .position(|o| o.name() == name.as_str())
                    .unwrap_or(usize::MAX)
            });
            (by_number, oneofs, oneof_order)
        };
        let (original_fields, original_oneofs, _) = collect(original);
        let (update_fields, update_oneofs, update_oneof_order) = collect(update);

        // A oneof removed together with all its fields is a deletion Confluent accepts, so
        // the removals of its fields are not reported.
        let deleted_oneofs: HashSet<&String> = original_oneofs
            .iter()
            .filter(|(name, numbers)| {
                !update_oneofs.contains_key(*name)
                    && numbers.iter().all(|n| !update_fields.contains_key(n))
            })
            .map(|(name, _)| name)
            .collect();

        // Fields that could be set together before and now exclude each other.
        for name in &update_oneof_order {
            let Some(numbers) = update_oneofs.get(name) else {
                continue;
            };
            let mut groups: BTreeSet<String> = BTreeSet::new();
            let mut moved_in: Vec<u32> = Vec::new();
            for number in numbers {
                match original_fields.get(number) {
                    Some((_, Some(oneof))) => {
                        groups.insert(format!("oneof:{oneof}"));
                    }
                    Some((_, None)) => {
                        groups.insert(format!("field:{number}"));
                        moved_in.push(*number);
                    }
                    None => {}
                }
            }
            if groups.len() > 1 {
                let list: Vec<String> = moved_in.iter().map(|n| format!("#{n}")).collect();
                if moved_in.len() > 1 {
                    scope.add(
                        DifferenceType::MultipleFieldsMovedToOneof,
                        &[name],
                        format!(
                            "fields {} of message '{message}' were moved into oneof '{name}', so they can no longer be set together",
                            list.join(", ")
                        ),
                    );
                } else {
                    scope.add(
                        DifferenceType::FieldMovedToExistingOneof,
                        &[name],
                        format!(
                            "oneof '{name}' of message '{message}' now holds fields that could be set together before"
                        ),
                    );
                }
            }
        }

        let names: BTreeSet<&String> = original_oneofs.keys().chain(update_oneofs.keys()).collect();
        for name in names {
            if !update_oneofs.contains_key(name) {
                scope.add(
                    DifferenceType::OneofRemoved,
                    &[name],
                    format!("oneof '{name}' was removed from message '{message}'"),
                );
            } else if !original_oneofs.contains_key(name) {
                scope.add(
                    DifferenceType::OneofAdded,
                    &[name],
                    format!("oneof '{name}' was added to message '{message}'"),
                );
            }
        }

        let numbers: BTreeSet<u32> = original_fields
            .keys()
            .chain(update_fields.keys())
            .copied()
            .collect();
        for number in numbers {
            let n = number.to_string();
            match (original_fields.get(&number), update_fields.get(&number)) {
                (Some((field, Some(oneof))), None) => {
                    if !deleted_oneofs.contains(oneof) {
                        scope.add(
                            DifferenceType::OneofFieldRemoved,
                            &[oneof, &n],
                            format!(
                                "field '{}' (#{number}) was removed from oneof '{oneof}' of message '{message}'",
                                field.name()
                            ),
                        );
                    }
                }
                (Some((field, None)), None) => {
                    let (kind, what) = if confluent_label(field) == Some(Label::Required) {
                        (DifferenceType::RequiredFieldRemoved, "required field")
                    } else {
                        (DifferenceType::FieldRemoved, "field")
                    };
                    scope.add(
                        kind,
                        &[&n],
                        format!(
                            "{what} '{}' (#{number}) was removed from message '{message}'",
                            field.name()
                        ),
                    );
                }
                (None, Some((field, Some(oneof)))) => scope.add(
                    DifferenceType::OneofFieldAdded,
                    &[oneof, &n],
                    format!(
                        "field '{}' (#{number}) was added to oneof '{oneof}' of message '{message}'",
                        field.name()
                    ),
                ),
                (None, Some((field, None))) => {
                    let (kind, what) = if confluent_label(field) == Some(Label::Required) {
                        (DifferenceType::RequiredFieldAdded, "required field")
                    } else {
                        (DifferenceType::FieldAdded, "field")
                    };
                    scope.add(
                        kind,
                        &[&n],
                        format!(
                            "{what} '{}' (#{number}) was added to message '{message}'",
                            field.name()
                        ),
                    );
                }
                (Some((o, original_oneof)), Some((u, update_oneof))) => {
                    if original_oneof.is_some() && update_oneof.is_none() {
                        scope.add(
                            DifferenceType::OneofFieldMovedToTopLevel,
                            &[&n],
                            format!(
                                "field '{}' (#{number}) of message '{message}' was moved out of oneof '{}'",
                                u.name(),
                                original_oneof.as_deref().unwrap_or_default()
                            ),
                        );
                    }
                    let pushed = match update_oneof {
                        Some(oneof) => {
                            scope.path.push(oneof.clone());
                            true
                        }
                        None => false,
                    };
                    scope.path.push(n.clone());
                    self.field(scope, &message, o, u);
                    scope.path.pop();
                    if pushed {
                        scope.path.pop();
                    }
                }
                (None, None) => {}
            }
        }
    }

    /// Confluent's `FieldSchemaDiff`: name, then kind, scalar group, label or named type.
    fn field(
        &mut self,
        scope: &mut Scope,
        message: &str,
        original: &FieldDescriptor,
        update: &FieldDescriptor,
    ) {
        let at = FieldRef {
            message: message.to_string(),
            name: update.name().to_string(),
            number: update.number(),
            part: "",
        };
        if original.name() != update.name() {
            scope.add(
                DifferenceType::FieldNameChanged,
                &[],
                format!(
                    "field #{} of message '{message}' was renamed from '{}' to '{}'",
                    update.number(),
                    original.name(),
                    update.name()
                ),
            );
        }
        self.labels_and_types(
            scope,
            &at,
            confluent_label(original),
            confluent_label(update),
            &FieldType::of_field(original),
            &FieldType::of_field(update),
        );
    }

    fn labels_and_types(
        &mut self,
        scope: &mut Scope,
        at: &FieldRef,
        original_label: Option<Label>,
        update_label: Option<Label>,
        original: &FieldType,
        update: &FieldType,
    ) {
        match (original, update) {
            (FieldType::Scalar(ok, _), FieldType::Scalar(uk, _)) => {
                if ok != uk {
                    scope.add(
                        DifferenceType::FieldScalarKindChanged,
                        &[],
                        format!(
                            "{at} changed from {} to {}",
                            original.describe(),
                            update.describe()
                        ),
                    );
                } else if let (Some(ol), Some(ul)) = (original_label, update_label) {
                    if ol != ul {
                        let kind = if ok.is_numeric() {
                            DifferenceType::FieldNumericLabelChanged
                        } else {
                            DifferenceType::FieldStringOrBytesLabelChanged
                        };
                        scope.add(
                            kind,
                            &[],
                            format!("{at} changed from {} to {}", ol.as_str(), ul.as_str()),
                        );
                    }
                }
            }
            (FieldType::Message(o), FieldType::Message(u)) => self.message_types(scope, at, o, u),
            (FieldType::Map(ok, ov), FieldType::Map(uk, uv)) => {
                let key = FieldRef {
                    part: "key of ",
                    ..at.clone()
                };
                self.labels_and_types(scope, &key, None, None, ok, uk);
                let value = FieldRef {
                    part: "value of ",
                    ..at.clone()
                };
                self.labels_and_types(scope, &value, None, None, ov, uv);
            }
            _ => scope.add(
                DifferenceType::FieldKindChanged,
                &[],
                format!(
                    "{at} changed from {} ({}) to {} ({})",
                    original.describe(),
                    original.class(),
                    update.describe(),
                    update.class()
                ),
            ),
        }
    }

    /// Message-typed fields: the type must keep its name (without package); a type defined
    /// in an imported file is compared too, as a change there changes this field.
    fn message_types(
        &mut self,
        scope: &mut Scope,
        at: &FieldRef,
        original: &MessageDescriptor,
        update: &MessageDescriptor,
    ) {
        let original_name = message_local_name(original);
        let update_name = message_local_name(update);
        if original_name != update_name {
            scope.add(
                DifferenceType::FieldNamedTypeChanged,
                &[],
                format!(
                    "{at} changed from {} to {}",
                    original.full_name(),
                    update.full_name()
                ),
            );
            return;
        }
        let original_file = original.parent_file();
        let update_file = update.parent_file();
        let both_local =
            original_file.name() == self.original_root && update_file.name() == self.update_root;
        // Types of the schemas themselves are compared where they are declared, and the same
        // imported file (Confluent: the same subject and version) has nothing to compare.
        let same_import = !both_local
            && original_file.name() == update_file.name()
            && original_file.file_descriptor_proto() == update_file.file_descriptor_proto();
        if both_local || same_import || self.depth >= MAX_IMPORTED_TYPE_DEPTH {
            return;
        }
        let key = (
            format!("{}#{}", original_file.name(), original.full_name()),
            format!("{}#{}", update_file.name(), update.full_name()),
        );
        let found = match self.memo.get(&key) {
            Some(found) => Rc::clone(found),
            None => {
                // Paths of differences inside the type start at its name, as Confluent's.
                let mut sub = Scope::new(original_name.split('.').map(str::to_string).collect());
                self.depth += 1;
                self.message(&mut sub, original, update);
                self.depth -= 1;
                let found = Rc::new(sub.diffs);
                self.memo.insert(key, Rc::clone(&found));
                found
            }
        };
        let compatible = found.iter().all(|d| d.kind.is_compatible());
        for difference in found.iter() {
            scope.push(difference.clone());
        }
        if !compatible {
            scope.add(
                DifferenceType::FieldNamedTypeChanged,
                &[],
                format!(
                    "{at} has type {} that changed incompatibly",
                    update.full_name()
                ),
            );
        }
    }
}

/// Confluent's `EnumSchemaDiff`: constants matched by number. All its changes are
/// compatible, as enum values are numbers on the wire.
fn enum_values(scope: &mut Scope, original: &EnumDescriptor, update: &EnumDescriptor) {
    let name = local_name(update.full_name(), update.package_name());
    // Aliases (several names for a number) compare as the set of their names, so that the
    // order they are declared in does not matter.
    let by_number = |e: &EnumDescriptor| -> BTreeMap<i32, BTreeSet<String>> {
        let mut values: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        for v in e.values() {
            values
                .entry(v.number())
                .or_default()
                .insert(v.name().to_string());
        }
        values
    };
    let names = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join("/");
    let original_values = by_number(original);
    let update_values = by_number(update);
    let numbers: BTreeSet<i32> = original_values
        .keys()
        .chain(update_values.keys())
        .copied()
        .collect();
    for number in numbers {
        let n = number.to_string();
        match (original_values.get(&number), update_values.get(&number)) {
            (Some(o), None) => scope.add(
                DifferenceType::EnumConstRemoved,
                &[&n],
                format!(
                    "constant {} = {number} was removed from enum '{name}'",
                    names(o)
                ),
            ),
            (None, Some(u)) => scope.add(
                DifferenceType::EnumConstAdded,
                &[&n],
                format!(
                    "constant {} = {number} was added to enum '{name}'",
                    names(u)
                ),
            ),
            (Some(o), Some(u)) if o != u => scope.add(
                DifferenceType::EnumConstChanged,
                &[&n],
                format!(
                    "constant {number} of enum '{name}' was renamed from {} to {}",
                    names(o),
                    names(u)
                ),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ProtobufSchema {
        match ProtobufSchema::parse(text, &[]) {
            Ok(schema) => schema,
            Err(err) => panic!("schema does not parse: {err}\n{text}"),
        }
    }

    fn parse_with(text: &str, deps: &[(&str, &str)]) -> Result<ProtobufSchema, InvalidSchema> {
        let deps: Vec<Dependency> = deps
            .iter()
            .map(|(name, schema)| Dependency {
                name: name.to_string(),
                schema: schema.to_string(),
            })
            .collect();
        ProtobufSchema::parse(text, &deps)
    }

    /// What confluent-kafka-python registers: the base64 of the file's serialized descriptor,
    /// compiled here by protox as protoc would.
    fn descriptor_base64(name: &str, text: &str, deps: &[(&str, &str)]) -> String {
        struct Files(HashMap<String, String>);
        impl FileResolver for Files {
            fn open_file(&self, name: &str) -> Result<File, protox::Error> {
                match self.0.get(name) {
                    Some(source) => File::from_source(name, source),
                    None => Err(protox::Error::file_not_found(name)),
                }
            }
        }
        let mut files: HashMap<String, String> = deps
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        files.insert(name.to_string(), text.to_string());
        let mut resolver = ChainFileResolver::new();
        resolver.add(Files(files));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = Compiler::with_file_resolver(resolver);
        compiler.open_file(name).expect("test schema compiles");
        // Encoded by the pool, which keeps custom options (prost_types would drop them).
        let file = compiler
            .descriptor_pool()
            .get_file_by_name(name)
            .expect("compiled file");
        base64::engine::general_purpose::STANDARD.encode(file.encode_to_vec())
    }

    const PROTO3: &str = r#"
syntax = "proto3";
package shop.v1;

import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

option java_package = "com.example.shop";
option java_multiple_files = true;
option go_package = "example.com/shop/v1;shopv1";

// An order, with comments that the stored text does not keep.
message Order {
  option deprecated = true;
  reserved 9, 12 to 15, 100 to max;
  reserved "legacy", "old_total";

  message Line {
    string sku = 1;
    uint32 quantity = 2;
  }
  string id = 1;
  optional string note = 2;
  repeated Line lines = 3;
  map<string, int64> counters = 4;
  google.protobuf.Timestamp created_at = 5;
  oneof payment {
    string card_token = 6;
    string iban = 7 [json_name = "IBAN"];
  }
  Status status = 8 [deprecated = true];
  map<int32, Line> by_position = 10;
  repeated double weights = 11 [packed = false];
  google.protobuf.StringValue coupon = 16;

  enum Status {
    option allow_alias = true;
    reserved 5, 7 to 9;
    reserved "STATUS_GONE";
    STATUS_UNKNOWN = 0;
    STATUS_NEW = 1;
    STATUS_FRESH = 1;
    STATUS_PAID = 2 [deprecated = true];
  }
}

enum Currency {
  CURRENCY_UNKNOWN = 0;
  EUR = 1;
  USD = 2;
}

service Orders {
  rpc Get (Order) returns (Order);
  rpc Watch (stream Order) returns (stream Order) {
    option deprecated = true;
  }
}
"#;

    const PROTO2: &str = r#"
syntax = "proto2";
package legacy;

import "google/protobuf/descriptor.proto";

extend google.protobuf.FieldOptions {
  optional string sensitivity = 50001;
}

message Account {
  required int64 id = 1;
  optional string name = 2 [default = "anon \"x\"", (sensitivity) = "pii"];
  repeated int32 scores = 3 [packed = true];
  optional double ratio = 4 [default = -inf];
  optional Kind kind = 5 [default = KIND_PERSONAL];
  optional bytes blob = 6 [default = "\001\002abc"];
  optional group Address = 7 {
    optional string street = 1;
    optional int32 zip = 2;
  }
  oneof contact {
    string email = 8;
    string phone = 9;
  }
  extensions 100 to 199, 1000 to max;

  enum Kind {
    KIND_PERSONAL = 1;
    KIND_BUSINESS = 2;
  }
}

extend Account {
  optional string nickname = 100;
}
"#;

    #[test]
    fn protobuf_proto3_prints_canonical_text() {
        let schema = parse(PROTO3);
        let text = schema.canonical();
        for expected in [
            "syntax = \"proto3\";\npackage shop.v1;\n",
            "import \"google/protobuf/timestamp.proto\";\nimport \"google/protobuf/wrappers.proto\";\n",
            "option java_package = \"com.example.shop\";",
            "option go_package = \"example.com/shop/v1;shopv1\";",
            "message Order {\n  option deprecated = true;\n  reserved 9, 12 to 15, 100 to max;\n  reserved \"legacy\", \"old_total\";\n  message Line {\n    string sku = 1;\n    uint32 quantity = 2;\n  }\n  enum Status {\n",
            "    STATUS_PAID = 2 [deprecated = true];\n  }\n  string id = 1;\n",
            "  optional string note = 2;\n",
            "  repeated .shop.v1.Order.Line lines = 3;\n",
            "  map<string, int64> counters = 4;\n",
            "  .google.protobuf.Timestamp created_at = 5;\n",
            "  oneof payment {\n    string card_token = 6;\n    string iban = 7 [json_name = \"IBAN\"];\n  }\n",
            "  .shop.v1.Order.Status status = 8 [deprecated = true];\n",
            "  map<int32, .shop.v1.Order.Line> by_position = 10;\n",
            "  repeated double weights = 11 [packed = false];\n",
            "    option allow_alias = true;\n    reserved 5, 7 to 9;\n    reserved \"STATUS_GONE\";\n",
            "    STATUS_PAID = 2 [deprecated = true];\n",
            "enum Currency {\n  CURRENCY_UNKNOWN = 0;\n  EUR = 1;\n  USD = 2;\n}\n",
            "  rpc Get (.shop.v1.Order) returns (.shop.v1.Order);\n",
            "  rpc Watch (stream .shop.v1.Order) returns (stream .shop.v1.Order) {\n    option deprecated = true;\n  }\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // Synthesized parts of the descriptor are not printed.
        assert!(!text.contains("Entry"), "{text}");
        assert!(!text.contains("_note"), "{text}");
        assert!(!text.contains("json_name = \"cardToken\""), "{text}");
        assert!(!text.contains("comments"), "{text}");
    }

    #[test]
    fn protobuf_proto2_prints_labels_defaults_groups_and_extensions() {
        let schema = parse(PROTO2);
        let text = schema.canonical();
        for expected in [
            "syntax = \"proto2\";\npackage legacy;\n",
            "extend .google.protobuf.FieldOptions {\n  optional string sensitivity = 50001;\n}\n",
            "  required int64 id = 1;\n",
            "  optional string name = 2 [default = \"anon \\\"x\\\"\", (.legacy.sensitivity) = \"pii\"];\n",
            "  repeated int32 scores = 3 [packed = true];\n",
            "  optional double ratio = 4 [default = -inf];\n",
            "  optional .legacy.Account.Kind kind = 5 [default = KIND_PERSONAL];\n",
            "  optional bytes blob = 6 [default = \"\\001\\002abc\"];\n",
            "  optional group Address = 7 {\n    optional string street = 1;\n    optional int32 zip = 2;\n  }\n",
            "  oneof contact {\n    string email = 8;\n    string phone = 9;\n  }\n",
            "  extensions 100 to 199, 1000 to max;\n",
            "extend .legacy.Account {\n  optional string nickname = 100;\n}\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // The group's message is printed as the group, not again as a nested message.
        assert_eq!(text.matches("Address").count(), 1, "{text}");
    }

    #[test]
    fn protobuf_canonical_text_round_trips() {
        for source in [PROTO3, PROTO2] {
            let first = parse(source);
            let again = parse(&first.canonical());
            assert_eq!(first.canonical(), again.canonical());
            assert_eq!(first.normalized(), again.normalized());
            assert_eq!(differences(&first, &again), vec![]);
            assert_eq!(differences(&again, &first), vec![]);
            // The descriptors match, except for what the text does not carry.
            let strip = |s: &ProtobufSchema| {
                let mut file = s.file().expect("file").file_descriptor_proto().clone();
                file.source_code_info = None;
                file
            };
            assert_eq!(strip(&first), strip(&again));
            // The normalized text compiles to the same schema too.
            let normalized = parse(&first.normalized());
            assert_eq!(normalized.normalized(), first.normalized());
            assert_eq!(differences(&first, &normalized), vec![]);
        }
    }

    #[test]
    fn protobuf_nested_message_order_survives_map_fields() {
        // protoc declares a map's entry message where the map field is, so the printed
        // text keeps nested messages around map fields to keep their indexes.
        let text = r#"syntax = "proto3";
message Outer {
  message First { int32 a = 1; }
  map<string, int32> tags = 1;
  message Second { int32 b = 1; }
  map<string, First> firsts = 2;
  message Third { int32 c = 1; }
}"#;
        let schema = parse(text);
        let nested = |s: &ProtobufSchema| -> Vec<String> {
            s.file().expect("file").file_descriptor_proto().message_type[0]
                .nested_type
                .iter()
                .map(|m| m.name().to_string())
                .collect()
        };
        let expected = ["First", "TagsEntry", "Second", "FirstsEntry", "Third"];
        assert_eq!(nested(&schema), expected);
        assert_eq!(nested(&parse(&schema.canonical())), expected);
        assert_eq!(nested(&parse(&schema.normalized())), expected);
    }

    #[test]
    fn protobuf_explicit_map_entries_print_as_maps() {
        // Confluent's Java client registers text printed from descriptors, where a map is a
        // repeated field of an explicit entry message.
        let java = parse(
            "syntax = \"proto3\";\npackage ex;\n\nmessage Outer {\n  repeated .ex.Outer.TagsEntry tags = 1;\n  string name = 2;\n\n  message TagsEntry {\n    option map_entry = true;\n  \n    string key = 1;\n    int32 value = 2;\n  }\n}\n",
        );
        let plain = parse(
            "syntax = \"proto3\";\npackage ex;\nmessage Outer {\n  map<string, int32> tags = 1;\n  string name = 2;\n}\n",
        );
        assert_eq!(java.canonical(), plain.canonical());
        assert_eq!(differences(&java, &plain), vec![]);
    }

    #[test]
    fn protobuf_text_and_descriptor_give_the_same_schema() {
        for (source, deps) in [
            (PROTO3, vec![]),
            (PROTO2, vec![]),
            (
                "syntax = \"proto3\";\nimport \"money.proto\";\nmessage Order { shop.Money total = 1; }",
                vec![("money.proto", "syntax = \"proto3\";\npackage shop;\nmessage Money { int64 units = 1; }")],
            ),
        ] {
            let text = parse_with(source, &deps).expect("text parses");
            let encoded = descriptor_base64("order.proto", source, &deps);
            let from_descriptor = parse_with(&encoded, &deps).expect("descriptor parses");
            assert_eq!(text.canonical(), from_descriptor.canonical());
            assert_eq!(text.normalized(), from_descriptor.normalized());
            assert_eq!(differences(&text, &from_descriptor), vec![]);
            // References registered as descriptors too, as confluent-kafka-python does.
            let encoded_deps: Vec<(String, String)> = deps
                .iter()
                .map(|(n, s)| (n.to_string(), descriptor_base64(n, s, &[])))
                .collect();
            let encoded_deps: Vec<(&str, &str)> = encoded_deps
                .iter()
                .map(|(n, s)| (n.as_str(), s.as_str()))
                .collect();
            let all_descriptors = parse_with(&encoded, &encoded_deps).expect("descriptors parse");
            assert_eq!(text.canonical(), all_descriptors.canonical());
        }
    }

    #[test]
    fn protobuf_descriptor_with_line_breaks_and_other_file_name_parses() {
        let encoded = descriptor_base64(
            "some/dir/order.proto",
            "syntax = \"proto3\";\nmessage Order { string id = 1; }",
            &[],
        );
        let wrapped: String = encoded
            .as_bytes()
            .chunks(20)
            .map(|c| String::from_utf8_lossy(c).to_string())
            .collect::<Vec<_>>()
            .join("\n");
        let schema = parse_with(&wrapped, &[]).expect("parses");
        assert_eq!(
            schema.canonical(),
            "syntax = \"proto3\";\n\nmessage Order {\n  string id = 1;\n}\n"
        );
    }

    #[test]
    fn protobuf_serialized_is_the_descriptor_of_the_schema() {
        let schema = parse(PROTO2);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(schema.serialized())
            .expect("base64");
        let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("descriptor");
        assert_eq!(file.package(), "legacy");
        assert_eq!(file.message_type[0].name(), "Account");
        assert!(file.source_code_info.is_none());
        // Custom options survive: the schema parsed back from it prints the same.
        let again = parse(&schema.serialized());
        assert_eq!(again.canonical(), schema.canonical());
    }

    #[test]
    fn protobuf_formatting_comments_and_qualification_do_not_change_the_schema() {
        let a = parse(
            "syntax = \"proto3\"; package p; message A { B b = 1; message B { int32 x = 1; } }",
        );
        let b = parse(
            "// comment\nsyntax = 'proto3';\n\npackage p;\n\nmessage A {\n  /* c */ .p.A.B b = 1;\n  message B {\n    int32 x = 1;\n  }\n}\n",
        );
        assert_eq!(a.canonical(), b.canonical());
    }

    #[test]
    fn protobuf_normalized_ignores_declaration_order() {
        let a = parse(
            r#"syntax = "proto3";
import "google/protobuf/timestamp.proto";
import "google/protobuf/duration.proto";
option java_package = "x";
option go_package = "y";
message M {
  reserved 8, 4;
  reserved "b", "a";
  int32 second = 2;
  oneof o { string z = 6; string y = 5; }
  int32 first = 1;
  google.protobuf.Timestamp t = 3;
  google.protobuf.Duration d = 7;
}
enum Z { Z0 = 0; }
enum A { A0 = 0; A2 = 2; A1 = 1; }
"#,
        );
        let b = parse(
            r#"syntax = "proto3";
import "google/protobuf/duration.proto";
import "google/protobuf/timestamp.proto";
option go_package = "y";
option java_package = "x";
enum A { A0 = 0; A1 = 1; A2 = 2; }
message M {
  reserved "a", "b";
  reserved 4, 8;
  int32 first = 1;
  int32 second = 2;
  google.protobuf.Timestamp t = 3;
  oneof o { string y = 5; string z = 6; }
  google.protobuf.Duration d = 7;
}
enum Z { Z0 = 0; }
"#,
        );
        assert_ne!(a.canonical(), b.canonical());
        assert_eq!(a.normalized(), b.normalized());
        let normalized = a.normalized();
        assert!(
            normalized.contains("  int32 first = 1;\n  int32 second = 2;\n  .google.protobuf.Timestamp t = 3;\n  oneof o {\n    string y = 5;\n    string z = 6;\n  }\n"),
            "{normalized}"
        );
        // Messages keep their order: records name them by index.
        let c = parse("syntax = \"proto3\"; message B {} message A {}");
        assert!(
            c.normalized().find("message B").unwrap() < c.normalized().find("message A").unwrap()
        );
    }

    #[test]
    fn protobuf_parse_errors_locate_the_problem() {
        let cases = [
            (
                "syntax = \"proto3\";\nmessage A {\n  int32 x = ;\n}\n",
                "schema.proto:3:13:",
            ),
            (
                "syntax = \"proto3\";\nmessage A {\n  Missing m = 1;\n}\n",
                "schema.proto:3:3:",
            ),
            (
                "syntax = \"proto3\";\nmessage A {\n  int32 x = 1;\n  int32 y = 1;\n}\n",
                "schema.proto:4:",
            ),
            ("syntax = \"proto4\";\n", "schema.proto:1:10:"),
            (
                "syntax = \"proto3\";\nimport \"other.proto\";\nmessage A {}\n",
                "schema.proto:2:1: import 'other.proto' not found",
            ),
            (
                "syntax = \"proto3\";\nmessage A { required int32 x = 1; }\n",
                "schema.proto:2:",
            ),
        ];
        for (text, expected) in cases {
            match ProtobufSchema::parse(text, &[]) {
                Ok(_) => panic!("accepted {text:?}"),
                Err(InvalidSchema(message)) => {
                    assert!(message.starts_with(expected), "{text:?}: {message}")
                }
            }
        }
        let message = ProtobufSchema::parse("message A {", &[]).unwrap_err().0;
        assert!(message.contains("reached end of file"), "{message}");
        let message = ProtobufSchema::parse(
            "syntax = \"proto3\";\nmessage A {\n  Missing m = 1;\n}\n",
            &[],
        )
        .unwrap_err()
        .0;
        assert!(message.contains("Missing"), "{message}");
    }

    #[test]
    fn protobuf_errors_in_references_name_the_reference() {
        let err = parse_with(
            "syntax = \"proto3\";\nimport \"other.proto\";\nmessage A { B b = 1; }",
            &[(
                "other.proto",
                "syntax = \"proto3\";\nmessage B {\n  int32 = 1;\n}",
            )],
        )
        .unwrap_err();
        assert!(err.0.starts_with("other.proto:3:"), "{err}");
    }

    #[test]
    fn protobuf_imports_resolve_through_references() {
        let money = "syntax = \"proto3\";\npackage common;\nimport \"currency.proto\";\nmessage Money { int64 units = 1; Currency currency = 2; }";
        let currency = "syntax = \"proto3\";\npackage common;\nenum Currency { EUR = 0; USD = 1; }";
        let schema = parse_with(
            "syntax = \"proto3\";\npackage shop;\nimport \"common/money.proto\";\nmessage Order { common.Money total = 1; }",
            &[("currency.proto", currency), ("common/money.proto", money)],
        )
        .expect("parses");
        assert!(schema.canonical().contains(
            "import \"common/money.proto\";\n\nmessage Order {\n  .common.Money total = 1;\n}"
        ));
        // A reference that is not imported is not needed, nor checked.
        assert!(parse_with(
            "syntax = \"proto3\"; message A {}",
            &[("unused.proto", "not a schema")]
        )
        .is_ok());
        // A reference named like the schema's own file does not clash with it.
        assert!(parse_with(
            "syntax = \"proto3\"; import \"schema.proto\"; message A { B b = 1; }",
            &[("schema.proto", "syntax = \"proto3\"; message B {}")]
        )
        .is_ok());
    }

    #[test]
    fn protobuf_well_known_types_need_no_reference() {
        let text = r#"syntax = "proto3";
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/empty.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/descriptor.proto";
extend google.protobuf.MessageOptions { string owner = 50000; }
message Event {
  option (owner) = "team-a";
  google.protobuf.Any payload = 1;
  google.protobuf.Duration ttl = 2;
  google.protobuf.Empty nothing = 3;
  google.protobuf.FieldMask mask = 4;
  google.protobuf.Struct attributes = 5;
  google.protobuf.Value value = 6;
  google.protobuf.Timestamp at = 7;
  google.protobuf.Int64Value count = 8;
}
"#;
        let schema = parse(text);
        let canonical = schema.canonical();
        assert!(
            canonical.contains("  option (.owner) = \"team-a\";\n"),
            "{canonical}"
        );
        assert!(
            canonical.contains("  .google.protobuf.Int64Value count = 8;\n"),
            "{canonical}"
        );
        assert_eq!(parse(&canonical).canonical(), canonical);
    }

    #[test]
    fn protobuf_custom_message_options_print_as_aggregates() {
        let text = r#"syntax = "proto3";
package opts;
import "google/protobuf/descriptor.proto";
message Rule { string name = 1; repeated int32 limits = 2; Rule inner = 3; }
extend google.protobuf.FieldOptions { Rule rule = 50010; repeated string tags = 50011; }
message M {
  string a = 1 [(rule) = { name: "x\"y" limits: [1, 2] inner { name: "z" } }, (tags) = "t1", (tags) = "t2"];
}
"#;
        let schema = parse(text);
        let canonical = schema.canonical();
        assert!(canonical.contains("(.opts.rule) = {"), "{canonical}");
        assert!(
            canonical.contains("(.opts.tags) = \"t1\", (.opts.tags) = \"t2\""),
            "{canonical}"
        );
        let again = parse(&canonical);
        assert_eq!(again.canonical(), canonical);
    }

    #[test]
    fn protobuf_proto2_and_proto3_labels_in_compatibility() {
        // proto2 `optional` to proto3 plain field: no label in Confluent's model of proto3.
        let v2 = parse(
            "syntax = \"proto2\"; message A { optional int32 x = 1; optional string s = 2; }",
        );
        let v3 = parse("syntax = \"proto3\"; message A { int32 x = 1; string s = 2; }");
        assert!(incompatibilities(&v3, &v2).is_empty());
        assert!(incompatibilities(&v2, &v3).is_empty());
        // proto2 optional to repeated number: the label matters.
        let repeated = parse(
            "syntax = \"proto2\"; message A { repeated int32 x = 1; optional string s = 2; }",
        );
        let found = incompatibilities(&repeated, &v2);
        assert_eq!(
            found,
            vec!["FIELD_NUMERIC_LABEL_CHANGED: field 'x' (#1) of message 'A' changed from optional to repeated [#/A/1]".to_string()]
        );
    }

    #[test]
    fn protobuf_messages_name_type_and_path() {
        let old = parse("syntax = \"proto3\"; package shop; message Order { int32 id = 1; }");
        let new = parse("syntax = \"proto3\"; package shop; message Order { string id = 1; }");
        assert_eq!(
            incompatibilities(&new, &old),
            vec!["FIELD_SCALAR_KIND_CHANGED: field 'id' (#1) of message 'Order' changed from int32 to string [#/Order/1]".to_string()]
        );
    }

    #[test]
    fn protobuf_recursive_types_terminate() {
        let dep_v1 = "syntax = \"proto3\"; package t; message Node { string name = 1; repeated Node children = 2; Leaf leaf = 3; } message Leaf { Node parent = 1; int32 v = 2; }";
        let dep_v2 = "syntax = \"proto3\"; package t; message Node { string name = 1; repeated Node children = 2; Leaf leaf = 3; } message Leaf { Node parent = 1; string v = 2; }";
        let root = "syntax = \"proto3\"; import \"tree.proto\"; message Tree { t.Node root = 1; t.Leaf first = 2; }";
        let old = parse_with(root, &[("tree.proto", dep_v1)]).expect("v1");
        let new = parse_with(root, &[("tree.proto", dep_v2)]).expect("v2");
        let found: Vec<String> = differences(&old, &new)
            .iter()
            .map(|d| format!("{} {}", d.kind, d.path))
            .collect();
        assert!(
            found.contains(&"FIELD_SCALAR_KIND_CHANGED #/Leaf/2".to_string()),
            "{found:?}"
        );
        assert!(
            found.contains(&"FIELD_NAMED_TYPE_CHANGED #/Tree/1".to_string()),
            "{found:?}"
        );
        assert!(
            found.contains(&"FIELD_NAMED_TYPE_CHANGED #/Tree/2".to_string()),
            "{found:?}"
        );
    }

    #[test]
    fn protobuf_deep_nesting_is_an_error_not_a_crash() {
        let mut text = String::from("syntax = \"proto3\";\n");
        for i in 0..200 {
            text.push_str(&format!("message M{i} {{ "));
        }
        text.push_str(&"}".repeat(200));
        assert!(ProtobufSchema::parse(&text, &[]).is_err());

        let mut message = prost_types::DescriptorProto {
            name: Some("M".into()),
            ..Default::default()
        };
        for _ in 0..300 {
            message = prost_types::DescriptorProto {
                name: Some("M".into()),
                nested_type: vec![message],
                ..Default::default()
            };
        }
        let file = prost_types::FileDescriptorProto {
            name: Some("deep.proto".into()),
            message_type: vec![message],
            ..Default::default()
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(file.encode_to_vec());
        assert!(ProtobufSchema::parse(&encoded, &[]).is_err());
    }

    /// A small deterministic generator, to mutate inputs without a dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// Parses, and when it parses, uses every output: none of it may panic (a panic inside
    /// `parse` is turned into this message, which is what the test looks for).
    fn exercise(text: &str, deps: &[Dependency], reference: &ProtobufSchema) {
        match ProtobufSchema::parse(text, deps) {
            Ok(schema) => {
                let _ = schema.canonical();
                let _ = schema.normalized();
                let _ = schema.serialized();
                let _ = differences(&schema, reference);
                let _ = differences(reference, &schema);
                let _ = incompatibilities(&schema, &schema);
            }
            Err(InvalidSchema(message)) => {
                assert!(
                    !message.contains("could not be processed"),
                    "parser panicked on {text:?}"
                );
            }
        }
    }

    #[test]
    fn protobuf_malformed_inputs_are_rejected_without_panicking() {
        let reference = parse(PROTO3);
        let sources = [PROTO3, PROTO2];
        let mut rng = Lcg(42);
        let junk = [
            "{",
            "}",
            ";",
            "\"",
            "=",
            "0",
            "-1",
            "message",
            "map<",
            ">",
            "oneof",
            "[",
            "]",
            "(",
            ".",
            "\\",
            "\u{0}",
            "é",
            "max",
            "to",
            "536870912",
        ];
        for source in sources {
            let chars: Vec<char> = source.chars().collect();
            // Every prefix, a character at a time near the start, then in steps.
            let mut cut = 0;
            while cut < chars.len() {
                let text: String = chars[..cut].iter().collect();
                exercise(&text, &[], &reference);
                cut += if cut < 80 { 1 } else { 7 };
            }
            for _ in 0..400 {
                let mut text: Vec<char> = chars.clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(text.len());
                    match rng.below(3) {
                        0 => {
                            text.remove(at);
                        }
                        1 => {
                            let piece = junk[rng.below(junk.len())];
                            for (i, c) in piece.chars().enumerate() {
                                text.insert(at + i, c);
                            }
                        }
                        _ => {
                            let other = rng.below(text.len());
                            text.swap(at, other);
                        }
                    }
                }
                let text: String = text.into_iter().collect();
                exercise(&text, &[], &reference);
            }
        }
        for text in [
            "",
            " ",
            "\u{feff}",
            "AAAA",
            "////",
            "Cg==",
            "!!!!",
            "syntax",
            "syntax = \"proto3\"",
            "message",
            "enum E {}",
            "service S { rpc A (B) returns (C); }",
            "package ;",
            "import \"a.proto\"; import \"a.proto\";",
            "syntax = \"proto3\"; message A { map<float, int32> m = 1; }",
            "syntax = \"proto3\"; enum E { A = 1; }",
            "syntax = \"proto3\"; message A { int32 x = 0; }",
            "syntax = \"proto3\"; message A { int32 x = 536870912; }",
            "syntax = \"proto3\"; message A { int32 x = 19000; }",
            "syntax = \"proto2\"; message A { optional int32 x = 1 [default = \"s\"]; }",
            "syntax = \"proto3\"; message A { option (nope) = 1; }",
        ] {
            exercise(text, &[], &reference);
        }
        // A schema importing itself through references, and references that are garbage.
        let deps = vec![
            Dependency {
                name: "a.proto".into(),
                schema: "import \"b.proto\";".into(),
            },
            Dependency {
                name: "b.proto".into(),
                schema: "import \"a.proto\";".into(),
            },
            Dependency {
                name: "c.proto".into(),
                schema: "Zm9vYmFy".into(),
            },
        ];
        exercise("import \"a.proto\";", &deps, &reference);
        exercise("import \"c.proto\";", &deps, &reference);
    }

    #[test]
    fn protobuf_malformed_descriptors_are_rejected_without_panicking() {
        let reference = parse(PROTO3);
        let mut rng = Lcg(7);
        let dep_text = "syntax = \"proto3\"; package common; message Money { int64 units = 1; }";
        let deps = vec![Dependency {
            name: "money.proto".into(),
            schema: dep_text.into(),
        }];
        let valid: Vec<Vec<u8>> = [
            ("a.proto", PROTO3, vec![]),
            ("b.proto", PROTO2, vec![]),
            ("c.proto", "syntax = \"proto3\"; import \"money.proto\"; message O { common.Money m = 1; map<string, common.Money> n = 2; }", vec![("money.proto", dep_text)]),
        ]
        .iter()
        .map(|(name, text, deps)| {
            base64::engine::general_purpose::STANDARD
                .decode(descriptor_base64(name, text, deps))
                .expect("base64")
        })
        .collect();
        let encode = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        for bytes in &valid {
            for cut in (0..bytes.len()).step_by(3) {
                exercise(&encode(&bytes[..cut]), &deps, &reference);
            }
            for _ in 0..1500 {
                let mut mutated = bytes.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(mutated.len());
                    match rng.below(4) {
                        0 => mutated[at] ^= 1 << rng.below(8),
                        1 => mutated[at] = rng.next() as u8,
                        2 => {
                            mutated.remove(at);
                        }
                        _ => mutated.insert(at, rng.next() as u8),
                    }
                }
                exercise(&encode(&mutated), &deps, &reference);
            }
        }

        // Structurally odd descriptors that decode fine.
        use prost_types::field_descriptor_proto::{Label as L, Type as T};
        let field = |name: &str, number: i32, label: L, ty: T, type_name: Option<&str>| {
            prost_types::FieldDescriptorProto {
                name: Some(name.into()),
                number: Some(number),
                label: Some(label as i32),
                r#type: Some(ty as i32),
                type_name: type_name.map(str::to_string),
                ..Default::default()
            }
        };
        let entry_without_key = prost_types::DescriptorProto {
            name: Some("MEntry".into()),
            field: vec![field("value", 2, L::Optional, T::Int32, None)],
            options: Some(prost_types::MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let self_map_entry = prost_types::DescriptorProto {
            name: Some("SEntry".into()),
            field: vec![
                field("key", 1, L::Optional, T::String, None),
                field("value", 2, L::Optional, T::Message, Some(".A.SEntry")),
            ],
            options: Some(prost_types::MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let odd_messages = vec![
            prost_types::DescriptorProto {
                name: Some("A".into()),
                field: vec![
                    field("m", 1, L::Repeated, T::Message, Some(".A.MEntry")),
                    field("s", 2, L::Repeated, T::Message, Some(".A.SEntry")),
                    field("g", 3, L::Optional, T::Group, Some(".A.MEntry")),
                ],
                nested_type: vec![entry_without_key, self_map_entry],
                ..Default::default()
            },
            prost_types::DescriptorProto {
                name: Some("B".into()),
                field: vec![
                    field("x", 1, L::Optional, T::Int32, None),
                    prost_types::FieldDescriptorProto {
                        oneof_index: Some(5),
                        ..field("y", 2, L::Optional, T::Int32, None)
                    },
                    field("z", -3, L::Required, T::String, None),
                    field("w", 4, L::Optional, T::Message, Some("Nope")),
                ],
                ..Default::default()
            },
            prost_types::DescriptorProto {
                name: Some("C".into()),
                field: vec![prost_types::FieldDescriptorProto {
                    default_value: Some("\"oops".into()),
                    ..field("b", 1, L::Optional, T::Bytes, None)
                }],
                reserved_range: vec![prost_types::descriptor_proto::ReservedRange {
                    start: Some(10),
                    end: Some(5),
                }],
                ..Default::default()
            },
        ];
        for syntax in [
            None,
            Some("proto2"),
            Some("proto3"),
            Some("editions"),
            Some("proto5"),
        ] {
            for message in &odd_messages {
                let file = prost_types::FileDescriptorProto {
                    name: Some("odd.proto".into()),
                    syntax: syntax.map(str::to_string),
                    message_type: vec![message.clone()],
                    ..Default::default()
                };
                exercise(&encode(&file.encode_to_vec()), &deps, &reference);
            }
        }
    }
}
