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
use crate::state::{schema_record, ContentKey, State, StoredSchema, VersionEntry};
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
    pub metrics: crate::metrics::RegistryMetrics,
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
            metrics: Default::default(),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // a poisoned lock means a panic mid-apply elsewhere; the state itself is still whole
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends records and applies each one the topic acknowledged, so memory never runs
    /// ahead of the topic nor behind it when a later record of the same write fails.
    async fn commit(&self, records: Vec<StoreRecord>) -> Result<(), RegistryError> {
        let (written, result) = self.store.append(&records).await;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for r in &records[..written] {
            state.apply(r);
        }
        if result.is_err() {
            // an unacknowledged schema may still have been stored: never hand its id out again
            for r in &records[written..] {
                if let Some(id) = r
                    .value
                    .as_ref()
                    .and_then(|v| v.get("id"))
                    .and_then(|v| v.as_i64())
                {
                    state.max_id = state.max_id.max(id.clamp(0, i32::MAX as i64) as i32);
                }
            }
        }
        result
    }

    /// Appends the registry's metrics in OpenMetrics text.
    pub fn render_metrics(&self, out: &mut String) {
        let (schemas, subjects) = {
            let state = self.read();
            (state.schemas.len(), state.subjects.len())
        };
        self.metrics.render(schemas, subjects, out);
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
                    // a subject whose every version is soft-deleted (Confluent's rule)
                    any_deleted && !any_live
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
            // latest is the newest live version, whatever `deleted` says
            VersionSpec::Latest => all.iter().rev().find(|(_, e)| !e.deleted),
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
        deleted: bool,
    ) -> Result<Vec<i32>, RegistryError> {
        let v = self.version(subject, spec, true)?;
        Ok(self.read().referenced_by(subject, v.version, deleted, None))
    }

    // ---- registration and look-up ----

    /// Parses a schema with its references and returns it with the text to store. Parsing
    /// runs on the blocking pool and outside the state lock: a schema may be megabytes.
    async fn prepare(
        &self,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<(Arc<ParsedSchema>, ContentKey), RegistryError> {
        let (references, deps) = {
            let state = self.read();
            let references = state
                .resolve_latest(&request.references)
                .map_err(RegistryError::InvalidSchema)?;
            let deps = state
                .dependencies(&references)
                .map_err(RegistryError::InvalidSchema)?;
            (references, deps)
        };
        let schema_type = request.schema_type;
        let text = request.schema.clone();
        let parsed =
            tokio::task::spawn_blocking(move || ParsedSchema::parse(schema_type, &text, &deps))
                .await
                .map_err(|e| RegistryError::Store(format!("parsing the schema failed: {e}")))?
                .map_err(|e| RegistryError::InvalidSchema(e.0))?;
        let text = if normalize {
            parsed.normalized()
        } else {
            parsed.canonical()
        };
        let key = ContentKey {
            schema_type,
            text,
            references,
        };
        Ok((Arc::new(parsed), key))
    }

    /// The newest version of `versions` holding this schema: the same stored text, or
    /// failing that an equivalent one (equal normalized forms), as Confluent's look-up
    /// falls back to comparing parsed schemas.
    fn find_in_subject(
        state: &State,
        versions: &[(i32, VersionEntry)],
        key: &ContentKey,
        parsed: &ParsedSchema,
    ) -> Option<(i32, VersionEntry)> {
        let exact = versions.iter().rev().find(|(_, e)| {
            state
                .schemas
                .get(&e.id)
                .is_some_and(|s| same_content(s, key))
        });
        if let Some(found) = exact {
            return Some(*found);
        }
        let normalized = parsed.normalized();
        versions
            .iter()
            .rev()
            .find(|(_, e)| {
                state.schemas.get(&e.id).is_some_and(|s| {
                    s.schema_type == key.schema_type
                        && s.references == key.references
                        && state.normalized(s).as_deref() == Some(normalized.as_str())
                })
            })
            .copied()
    }

    /// POST /subjects/{subject}: the version of `subject` holding this schema.
    pub async fn lookup(
        &self,
        subject: &str,
        request: &SchemaRequest,
        normalize: bool,
        deleted: bool,
    ) -> Result<SubjectVersion, RegistryError> {
        if self.read().versions(subject, deleted).is_empty() {
            return Err(RegistryError::SubjectNotFound(subject.to_string()));
        }
        let normalize = normalize || self.read().normalize(Some(subject));
        let (parsed, key) = self.prepare(request, normalize).await?;
        let state = self.read();
        let versions = state.versions(subject, deleted);
        let found = Self::find_in_subject(&state, &versions, &key, &parsed);
        match found.and_then(|(v, e)| state.schemas.get(&e.id).map(|s| (v, e, s.clone()))) {
            Some((version, entry, schema)) => Ok(SubjectVersion {
                subject: subject.to_string(),
                version,
                schema,
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
        let normalize = normalize || self.read().normalize(Some(subject));
        // only this task writes while it holds `write`: the state cannot change under it
        let (parsed, key) = self.prepare(request, normalize).await?;
        let value = {
            let state = self.read();
            let mode = state.mode(Some(subject));
            let import = mode == Mode::Import;
            let versions = state.versions(subject, false);
            let wanted_id = request.id.filter(|id| *id >= 0);

            // the same schema already registered under this subject: answered in any mode,
            // so producers that auto-register keep working against a read-only registry
            if let Some((version, entry)) = Self::find_in_subject(&state, &versions, &key, &parsed)
            {
                if wanted_id.is_none_or(|id| id == entry.id)
                    && request.version.is_none_or(|v| v == version)
                {
                    if let Some(schema) = state.schemas.get(&entry.id) {
                        return Ok(SubjectVersion {
                            subject: subject.to_string(),
                            version,
                            schema: schema.clone(),
                            deleted: false,
                        });
                    }
                }
            }
            self.check_writable(&state, subject)?;
            if import && wanted_id.is_none() {
                return Err(RegistryError::OperationNotPermitted(format!(
                    "Subject {subject} is in IMPORT mode: a registration must give the schema's id"
                )));
            }
            let existing_id = state.ids_by_content.get(&key).copied();

            let id = match (wanted_id, import) {
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
            let next = all.last().map(|(v, _)| v + 1).unwrap_or(1);
            let version = match request.version.filter(|v| *v >= 1) {
                Some(v) if import => {
                    if all.iter().any(|(n, _)| *n == v) {
                        return Err(RegistryError::OperationNotPermitted(format!(
                            "Version {v} of subject {subject} already exists"
                        )));
                    }
                    v
                }
                // outside IMPORT a client may only name the version it would get
                Some(v) if v == next => v,
                Some(v) => {
                    return Err(RegistryError::InvalidSchema(format!(
                        "Version {v} is not the next version of subject {subject} ({next}); \
                         other versions can only be given in IMPORT mode"
                    )))
                }
                None => next,
            };
            SchemaValue {
                subject: subject.to_string(),
                version,
                id,
                guid: Some(guid_of(&key)),
                schema_type: request.schema_type,
                references: key.references.clone(),
                schema: key.text.clone(),
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
    pub async fn check_compatibility(
        &self,
        subject: &str,
        version: Option<VersionSpec>,
        request: &SchemaRequest,
        normalize: bool,
    ) -> Result<Vec<String>, RegistryError> {
        let normalize = normalize || self.read().normalize(Some(subject));
        {
            let state = self.read();
            if let Some(VersionSpec::Number(n)) = version {
                if !state.versions(subject, false).iter().any(|(v, _)| *v == n) {
                    return Err(RegistryError::VersionNotFound {
                        version: n.to_string(),
                    });
                }
            }
        }
        let (parsed, _) = self.prepare(request, normalize).await?;
        let state = self.read();
        let level = state.level(Some(subject), self.default_level);
        let versions = state.versions(subject, false);
        let chosen: Vec<(i32, VersionEntry)> = match version {
            None => versions,
            Some(VersionSpec::Latest) => versions.last().copied().into_iter().collect(),
            Some(VersionSpec::Number(n)) => versions.into_iter().filter(|(v, _)| *v == n).collect(),
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
            // a permanent delete is refused while even soft-deleted schemas refer to it
            for (v, _) in &all {
                if !state
                    .referenced_by(subject, *v, permanent, Some(subject))
                    .is_empty()
                {
                    return Err(RegistryError::ReferenceExists {
                        subject: subject.to_string(),
                        version: *v,
                    });
                }
            }
            let targets: Vec<(i32, VersionEntry)> = if permanent {
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
                records.extend(Self::settings_removal(&state, subject));
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
                // latest is the newest live version, for a permanent delete too (Confluent's rule)
                VersionSpec::Latest => all.iter().rev().find(|(_, e)| !e.deleted),
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
            if !state
                .referenced_by(subject, version, permanent, None)
                .is_empty()
            {
                return Err(RegistryError::ReferenceExists {
                    subject: subject.to_string(),
                    version,
                });
            }
            let mut records =
                vec![self.deletion_record(&state, subject, version, entry.id, permanent)?];
            if permanent && all.len() == 1 {
                // the subject's last version gone for good takes the subject's settings along
                records.extend(Self::settings_removal(&state, subject));
            }
            (records, version)
        };
        self.commit(record).await?;
        Ok(version)
    }

    /// Tombstones for a subject's own config and mode, where it has them.
    fn settings_removal(state: &State, subject: &str) -> Vec<StoreRecord> {
        let key = Some(subject.to_string());
        let mut records = Vec::new();
        if state.configs.contains_key(&key) {
            records.push(StoreRecord {
                key: RecordKey::config(Some(subject)),
                value: None,
            });
        }
        if state.modes.contains_key(&key) {
            records.push(StoreRecord {
                key: RecordKey::mode(Some(subject)),
                value: None,
            });
        }
        records
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
            Mode::Readonly | Mode::ReadonlyOverride | Mode::Forward => {
                Err(RegistryError::OperationNotPermitted(format!(
                    "Subject {subject} is in read-only mode"
                )))
            }
            _ => Ok(()),
        }
    }

    // ---- config and mode ----

    /// The settings of `subject` (None: global), with the global level filled in for the
    /// global config; `fallback` answers a subject without settings with the global ones.
    pub fn get_config(
        &self,
        subject: Option<&str>,
        fallback: bool,
    ) -> Result<ConfigValue, RegistryError> {
        let state = self.read();
        let global = || ConfigValue {
            compatibility_level: Some(state.level(None, self.default_level)),
            normalize: state.configs.get(&None).and_then(|c| c.normalize),
        };
        match subject {
            None => Ok(global()),
            Some(s) => match state.configs.get(&Some(s.to_string())) {
                Some(config) => Ok(config.clone()),
                None if fallback => Ok(global()),
                None => Err(RegistryError::SubjectConfigNotFound(s.to_string())),
            },
        }
    }

    /// Updates the settings given in `update`, keeping the others; returns the result.
    pub async fn set_config(
        &self,
        subject: Option<&str>,
        update: ConfigValue,
    ) -> Result<ConfigValue, RegistryError> {
        if let Some(s) = subject {
            validate_subject(s)?;
        }
        let _write = self.write.lock().await;
        let merged = {
            let state = self.read();
            let current = state
                .configs
                .get(&subject.map(str::to_string))
                .cloned()
                .unwrap_or_default();
            ConfigValue {
                compatibility_level: update.compatibility_level.or(current.compatibility_level),
                normalize: update.normalize.or(current.normalize),
            }
        };
        self.commit(vec![StoreRecord {
            key: RecordKey::config(subject),
            value: Some(to_value(&merged)),
        }])
        .await?;
        Ok(merged)
    }

    /// Removes a subject's (or the global) settings; returns those removed.
    pub async fn delete_config(&self, subject: Option<&str>) -> Result<ConfigValue, RegistryError> {
        let _write = self.write.lock().await;
        let previous = {
            let state = self.read();
            match subject {
                None => ConfigValue {
                    compatibility_level: Some(state.level(None, self.default_level)),
                    normalize: state.configs.get(&None).and_then(|c| c.normalize),
                },
                Some(s) => match state.configs.get(&Some(s.to_string())) {
                    Some(c) => c.clone(),
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
            // already importing: nothing to protect any more
            if mode == Mode::Import && !force && state.mode(subject) != Mode::Import {
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
            .ok_or_else(|| RegistryError::SubjectNotFound(subject.to_string()))?;
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
        return Err(RegistryError::InvalidSubject(
            subject.escape_debug().to_string(),
        ));
    }
    Ok(())
}

/// A schema's GUID as Confluent's registry derives it: the MD5 of the schema text and of
/// each reference (name, subject, big-endian version), written as a UUID. The same content
/// has the same GUID in either registry.
pub fn guid_of(key: &ContentKey) -> String {
    crate::state::guid_of(&key.text, &key.references)
}
