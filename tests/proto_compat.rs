//! API compatibility: a golden dump of every proto message, enum and service.
//!
//! The descriptor set compiled into the crate (`meridian::pb::v1::FILE_DESCRIPTOR_SET`,
//! the same bytes reflection serves) is rendered into a stable text form, one line per
//! field, enum value and method, and compared with the checked-in
//! `tests/golden/proto_descriptor.txt`:
//!
//! - **breaking** (the test fails): a message, enum or service disappears; a field
//!   number disappears or changes name, type, label or oneof; an enum value number
//!   disappears or is renamed; a method disappears or changes its request/response
//!   types or streaming. Old clients and stored data would misread the new server.
//! - **additions** (the test passes and reports them): new messages, fields, enum
//!   values, services and methods. Refresh the golden file so the additions are
//!   protected too: `UPDATE_GOLDEN=1 cargo test --test proto_compat`.
//!
//! A deliberate break (say, a field removed and its number `reserved`) is made the same
//! way: regenerate the golden file and explain the break in the commit.
//!
//! The public services also keep buf-style conventions: one `<Method>Request` and
//! `<Method>Response` per RPC, enum values prefixed with the enum's name and a zero
//! value `*_UNSPECIFIED`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};

/// Environment variable that rewrites the golden file instead of comparing.
const UPDATE_ENV: &str = "UPDATE_GOLDEN";
/// Services that are internal transports, exempt from the request/response convention.
const INTERNAL_SERVICES: &[&str] = &["meridian.v1.Raft"];

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/proto_descriptor.txt")
}

fn descriptor_set() -> FileDescriptorSet {
    FileDescriptorSet::decode(meridian::pb::v1::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set decodes")
}

/// One rendered entity: `(section header, Some(member line) | None for the header)`.
/// The header is e.g. `message meridian.v1.PutRequest`, a member `field 3 ...`.
type Dump = BTreeMap<String, BTreeMap<String, String>>;

fn field_type(f: &prost_types::FieldDescriptorProto) -> String {
    match f.r#type() {
        Type::Message | Type::Enum | Type::Group => {
            f.type_name().trim_start_matches('.').to_string()
        }
        t => t.as_str_name().trim_start_matches("TYPE_").to_lowercase(),
    }
}

fn dump_message(dump: &mut Dump, prefix: &str, m: &DescriptorProto) {
    let name = format!("{prefix}.{}", m.name());
    let mut members = BTreeMap::new();
    for f in &m.field {
        let label = match f.label() {
            Label::Optional => "optional",
            Label::Required => "required",
            Label::Repeated => "repeated",
        };
        let mut sig = format!("{} {} {label}", f.name(), field_type(f));
        if let Some(i) = f.oneof_index {
            let oneof = m.oneof_decl.get(i as usize).map(|o| o.name()).unwrap_or("?");
            if f.proto3_optional() {
                sig.push_str(" proto3_optional");
            } else {
                sig.push_str(&format!(" oneof={oneof}"));
            }
        }
        members.insert(format!("field {:>3}", f.number()), sig);
    }
    dump.insert(format!("message {name}"), members);
    for nested in &m.nested_type {
        dump_message(dump, &name, nested);
    }
    for e in &m.enum_type {
        dump_enum(dump, &name, e);
    }
}

fn dump_enum(dump: &mut Dump, prefix: &str, e: &EnumDescriptorProto) {
    let members = e
        .value
        .iter()
        .map(|v| (format!("value {:>3}", v.number()), v.name().to_string()))
        .collect();
    dump.insert(format!("enum {prefix}.{}", e.name()), members);
}

/// Render the descriptor set into sections.
fn dump(set: &FileDescriptorSet) -> Dump {
    let mut dump = Dump::new();
    for file in &set.file {
        let package = file.package();
        for m in &file.message_type {
            dump_message(&mut dump, package, m);
        }
        for e in &file.enum_type {
            dump_enum(&mut dump, package, e);
        }
        for s in &file.service {
            let members = s
                .method
                .iter()
                .map(|m| {
                    let stream = |yes: bool| if yes { "stream " } else { "" };
                    let sig = format!(
                        "({}{}) returns ({}{})",
                        stream(m.client_streaming()),
                        m.input_type().trim_start_matches('.'),
                        stream(m.server_streaming()),
                        m.output_type().trim_start_matches('.'),
                    );
                    (format!("rpc {}", m.name()), sig)
                })
                .collect();
            dump.insert(format!("service {package}.{}", s.name()), members);
        }
    }
    dump
}

const HEADER: &str = "\
# Golden descriptor of proto/meridian/v1 (checked by tests/proto_compat.rs).
# One section per message, enum and service; members: field NUMBER NAME TYPE LABEL,
# value NUMBER NAME, rpc NAME (REQUEST) returns (RESPONSE).
# Regenerate after a deliberate change: UPDATE_GOLDEN=1 cargo test --test proto_compat
";

fn render(dump: &Dump) -> String {
    let mut out = String::from(HEADER);
    for (section, members) in dump {
        out.push('\n');
        out.push_str(section);
        out.push('\n');
        for (key, sig) in members {
            out.push_str(&format!("  {key} {sig}\n"));
        }
    }
    out
}

/// Parse a rendered dump (the golden file) back into sections.
fn parse(text: &str) -> Result<Dump, String> {
    let mut dump = Dump::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(member) = line.strip_prefix("  ") {
            let section =
                current.as_ref().ok_or(format!("line {}: member before section", n + 1))?;
            let mut words = member.split_whitespace();
            let (kind, id) = (words.next(), words.next());
            let (Some(kind), Some(id)) = (kind, id) else {
                return Err(format!("line {}: malformed member {member:?}", n + 1));
            };
            let key = if kind == "rpc" { format!("rpc {id}") } else { format!("{kind} {id:>3}") };
            let sig = words.collect::<Vec<_>>().join(" ");
            if let Some(members) = dump.get_mut(section) {
                members.insert(key, sig);
            }
        } else {
            dump.insert(line.to_string(), BTreeMap::new());
            current = Some(line.to_string());
        }
    }
    Ok(dump)
}

/// Differences from `golden` to `current`: (breaking changes, additions).
fn diff(golden: &Dump, current: &Dump) -> (Vec<String>, Vec<String>) {
    let (mut breaking, mut added) = (Vec::new(), Vec::new());
    for (section, members) in golden {
        let Some(now) = current.get(section) else {
            breaking.push(format!("removed: {section}"));
            continue;
        };
        for (key, sig) in members {
            match now.get(key) {
                None => breaking.push(format!("removed: {section}: {key} {sig}")),
                Some(s) if s != sig => {
                    breaking.push(format!("changed: {section}: {key}: {sig} -> {s}"))
                }
                Some(_) => {}
            }
        }
        for (key, sig) in now {
            if !members.contains_key(key) {
                added.push(format!("{section}: {key} {sig}"));
            }
        }
    }
    for section in current.keys().filter(|s| !golden.contains_key(*s)) {
        added.push(section.clone());
    }
    (breaking, added)
}

#[test]
fn proto_descriptor_matches_the_golden_file_or_only_adds() {
    let current = dump(&descriptor_set());
    let path = golden_path();
    if std::env::var(UPDATE_ENV).is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("create tests/golden");
        std::fs::write(&path, render(&current)).expect("write the golden file");
        eprintln!("updated {}", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; create it with {UPDATE_ENV}=1 cargo test --test proto_compat",
            path.display()
        )
    });
    let golden = parse(&text).expect("the golden file parses");
    let (breaking, added) = diff(&golden, &current);
    assert!(
        breaking.is_empty(),
        "incompatible proto change(s) against {}:\n  {}\n\nExisting field numbers, types, \
         names and methods must not change (old clients would misread the new server). Add a \
         new field instead. If the break is deliberate (a removed field's number reserved, a \
         major version), regenerate with {UPDATE_ENV}=1 cargo test --test proto_compat and \
         explain it in the commit.",
        path.display(),
        breaking.join("\n  ")
    );
    if !added.is_empty() {
        eprintln!(
            "proto additions not yet in {} (compatible, allowed):\n  {}\nRecord them so they \
             are protected too: {UPDATE_ENV}=1 cargo test --test proto_compat",
            path.display(),
            added.join("\n  ")
        );
    }
}

#[test]
fn golden_rendering_parses_back_to_the_same_dump() {
    let current = dump(&descriptor_set());
    assert_eq!(parse(&render(&current)).expect("parses"), current);
}

fn sample() -> Dump {
    parse(
        "message meridian.v1.PutRequest\n  field   1 key bytes optional\n  \
         field   3 expected_version uint64 optional proto3_optional\n\
         service meridian.v1.Kv\n  rpc Put (meridian.v1.PutRequest) returns (meridian.v1.PutResponse)\n",
    )
    .expect("sample parses")
}

#[test]
fn changed_field_type_or_number_is_breaking() {
    let golden = sample();
    let mut retyped = golden.clone();
    let put = retyped.get_mut("message meridian.v1.PutRequest").expect("section");
    put.insert("field   1".into(), "key string optional".into());
    let (breaking, _) = diff(&golden, &retyped);
    assert_eq!(breaking.len(), 1, "{breaking:?}");
    assert!(breaking[0].contains("bytes optional -> key string optional"), "{breaking:?}");

    let mut renumbered = golden.clone();
    let put = renumbered.get_mut("message meridian.v1.PutRequest").expect("section");
    let sig = put.remove("field   3").expect("field 3");
    put.insert("field   4".into(), sig);
    let (breaking, added) = diff(&golden, &renumbered);
    assert!(
        breaking[0].starts_with("removed:") && breaking[0].contains("field   3"),
        "{breaking:?}"
    );
    assert_eq!(added.len(), 1, "the new number shows as an addition: {added:?}");
}

#[test]
fn removed_field_or_method_is_breaking() {
    let golden = sample();
    let mut current = golden.clone();
    current.get_mut("message meridian.v1.PutRequest").expect("section").remove("field   1");
    current.get_mut("service meridian.v1.Kv").expect("section").remove("rpc Put");
    let (breaking, _) = diff(&golden, &current);
    assert_eq!(breaking.len(), 2, "{breaking:?}");
}

#[test]
fn added_fields_messages_and_methods_are_allowed_and_reported() {
    let golden = sample();
    let mut current = golden.clone();
    let put = current.get_mut("message meridian.v1.PutRequest").expect("section");
    put.insert("field   9".into(), "lease_id uint64 optional".into());
    current.insert("message meridian.v1.WatchRequest".into(), BTreeMap::new());
    current
        .get_mut("service meridian.v1.Kv")
        .expect("section")
        .insert("rpc Watch".into(), "(meridian.v1.WatchRequest) returns (stream x)".into());
    let (breaking, added) = diff(&golden, &current);
    assert!(breaking.is_empty(), "{breaking:?}");
    assert_eq!(added.len(), 3, "{added:?}");
}

#[test]
fn public_services_follow_buf_style_conventions() {
    let set = descriptor_set();
    for file in &set.file {
        let package = file.package();
        for s in &file.service {
            let full = format!("{package}.{}", s.name());
            if INTERNAL_SERVICES.contains(&full.as_str()) {
                continue;
            }
            for m in &s.method {
                let want_in = format!(".{package}.{}Request", m.name());
                let want_out = format!(".{package}.{}Response", m.name());
                assert_eq!(m.input_type(), want_in, "{full}.{} request type", m.name());
                assert_eq!(m.output_type(), want_out, "{full}.{} response type", m.name());
            }
        }
        let enums =
            file.enum_type.iter().chain(file.message_type.iter().flat_map(|m| m.enum_type.iter()));
        for e in enums {
            let prefix = screaming_snake(e.name());
            for v in &e.value {
                assert!(
                    v.name().starts_with(&format!("{prefix}_")),
                    "enum {}: value {} must start with {prefix}_",
                    e.name(),
                    v.name()
                );
            }
            let zero = e.value.iter().find(|v| v.number() == 0).map(|v| v.name());
            assert_eq!(zero, Some(format!("{prefix}_UNSPECIFIED").as_str()), "enum {}", e.name());
        }
    }
}

fn screaming_snake(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}
