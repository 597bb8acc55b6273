//! The registry's state as rebuilt from the `_schemas` records: schemas by id, subjects and
//! their versions, compatibility and mode settings. Applying a record is the only way it
//! changes, on start (replay) and after each write is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use crate::compat::CompatibilityLevel;
use crate::records::{
    ConfigValue, DeleteSubjectValue, Mode, ModeValue, RecordKey, Reference, SchemaValue,
    StoreRecord,
};
use crate::schema::{Dependency, ParsedSchema, SchemaType};

/// One schema, shared by every subject version that registered the same content.
#[derive(Debug)]
pub struct StoredSchema {
    pub id: i32,
    pub guid: String,
    pub schema_type: SchemaType,
    pub text: String,
    pub references: Vec<Reference>,
    /// Parsed on first use (a replayed schema may never be checked against).
    pub parsed: OnceLock<Result<Arc<ParsedSchema>, String>>,
    /// The normalized text, computed on first use (look-ups compare it).
    pub normalized: OnceLock<Option<String>>,
}

/// What makes two registrations the same schema.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContentKey {
    pub schema_type: SchemaType,
    pub text: String,
    pub references: Vec<Reference>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionEntry {
    pub id: i32,
    pub deleted: bool,
}

#[derive(Default, Debug)]
pub struct State {
    pub schemas: BTreeMap<i32, Arc<StoredSchema>>,
    pub ids_by_content: HashMap<ContentKey, i32>,
    pub ids_by_guid: HashMap<String, i32>,
    pub subjects: BTreeMap<String, BTreeMap<i32, VersionEntry>>,
    pub configs: HashMap<Option<String>, ConfigValue>,
    pub modes: HashMap<Option<String>, Mode>,
    /// The largest id ever seen: ids are never handed out twice in one run.
    pub max_id: i32,
    /// How many versions (live or soft-deleted) use each id.
    pub uses: HashMap<i32, usize>,
}

impl State {
    /// Applies one record of the topic. A record that cannot be understood is skipped with a
    /// warning: one bad record must not make the whole registry unreadable.
    pub fn apply(&mut self, record: &StoreRecord) {
        match &record.key {
            RecordKey::Schema {
                subject, version, ..
            } => match &record.value {
                None => self.remove_version(subject, *version),
                Some(v) => match serde_json::from_value::<SchemaValue>(v.clone()) {
                    // the key says which version a record is: a tombstone of that key undoes it
                    Ok(value) => self.put_version(SchemaValue {
                        subject: subject.clone(),
                        version: *version,
                        ..value
                    }),
                    Err(e) => {
                        tracing::warn!(error = %e, %subject, version, "skipping unreadable schema record")
                    }
                },
            },
            RecordKey::Config { subject, .. } => match &record.value {
                None => {
                    self.configs.remove(subject);
                }
                Some(v) => match serde_json::from_value::<ConfigValue>(v.clone()) {
                    Ok(c) => {
                        self.configs.insert(subject.clone(), c);
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable config record"),
                },
            },
            RecordKey::Mode { subject, .. } => match &record.value {
                None => {
                    self.modes.remove(subject);
                }
                Some(v) => match serde_json::from_value::<ModeValue>(v.clone()) {
                    Ok(m) => {
                        self.modes.insert(subject.clone(), m.mode);
                    }
                    Err(e) => tracing::warn!(error = %e, "skipping unreadable mode record"),
                },
            },
            RecordKey::DeleteSubject { subject, .. } => {
                // a marker without a readable value says nothing: never delete on a guess
                let Some(upto) = record
                    .value
                    .as_ref()
                    .and_then(|v| serde_json::from_value::<DeleteSubjectValue>(v.clone()).ok())
                    .map(|d| d.version)
                else {
                    return;
                };
                if let Some(versions) = self.subjects.get_mut(subject) {
                    for (_, entry) in versions.range_mut(..=upto) {
                        entry.deleted = true;
                    }
                }
            }
            RecordKey::ClearSubject { subject, .. } => {
                let Some(subject) = subject else {
                    return;
                };
                let versions: Vec<i32> = self
                    .subjects
                    .get(subject)
                    .map(|v| {
                        v.iter()
                            .filter(|(_, e)| e.deleted)
                            .map(|(v, _)| *v)
                            .collect()
                    })
                    .unwrap_or_default();
                for v in versions {
                    self.remove_version(subject, v);
                }
            }
            RecordKey::Noop { .. } => {}
        }
    }

    fn put_version(&mut self, value: SchemaValue) {
        if let Some(existing) = self.schemas.get(&value.id) {
            if existing.text != value.schema
                || existing.schema_type != value.schema_type
                || existing.references != value.references
            {
                tracing::warn!(
                    id = value.id,
                    subject = %value.subject,
                    version = value.version,
                    "skipping a schema record whose id already names another schema"
                );
                return;
            }
        }
        self.max_id = self.max_id.max(value.id);
        if !self.schemas.contains_key(&value.id) {
            let guid = value
                .guid
                .clone()
                .unwrap_or_else(|| guid_of(&value.schema, &value.references));
            let key = ContentKey {
                schema_type: value.schema_type,
                text: value.schema.clone(),
                references: value.references.clone(),
            };
            self.ids_by_content.entry(key).or_insert(value.id);
            self.ids_by_guid.entry(guid.clone()).or_insert(value.id);
            self.schemas.insert(
                value.id,
                Arc::new(StoredSchema {
                    id: value.id,
                    guid,
                    schema_type: value.schema_type,
                    text: value.schema,
                    references: value.references,
                    parsed: OnceLock::new(),
                    normalized: OnceLock::new(),
                }),
            );
        }
        let previous = self.subjects.entry(value.subject).or_default().insert(
            value.version,
            VersionEntry {
                id: value.id,
                deleted: value.deleted,
            },
        );
        *self.uses.entry(value.id).or_default() += 1;
        if let Some(previous) = previous {
            self.release(previous.id);
        }
    }

    fn remove_version(&mut self, subject: &str, version: i32) {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return;
        };
        let Some(entry) = versions.remove(&version) else {
            return;
        };
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        self.release(entry.id);
    }

    /// One version fewer uses `id`; a schema no version uses any more is gone, as in
    /// Confluent's registry.
    fn release(&mut self, id: i32) {
        let Some(count) = self.uses.get_mut(&id) else {
            return;
        };
        *count -= 1;
        if *count > 0 {
            return;
        }
        self.uses.remove(&id);
        if let Some(schema) = self.schemas.remove(&id) {
            if self.ids_by_guid.get(&schema.guid) == Some(&id) {
                self.ids_by_guid.remove(&schema.guid);
            }
            let key = ContentKey {
                schema_type: schema.schema_type,
                text: schema.text.clone(),
                references: schema.references.clone(),
            };
            if self.ids_by_content.get(&key) == Some(&id) {
                self.ids_by_content.remove(&key);
            }
        }
    }

    pub fn level(&self, subject: Option<&str>, default: CompatibilityLevel) -> CompatibilityLevel {
        subject
            .and_then(|s| self.configs.get(&Some(s.to_string())))
            .and_then(|c| c.compatibility_level)
            .or_else(|| self.configs.get(&None).and_then(|c| c.compatibility_level))
            .unwrap_or(default)
    }

    /// Whether schemas are normalized on registration and look-up without being asked.
    pub fn normalize(&self, subject: Option<&str>) -> bool {
        subject
            .and_then(|s| self.configs.get(&Some(s.to_string())))
            .and_then(|c| c.normalize)
            .or_else(|| self.configs.get(&None).and_then(|c| c.normalize))
            .unwrap_or(false)
    }

    /// References with version -1 name their subject's latest live version.
    pub fn resolve_latest(&self, references: &[Reference]) -> Result<Vec<Reference>, String> {
        references
            .iter()
            .map(|r| {
                if r.version != -1 {
                    return Ok(r.clone());
                }
                let latest = self.versions(&r.subject, false).last().map(|(v, _)| *v);
                latest
                    .map(|version| Reference {
                        version,
                        ..r.clone()
                    })
                    .ok_or_else(|| {
                        format!(
                            "reference '{}' to the latest version of subject '{}': the subject has no versions",
                            r.name, r.subject
                        )
                    })
            })
            .collect()
    }

    pub fn mode(&self, subject: Option<&str>) -> Mode {
        let global = self.modes.get(&None).copied().unwrap_or_default();
        if global == Mode::ReadonlyOverride {
            return global;
        }
        subject
            .and_then(|s| self.modes.get(&Some(s.to_string())))
            .copied()
            .unwrap_or(global)
    }

    /// The versions of a subject, live ones only unless `deleted`.
    pub fn versions(&self, subject: &str, deleted: bool) -> Vec<(i32, VersionEntry)> {
        self.subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, e)| deleted || !e.deleted)
                    .map(|(v, e)| (*v, *e))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every schema reachable through `references`, dependencies first, each once.
    pub fn dependencies(&self, references: &[Reference]) -> Result<Vec<Dependency>, String> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.collect_dependencies(references, &mut out, &mut seen, 0)?;
        Ok(out)
    }

    fn collect_dependencies(
        &self,
        references: &[Reference],
        out: &mut Vec<Dependency>,
        seen: &mut std::collections::HashSet<(String, i32)>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 64 {
            return Err("references nest more than 64 deep".into());
        }
        for r in references {
            if !seen.insert((r.subject.clone(), r.version)) {
                continue;
            }
            let schema = self
                .subjects
                .get(&r.subject)
                .and_then(|vs| vs.get(&r.version))
                .and_then(|e| self.schemas.get(&e.id))
                .ok_or_else(|| {
                    format!(
                        "reference '{}' to subject '{}' version {} not found",
                        r.name, r.subject, r.version
                    )
                })?;
            self.collect_dependencies(&schema.references, out, seen, depth + 1)?;
            out.push(Dependency {
                name: r.name.clone(),
                schema: schema.text.clone(),
            });
        }
        Ok(())
    }

    /// The parsed form of a stored schema, parsed once.
    pub fn parsed(&self, schema: &StoredSchema) -> Result<Arc<ParsedSchema>, String> {
        schema
            .parsed
            .get_or_init(|| {
                let deps = self.dependencies(&schema.references)?;
                ParsedSchema::parse(schema.schema_type, &schema.text, &deps)
                    .map(Arc::new)
                    .map_err(|e| e.0)
            })
            .clone()
    }

    /// The normalized text of a stored schema, computed once; None if it does not parse.
    pub fn normalized(&self, schema: &StoredSchema) -> Option<String> {
        schema
            .normalized
            .get_or_init(|| self.parsed(schema).ok().map(|p| p.normalized()))
            .clone()
    }

    /// The ids of schemas that refer to `subject` at `version`, from live versions (and
    /// soft-deleted ones too when `deleted`), leaving out versions of `except_subject`.
    pub fn referenced_by(
        &self,
        subject: &str,
        version: i32,
        deleted: bool,
        except_subject: Option<&str>,
    ) -> Vec<i32> {
        let mut ids: Vec<i32> = self
            .subjects
            .iter()
            .filter(|(s, _)| Some(s.as_str()) != except_subject)
            .flat_map(|(_, vs)| vs.values())
            .filter(|e| deleted || !e.deleted)
            .filter_map(|e| self.schemas.get(&e.id))
            .filter(|s| {
                s.references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
            })
            .map(|s| s.id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// A schema's GUID as Confluent's registry derives it: the MD5 of the schema text, then of
/// each reference's name, subject and big-endian version, written as a UUID.
pub fn guid_of(text: &str, references: &[Reference]) -> String {
    use md5::{Digest, Md5};
    let mut md5 = Md5::new();
    md5.update(text.as_bytes());
    for r in references {
        md5.update(r.name.as_bytes());
        md5.update(r.subject.as_bytes());
        md5.update(r.version.to_be_bytes());
    }
    let b = md5.finalize();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub fn schema_record(value: &SchemaValue) -> StoreRecord {
    StoreRecord {
        key: RecordKey::schema(&value.subject, value.version),
        value: Some(crate::records::to_value(value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::to_value;

    fn schema(subject: &str, version: i32, id: i32, text: &str, deleted: bool) -> StoreRecord {
        schema_record(&SchemaValue {
            subject: subject.into(),
            version,
            id,
            guid: None,
            schema_type: SchemaType::Avro,
            references: vec![],
            schema: text.into(),
            deleted,
        })
    }

    fn replay(records: &[StoreRecord]) -> State {
        let mut state = State::default();
        for r in records {
            // through the bytes, as records come back from the topic
            let (k, v) = r.encode();
            state.apply(&StoreRecord::decode(&k, v.as_deref()).unwrap());
        }
        state
    }

    #[test]
    fn replay_rebuilds_subjects_ids_and_settings() {
        let state = replay(&[
            schema("a", 1, 1, r#""int""#, false),
            schema("b", 1, 1, r#""int""#, false),
            schema("a", 2, 2, r#""long""#, false),
            StoreRecord {
                key: RecordKey::config(Some("a")),
                value: Some(to_value(&ConfigValue {
                    compatibility_level: Some(CompatibilityLevel::Full),
                    normalize: None,
                })),
            },
            StoreRecord {
                key: RecordKey::mode(None),
                value: Some(to_value(&ModeValue {
                    mode: Mode::Readonly,
                })),
            },
        ]);
        assert_eq!(state.schemas.len(), 2);
        assert_eq!(state.max_id, 2);
        let versions: Vec<i32> = state.versions("a", false).iter().map(|(v, _)| *v).collect();
        assert_eq!(versions, vec![1, 2]);
        assert_eq!(state.versions("b", false)[0].1.id, 1);
        assert_eq!(
            state.level(Some("a"), CompatibilityLevel::Backward),
            CompatibilityLevel::Full
        );
        assert_eq!(
            state.level(Some("b"), CompatibilityLevel::Backward),
            CompatibilityLevel::Backward
        );
        assert_eq!(state.mode(Some("a")), Mode::Readonly);
    }

    #[test]
    fn soft_deletes_hide_and_tombstones_remove() {
        let mut records = vec![
            schema("a", 1, 1, r#""int""#, false),
            schema("a", 2, 2, r#""long""#, false),
            schema("a", 1, 1, r#""int""#, true),
        ];
        let state = replay(&records);
        assert_eq!(state.versions("a", false).len(), 1);
        assert_eq!(state.versions("a", true).len(), 2);
        assert!(
            state.schemas.contains_key(&1),
            "a soft-deleted version keeps its id"
        );
        records.push(StoreRecord {
            key: RecordKey::schema("a", 1),
            value: None,
        });
        let state = replay(&records);
        assert_eq!(state.versions("a", true).len(), 1);
        assert!(
            !state.schemas.contains_key(&1),
            "no version refers to id 1 any more"
        );
        assert_eq!(state.max_id, 2);
        // config tombstone
        let state = replay(&[
            StoreRecord {
                key: RecordKey::config(None),
                value: Some(to_value(&ConfigValue {
                    compatibility_level: Some(CompatibilityLevel::None),
                    normalize: None,
                })),
            },
            StoreRecord {
                key: RecordKey::config(None),
                value: None,
            },
        ]);
        assert_eq!(
            state.level(None, CompatibilityLevel::Backward),
            CompatibilityLevel::Backward
        );
    }

    #[test]
    fn confluent_markers_and_unreadable_records() {
        let mut state = replay(&[
            schema("a", 1, 1, r#""int""#, false),
            schema("a", 2, 2, r#""long""#, false),
        ]);
        // Confluent's registry marks a soft-deleted subject with DELETE_SUBJECT
        let key = br#"{"keytype":"DELETE_SUBJECT","subject":"a","magic":0}"#;
        let value = br#"{"subject":"a","version":2}"#;
        state.apply(&StoreRecord::decode(key, Some(value)).unwrap());
        assert!(state.versions("a", false).is_empty());
        let key = br#"{"keytype":"CLEAR_SUBJECT","subject":"a","magic":0}"#;
        state.apply(&StoreRecord::decode(key, Some(br#"{"subject":"a"}"#)).unwrap());
        assert!(state.subjects.is_empty());
        // a record whose value is not what its key says is skipped, not fatal
        let key = br#"{"keytype":"SCHEMA","subject":"x","version":1,"magic":1}"#;
        state.apply(&StoreRecord::decode(key, Some(br#"{"unexpected":true}"#)).unwrap());
        assert!(state.subjects.is_empty());
        let noop = br#"{"keytype":"NOOP","magic":0}"#;
        state.apply(&StoreRecord::decode(noop, None).unwrap());
        assert!(StoreRecord::decode(b"not json", None).is_err());
    }

    #[test]
    fn dependencies_come_dependencies_first_and_refuse_missing_ones() {
        let mut state = State::default();
        state.apply(&schema(
            "leaf",
            1,
            1,
            r#"{"type":"fixed","name":"L","size":2}"#,
            false,
        ));
        let mut mid = SchemaValue {
            subject: "mid".into(),
            version: 1,
            id: 2,
            guid: None,
            schema_type: SchemaType::Avro,
            references: vec![Reference {
                name: "L".into(),
                subject: "leaf".into(),
                version: 1,
            }],
            schema: r#"{"type":"record","name":"M","fields":[{"name":"l","type":"L"}]}"#.into(),
            deleted: false,
        };
        state.apply(&schema_record(&mid));
        let deps = state
            .dependencies(&[Reference {
                name: "M".into(),
                subject: "mid".into(),
                version: 1,
            }])
            .unwrap();
        let names: Vec<&str> = deps.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["L", "M"]);
        mid.references[0].version = 7;
        let err = state.dependencies(&mid.references).unwrap_err();
        assert!(err.contains("leaf") && err.contains('7'), "{err}");
    }
}
