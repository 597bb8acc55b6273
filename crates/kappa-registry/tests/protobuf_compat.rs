//! Protobuf compatibility by Confluent's rules: a table of (old, new) schema pairs with the
//! verdict under BACKWARD (new reads old) and FORWARD (old reads new), and, where given,
//! the differences Confluent's `SchemaDiff.compare(old, new)` reports (type and path). The
//! pairs re-express the cases of Confluent's `diff-schema-examples.json` with other schemas,
//! plus rules that file does not cover.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use kappa_registry::protobuf::{differences, incompatibilities, ProtobufSchema};
use kappa_registry::schema::Dependency;
use prost::Message as _;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

struct Case {
    name: &'static str,
    old: String,
    new: String,
    old_deps: Vec<(&'static str, String)>,
    new_deps: Vec<(&'static str, String)>,
    backward: bool,
    forward: bool,
    /// Differences from old to new as "TYPE #/path", in any order; None: not checked.
    changes: Option<Vec<&'static str>>,
}

fn case(
    name: &'static str,
    old: &str,
    new: &str,
    backward: bool,
    forward: bool,
    changes: &[&'static str],
) -> Case {
    Case {
        name,
        old: old.to_string(),
        new: new.to_string(),
        old_deps: Vec::new(),
        new_deps: Vec::new(),
        backward,
        forward,
        changes: Some(changes.to_vec()),
    }
}

fn with_deps(
    mut c: Case,
    old_deps: &[(&'static str, &str)],
    new_deps: &[(&'static str, &str)],
) -> Case {
    c.old_deps = old_deps.iter().map(|(n, s)| (*n, s.to_string())).collect();
    c.new_deps = new_deps.iter().map(|(n, s)| (*n, s.to_string())).collect();
    c
}

fn p3(body: &str) -> String {
    format!("syntax = \"proto3\";\n{body}")
}

fn p2(body: &str) -> String {
    format!("syntax = \"proto2\";\n{body}")
}

/// The base64 descriptor confluent-kafka-python would register for a text schema.
fn descriptor_base64(name: &str, text: &str) -> String {
    struct Files(HashMap<String, String>);
    impl FileResolver for Files {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            match self.0.get(name) {
                Some(source) => File::from_source(name, source),
                None => Err(protox::Error::file_not_found(name)),
            }
        }
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(Files(HashMap::from([(name.to_string(), text.to_string())])));
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.open_file(name).expect("compiles");
    let file = compiler
        .file_descriptor_set()
        .file
        .into_iter()
        .find(|f| f.name() == name)
        .expect("file");
    base64::engine::general_purpose::STANDARD.encode(file.encode_to_vec())
}

fn cases() -> Vec<Case> {
    let money = |units: &str, package: &str| {
        format!("syntax = \"proto3\";\npackage {package};\noption java_outer_classname = \"MoneyProto\";\nmessage Money {{\n  {units} units = 1;\n  int32 nanos = 2;\n}}\n")
    };
    let nested_money = |units: &str, package: &str| {
        format!("syntax = \"proto3\";\npackage {package};\nmessage Outer {{\n  message Money {{\n    {units} units = 1;\n    int32 nanos = 2;\n  }}\n}}\n")
    };
    let order_with = |import: &str, ty: &str| {
        p3(&format!(
            "import \"{import}\";\nmessage Order {{\n  {ty} total = 1;\n}}\n"
        ))
    };
    let local_money = p3("message Order {\n  Money total = 1;\n}\nmessage Money {\n  int64 units = 1;\n  int32 nanos = 2;\n}\n");
    let tree = |v: &str| {
        format!("syntax = \"proto3\";\npackage tree;\nmessage Node {{\n  {v} name = 1;\n  repeated Node children = 2;\n}}\n")
    };
    let common = |unused: &str| {
        format!("syntax = \"proto3\";\npackage common;\nmessage Money {{ int64 units = 1; }}\nmessage Unused {{ {unused} x = 1; }}\n")
    };

    let order = "message Order {\n  string id = 1;\n}\n";
    let status_enum = "enum Status {\n  STATUS_UNKNOWN = 0;\n  STATUS_PAID = 1;\n}\n";
    let payment = |body: &str| p3(&format!("message Payment {{\n{body}\n}}\n"));
    let p = |body: &str| p3(&format!("message P {{\n{body}\n}}\n"));

    vec![
        // Fields added, removed, renumbered, renamed.
        case("add a field", &p3(order), &p3("message Order {\n  string id = 1;\n  double amount = 2;\n}\n"), true, true, &["FIELD_ADDED #/Order/2"]),
        case("add a required field", &p2("message Order { optional string id = 1; }"), &p2("message Order { optional string id = 1; required int64 created = 2; }"), false, false, &["REQUIRED_FIELD_ADDED #/Order/2"]),
        case("add a field to a nested message", &p3("message Shop { int32 n = 1; message Order { string id = 1; } }"), &p3("message Shop { int32 n = 1; message Order { string id = 1; string note = 2; } }"), true, true, &["FIELD_ADDED #/Shop/Order/2"]),
        case("remove a field", &p3("message Order { string id = 1; string note = 2; }"), &p3(order), true, true, &["FIELD_REMOVED #/Order/2"]),
        case("remove a required field", &p2("message Order { optional string id = 1; required string note = 2; }"), &p2("message Order { optional string id = 1; }"), false, false, &["REQUIRED_FIELD_REMOVED #/Order/2"]),
        case("renumber a field", &p3(order), &p3("message Order { string id = 2; }"), true, true, &["FIELD_REMOVED #/Order/1", "FIELD_ADDED #/Order/2"]),
        case("rename a field", &p3(order), &p3("message Order { string order_id = 1; }"), true, true, &["FIELD_NAME_CHANGED #/Order/1"]),
        case("add a required message field", &p2("message Line { optional string sku = 1; } message Order { optional string id = 1; }"), &p2("message Line { optional string sku = 1; } message Order { optional string id = 1; required Line line = 2; }"), false, false, &["REQUIRED_FIELD_ADDED #/Order/2"]),
        // Scalar types: Confluent's wire-compatible groups.
        case("int32 to int64", &p3("message Order { int32 qty = 1; }"), &p3("message Order { int64 qty = 1; }"), true, true, &[]),
        case("uint64 to bool", &p3("message Order { uint64 flag = 1; }"), &p3("message Order { bool flag = 1; }"), true, true, &[]),
        case("uint32 to int32", &p3("message Order { uint32 qty = 1; }"), &p3("message Order { int32 qty = 1; }"), true, true, &[]),
        case("string to bytes", &p3("message Order { string id = 1; }"), &p3("message Order { bytes id = 1; }"), true, true, &[]),
        case("sint32 to sint64", &p3("message Order { sint32 delta = 1; }"), &p3("message Order { sint64 delta = 1; }"), true, true, &[]),
        case("fixed32 to sfixed32", &p3("message Order { fixed32 h = 1; }"), &p3("message Order { sfixed32 h = 1; }"), true, true, &[]),
        case("fixed64 to sfixed64", &p3("message Order { fixed64 h = 1; }"), &p3("message Order { sfixed64 h = 1; }"), true, true, &[]),
        case("int32 to sint32", &p3("message Order { int32 qty = 1; }"), &p3("message Order { sint32 qty = 1; }"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Order/1"]),
        case("fixed32 to fixed64", &p3("message Order { fixed32 h = 1; }"), &p3("message Order { fixed64 h = 1; }"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Order/1"]),
        case("float to double", &p3("message Order { float w = 1; }"), &p3("message Order { double w = 1; }"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Order/1"]),
        case("int64 to string, renamed", &p3("message Order { string id = 1; int64 total = 2; }"), &p3("message Order { string id = 1; string total_text = 2; }"), false, false, &["FIELD_NAME_CHANGED #/Order/2", "FIELD_SCALAR_KIND_CHANGED #/Order/2"]),
        // Enums count as general numbers.
        case("int32 to enum", &p3("message Order { string id = 1; int32 status = 2; }"), &p3(&format!("message Order {{ string id = 1; Status status = 2; }}\n{status_enum}")), true, true, &["ENUM_ADDED #/Status"]),
        case("enum to int32", &p3(&format!("message Order {{ string id = 1; Status status = 2; }}\n{status_enum}")), &p3("message Order { string id = 1; int32 status = 2; }"), true, true, &["ENUM_REMOVED #/Status"]),
        case("enum to another enum", &p3(&format!("message Order {{ Status s = 1; }}\n{status_enum}")), &p3("message Order { Phase s = 1; }\nenum Phase { PHASE_UNKNOWN = 0; }"), true, true, &["ENUM_REMOVED #/Status", "ENUM_ADDED #/Phase"]),
        case("rename an enum constant", &p3(&format!("message Order {{ Status s = 1; }}\n{status_enum}")), &p3("message Order { Status s = 1; }\nenum Status { STATUS_UNKNOWN = 0; STATUS_SETTLED = 1; }"), true, true, &["ENUM_CONST_CHANGED #/Status/1"]),
        case("add an enum constant", &p3(&format!("message Order {{ Status s = 1; }}\n{status_enum}")), &p3("message Order { Status s = 1; }\nenum Status { STATUS_UNKNOWN = 0; STATUS_PAID = 1; STATUS_SHIPPED = 2; }"), true, true, &["ENUM_CONST_ADDED #/Status/2"]),
        case("remove an enum constant", &p3("message Order { Status s = 1; }\nenum Status { STATUS_UNKNOWN = 0; STATUS_PAID = 1; STATUS_SHIPPED = 2; }"), &p3(&format!("message Order {{ Status s = 1; }}\n{status_enum}")), true, true, &["ENUM_CONST_REMOVED #/Status/2"]),
        // Kinds and named types.
        case("int32 to a message", &p3("message Order { string id = 1; int32 amount = 2; }"), &p3("message Order { string id = 1; Money amount = 2; }\nmessage Money { int64 units = 1; }"), false, false, &["MESSAGE_ADDED #/Money", "FIELD_KIND_CHANGED #/Order/2"]),
        case("int32 to a nested message named like an enum", &p3("message Order { string id = 1; int32 status = 2; }"), &p3(&format!("message Order {{ string id = 1; .Order.Status status = 2; message Status {{ string code = 1; }} }}\n{status_enum}")), false, false, &["FIELD_KIND_CHANGED #/Order/2", "MESSAGE_ADDED #/Order/Status", "ENUM_ADDED #/Status"]),
        case("message type renamed", &p3("message Order { string id = 1; Money total = 2; }\nmessage Money { string s = 1; }"), &p3("message Order { string id = 1; Amount total = 2; }\nmessage Amount { string s = 1; }"), false, false, &["MESSAGE_REMOVED #/Money", "MESSAGE_ADDED #/Amount", "FIELD_NAMED_TYPE_CHANGED #/Order/2"]),
        case("message field to a map", &p3("message Order { Line line = 2; message Line { string sku = 1; } }"), &p3("message Order { map<string, Line> line = 2; message Line { string sku = 1; } }"), false, false, &["FIELD_KIND_CHANGED #/Order/2"]),
        case("qualify a nested type name", &p3("message Order { string id = 1; Line line = 2; message Line { string sku = 1; } }"), &p3("message Order { string id = 1; .Order.Line line = 2; message Line { string sku = 1; } }"), true, true, &[]),
        case("qualify a type name with the package", &p3("package shop; message Order { Line line = 2; message Line { string sku = 1; } }"), &p3("package shop; message Order { .shop.Order.Line line = 2; message Line { string sku = 1; } }"), true, true, &[]),
        case("change the package", &p3("package shop; message Order { string id = 1; Line line = 2; message Line { string sku = 1; } }"), &p3("package shop.v2; message Order { string id = 1; .shop.v2.Order.Line line = 2; message Line { string sku = 1; } }"), false, false, &["PACKAGE_CHANGED #/"]),
        // Maps.
        case("map value type changed, renamed", &p3("message Order { string id = 1; map<string, int32> counts = 2; }"), &p3("message Order { string id = 1; map<string, string> labels = 2; }"), false, false, &["FIELD_NAME_CHANGED #/Order/2", "FIELD_SCALAR_KIND_CHANGED #/Order/2"]),
        case("map value widened", &p3("message Order { map<string, int32> counts = 2; }"), &p3("message Order { map<string, int64> counts = 2; }"), true, true, &[]),
        case("map key changed", &p3("message Order { map<string, int32> counts = 2; }"), &p3("message Order { map<int32, int32> counts = 2; }"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Order/2"]),
        case("qualify a map value type", &p3("message Order { map<string, Line> lines = 2; message Line { string sku = 1; } }"), &p3("message Order { map<string, Order.Line> lines = 2; message Line { string sku = 1; } }"), true, true, &[]),
        // Labels: only scalars, only where both sides have one (proto3 plain fields do not).
        case("optional message to repeated", &p3("message Order { optional Line line = 2; message Line { string sku = 1; } }"), &p3("message Order { repeated Line line = 2; message Line { string sku = 1; } }"), true, true, &[]),
        case("optional string to repeated", &p3("message Order { optional string tag = 1; }"), &p3("message Order { repeated string tag = 1; }"), true, true, &["FIELD_STRING_OR_BYTES_LABEL_CHANGED #/Order/1"]),
        case("optional bytes to repeated", &p3("message Order { optional bytes blob = 1; }"), &p3("message Order { repeated bytes blob = 1; }"), true, true, &["FIELD_STRING_OR_BYTES_LABEL_CHANGED #/Order/1"]),
        case("optional int32 to repeated", &p3("message Order { optional int32 qty = 1; }"), &p3("message Order { repeated int32 qty = 1; }"), false, false, &["FIELD_NUMERIC_LABEL_CHANGED #/Order/1"]),
        case("proto2 optional number to required", &p2("message Order { optional int32 qty = 1; }"), &p2("message Order { required int32 qty = 1; }"), false, false, &["FIELD_NUMERIC_LABEL_CHANGED #/Order/1"]),
        case("proto2 optional string to required", &p2("message Order { optional string id = 1; }"), &p2("message Order { required string id = 1; }"), true, true, &["FIELD_STRING_OR_BYTES_LABEL_CHANGED #/Order/1"]),
        case("proto3 plain number to repeated", &p3("message Order { int32 qty = 1; }"), &p3("message Order { repeated int32 qty = 1; }"), true, true, &[]),
        case("proto3 plain number to optional", &p3("message Order { int32 qty = 1; }"), &p3("message Order { optional int32 qty = 1; }"), true, true, &[]),
        case("proto2 to proto3", &p2("message Order { optional string id = 1; optional int32 qty = 2; }"), &p3("message Order { string id = 1; int32 qty = 2; }"), true, true, &[]),
        // Messages added, moved, removed.
        case("add a message", &p3(order), &p3(&format!("{order}message Refund {{ string id = 1; }}")), true, false, &["MESSAGE_ADDED #/Refund"]),
        case("add a message before", &p3(order), &p3(&format!("message Refund {{ string id = 1; }}\n{order}")), true, false, &["MESSAGE_ADDED #/Refund", "MESSAGE_MOVED #/Order"]),
        case("swap two messages", &p3(&format!("{order}message Refund {{ string id = 1; }}")), &p3(&format!("message Refund {{ string id = 1; }}\n{order}")), true, true, &["MESSAGE_MOVED #/Order", "MESSAGE_MOVED #/Refund"]),
        case("remove a nested message", &p3("message Order { string id = 1; message Line { string sku = 1; } }"), &p3(order), false, true, &["MESSAGE_REMOVED #/Order/Line"]),
        case("recursive local message changed", &p3("message Node { Node next = 1; int32 v = 2; }"), &p3("message Node { Node next = 1; string v = 2; }"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Node/2"]),
        case("services and options are not compared", &p3(&format!("option java_package = \"a\";\n{order}")), &p3(&format!("option java_package = \"b\";\n{order}service Orders {{ rpc Get (Order) returns (Order); }}")), true, true, &[]),
        // Oneofs.
        case("field into a new oneof with a new member", &payment("  string id = 1;\n  string card = 2;"), &payment("  string id = 1;\n  oneof method { string card = 2; string iban = 3; }"), true, false, &["ONEOF_ADDED #/Payment/method", "ONEOF_FIELD_ADDED #/Payment/method/3"]),
        case("several fields into a new oneof", &payment("  string id = 1;\n  string card = 2;"), &payment("  oneof method { string id = 1; string card = 2; string iban = 3; }"), false, false, &["MULTIPLE_FIELDS_MOVED_TO_ONEOF #/Payment/method", "ONEOF_ADDED #/Payment/method", "ONEOF_FIELD_ADDED #/Payment/method/3"]),
        case("add a field to a oneof", &payment("  oneof method { string id = 1; string card = 2; }"), &payment("  oneof method { string id = 1; string card = 2; string iban = 3; }"), true, false, &["ONEOF_FIELD_ADDED #/Payment/method/3"]),
        case("remove a field from a oneof", &payment("  oneof method { string id = 1; string card = 2; string iban = 3; }"), &payment("  oneof method { string id = 1; string card = 2; }"), false, true, &["ONEOF_FIELD_REMOVED #/Payment/method/3"]),
        case("one field into a new oneof", &payment("  string id = 1;\n  string card = 2;"), &payment("  string id = 1;\n  oneof method { string card = 2; }"), true, true, &["ONEOF_ADDED #/Payment/method"]),
        case("field into an existing oneof", &payment("  string id = 1;\n  oneof method { string card = 2; string iban = 3; }"), &payment("  oneof method { string id = 1; string card = 2; string iban = 3; }"), false, true, &["FIELD_MOVED_TO_EXISTING_ONEOF #/Payment/method"]),
        case("field into a renamed oneof", &payment("  string id = 1;\n  oneof method { string card = 2; string iban = 3; }"), &payment("  oneof means { string id = 1; string card = 2; string iban = 3; }"), false, true, &["FIELD_MOVED_TO_EXISTING_ONEOF #/Payment/means", "ONEOF_REMOVED #/Payment/method", "ONEOF_ADDED #/Payment/means"]),
        case("type change inside a renamed oneof", &p("  oneof a { float f = 1; int32 i = 2; }"), &p("  oneof b { float f = 1; string i = 2; }"), false, false, &["ONEOF_REMOVED #/P/a", "ONEOF_ADDED #/P/b", "FIELD_SCALAR_KIND_CHANGED #/P/b/2"]),
        case("out of a removed oneof with a type change", &p("  oneof kind { float f = 1; int32 i = 2; }"), &p("  float f = 1;\n  sint64 i = 2;"), false, false, &["ONEOF_REMOVED #/P/kind", "ONEOF_FIELD_MOVED_TO_TOP_LEVEL #/P/1", "ONEOF_FIELD_MOVED_TO_TOP_LEVEL #/P/2", "FIELD_SCALAR_KIND_CHANGED #/P/2"]),
        case("into a new oneof with a type change", &p("  float f = 1;\n  int32 i = 2;"), &p("  float f = 1;\n  oneof kind { sint64 i = 2; }"), false, false, &["ONEOF_ADDED #/P/kind", "FIELD_SCALAR_KIND_CHANGED #/P/kind/2"]),
        case("rename a oneof", &p("  oneof a { float f = 1; int32 i = 2; }"), &p("  oneof b { float f = 1; int32 i = 2; }"), true, true, &["ONEOF_REMOVED #/P/a", "ONEOF_ADDED #/P/b"]),
        case("move a field between oneofs", &p("  oneof a { int32 x = 1; int32 y = 2; }\n  oneof b { int32 z = 3; }"), &p("  oneof a { int32 x = 1; }\n  oneof b { int32 z = 3; int32 y = 2; }"), false, false, &["FIELD_MOVED_TO_EXISTING_ONEOF #/P/b"]),
        case("from a deleted oneof into an existing one", &p("  oneof a { int32 x = 1; }\n  oneof b { int32 z = 3; }"), &p("  oneof b { int32 z = 3; int32 x = 1; }"), false, true, &["FIELD_MOVED_TO_EXISTING_ONEOF #/P/b", "ONEOF_REMOVED #/P/a"]),
        case("merge two oneofs", &p("  oneof a { int32 x = 1; }\n  oneof b { int32 y = 2; }"), &p("  oneof c { int32 x = 1; int32 y = 2; }"), false, true, &["FIELD_MOVED_TO_EXISTING_ONEOF #/P/c", "ONEOF_REMOVED #/P/a", "ONEOF_REMOVED #/P/b", "ONEOF_ADDED #/P/c"]),
        case("split a oneof", &p("  oneof a { int32 x = 1; int32 y = 2; }"), &p("  oneof a { int32 y = 2; }\n  oneof b { int32 x = 1; }"), true, false, &["ONEOF_ADDED #/P/b"]),
        case("drop a oneof member while renaming it", &p("  oneof g { int32 x = 1; int32 y = 2; }"), &p("  oneof h { int32 x = 1; }"), false, true, &["ONEOF_REMOVED #/P/g", "ONEOF_ADDED #/P/h", "ONEOF_FIELD_REMOVED #/P/g/2"]),
        case("move a field out of a oneof", &p("  oneof o { int32 x = 1; int32 y = 2; }"), &p("  oneof o { int32 x = 1; }\n  int32 y = 2;"), true, false, &["ONEOF_FIELD_MOVED_TO_TOP_LEVEL #/P/2"]),
        case("out of a oneof with a type change", &p("  oneof o { int32 x = 1; int32 y = 2; }"), &p("  oneof o { int32 x = 1; }\n  string y = 2;"), false, false, &["ONEOF_FIELD_MOVED_TO_TOP_LEVEL #/P/2", "FIELD_SCALAR_KIND_CHANGED #/P/2"]),
        case("delete a whole oneof", &p("  string id = 1;\n  oneof k { int32 a = 2; string b = 3; }"), &p("  string id = 1;"), true, true, &["ONEOF_REMOVED #/P/k"]),
        // Types from references: compared where a field uses them.
        with_deps(case("imported type changes incompatibly", &order_with("money.proto", ".shop.common.Money"), &order_with("money2.proto", ".shop.common.Money"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Money/1", "FIELD_NAMED_TYPE_CHANGED #/Order/1"]), &[("money.proto", money("int64", "shop.common").as_str())], &[("money2.proto", money("string", "shop.common").as_str())]),
        with_deps(case("type moved to an import", &local_money, &order_with("money.proto", ".shop.common.Money"), false, true, &["MESSAGE_REMOVED #/Money"]), &[], &[("money.proto", money("int64", "shop.common").as_str())]),
        with_deps(case("type moved from an import", &order_with("money.proto", ".shop.common.Money"), &local_money, true, false, &["MESSAGE_ADDED #/Money"]), &[("money.proto", money("int64", "shop.common").as_str())], &[]),
        with_deps(case("import with another package", &order_with("money.proto", ".shop.common.Money"), &order_with("money2.proto", ".shop.common2.Money"), true, true, &[]), &[("money.proto", money("int64", "shop.common").as_str())], &[("money2.proto", money("int64", "shop.common2").as_str())]),
        with_deps(case("nested import type with another package", &order_with("money.proto", ".shop.common.Outer.Money"), &order_with("money2.proto", ".shop.common2.Outer.Money"), true, true, &[]), &[("money.proto", nested_money("int64", "shop.common").as_str())], &[("money2.proto", nested_money("int64", "shop.common2").as_str())]),
        with_deps(case("nested import type changes incompatibly", &order_with("money.proto", ".shop.common.Outer.Money"), &order_with("money2.proto", ".shop.common2.Outer.Money"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Outer/Money/1", "FIELD_NAMED_TYPE_CHANGED #/Order/1"]), &[("money.proto", nested_money("int64", "shop.common").as_str())], &[("money2.proto", nested_money("string", "shop.common2").as_str())]),
        with_deps(case("new version of the same import", &order_with("money.proto", ".shop.common.Outer.Money"), &order_with("money.proto", ".shop.common2.Outer.Money"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Outer/Money/1", "FIELD_NAMED_TYPE_CHANGED #/Order/1"]), &[("money.proto", nested_money("int64", "shop.common").as_str())], &[("money.proto", nested_money("string", "shop.common2").as_str())]),
        with_deps(case("unused type of an import changes", &order_with("common.proto", "common.Money"), &order_with("common.proto", "common.Money"), true, true, &[]), &[("common.proto", common("int64").as_str())], &[("common.proto", common("string").as_str())]),
        with_deps(case("recursive imported type changes", &order_with("tree.proto", "tree.Node"), &order_with("tree.proto", "tree.Node"), false, false, &["FIELD_SCALAR_KIND_CHANGED #/Node/1", "FIELD_NAMED_TYPE_CHANGED #/Order/1"]), &[("tree.proto", tree("string").as_str())], &[("tree.proto", tree("int32").as_str())]),
        // Well-known types, without references.
        case("timestamp to duration", &p3("import \"google/protobuf/timestamp.proto\";\nimport \"google/protobuf/duration.proto\";\nmessage Order { string id = 1; google.protobuf.Timestamp at = 3; }"), &p3("import \"google/protobuf/timestamp.proto\";\nimport \"google/protobuf/duration.proto\";\nmessage Order { string id = 1; google.protobuf.Duration at = 3; }"), false, false, &["FIELD_NAMED_TYPE_CHANGED #/Order/3"]),
        case("timestamp to int64", &p3("import \"google/protobuf/timestamp.proto\";\nmessage Order { google.protobuf.Timestamp at = 3; }"), &p3("message Order { int64 at = 3; }"), false, false, &["FIELD_KIND_CHANGED #/Order/3"]),
        case("field added next to a timestamp", &p3("import \"google/protobuf/timestamp.proto\";\nmessage Order { google.protobuf.Timestamp at = 3; }"), &p3("import \"google/protobuf/timestamp.proto\";\nmessage Order { google.protobuf.Timestamp at = 3; string note = 4; }"), true, true, &["FIELD_ADDED #/Order/4"]),
        // The same schema as text and as a descriptor.
        Case {
            name: "text then descriptor of the same schema",
            old: p3("package shop;\nmessage Order { string id = 1; map<string, int64> c = 2; oneof o { string a = 3; int32 b = 4; } }"),
            new: descriptor_base64("order.proto", &p3("package shop;\nmessage Order { string id = 1; map<string, int64> c = 2; oneof o { string a = 3; int32 b = 4; } }")),
            old_deps: Vec::new(),
            new_deps: Vec::new(),
            backward: true,
            forward: true,
            changes: Some(Vec::new()),
        },
    ]
}

fn parse(text: &str, deps: &[(&'static str, String)], case: &str) -> ProtobufSchema {
    let deps: Vec<Dependency> = deps
        .iter()
        .map(|(name, schema)| Dependency {
            name: name.to_string(),
            schema: schema.clone(),
        })
        .collect();
    ProtobufSchema::parse(text, &deps).unwrap_or_else(|err| panic!("{case}: {err}\n{text}"))
}

#[test]
fn protobuf_compatibility_table() {
    let cases = cases();
    assert!(cases.len() >= 45, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let old = parse(&c.old, &c.old_deps, c.name);
        let new = parse(&c.new, &c.new_deps, c.name);
        let backward = incompatibilities(&new, &old);
        let forward = incompatibilities(&old, &new);
        if backward.is_empty() != c.backward {
            failures.push(format!(
                "{}: BACKWARD expected {}, got {backward:?}",
                c.name, c.backward
            ));
        }
        if forward.is_empty() != c.forward {
            failures.push(format!(
                "{}: FORWARD expected {}, got {forward:?}",
                c.name, c.forward
            ));
        }
        if let Some(expected) = &c.changes {
            let found: BTreeSet<String> = differences(&old, &new)
                .iter()
                .map(|d| format!("{} {}", d.kind, d.path))
                .collect();
            let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
            if found != expected {
                failures.push(format!(
                    "{}: differences {found:?}, expected {expected:?}",
                    c.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn protobuf_incompatibility_messages_say_what_changed_where() {
    let old = ProtobufSchema::parse("syntax = \"proto3\";\npackage shop;\nmessage Order {\n  int32 id = 1;\n  string note = 2;\n}\n", &[]).expect("old");
    let new = ProtobufSchema::parse(
        "syntax = \"proto3\";\npackage shop;\nmessage Order {\n  string id = 1;\n}\n",
        &[],
    )
    .expect("new");
    assert_eq!(
        incompatibilities(&new, &old),
        vec!["FIELD_SCALAR_KIND_CHANGED: field 'id' (#1) of message 'Order' changed from int32 to string [#/Order/1]".to_string()]
    );
    // Compatible differences are not reported as incompatibilities.
    assert!(differences(&old, &new)
        .iter()
        .any(|d| d.kind.as_str() == "FIELD_REMOVED" && d.path == "#/Order/2"));
}
