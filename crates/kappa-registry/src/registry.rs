//! The registry's operations: what each REST call reads or writes. Reads take the state's
//! read lock only; writes are serialised, checked against the state, appended to the topic
//! and applied once acknowledged, so an answer never runs ahead of what is stored.

use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::compat::{self, CompatibilityLevel};
use crate::error::RegistryError;
use crate::records::{
    to_value, ConfigValue, Mode, ModeValue, RecordKey, Reference, SchemaValue, StoreRecord,
};
use crate::schema::{ParsedSchema, SchemaType};
use crate::state::{schema_record, ContentKey, State, StoredSchema};
use crate::store::KafkaStore;

/// The registry's settings (`[registry]` in kappa's TOML file).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// REST listener.
    pub listen: String,
    /// Compacted topic holding schemas, configs and modes.
    pub topic: String,
    /// Compatibility level of subjects without their own, until one is set globally.
    pub default_compatibility: String,
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            listen: "127.0.0.1:8081".into(),
            topic: "_schemas".into(),
            default_compatibility: "BACKWARD".into(),
            max_request_bytes: 16 * 1024 * 1024,
        }
    }
}

/// A schema as a registration or look-up sends it.
#[derive(Clone, Debug, Default)]
pub struct SchemaRequest {
    pub schema: String,
    pub schema_type: SchemaType,
    pub references: Vec<Reference>,
    /// IMPORT mode only.
    pub id: Option<i32>,
    pub version: Option<i32>,
}

/// A subject version as the API returns it.
#[derive(Clone, Debug)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub schema: Arc<StoredSchema>,
    pub deleted: bool,
}

pub struct Registry {
    state: RwLock<State>,
    store: KafkaStore,
    write: tokio::sync::Mutex<()>,
    default_level: CompatibilityLevel,
    pub config: RegistryConfig,
}

/// `latest`/-1 or a version number, as a path segment says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Number(i32),
}

impl VersionSpec {
    pub fn parse(s: &str) -> Result<VersionSpec, RegistryError> {
        if s.eq_ignore_ascii_case("latest") {
            return Ok(VersionSpec::Latest);
        }
        match s.parse::<i32>() {
            Ok(-1) => Ok(VersionSpec::Latest),
            Ok(n) if n >= 1 => Ok(VersionSpec::Number(n)),
            _ => Err(RegistryError::InvalidVersion(s.to_string())),
        }
    }
}

impl Registry {
    /// Connects to Kafka at `bootstrap`, creates or reads the schemas topic, rebuilds the state.
    pub async fn open(
        bootstrap: &str,
        config: RegistryConfig,
    ) -> Result<Arc<Registry>, RegistryError> {
        let default_level = CompatibilityLevel::parse(&config.default_compatibility)
            .ok_or(RegistryError::InvalidCompatibilityLevel)?;
        let (store, records) = KafkaStore::open(bootstrap, &config.topic).await?;
        let mut state = State::default();
        for record in &records {
            state.apply(record);
        }
        tracing::info!(
            records = records.len(),
            schemas = state.schemas.len(),
            subjects = state.subjects.len(),
            "schema registry state rebuilt from topic {}",
            config.topic
        );
        Ok(Arc::new(Registry {
            state: RwLock::new(state),
            store,
            write: tokio::sync::Mutex::new(()),
            default_level,
            config,
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // a poisoned lock means a panic mid-apply elsewhere; the state itself is still whole
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    async fn commit(&self, records: Vec<StoreRecord>) -> Result<(), RegistryError> {
        self.store.append(&records).await?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for r in &records {
            state.apply(r);
        }
        Ok(())
    }

    // ---- schemas by id ----

    pub fn schema_by_id(&self, id: i32) -> Result<Arc<StoredSchema>, RegistryError> {
        self.read()
            .schemas
            .get(&id)
            .cloned()
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
    }

    pub fn schema_by_guid(&self, guid: &str) -> Result<Arc<StoredSchema>, RegistryError> {
        let state = self.read();
        state
            .ids_by_guid
            .get(guid)
            .and_then(|id| state.schemas.get(id))
            .cloned()
            .ok_or_else(|| RegistryError::SchemaNotFound(guid.to_string()))
    }

    /// Parsed form of a stored schema (for format conversions such as Protobuf's serialized).
    pub fn parsed(&self, schema: &StoredSchema) -> Result<Arc<ParsedSchema>, RegistryError> {
        self.read()
            .parsed(schema)
            .map_err(RegistryError::InvalidSchema)
    }

    /// (subject, version) pairs that use schema `id`.
    pub fn id_versions(&self, id: i32, deleted: bool) -> Result<Vec<(String, i32)>, RegistryError> {
        let state = self.read();
        if !state.schemas.contains_key(&id) {
            return Err(RegistryError::SchemaNotFound(id.to_string()));
        }
        Ok(state
            .subjects
            .iter()
            .flat_map(|(s, vs)| {
                vs.iter()
                    .filter(|(_, e)| e.id == id && (deleted || !e.deleted))
                    .map(move |(v, _)| (s.clone(), *v))
            })
            .collect())
    }

    /// Every version of every subject (GET /schemas).
    pub fn all_versions(
        &self,
        prefix: &str,
        deleted: bool,
        latest_only: bool,
    ) -> Vec<SubjectVersion> {
        let state = self.read();
        let mut out = Vec::new();
        for (subject, versions) in state.subjects.range(prefix.to_string()..) {
            if !subject.starts_with(prefix) {
                break;
            }
            let live: Vec<_> = versions
                .iter()
                .filter(|(_, e)| deleted || !e.deleted)
                .collect();
            let chosen = if latest_only {
                live.last().map(|x| vec![*x]).unwrap_or_default()
            } else {
                live
            };
            for (v, e) in chosen {
                if let Some(schema) = state.schemas.get(&e.id) {
                    out.push(SubjectVersion {
                        subject: subject.clone(),
                        version: *v,
                        schema: schema.clone(),
                        deleted: e.deleted,
                    });
                }
            }
        }
        out
    }

    // ---- subjects ----

    pub fn subjects(&self, prefix: &str, deleted: bool, deleted_only: bool) -> Vec<String> {
        let state = self.read();
        state
            .subjects
            .iter()
            .filter(|(s, _)| s.starts_with(prefix))
            .filter(|(_, vs)| {
                let any_live = vs.values().any(|e| !e.deleted);
                let any_deleted = vs.values().any(|e| e.deleted);
                if deleted_only {
                    any_deleted
                } else {
                    any_live || (deleted && any_deleted)
                }
            })
            .map(|(s, _)| s.clone())
            .collect()
    }

    pub fn versions(
        &self,
        subject: &str,
        deleted: bool,
        deleted_only: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let state = self.read();
        let versions: Vec<i32> = state
            .versions(subject, deleted || deleted_only)
            .into_iter()
            .filter(|(_, e)| !deleted_only || e.deleted)
            .map(|(v, _)| v)
            .collect();
        if versions.is_empty() && state.versions(subject, true).is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        if versions.is_empty() && !deleted_only {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        Ok(versions)
    }

    pub fn version(
        &self,
        subject: &str,
        spec: VersionSpec,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let state = self.read();
        let all = state.versions(subject, true);
        if all.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let found = match spec {
            VersionSpec::Latest => all.iter().rev().find(|(_, e)| deleted || !e.deleted),
            VersionSpec::Number(n) => all.iter().find(|(v, e)| *v == n && (deleted || !e.deleted)),
        };
        let Some((version, entry)) = found else {
            if matches!(spec, VersionSpec::Latest) {
                return Err(RegistryError::SubjectNotFound(subject.to_string()));
            }
            return Err(RegistryError::VersionNotFound {
                version: version_text(spec),
            });
        };
        let schema = state
            .schemas
            .get(&entry.id)
            .cloned()
            .ok_or_else(|| RegistryError::SchemaNotFound(entry.id.to_string()))?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: *version,
            schema,
            deleted: entry.deleted,
        })
    }

    pub fn referenced_by(
        &self,
        subject: &str,
        spec: VersionSpec,
    ) -> Result<Vec<i32>, RegistryError> {
        let v = self.version(subject, spec, true)?;
        Ok(self.read().referenced_by(subject, v.version))
    }

    // ---- registration and look-up ----

    /// Parses a schema with its references and returns it with the text to store.
    fn prepare(
        &self,
        state: &State,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<(ParsedSchema, ContentKey), RegistryError> {
        let deps = state
            .dependencies(&request.references)
            .map_err(RegistryError::InvalidSchema)?;
        let parsed = ParsedSchema::parse(request.schema_type, &request.schema, &deps)
            .map_err(|e| RegistryError::InvalidSchema(e.0))?;
        let text = if normalize {
            parsed.normalized()
        } else {
            parsed.canonical()
        };
        let key = ContentKey {
            schema_type: request.schema_type,
            text,
            references: request.references.clone(),
        };
        Ok((parsed, key))
    }

    /// POST /subjects/{subject}: the version of `subject` holding this schema.
    pub fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        normalize: bool,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        let state = self.read();
        let versions = state.versions(subject, deleted);
        if versions.is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let (_, key) = self.prepare(&state, request, normalize)?;
        let found = versions.iter().rev().find(|(_, e)| {
            state
                .schemas
                .get(&e.id)
                .is_some_and(|s| same_content(s, &key))
        });
        match found {
            Some((version, entry)) => Ok(SubjectVersion {
                subject: subject.to_string(),
                version: *version,
                schema: state.schemas[&entry.id].clone(),
                deleted: entry.deleted,
            }),
            None => Err(RegistryError::SchemaNotInSubject),
        }
    }

    /// POST /subjects/{subject}/versions: registers a schema, or finds it already registered.
    pub async fn register(
        &self,
        subject: &str,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        validate_subject(subject)?;
        let _write = self.write.lock().await;
        let value = {
            let state = self.read();
            self.check_writable(&state, subject)?;
            let mode = state.mode(Some(subject));
            let import = mode == Mode::Import;
            let (parsed, key) = self.prepare(&state, request, normalize)?;
            let existing_id = state.ids_by_content.get(&key).copied();
            let versions = state.versions(subject, false);

            // the same schema already registered under this subject
            if let Some((version, entry)) = versions
                .iter()
                .rev()
                .find(|(_, e)| Some(e.id) == existing_id)
            {
                let wanted_id = request.id.filter(|id| *id >= 0);
                if wanted_id.is_none_or(|id| id == entry.id)
                    && request.version.is_none_or(|v| v == *version)
                {
                    return Ok(SubjectVersion {
                        subject: subject.to_string(),
                        version: *version,
                        schema: state.schemas[&entry.id].clone(),
                        deleted: false,
                    });
                }
            }

            let id = match (request.id.filter(|id| *id >= 0), import) {
                (Some(id), true) => {
                    if let Some(stored) = state.schemas.get(&id) {
                        if !same_content(stored, &key) {
                            return Err(RegistryError::OperationNotPermitted(format!(
                                "Overwrite new schema with id {id} is not permitted."
                            )));
                        }
                    }
                    id
                }
                (Some(id), false) => {
                    if existing_id != Some(id) {
                        return Err(RegistryError::OperationNotPermitted(format!(
                            "Schema id {id} can only be given in IMPORT mode"
                        )));
                    }
                    id
                }
                (None, _) => match existing_id {
                    Some(id) => id,
                    None => state
                        .max_id
                        .checked_add(1)
                        .ok_or_else(|| RegistryError::Store("schema ids exhausted".into()))?,
                },
            };

            if !import {
                let level = state.level(Some(subject), self.default_level);
                let mut previous = Vec::new();
                for (version, entry) in &versions {
                    if let Some(stored) = state.schemas.get(&entry.id) {
                        // a stored schema that no longer parses (a reference gone) is skipped
                        if let Ok(p) = state.parsed(stored) {
                            previous.push((*version, p));
                        }
                    }
                }
                let previous: Vec<(i32, &ParsedSchema)> =
                    previous.iter().map(|(v, p)| (*v, p.as_ref())).collect();
                let reasons = compat::check(level, &parsed, &previous);
                if !reasons.is_empty() {
                    return Err(RegistryError::Incompatible {
                        subject: subject.to_string(),
                        reasons,
                    });
                }
            }

            let all = state.versions(subject, true);
            let version = match request.version.filter(|v| *v >= 1) {
                Some(v) if import => {
                    if all.iter().any(|(n, _)| *n == v) {
                        return Err(RegistryError::OperationNotPermitted(format!(
                            "Version {v} of subject {subject} already exists"
                        )));
                    }
                    v
                }
                Some(v) => {
                    return Err(RegistryError::OperationNotPermitted(format!(
                        "Version {v} can only be given in IMPORT mode"
                    )))
                }
                None => all.last().map(|(v, _)| v + 1).unwrap_or(1),
            };
            let guid = state
                .schemas
                .get(&id)
                .map(|s| s.guid.clone())
                .unwrap_or_else(new_guid);
            SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                guid: Some(guid),
                schema_type: request.schema_type,
                references: request.references.clone(),
                schema: key.text,
                deleted: false,
            }
        };
        let record = schema_record(&value);
        self.commit(vec![record]).await?;
        let state = self.read();
        let schema = state
            .schemas
            .get(&value.id)
            .cloned()
            .ok_or_else(|| RegistryError::Store("registered schema not applied".into()))?;
        Ok(SubjectVersion {
            subject: value.subject,
            version: value.version,
            schema,
            deleted: false,
        })
    }

    /// POST /compatibility/subjects/{subject}/versions[/{version}]: the reasons `request`
    /// is incompatible (empty: compatible). `version` None: against every version the level
    /// asks for.
    pub fn check_compatibility(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let state = self.read();
        let (parsed, _) = self.prepare(&state, request, normalize)?;
        let level = state.level(Some(subject), self.default_level);
        let versions = state.versions(subject, false);
        let chosen: Vec<(i32, crate::state::VersionEntry)> = match version {
            None => versions,
            Some(VersionSpec::Latest) => versions.last().copied().into_iter().collect(),
            Some(VersionSpec::Number(n)) => {
                let found: Vec<_> = versions.into_iter().filter(|(v, _)| *v == n).collect();
                if found.is_empty() {
                    if state.versions(subject, true).is_empty() {
                        return Err(RegistryError::SubjectNotFound(subject.to_string()));
                    }
                    return Err(RegistryError::VersionNotFound {
                        version: n.to_string(),
                    });
                }
                found
            }
        };
        let mut previous = Vec::new();
        for (v, entry) in chosen {
            if let Some(stored) = state.schemas.get(&entry.id) {
                let p = state.parsed(stored).map_err(RegistryError::InvalidSchema)?;
                previous.push((v, p));
            }
        }
        let previous: Vec<(i32, &ParsedSchema)> =
            previous.iter().map(|(v, p)| (*v, p.as_ref())).collect();
        Ok(compat::check(level, &parsed, &previous))
    }

    // ---- deletion ----

    /// DELETE /subjects/{subject}: the versions deleted.
    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let _write = self.write.lock().await;
        let records = {
            let state = self.read();
            self.check_writable(&state, subject)?;
            let all = state.versions(subject, true);
            if all.is_empty() {
                return Err(RegistryError::SubjectNotFound(subject.to_string()));
            }
            let live: Vec<_> = all.iter().filter(|(_, e)| !e.deleted).collect();
            if permanent && !live.is_empty() {
                return Err(RegistryError::SubjectNotSoftDeleted(subject.to_string()));
            }
            if !permanent && live.is_empty() {
                return Err(RegistryError::SubjectSoftDeleted(subject.to_string()));
            }
            for (v, _) in &all {
                if !state.referenced_by(subject, *v).is_empty() {
                    return Err(RegistryError::ReferenceExists {
                        subject: subject.to_string(),
                        version: *v,
                    });
                }
            }
            let targets: Vec<(i32, crate::state::VersionEntry)> = if permanent {
                all.clone()
            } else {
                live.into_iter().copied().collect()
            };
            let mut records = Vec::new();
            for (v, e) in &targets {
                records.push(self.deletion_record(&state, subject, *v, e.id, permanent)?);
            }
            if permanent {
                // a subject gone for good takes its settings with it
                if state.configs.contains_key(&Some(subject.to_string())) {
                    records.push(StoreRecord {
                        key: RecordKey::config(Some(subject)),
                        value: None,
                    });
                }
                if state.modes.contains_key(&Some(subject.to_string())) {
                    records.push(StoreRecord {
                        key: RecordKey::mode(Some(subject)),
                        value: None,
                    });
                }
            }
            (records, targets.iter().map(|(v, _)| *v).collect::<Vec<_>>())
        };
        self.commit(records.0).await?;
        Ok(records.1)
    }

    /// DELETE /subjects/{subject}/versions/{version}: the version deleted.
    pub async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i32, RegistryError> {
        let _write = self.write.lock().await;
        let (record, version) = {
            let state = self.read();
            self.check_writable(&state, subject)?;
            let all = state.versions(subject, true);
            if all.is_empty() {
                return Err(RegistryError::SubjectNotFound(subject.to_string()));
            }
            let found = match spec {
                // latest: the newest live version, or for a permanent delete the newest one
                VersionSpec::Latest => all.iter().rev().find(|(_, e)| permanent || !e.deleted),
                VersionSpec::Number(n) => all.iter().find(|(v, _)| *v == n),
            };
            let Some((version, entry)) = found.copied() else {
                return Err(RegistryError::VersionNotFound {
                    version: version_text(spec),
                });
            };
            if permanent && !entry.deleted {
                return Err(RegistryError::VersionNotSoftDeleted {
                    subject: subject.to_string(),
                    version,
                });
            }
            if !permanent && entry.deleted {
                return Err(RegistryError::VersionSoftDeleted {
                    subject: subject.to_string(),
                    version,
                });
            }
            if !state.referenced_by(subject, version).is_empty() {
                return Err(RegistryError::ReferenceExists {
                    subject: subject.to_string(),
                    version,
                });
            }
            (
                self.deletion_record(&state, subject, version, entry.id, permanent)?,
                version,
            )
        };
        self.commit(vec![record]).await?;
        Ok(version)
    }

    fn deletion_record(
        &self,
        state: &State,
        subject: &str,
        version: i32,
        id: i32,
        permanent: bool,
    ) -> Result<StoreRecord, RegistryError> {
        if permanent {
            return Ok(StoreRecord {
                key: RecordKey::schema(subject, version),
                value: None,
            });
        }
        let stored = state
            .schemas
            .get(&id)
            .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))?;
        Ok(schema_record(&SchemaValue {
            subject: subject.to_string(),
            version,
            id,
            guid: Some(stored.guid.clone()),
            schema_type: stored.schema_type,
            references: stored.references.clone(),
            schema: stored.text.clone(),
            deleted: true,
        }))
    }

    fn check_writable(&self, state: &State, subject: &str) -> Result<(), RegistryError> {
        match state.mode(Some(subject)) {
            Mode::Readonly | Mode::ReadonlyOverride => Err(RegistryError::OperationNotPermitted(
                format!("Subject {subject} is in read-only mode"),
            )),
            _ => Ok(()),
        }
    }

    // ---- config and mode ----

    /// The level in force for `subject` (None: global); `fallback` falls back to the global
    /// level when the subject has none of its own.
    pub fn get_config(
        &self,
        subject: Option<&str>,
        fallback: bool,
    ) -> Result<CompatibilityLevel, RegistryError> {
        let state = self.read();
        match subject {
            None => Ok(state.level(None, self.default_level)),
            Some(s) => match state.configs.get(&Some(s.to_string())) {
                Some(level) => Ok(*level),
                None if fallback => Ok(state.level(None, self.default_level)),
                None => Err(RegistryError::SubjectConfigNotFound(s.to_string())),
            },
        }
    }

    pub async fn set_config(
        &self,
        subject: Option<&str>,
        level: CompatibilityLevel,
    ) -> Result<(), RegistryError> {
        if let Some(s) = subject {
            validate_subject(s)?;
        }
        let _write = self.write.lock().await;
        let value = to_value(&ConfigValue {
            compatibility_level: level,
        });
        self.commit(vec![StoreRecord {
            key: RecordKey::config(subject),
            value: Some(value),
        }])
        .await
    }

    /// Removes a subject's (or the global) level; returns the one removed.
    pub async fn delete_config(
        &self,
        subject: Option<&str>,
    ) -> Result<CompatibilityLevel, RegistryError> {
        let _write = self.write.lock().await;
        let previous = {
            let state = self.read();
            match subject {
                None => state.level(None, self.default_level),
                Some(s) => match state.configs.get(&Some(s.to_string())) {
                    Some(l) => *l,
                    None if state.subjects.contains_key(s) => {
                        return Err(RegistryError::SubjectConfigNotFound(s.to_string()))
                    }
                    None => return Err(RegistryError::SubjectNotFound(s.to_string())),
                },
            }
        };
        self.commit(vec![StoreRecord {
            key: RecordKey::config(subject),
            value: None,
        }])
        .await?;
        Ok(previous)
    }

    pub fn get_mode(&self, subject: Option<&str>, fallback: bool) -> Result<Mode, RegistryError> {
        let state = self.read();
        match subject {
            None => Ok(state.mode(None)),
            Some(s) => match state.modes.get(&Some(s.to_string())) {
                Some(m) => Ok(*m),
                None if fallback => Ok(state.mode(None)),
                None => Err(RegistryError::SubjectModeNotFound(s.to_string())),
            },
        }
    }

    pub async fn set_mode(
        &self,
        subject: Option<&str>,
        mode: Mode,
        force: bool,
    ) -> Result<(), RegistryError> {
        if let Some(s) = subject {
            validate_subject(s)?;
        }
        let _write = self.write.lock().await;
        {
            let state = self.read();
            if mode == Mode::Import && !force {
                let non_empty = match subject {
                    None => state
                        .subjects
                        .values()
                        .any(|vs| vs.values().any(|e| !e.deleted)),
                    Some(s) => !state.versions(s, false).is_empty(),
                };
                if non_empty {
                    return Err(RegistryError::OperationNotPermitted(
                        "Cannot import since found existing subjects".into(),
                    ));
                }
            }
        }
        let value = to_value(&ModeValue { mode });
        self.commit(vec![StoreRecord {
            key: RecordKey::mode(subject),
            value: Some(value),
        }])
        .await
    }

    pub async fn delete_mode(&self, subject: &str) -> Result<Mode, RegistryError> {
        let _write = self.write.lock().await;
        let previous = self
            .read()
            .modes
            .get(&Some(subject.to_string()))
            .copied()
            .ok_or_else(|| RegistryError::SubjectModeNotFound(subject.to_string()))?;
        self.commit(vec![StoreRecord {
            key: RecordKey::mode(Some(subject)),
            value: None,
        }])
        .await?;
        Ok(previous)
    }
}

fn same_content(stored: &StoredSchema, key: &ContentKey) -> bool {
    stored.schema_type == key.schema_type
        && stored.text == key.text
        && stored.references == key.references
}

fn version_text(spec: VersionSpec) -> String {
    match spec {
        VersionSpec::Latest => "latest".into(),
        VersionSpec::Number(n) => n.to_string(),
    }
}

fn validate_subject(subject: &str) -> Result<(), RegistryError> {
    if subject.is_empty() || subject.chars().any(|c| c.is_control()) {
        return Err(RegistryError::BadRequest(format!(
            "Invalid subject name '{}': empty or with control characters",
            subject.escape_debug()
        )));
    }
    Ok(())
}

fn new_guid() -> String {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
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
