//! The SQL service: executes statements, keeps the catalog and the pipelines, persists both
//! in the data directory and restarts running pipelines when Kappa starts again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::sql::sqlparser::tokenizer::Location;
use kappa_stream::metrics::PipelineMetrics;
use kappa_stream::operator::Dataflow;
use kappa_stream::pipeline::{
    self, PipelineControl, PipelineRun, PipelineState, SinkSpec, SourceSpec,
};
use kappa_stream::runtime::{self, Delivery, RunSettings, RunSpec, RuntimeControl};
use kappa_stream::state::StateConfig;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::catalog::{source_layout, table_from_def, Catalog, DeliveryGuarantee, Table, View};
use crate::parser::{parse_script, parse_script_prefix, SqlError, Statement};
use crate::planner::{sink_projection, Planner};
use crate::settings::{PipelineSettings, Runtime};

struct Pipeline {
    id: String,
    name: String,
    sql: String,
    /// What the user asked for: restarted with Kappa when true.
    running: bool,
    /// Started at least once: later starts resume from the group's committed offsets.
    started: bool,
    /// The settings in force when the pipeline was created (`SET ...`).
    settings: Settings,
    metrics: Arc<PipelineMetrics>,
    control: Option<Arc<PipelineControl>>,
    runtime: Option<Arc<RuntimeControl>>,
    thread: Option<std::thread::JoinHandle<()>>,
    start_error: Option<String>,
}

/// A pipeline's settings as persisted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    pub checkpoint_interval_ms: u64,
    pub parallelism: Option<usize>,
    pub state_ttl_ms: u64,
    /// "v2" (default) or "v1".
    pub runtime: String,
    #[serde(default)]
    pub block_cache_bytes: Option<u64>,
    #[serde(default)]
    pub write_buffer_bytes: Option<u64>,
    #[serde(default)]
    pub write_buffer_count: Option<u32>,
    #[serde(default)]
    pub cache_keys: Option<usize>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            checkpoint_interval_ms: 10_000,
            parallelism: None,
            state_ttl_ms: 0,
            runtime: "v2".into(),
            block_cache_bytes: None,
            write_buffer_bytes: None,
            write_buffer_count: None,
            cache_keys: None,
        }
    }
}

impl Settings {
    fn from_script(s: &PipelineSettings) -> Self {
        Settings {
            checkpoint_interval_ms: s.checkpoint_interval.as_millis() as u64,
            parallelism: s.parallelism,
            state_ttl_ms: s.state_ttl.map_or(0, |d| d.as_millis() as u64),
            runtime: match s.runtime {
                Runtime::V1 => "v1".into(),
                Runtime::V2 => "v2".into(),
            },
            block_cache_bytes: s.block_cache_bytes,
            write_buffer_bytes: s.write_buffer_bytes,
            write_buffer_count: s.write_buffer_count,
            cache_keys: s.cache_keys,
        }
    }

    fn parallelism(&self) -> usize {
        self.parallelism
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

/// A planned pipeline, for one runtime or the other.
enum Built {
    V1(PipelineRun),
    V2(RunSpec),
}

impl Built {
    fn sink_table(&self) -> &str {
        match self {
            Built::V1(r) => &r.sink.table,
            Built::V2(r) => &r.sink.table,
        }
    }
}

#[derive(Serialize, Deserialize, Default)]
struct Persisted {
    tables: Vec<String>,
    views: Vec<String>,
    pipelines: Vec<PersistedPipeline>,
    next_id: u64,
}

#[derive(Serialize, Deserialize)]
struct PersistedPipeline {
    id: String,
    name: String,
    sql: String,
    running: bool,
    started: bool,
    #[serde(default)]
    settings: Settings,
}

struct State {
    catalog: Catalog,
    pipelines: BTreeMap<String, Pipeline>,
    next_id: u64,
}

pub struct SqlService {
    state: Mutex<State>,
    path: PathBuf,
    data_dir: PathBuf,
    bootstrap: String,
}

/// An error from `execute`: the results of the statements that took effect before it.
#[derive(Debug)]
pub struct ExecuteError {
    pub error: SqlError,
    pub results: Vec<Value>,
}

impl SqlService {
    /// Opens the catalog in `data_dir`; `bootstrap` is the Kafka cluster tables use unless
    /// they name another with `properties.bootstrap.servers`.
    pub async fn open(data_dir: PathBuf, bootstrap: String) -> std::io::Result<Arc<Self>> {
        let path = data_dir.join("sql-catalog.json");
        let persisted: Persisted = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => return Err(e),
        };
        let mut catalog = Catalog::default();
        let mut counter = 0;
        for sql in persisted.tables {
            match parse_script(&sql, &mut counter).map(|mut v| v.pop()) {
                Ok(Some(p)) => {
                    if let Statement::CreateTable(def) = p.statement {
                        match table_from_def(def, sql.clone()) {
                            Ok(t) => {
                                catalog.tables.insert(t.def.name.clone(), t);
                            }
                            Err(e) => tracing::warn!("dropping table definition `{sql}`: {e}"),
                        }
                    }
                }
                other => tracing::warn!("dropping table definition `{sql}`: {other:?}"),
            }
        }
        for sql in persisted.views {
            if let Ok(Some(p)) = parse_script(&sql, &mut counter).map(|mut v| v.pop()) {
                if let Statement::CreateView {
                    name, query_sql, ..
                } = p.statement
                {
                    catalog.views.push(View {
                        name,
                        query_sql,
                        sql,
                    });
                }
            }
        }
        let pipelines = persisted
            .pipelines
            .into_iter()
            .map(|p| {
                (
                    p.id.clone(),
                    Pipeline {
                        id: p.id,
                        name: p.name,
                        sql: p.sql,
                        running: p.running,
                        started: p.started,
                        settings: p.settings,
                        metrics: Arc::new(PipelineMetrics::new()),
                        control: None,
                        runtime: None,
                        thread: None,
                        start_error: None,
                    },
                )
            })
            .collect();
        let service = Arc::new(SqlService {
            state: Mutex::new(State {
                catalog,
                pipelines,
                next_id: persisted.next_id,
            }),
            path,
            data_dir,
            bootstrap,
        });
        // restart what was running
        let mut state = service.state.lock().await;
        let ids: Vec<String> = state
            .pipelines
            .values()
            .filter(|p| p.running)
            .map(|p| p.id.clone())
            .collect();
        for id in ids {
            service.start_locked(&mut state, &id).await;
        }
        drop(state);
        Ok(service)
    }

    fn persist(&self, state: &State) -> std::io::Result<()> {
        let persisted = Persisted {
            tables: state
                .catalog
                .tables
                .values()
                .map(|t| t.sql.clone())
                .collect(),
            views: state.catalog.views.iter().map(|v| v.sql.clone()).collect(),
            pipelines: state
                .pipelines
                .values()
                .map(|p| PersistedPipeline {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    sql: p.sql.clone(),
                    running: p.running,
                    started: p.started,
                    settings: p.settings.clone(),
                })
                .collect(),
            next_id: state.next_id,
        };
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(&persisted).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Executes a script; statements before a failing one keep their effect.
    pub async fn execute(&self, sql: &str) -> Result<Vec<Value>, ExecuteError> {
        let mut counter = 0;
        let (statements, parse_error) = parse_script_prefix(sql, &mut counter);
        let mut results = Vec::new();
        let mut state = self.state.lock().await;
        let mut settings = PipelineSettings::default();
        for parsed in statements {
            let at = parsed.start;
            let outcome = self.execute_one(&mut state, parsed, &mut settings).await;
            match outcome {
                Ok(v) => results.push(v),
                Err(mut error) => {
                    if error.line == 0 {
                        error.line = at.line;
                        error.column = at.column;
                    }
                    return Err(ExecuteError { error, results });
                }
            }
        }
        match parse_error {
            Some(error) => Err(ExecuteError { error, results }),
            None => Ok(results),
        }
    }

    async fn execute_one(
        &self,
        state: &mut State,
        parsed: crate::parser::Parsed,
        script: &mut PipelineSettings,
    ) -> Result<Value, SqlError> {
        let at = parsed.start;
        let io = |e: std::io::Error| SqlError::new(format!("saving the catalog: {e}"), at);
        match parsed.statement {
            Statement::CreateTable(def) => {
                let name = def.name.clone();
                if state.catalog.tables.contains_key(&name) || state.catalog.view(&name).is_some() {
                    if def.if_not_exists {
                        return Ok(
                            json!({"statement": "CREATE TABLE", "name": name, "created": false}),
                        );
                    }
                    if !def.or_replace || state.catalog.view(&name).is_some() {
                        return Err(SqlError::new(
                            format!("table or view '{name}' already exists"),
                            at,
                        ));
                    }
                }
                let table = table_from_def(def, parsed.sql.clone())?;
                watermark_expr(&table, at)?;
                state.catalog.tables.insert(name.clone(), table);
                self.persist(state).map_err(io)?;
                Ok(json!({"statement": "CREATE TABLE", "name": name}))
            }
            Statement::CreateView {
                name,
                if_not_exists,
                or_replace,
                query_sql,
                ..
            } => {
                if state.catalog.tables.contains_key(&name) {
                    return Err(SqlError::new(
                        format!("a table named '{name}' already exists"),
                        at,
                    ));
                }
                if state.catalog.view(&name).is_some() {
                    if if_not_exists {
                        return Ok(
                            json!({"statement": "CREATE VIEW", "name": name, "created": false}),
                        );
                    }
                    if !or_replace {
                        return Err(SqlError::new(format!("view '{name}' already exists"), at));
                    }
                }
                {
                    let mut planner = Planner::new(&state.catalog).await;
                    planner.set_fallback(at);
                    let plan = planner
                        .register_view(&name, &query_sql)
                        .await
                        .map_err(|e| reposition(e, &parsed.sql, &query_sql, at))?;
                    // a view must be something a pipeline can run
                    planner
                        .lower(&plan)
                        .map_err(|e| reposition(e, &parsed.sql, &query_sql, at))?;
                }
                state.catalog.views.retain(|v| v.name != name);
                state.catalog.views.push(View {
                    name: name.clone(),
                    query_sql,
                    sql: parsed.sql.clone(),
                });
                self.persist(state).map_err(io)?;
                Ok(json!({"statement": "CREATE VIEW", "name": name}))
            }
            Statement::Insert { .. } => {
                state.next_id += 1;
                let id = format!("p{}", state.next_id);
                let settings = Settings::from_script(script);
                // plan now, so errors come back to the caller
                let built = self
                    .build(&state.catalog, &id, &parsed.sql, false, &settings, None)
                    .map_err(|e| reposition(e, &parsed.sql, &parsed.sql, at))?;
                let name = script
                    .name
                    .take()
                    .unwrap_or_else(|| format!("insert-into_{}", built.sink_table()));
                let metrics = Arc::new(PipelineMetrics::new());
                let mut p = Pipeline {
                    id: id.clone(),
                    name: name.clone(),
                    sql: parsed.sql.clone(),
                    running: true,
                    started: true,
                    settings,
                    metrics,
                    control: None,
                    runtime: None,
                    thread: None,
                    start_error: None,
                };
                launch(&mut p, built);
                state.pipelines.insert(id.clone(), p);
                self.persist(state).map_err(io)?;
                Ok(json!({"statement": "INSERT", "pipeline": id, "name": name}))
            }
            Statement::Select { .. } => Err(SqlError::new(
                "a continuous query needs a sink: write INSERT INTO <table> SELECT ...",
                at,
            )),
            Statement::DropTable { name, if_exists } => {
                if state.catalog.tables.remove(&name).is_none() && !if_exists {
                    return Err(SqlError::new(format!("table '{name}' does not exist"), at));
                }
                self.persist(state).map_err(io)?;
                Ok(json!({"statement": "DROP TABLE", "name": name}))
            }
            Statement::DropView { name, if_exists } => {
                let before = state.catalog.views.len();
                state.catalog.views.retain(|v| v.name != name);
                if before == state.catalog.views.len() && !if_exists {
                    return Err(SqlError::new(format!("view '{name}' does not exist"), at));
                }
                self.persist(state).map_err(io)?;
                Ok(json!({"statement": "DROP VIEW", "name": name}))
            }
            Statement::ShowTables => Ok(
                json!({"statement": "SHOW TABLES", "rows": state.catalog.tables.keys().collect::<Vec<_>>()}),
            ),
            Statement::ShowViews => Ok(
                json!({"statement": "SHOW VIEWS", "rows": state.catalog.views.iter().map(|v| &v.name).collect::<Vec<_>>()}),
            ),
            Statement::ShowPipelines => Ok(
                json!({"statement": "SHOW PIPELINES", "rows": state.pipelines.values().map(info).collect::<Vec<_>>()}),
            ),
            Statement::Set { key, value } => {
                script.set(&key, &value).map_err(|m| SqlError::new(m, at))?;
                Ok(json!({"statement": "SET", "key": key, "value": value}))
            }
            Statement::Describe { name } => {
                if let Some(t) = state.catalog.tables.get(&name) {
                    let rows: Vec<Value> = t
                        .def
                        .columns
                        .iter()
                        .map(|c| json!({"name": c.name, "type": c.data_type.to_string(), "nullable": !c.not_null, "metadata": c.metadata}))
                        .collect();
                    return Ok(
                        json!({"statement": "DESCRIBE", "name": name, "columns": rows, "watermark": t.def.watermark.as_ref().map(|w| format!("{} AS {}", w.column, w.expr_sql)), "primary_key": t.def.primary_key, "options": t.def.options}),
                    );
                }
                if let Some(v) = state.catalog.view(&name) {
                    return Ok(
                        json!({"statement": "DESCRIBE", "name": name, "query": v.query_sql}),
                    );
                }
                Err(SqlError::new(
                    format!("table or view '{name}' does not exist"),
                    at,
                ))
            }
        }
    }

    /// Plans an INSERT into a runnable pipeline for the runtime its settings name.
    fn build(
        &self,
        catalog: &Catalog,
        id: &str,
        sql: &str,
        resume: bool,
        settings: &Settings,
        from_savepoint: Option<PathBuf>,
    ) -> Result<Built, SqlError> {
        let mut counter = 0;
        let mut parsed = parse_script(sql, &mut counter)?;
        let Some(parsed) = parsed.pop() else {
            return Err(SqlError::unpositioned("empty pipeline definition"));
        };
        let at = parsed.start;
        let Statement::Insert {
            table,
            columns,
            query,
        } = parsed.statement
        else {
            return Err(SqlError::new(
                "a pipeline is defined by INSERT INTO ... SELECT ...",
                at,
            ));
        };
        let sink = catalog
            .tables
            .get(&table)
            .ok_or_else(|| SqlError::new(format!("sink table '{table}' does not exist"), at))?;
        let lowered = futures_block_on(async {
            let mut planner = Planner::new(catalog).await;
            planner.set_fallback(at);
            let plan = planner.plan_query(query, &parsed.windows).await?;
            planner.lower(&plan)
        })?;
        let mut ops = lowered.ops;
        if let Some(project) = sink_projection(&lowered.schema, sink, &columns, at)? {
            ops.push(project);
        }
        if let Some(node) = &lowered.updating {
            if !sink.connector.upsert {
                return Err(SqlError::new(
                    format!(
                        "Table sink '{}' doesn't support consuming update changes which is produced by node {node}: write the result into an 'upsert-kafka' table with a PRIMARY KEY",
                        sink.def.name
                    ),
                    at,
                ));
            }
        }
        let source = catalog.tables.get(&lowered.source).ok_or_else(|| {
            SqlError::new(format!("table '{}' does not exist", lowered.source), at)
        })?;
        if source.connector.upsert {
            return Err(SqlError::new(
                format!(
                    "reading the 'upsert-kafka' table '{}' (a changelog) is not supported yet: write to it, or read its topic through a 'kafka' table",
                    source.def.name
                ),
                at,
            ));
        }
        if source.connector.value_except_key {
            return Err(SqlError::new(
                format!(
                    "reading '{}' with 'value.fields-include' = 'EXCEPT_KEY' (fields from the message key) is not supported yet",
                    source.def.name
                ),
                at,
            ));
        }
        let (source_columns, value_schema) = source_layout(source);
        let watermark = watermark_expr(source, at)?;
        let source_spec = SourceSpec {
            table: source.def.name.clone(),
            topic: source.connector.topic.clone(),
            properties: self.properties(source),
            startup: source.connector.startup.clone(),
            format: source.connector.format,
            csv_delimiter: source.connector.csv_delimiter,
            value_schema,
            columns: source_columns,
            schema: source.schema.clone(),
            watermark,
            idle_timeout: source.connector.idle_timeout,
            bad_records: source.connector.bad_records.clone(),
        };
        let index = |name: &str| sink.schema.index_of(name).ok();
        let rowtime = source.def.watermark.as_ref().map(|w| w.column.as_str());
        let event_time_column = ["window_time", "window_end"]
            .into_iter()
            .chain(rowtime)
            .filter_map(index)
            .find(|&i| matches!(sink.schema.field(i).data_type(), DataType::Timestamp(..)));
        let key = sink
            .connector
            .key
            .as_ref()
            .map(|(format, names)| (*format, names.iter().filter_map(|n| index(n)).collect()));
        let sink_spec = SinkSpec {
            table: sink.def.name.clone(),
            topic: sink.connector.topic.clone(),
            properties: self.properties(sink),
            format: sink.connector.format,
            csv_delimiter: sink.connector.csv_delimiter,
            schema: sink.schema.clone(),
            value_columns: (0..sink.schema.fields().len())
                .filter(|i| {
                    let in_key = key
                        .as_ref()
                        .is_some_and(|(_, cols): &(_, Vec<usize>)| cols.contains(i));
                    !(sink.connector.value_except_key && in_key)
                })
                .collect(),
            key,
            event_time_column,
            upsert: sink.connector.upsert,
            key_prefix: sink.connector.key_fields_prefix.clone(),
        };
        let group_id = source
            .connector
            .group_id
            .clone()
            .unwrap_or_else(|| format!("kappa-pipeline-{id}"));
        if settings.runtime == "v1" {
            if sink_spec.key_prefix.is_some() {
                return Err(SqlError::new(
                    "the v1 runtime does not write 'key.fields-prefix' keys: use the v2 runtime",
                    at,
                ));
            }
            let ops = ops
                .iter()
                .map(|o| o.to_v1())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SqlError::new(e.to_string(), at))?;
            return Ok(Built::V1(PipelineRun {
                id: id.to_string(),
                group_id,
                source: source_spec,
                dataflow: Dataflow::new(ops),
                sink: sink_spec,
                resume,
                max_batch: 8192,
                commit_interval: Duration::from_secs(1),
            }));
        }
        let delivery = match sink.connector.delivery_guarantee {
            DeliveryGuarantee::ExactlyOnce => Delivery::ExactlyOnce,
            DeliveryGuarantee::AtLeastOnce => Delivery::AtLeastOnce,
            DeliveryGuarantee::None => Delivery::None,
        };
        let prefix = sink
            .connector
            .transactional_id_prefix
            .clone()
            .unwrap_or_else(|| "kappa-pipeline".into());
        Ok(Built::V2(RunSpec {
            id: id.to_string(),
            group_id,
            sql: sql.to_string(),
            source: source_spec,
            ops,
            sink: sink_spec,
            resume,
            settings: RunSettings {
                parallelism: settings.parallelism(),
                checkpoint_interval: Duration::from_millis(settings.checkpoint_interval_ms.max(1)),
                delivery,
                state_dir: self.data_dir.join("pipelines").join(id),
                state: {
                    let d = StateConfig::default();
                    StateConfig {
                        ttl_ms: settings.state_ttl_ms,
                        block_cache_bytes: settings
                            .block_cache_bytes
                            .map_or(d.block_cache_bytes, |b| b as usize),
                        write_buffer_bytes: settings
                            .write_buffer_bytes
                            .map_or(d.write_buffer_bytes, |b| b as usize),
                        write_buffer_count: settings
                            .write_buffer_count
                            .map_or(d.write_buffer_count, |c| c as i32),
                        cache_keys: settings.cache_keys.unwrap_or(d.cache_keys),
                    }
                },
                max_batch: 8192,
                transactional_id: format!("{prefix}-{id}"),
                from_savepoint,
            },
        }))
    }

    fn properties(&self, table: &Table) -> Vec<(String, String)> {
        let mut props = table.connector.properties.clone();
        if !props.iter().any(|(k, _)| k == "bootstrap.servers") {
            props.push(("bootstrap.servers".into(), self.bootstrap.clone()));
        }
        props
    }

    async fn start_locked(&self, state: &mut State, id: &str) {
        self.start_from(state, id, None).await
    }

    async fn start_from(&self, state: &mut State, id: &str, savepoint: Option<PathBuf>) {
        let catalog = state.catalog.clone();
        let Some(p) = state.pipelines.get_mut(id) else {
            return;
        };
        if p.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        match self.build(&catalog, &p.id, &p.sql, p.started, &p.settings, savepoint) {
            Ok(built) => {
                launch(p, built);
                p.start_error = None;
                p.started = true;
            }
            Err(e) => {
                tracing::error!(pipeline = %p.id, "cannot start pipeline: {e}");
                p.control = None;
                p.start_error = Some(e.to_string());
            }
        }
        p.running = true;
    }

    pub async fn list(&self) -> Vec<Value> {
        let state = self.state.lock().await;
        state.pipelines.values().map(info).collect()
    }

    pub async fn get(&self, id: &str) -> Option<Value> {
        let state = self.state.lock().await;
        state.pipelines.get(id).map(info)
    }

    /// Starts a stopped (or failed) pipeline; it resumes from its committed offsets.
    pub async fn start(&self, id: &str) -> Option<Value> {
        let mut state = self.state.lock().await;
        state.pipelines.get(id)?;
        self.start_locked(&mut state, id).await;
        let _ = self.persist(&state);
        state.pipelines.get(id).map(info)
    }

    /// Starts a stopped pipeline from a savepoint directory (its state and offsets).
    pub async fn start_from_savepoint(&self, id: &str, dir: PathBuf) -> Result<Value, String> {
        let mut state = self.state.lock().await;
        let p = state
            .pipelines
            .get(id)
            .ok_or_else(|| format!("pipeline '{id}' does not exist"))?;
        if p.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            return Err(format!("pipeline '{id}' is running: stop it first"));
        }
        if p.settings.runtime == "v1" {
            return Err("savepoints need the v2 runtime".into());
        }
        if !dir.join("_metadata.json").exists() {
            return Err(format!(
                "{} is not a savepoint (no _metadata.json)",
                dir.display()
            ));
        }
        self.start_from(&mut state, id, Some(dir)).await;
        let _ = self.persist(&state);
        state
            .pipelines
            .get(id)
            .map(info)
            .ok_or_else(|| format!("pipeline '{id}' does not exist"))
    }

    /// Takes a savepoint of a running pipeline into `dir` (by default under the data
    /// directory); with `stop`, the pipeline stops right after it.
    pub async fn savepoint(
        &self,
        id: &str,
        dir: Option<PathBuf>,
        stop: bool,
    ) -> Result<Value, String> {
        let rt = {
            let state = self.state.lock().await;
            let p = state
                .pipelines
                .get(id)
                .ok_or_else(|| format!("pipeline '{id}' does not exist"))?;
            let running = p.thread.as_ref().is_some_and(|t| !t.is_finished());
            match (&p.runtime, running) {
                (Some(rt), true) => rt.clone(),
                (None, true) => return Err("savepoints need the v2 runtime".into()),
                _ => return Err(format!("pipeline '{id}' is not running")),
            }
        };
        let dir = dir.unwrap_or_else(|| {
            self.data_dir
                .join("savepoints")
                .join(format!("{id}-{}", chrono_like_now_ms()))
        });
        let (tx, rx) = std::sync::mpsc::channel();
        if let Ok(mut slot) = rt.savepoint.lock() {
            *slot = Some(runtime::SavepointRequest {
                dir,
                stop,
                reply: tx,
            });
        }
        let answer = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(300)))
            .await
            .map_err(|e| e.to_string())?;
        let meta = match answer {
            Ok(Ok(meta)) => meta,
            Ok(Err(e)) => return Err(format!("savepoint failed: {e}")),
            Err(_) => {
                return Err(
                    "the savepoint did not complete (the pipeline stopped or failed)".into(),
                )
            }
        };
        if stop {
            let thread = {
                let mut state = self.state.lock().await;
                let p = state
                    .pipelines
                    .get_mut(id)
                    .ok_or_else(|| format!("pipeline '{id}' does not exist"))?;
                p.running = false;
                let t = p.thread.take();
                let _ = self.persist(&state);
                t
            };
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        serde_json::to_value(&meta).map_err(|e| e.to_string())
    }

    /// Replaces a running pipeline's query: a savepoint with stop, then the new INSERT started
    /// from it (operators whose keys and aggregates did not change keep their state).
    pub async fn upgrade(&self, id: &str, sql: &str) -> Result<Value, String> {
        {
            let state = self.state.lock().await;
            let p = state
                .pipelines
                .get(id)
                .ok_or_else(|| format!("pipeline '{id}' does not exist"))?;
            // the new query must plan, and take the old one's state, before the old one stops
            let new = self
                .build(&state.catalog, id, sql, true, &p.settings, None)
                .map_err(|e| e.to_string())?;
            let old = self
                .build(&state.catalog, id, &p.sql, true, &p.settings, None)
                .map_err(|e| e.to_string())?;
            if let (Built::V2(old), Built::V2(new)) = (&old, &new) {
                runtime::check_upgrade(&old.ops, &new.ops)?;
            }
        }
        let meta = self.savepoint(id, None, true).await?;
        let dir = meta["dir"]
            .as_str()
            .map(PathBuf::from)
            .ok_or("savepoint without a directory")?;
        {
            let mut state = self.state.lock().await;
            if let Some(p) = state.pipelines.get_mut(id) {
                p.sql = sql.to_string();
            }
        }
        let mut answer = self.start_from_savepoint(id, dir).await?;
        answer["savepoint"] = meta;
        Ok(answer)
    }

    /// Stops a pipeline after it has flushed its output and committed its offsets.
    pub async fn stop(&self, id: &str) -> Option<Value> {
        let thread = {
            let mut state = self.state.lock().await;
            let p = state.pipelines.get_mut(id)?;
            p.running = false;
            let _ = self.persist(&state);
            state.pipelines.get_mut(id).and_then(stop_thread)
        };
        // joined without the lock: a pipeline flushing its output must not block the API
        if let Some(t) = thread {
            let _ = tokio::task::spawn_blocking(move || join_stopping(t)).await;
        }
        let state = self.state.lock().await;
        state.pipelines.get(id).map(info)
    }

    pub async fn delete(&self, id: &str) -> bool {
        let thread = {
            let mut state = self.state.lock().await;
            let Some(mut p) = state.pipelines.remove(id) else {
                return false;
            };
            let _ = self.persist(&state);
            stop_thread(&mut p)
        };
        let state_dir = self.data_dir.join("pipelines").join(id);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(t) = thread {
                join_stopping(t);
            }
            // its local state goes with it (the changelog topic stays, as topics do)
            let _ = std::fs::remove_dir_all(state_dir);
        })
        .await;
        true
    }

    /// Stops every pipeline (flushing and committing) without changing what restarts.
    pub async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        let threads: Vec<_> = state
            .pipelines
            .values_mut()
            .filter_map(stop_thread)
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            // in parallel: each pipeline gets the same time to stop
            let joins: Vec<_> = threads
                .into_iter()
                .map(|t| std::thread::spawn(move || join_stopping(t)))
                .collect();
            for j in joins {
                let _ = j.join();
            }
        })
        .await;
    }

    /// Prometheus text for all pipelines.
    pub async fn render_metrics(&self, out: &mut String) {
        let state = self.state.lock().await;
        let all: Vec<(String, Arc<PipelineMetrics>)> = state
            .pipelines
            .values()
            .map(|p| (p.id.clone(), p.metrics.clone()))
            .collect();
        kappa_stream::metrics::render(&all, out);
        let runtimes: Vec<(String, Arc<RuntimeControl>)> = state
            .pipelines
            .values()
            .filter_map(|p| p.runtime.clone().map(|r| (p.id.clone(), r)))
            .collect();
        kappa_stream::metrics::render_runtime(&runtimes, out);
    }
}

/// Starts a planned pipeline on its runtime.
fn launch(p: &mut Pipeline, built: Built) {
    let control = PipelineControl::new(p.metrics.clone());
    match built {
        Built::V1(run) => {
            p.thread = Some(pipeline::spawn(run, control.clone()));
            p.runtime = None;
        }
        Built::V2(spec) => {
            let rt = Arc::new(RuntimeControl::default());
            p.thread = Some(runtime::spawn(spec, control.clone(), rt.clone()));
            p.runtime = Some(rt);
        }
    }
    p.control = Some(control);
}

/// A pipeline asked to stop, and how to cancel it.
struct Stopping {
    thread: std::thread::JoinHandle<()>,
    runtime: Option<Arc<RuntimeControl>>,
    id: String,
}

/// How long a stop may take (the final checkpoint flushes the output) before the pipeline is
/// cancelled; it then resumes from its last completed checkpoint.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn stop_thread(p: &mut Pipeline) -> Option<Stopping> {
    if let Some(c) = &p.control {
        c.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    Some(Stopping {
        thread: p.thread.take()?,
        runtime: p.runtime.clone(),
        id: p.id.clone(),
    })
}

/// Waits for a stopping pipeline, cancelling it after [`STOP_TIMEOUT`] (blocking: call it on
/// the blocking pool).
fn join_stopping(s: Stopping) {
    let deadline = std::time::Instant::now() + STOP_TIMEOUT;
    while !s.thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !s.thread.is_finished() {
        if let Some(rt) = &s.runtime {
            tracing::warn!(pipeline = %s.id, "the pipeline did not stop within {STOP_TIMEOUT:?} (a slow sink?): cancelled; it resumes from its last checkpoint");
            rt.cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _ = s.thread.join();
}

fn info(p: &Pipeline) -> Value {
    let (state, error) = match (&p.control, &p.start_error) {
        (_, Some(e)) => (PipelineState::Failed, Some(e.clone())),
        (Some(c), None) => {
            let (s, e) = c.state();
            let stopping = c.stop.load(std::sync::atomic::Ordering::Relaxed);
            let s = if s == PipelineState::Running && (stopping || !p.running) {
                PipelineState::Stopped
            } else {
                s
            };
            (s, e)
        }
        (None, None) => (PipelineState::Stopped, None),
    };
    let mut metrics = p.metrics.snapshot_json();
    let checkpoints = p
        .runtime
        .as_ref()
        .and_then(|r| r.checkpoints.lock().ok().map(|c| c.clone()))
        .unwrap_or_default();
    if let (Some(rt), Some(m)) = (&p.runtime, metrics.as_object_mut()) {
        use std::sync::atomic::Ordering::Relaxed;
        m.insert(
            "backpressure_seconds".into(),
            json!(rt.backpressure_nanos.load(Relaxed) as f64 / 1e9),
        );
        m.insert(
            "queued_batches".into(),
            json!(rt.queued_batches.load(Relaxed)),
        );
    }
    json!({
        "id": p.id,
        "name": p.name,
        "sql": p.sql,
        "state": state,
        "error": error,
        "runtime": p.settings.runtime,
        "parallelism": p.settings.parallelism(),
        "checkpoint_interval_ms": p.settings.checkpoint_interval_ms,
        "checkpoints": checkpoints,
        "metrics": metrics,
    })
}

/// The table's watermark expression as a physical expression over its columns.
pub fn watermark_expr(
    table: &Table,
    at: Location,
) -> Result<Option<Arc<dyn PhysicalExpr>>, SqlError> {
    let Some(wm) = &table.def.watermark else {
        return Ok(None);
    };
    let at = if wm.span.start.line > 0 {
        wm.span.start
    } else {
        at
    };
    let ctx = crate::planner::session();
    let state = ctx.state();
    let schema = DFSchema::try_from(table.schema.as_ref().clone())
        .map_err(|e| SqlError::new(e.to_string(), at))?;
    let expr = state
        .create_logical_expr(&wm.expr_sql, &schema)
        .map_err(|e| SqlError::new(format!("WATERMARK expression: {}", e.strip_backtrace()), at))?;
    let physical = state
        .create_physical_expr(expr, &schema)
        .map_err(|e| SqlError::new(format!("WATERMARK expression: {}", e.strip_backtrace()), at))?;
    match physical.data_type(&table.schema) {
        Ok(DataType::Timestamp(..)) => Ok(Some(physical)),
        Ok(other) => Err(SqlError::new(
            format!("the WATERMARK expression must be a TIMESTAMP, but is {other}"),
            at,
        )),
        Err(e) => Err(SqlError::new(
            format!("WATERMARK expression: {}", e.strip_backtrace()),
            at,
        )),
    }
}

/// Errors in a view's query are found by planning the query text alone; move their
/// position to where that text sits in the statement.
fn reposition(mut e: SqlError, statement_sql: &str, query_sql: &str, at: Location) -> SqlError {
    if e.line == 0 {
        return SqlError {
            line: at.line,
            column: at.column,
            ..e
        };
    }
    if let Some(offset) = statement_sql.find(query_sql) {
        let before = &statement_sql[..offset];
        let newlines = before.matches('\n').count() as u64;
        let last_line_chars = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64;
        let base_line = at.line + newlines;
        let base_col = if newlines == 0 {
            at.column + last_line_chars
        } else {
            last_line_chars + 1
        };
        if e.line == 1 {
            e.column = base_col + e.column - 1;
        }
        e.line = base_line + e.line - 1;
    }
    e
}

fn chrono_like_now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Planning is async only for catalog lookups, which are in memory here.
fn futures_block_on<F: std::future::Future>(f: F) -> F::Output {
    futures::executor::block_on(f)
}
