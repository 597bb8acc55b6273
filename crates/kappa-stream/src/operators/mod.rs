//! The operators of the v2 runtime: one trait (process a batch from an input, react to a
//! watermark, snapshot and restore state) and one file per operator. A plan describes its
//! operators as [`OpSpec`]s, which the runtime instantiates once per task.
//!
//! An updating stream (the output of a non-windowed aggregation) carries its row kinds in a
//! trailing Int8 column named [`ROW_KIND`] (Flink's RowKind: 0 insert, 1 update-before,
//! 2 update-after, 3 delete); stateless operators pass it through.

mod filter;
mod group_aggregate;
mod project;
mod session_aggregate;
mod window_aggregate;
mod window_assign;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use crate::aggregate::{AggregateCall, GroupColumn};
use crate::error::Result;
use crate::state::{StateConfig, TaskState};
use crate::window::WindowKind;

pub use group_aggregate::GroupAggregate;

/// The name of the row-kind column of an updating stream.
pub const ROW_KIND: &str = "__op";
pub const INSERT: i8 = 0;
pub const UPDATE_BEFORE: i8 = 1;
pub const UPDATE_AFTER: i8 = 2;
pub const DELETE: i8 = 3;

/// True when the batch is part of an updating stream.
pub fn is_changelog(schema: &Schema) -> bool {
    schema
        .fields()
        .last()
        .is_some_and(|f| f.name() == ROW_KIND && f.data_type() == &DataType::Int8)
}

/// `schema` with the row-kind column appended.
pub fn with_row_kind(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(ROW_KIND, DataType::Int8, false));
    Arc::new(Schema::new(fields))
}

/// What operators count while they run.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpCounters {
    pub late_records_dropped: u64,
    pub null_time_dropped: u64,
}

/// What an operator sees of its task besides the batch.
pub struct OpContext<'a> {
    /// The task's current event-time watermark.
    pub watermark: i64,
    /// The task's keyed state (stateful operators run only in tasks that have one).
    pub state: Option<&'a mut TaskState>,
    pub counters: &'a mut OpCounters,
}

impl OpContext<'_> {
    pub fn state(&mut self) -> Result<&mut TaskState> {
        self.state.as_deref_mut().ok_or_else(|| {
            crate::StreamError::State("a stateful operator runs in a task without state".into())
        })
    }
}

/// A streaming operator. Batches arrive from input `input` (0 for single-input operators);
/// results go to `out` in order.
pub trait Operator: Send {
    fn name(&self) -> String;

    fn process(
        &mut self,
        input: usize,
        batch: RecordBatch,
        ctx: &mut OpContext<'_>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()>;

    /// The task's watermark advanced: emit what it completes.
    fn on_watermark(
        &mut self,
        _watermark: i64,
        _ctx: &mut OpContext<'_>,
        _out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        Ok(())
    }

    /// A checkpoint barrier passed: write what changed since the last one to the state.
    fn snapshot(&mut self, _state: &mut TaskState) -> Result<()> {
        Ok(())
    }

    /// The task starts from restored state.
    fn restore(&mut self, _state: &TaskState) -> Result<()> {
        Ok(())
    }

    /// Open windows or sessions (reported in metrics).
    fn open_windows(&self) -> usize {
        0
    }
}

/// A planned operator, instantiated once per task.
#[derive(Clone, Debug)]
pub enum OpSpec {
    Filter {
        predicate: Arc<dyn PhysicalExpr>,
    },
    Project {
        exprs: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    },
    WindowAssign {
        kind: WindowKind,
        time_column: usize,
        input: SchemaRef,
        drop_late: bool,
    },
    WindowAggregate {
        window_start: usize,
        window_end: usize,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        layout: Vec<GroupColumn>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        input: SchemaRef,
    },
    SessionAggregate {
        gap: i64,
        time_column: usize,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        layout: Vec<GroupColumn>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        input: SchemaRef,
    },
    /// `GROUP BY` without a window: an updating result.
    GroupAggregate {
        keys: Vec<Arc<dyn PhysicalExpr>>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        input: SchemaRef,
    },
}

impl OpSpec {
    pub fn name(&self) -> String {
        match self {
            OpSpec::Filter { .. } => "filter".into(),
            OpSpec::Project { .. } => "project".into(),
            OpSpec::WindowAssign { kind, .. } => {
                format!("window_assign_{}", kind.name().to_lowercase())
            }
            OpSpec::WindowAggregate { .. } => "window_aggregate".into(),
            OpSpec::SessionAggregate { .. } => "session_aggregate".into(),
            OpSpec::GroupAggregate { .. } => "group_aggregate".into(),
        }
    }

    /// The key expressions (on the operator's input) that partition a keyed operator's
    /// input among tasks; `None` for operators that keep no keyed state.
    pub fn partition_keys(&self) -> Option<&[Arc<dyn PhysicalExpr>]> {
        match self {
            OpSpec::WindowAggregate { keys, .. }
            | OpSpec::SessionAggregate { keys, .. }
            | OpSpec::GroupAggregate { keys, .. } => Some(keys),
            _ => None,
        }
    }

    /// True when the operator's output is an updating stream.
    pub fn updating(&self) -> bool {
        matches!(self, OpSpec::GroupAggregate { .. })
    }

    /// What the operator's state means: its kind, key types and aggregate calls. Two plans
    /// whose operators share a signature can hand state from one to the other.
    pub fn signature(&self) -> Option<String> {
        let calls_sig = |calls: &[AggregateCall], input: &SchemaRef| {
            calls
                .iter()
                .map(|c| {
                    let types = c
                        .function
                        .state_fields()
                        .map(|f| {
                            f.iter()
                                .map(|f| f.data_type().to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    let args = c
                        .function
                        .expressions()
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(",");
                    let _ = input;
                    format!(
                        "{}({args}){}[{types}]",
                        c.function.fun().name(),
                        if c.filter.is_some() { " FILTER" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let keys_sig = |keys: &[Arc<dyn PhysicalExpr>], input: &SchemaRef| {
            keys.iter()
                .map(|k| {
                    format!(
                        "{} {}",
                        k,
                        k.data_type(input)
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            OpSpec::WindowAggregate {
                keys, calls, input, ..
            } => Some(format!(
                "window_aggregate(keys: {}; {})",
                keys_sig(keys, input),
                calls_sig(calls, input)
            )),
            OpSpec::SessionAggregate {
                keys,
                calls,
                input,
                gap,
                ..
            } => Some(format!(
                "session_aggregate(gap {gap} ms; keys: {}; {})",
                keys_sig(keys, input),
                calls_sig(calls, input)
            )),
            OpSpec::GroupAggregate {
                keys, calls, input, ..
            } => Some(format!(
                "group_aggregate(keys: {}; {})",
                keys_sig(keys, input),
                calls_sig(calls, input)
            )),
            _ => None,
        }
    }

    /// The state id of a stateful operator: a hash of its signature and its position among
    /// the plan's stateful operators of the same signature.
    pub fn state_id(&self, occurrence: usize) -> Option<u32> {
        let sig = self.signature()?;
        // FNV-1a: stable across builds and platforms
        let mut h: u32 = 0x811c_9dc5;
        for b in sig.bytes().chain(occurrence.to_le_bytes()) {
            h ^= b as u32;
            h = h.wrapping_mul(0x0100_0193);
        }
        Some(h)
    }

    pub fn instantiate(
        &self,
        state_id: Option<u32>,
        config: &StateConfig,
    ) -> Result<Box<dyn Operator>> {
        Ok(match self.clone() {
            OpSpec::Filter { predicate } => Box::new(filter::Filter::new(predicate)),
            OpSpec::Project { exprs, schema } => Box::new(project::Project::new(exprs, schema)),
            OpSpec::WindowAssign {
                kind,
                time_column,
                input,
                drop_late,
            } => Box::new(window_assign::WindowAssignOp::new(
                kind,
                time_column,
                &input,
                drop_late,
            )),
            OpSpec::WindowAggregate {
                window_start,
                window_end,
                keys,
                layout,
                calls,
                schema,
                input,
            } => Box::new(window_aggregate::WindowAggregateOp::new(
                state_id.unwrap_or(0),
                crate::aggregate::WindowAggregate::new(
                    window_start,
                    window_end,
                    keys,
                    layout,
                    calls,
                    schema,
                    &input,
                )?,
            )),
            OpSpec::SessionAggregate {
                gap,
                time_column,
                keys,
                layout,
                calls,
                schema,
                input,
            } => Box::new(session_aggregate::SessionAggregateOp::new(
                state_id.unwrap_or(0),
                crate::session::SessionAggregate::new(
                    gap,
                    time_column,
                    keys,
                    layout,
                    calls,
                    schema,
                    &input,
                )?,
            )),
            OpSpec::GroupAggregate {
                keys,
                calls,
                schema,
                input,
            } => Box::new(GroupAggregate::new(
                state_id.unwrap_or(0),
                keys,
                calls,
                schema,
                &input,
                config.cache_keys,
            )?),
        })
    }

    /// The same operator for the v1 runtime (`'execution.runtime' = 'v1'`).
    pub fn to_v1(&self) -> Result<crate::operator::Operator> {
        use crate::operator::Operator as V1;
        Ok(match self.clone() {
            OpSpec::Filter { predicate } => V1::Filter { predicate },
            OpSpec::Project { exprs, schema } => V1::Project { exprs, schema },
            OpSpec::WindowAssign {
                kind,
                time_column,
                input,
                drop_late,
            } => V1::WindowAssign(crate::window::WindowAssign::new(
                kind,
                time_column,
                &input,
                drop_late,
            )),
            OpSpec::WindowAggregate {
                window_start,
                window_end,
                keys,
                layout,
                calls,
                schema,
                input,
            } => V1::WindowAggregate(Box::new(crate::aggregate::WindowAggregate::new(
                window_start,
                window_end,
                keys,
                layout,
                calls,
                schema,
                &input,
            )?)),
            OpSpec::SessionAggregate {
                gap,
                time_column,
                keys,
                layout,
                calls,
                schema,
                input,
            } => V1::SessionAggregate(Box::new(crate::session::SessionAggregate::new(
                gap,
                time_column,
                keys,
                layout,
                calls,
                schema,
                &input,
            )?)),
            OpSpec::GroupAggregate { .. } => {
                return Err(crate::StreamError::Config(
                    "the v1 runtime ('execution.runtime' = 'v1') does not run non-windowed aggregations".into(),
                ))
            }
        })
    }
}

/// Evaluates expressions over a batch into columns.
pub(crate) fn evaluate(
    exprs: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    let n = batch.num_rows();
    Ok(exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(n))
        .collect::<datafusion::error::Result<Vec<_>>>()?)
}

/// Casts columns to the types of `schema` where they differ.
pub(crate) fn cast_to(columns: Vec<ArrayRef>, schema: &Schema) -> Result<Vec<ArrayRef>> {
    Ok(columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                datafusion::arrow::compute::cast(&c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Arrow IPC bytes of a batch (operator snapshots).
pub(crate) fn to_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    {
        let mut w =
            datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut buf, &batch.schema())?;
        w.write(batch)?;
        w.finish()?;
    }
    Ok(buf)
}

/// The batch of [`to_ipc`] bytes.
pub(crate) fn from_ipc(bytes: &[u8]) -> Result<RecordBatch> {
    let mut reader = datafusion::arrow::ipc::reader::StreamReader::try_new(bytes, None)?;
    match reader.next() {
        Some(batch) => Ok(batch?),
        None => Err(crate::StreamError::State("an empty state snapshot".into())),
    }
}

/// A batch of `rows` rows whose columns are `columns`, with generic names (snapshots).
pub(crate) fn anonymous_batch_rows(columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
    )?)
}
