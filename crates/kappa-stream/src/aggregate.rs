//! Windowed aggregation: groups rows by window and key, folds them with DataFusion's
//! vectorised group accumulators (so every aggregate function has DataFusion's semantics),
//! and emits each window once, when the watermark passes its last instant.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

use crate::error::Result;
use crate::window::event_times;

/// One aggregate call: the function (with its argument expressions) and its optional
/// `FILTER (WHERE ...)`.
#[derive(Clone, Debug)]
pub struct AggregateCall {
    pub function: Arc<AggregateFunctionExpr>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

impl AggregateCall {
    pub(crate) fn accumulator(&self) -> Result<Box<dyn GroupsAccumulator>> {
        if self.function.groups_accumulator_supported() {
            return Ok(self.function.create_groups_accumulator()?);
        }
        let function = self.function.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            function.create_accumulator()
        })))
    }
}

/// Encodes group keys of these types as comparable byte rows.
pub(crate) fn key_converter(
    keys: &[Arc<dyn PhysicalExpr>],
    input_schema: &datafusion::arrow::datatypes::Schema,
) -> Result<RowConverter> {
    let fields = keys
        .iter()
        .map(|k| Ok(SortField::new(k.data_type(input_schema)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(RowConverter::new(fields)?)
}

/// Evaluates a grouped aggregation's inputs on a batch: the group keys as comparable rows
/// (`None` without keys) and each call's argument columns.
pub(crate) fn evaluate_inputs(
    keys: &[Arc<dyn PhysicalExpr>],
    converter: &RowConverter,
    calls: &[AggregateCall],
    batch: &RecordBatch,
) -> Result<(Option<Rows>, Vec<Vec<ArrayRef>>)> {
    let n = batch.num_rows();
    let key_arrays = keys
        .iter()
        .map(|k| k.evaluate(batch)?.into_array(n))
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let key_rows = if key_arrays.is_empty() {
        None
    } else {
        Some(converter.convert_columns(&key_arrays)?)
    };
    let values = calls
        .iter()
        .map(|call| {
            call.function
                .expressions()
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(n))
                .collect::<datafusion::error::Result<Vec<_>>>()
        })
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    Ok((key_rows, values))
}

/// Where each output group column comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupColumn {
    WindowStart,
    WindowEnd,
    Key(usize),
}

struct WindowGroups {
    index: HashMap<Box<[u8]>, usize>,
    keys: Rows,
    groups: usize,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Per source partition, the first offset of a batch that fed this window: the
    /// pipeline may not commit past it while the window is open.
    first_offsets: HashMap<i32, i64>,
}

pub struct WindowAggregate {
    window_start: usize,
    window_end: usize,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    layout: Vec<GroupColumn>,
    calls: Vec<AggregateCall>,
    schema: SchemaRef,
    converter: RowConverter,
    /// Open windows by (end, start), so the ones that fire first come first.
    windows: BTreeMap<(i64, i64), WindowGroups>,
    fired_through: i64,
    late: u64,
    /// Windows changed since the last snapshot.
    dirty: BTreeSet<(i64, i64)>,
    /// Windows whose state is in the state store.
    /// Windows whose state is in the state store, with the number of chunks it takes.
    persisted: HashMap<(i64, i64), u32>,
    /// Persisted windows fired since the last snapshot (their chunks are to be deleted).
    fired: Vec<((i64, i64), u32)>,
}

/// State key of a chunk of a window's groups: `w`, end and start as order-preserving
/// big-endian bytes, then the chunk's number.
fn window_key(end: i64, start: i64, chunk: u32) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = b'w';
    k[1..9].copy_from_slice(&((end as u64) ^ (1 << 63)).to_be_bytes());
    k[9..17].copy_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
    k[17..21].copy_from_slice(&chunk.to_be_bytes());
    k
}

fn parse_window_key(k: &[u8]) -> Option<(i64, i64)> {
    if k.len() != 21 || k[0] != b'w' {
        return None;
    }
    let end = u64::from_be_bytes(k[1..9].try_into().ok()?) ^ (1 << 63);
    let start = u64::from_be_bytes(k[9..17].try_into().ok()?) ^ (1 << 63);
    Some((end as i64, start as i64))
}

/// Largest snapshot value: a changelog record must stay well under Kafka's 1 MiB message limit.
pub(crate) const MAX_CHUNK_BYTES: usize = 256 << 10;

/// Arrow IPC encodings of `batch` in row ranges each at most [`MAX_CHUNK_BYTES`] (or one row).
pub(crate) fn ipc_chunks(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut offset = 0;
    let mut len = batch.num_rows().clamp(1, 4096);
    while offset < batch.num_rows() || (out.is_empty() && batch.num_rows() == 0) {
        let take = len.min(batch.num_rows() - offset);
        let bytes = crate::operators::to_ipc(&batch.slice(offset, take))?;
        if bytes.len() > MAX_CHUNK_BYTES && take > 1 {
            len = take / 2;
            continue;
        }
        out.push(bytes);
        offset += take;
        if batch.num_rows() == 0 {
            break;
        }
    }
    Ok(out)
}

/// State key of an operator's event-time progress.
pub(crate) const META_KEY: &[u8] = b"m";

impl WindowAggregate {
    pub fn new(
        window_start: usize,
        window_end: usize,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        layout: Vec<GroupColumn>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        input_schema: &datafusion::arrow::datatypes::Schema,
    ) -> Result<Self> {
        let converter = key_converter(&keys, input_schema)?;
        Ok(WindowAggregate {
            window_start,
            window_end,
            keys,
            layout,
            calls,
            schema,
            converter,
            windows: BTreeMap::new(),
            fired_through: i64::MIN,
            late: 0,
            dirty: BTreeSet::new(),
            persisted: HashMap::new(),
            fired: Vec::new(),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows that arrived for windows that had already fired (only possible when no window
    /// assignment upstream dropped them).
    pub fn late_rows(&self) -> u64 {
        self.late
    }

    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    /// The smallest offset per partition that open windows still depend on.
    pub fn pinned_offsets(&self, out: &mut HashMap<i32, i64>) {
        for w in self.windows.values() {
            for (&p, &o) in &w.first_offsets {
                out.entry(p).and_modify(|e| *e = (*e).min(o)).or_insert(o);
            }
        }
    }

    pub fn process(&mut self, batch: &RecordBatch, origin: Option<(i32, i64)>) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let starts = event_times(batch.column(self.window_start))?;
        let ends = event_times(batch.column(self.window_end))?;
        let (key_rows, values) = evaluate_inputs(&self.keys, &self.converter, &self.calls, batch)?;
        let mut filters: Vec<Option<BooleanArray>> = Vec::with_capacity(self.calls.len());
        for call in &self.calls {
            filters.push(match &call.filter {
                Some(f) => Some(
                    f.evaluate(batch)?
                        .into_array(n)?
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .cloned()
                        .ok_or_else(|| {
                            datafusion::error::DataFusionError::Internal(
                                "aggregate FILTER is not boolean".into(),
                            )
                        })?,
                ),
                None => None,
            });
        }

        // rows of each window, in first-seen order (a batch usually spans few windows)
        let mut by_window: Vec<((i64, i64), Vec<u32>)> = Vec::new();
        let mut last = usize::MAX;
        for row in 0..n {
            if starts.is_null(row) || ends.is_null(row) {
                continue;
            }
            let w = (ends.value(row), starts.value(row));
            if last < by_window.len() && by_window[last].0 == w {
                by_window[last].1.push(row as u32);
                continue;
            }
            last = match by_window.iter().position(|(k, _)| *k == w) {
                Some(i) => i,
                None => {
                    by_window.push((w, Vec::with_capacity(n)));
                    by_window.len() - 1
                }
            };
            by_window[last].1.push(row as u32);
        }

        for (w, rows) in by_window {
            if w.0 - 1 <= self.fired_through {
                self.late += rows.len() as u64;
                continue;
            }
            self.dirty.insert(w);
            let group = match self.windows.entry(w) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(WindowGroups {
                    index: HashMap::new(),
                    keys: self.converter.empty_rows(0, 0),
                    groups: 0,
                    accumulators: self
                        .calls
                        .iter()
                        .map(|c| c.accumulator())
                        .collect::<Result<_>>()?,
                    first_offsets: HashMap::new(),
                }),
            };
            if let Some((partition, offset)) = origin {
                group
                    .first_offsets
                    .entry(partition)
                    .and_modify(|o| *o = (*o).min(offset))
                    .or_insert(offset);
            }
            let mut group_indices = Vec::with_capacity(rows.len());
            match &key_rows {
                None => {
                    group.groups = 1;
                    group_indices.resize(rows.len(), 0);
                }
                Some(key_rows) => {
                    for &r in &rows {
                        let row = key_rows.row(r as usize);
                        let idx = match group.index.get(row.as_ref()) {
                            Some(&i) => i,
                            None => {
                                let i = group.groups;
                                group.index.insert(row.as_ref().into(), i);
                                group.keys.push(row);
                                group.groups += 1;
                                i
                            }
                        };
                        group_indices.push(idx);
                    }
                }
            }
            let whole = rows.len() == n;
            let take_idx = if whole {
                None
            } else {
                Some(UInt32Array::from(rows))
            };
            for (i, acc) in group.accumulators.iter_mut().enumerate() {
                let (vals, filter) = match &take_idx {
                    None => (values[i].clone(), filters[i].clone()),
                    Some(idx) => (
                        values[i]
                            .iter()
                            .map(|v| take(v.as_ref(), idx, None))
                            .collect::<std::result::Result<Vec<_>, _>>()?,
                        match &filters[i] {
                            Some(f) => Some(
                                take(f, idx, None)?
                                    .as_any()
                                    .downcast_ref::<BooleanArray>()
                                    .cloned()
                                    .expect("take of a boolean array is boolean"),
                            ),
                            None => None,
                        },
                    ),
                };
                acc.update_batch(&vals, &group_indices, filter.as_ref(), group.groups)?;
            }
        }
        Ok(())
    }

    /// Fires every window whose last instant (`end - 1`) the watermark has reached.
    pub fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.fired_through = self.fired_through.max(watermark);
        while let Some(entry) = self.windows.first_entry() {
            let (end, start) = *entry.key();
            if end - 1 > watermark {
                break;
            }
            let group = entry.remove();
            self.dirty.remove(&(end, start));
            if let Some(chunks) = self.persisted.remove(&(end, start)) {
                self.fired.push(((end, start), chunks));
            }
            out.push(self.emit(start, end, group)?);
        }
        Ok(())
    }

    /// Writes the windows changed since the last snapshot to `state` under operator `op`,
    /// and deletes the state of windows that fired.
    pub fn snapshot(&mut self, op: u32, state: &mut crate::state::TaskState) -> Result<()> {
        for ((end, start), chunks) in std::mem::take(&mut self.fired) {
            for c in 0..chunks {
                state.delete(op, &window_key(end, start, c))?;
            }
        }
        for w in std::mem::take(&mut self.dirty) {
            let Some(group) = self.windows.get_mut(&w) else {
                continue;
            };
            let n = group.groups;
            let mut columns = if self.keys.is_empty() {
                Vec::new()
            } else {
                self.converter.convert_rows(&group.keys)?
            };
            let indices: Vec<usize> = (0..n).collect();
            for (acc, call) in group.accumulators.iter_mut().zip(&self.calls) {
                // taking the state empties the accumulator: fold it into a fresh one
                let taken = acc.state(EmitTo::All)?;
                let mut fresh = call.accumulator()?;
                fresh.merge_batch(&taken, &indices, n)?;
                *acc = fresh;
                columns.extend(taken);
            }
            let batch = crate::operators::anonymous_batch_rows(columns, n)?;
            let chunks = ipc_chunks(&batch)?;
            for (c, bytes) in chunks.iter().enumerate() {
                state.put(op, &window_key(w.0, w.1, c as u32), bytes)?;
            }
            let count = chunks.len() as u32;
            // chunks a larger earlier snapshot of this window had
            for c in count..self.persisted.get(&w).copied().unwrap_or(0) {
                state.delete(op, &window_key(w.0, w.1, c))?;
            }
            self.persisted.insert(w, count);
        }
        state.put(op, META_KEY, &self.fired_through.to_be_bytes())?;
        Ok(())
    }

    /// Rebuilds the open windows from `state`.
    pub fn restore(&mut self, op: u32, state: &crate::state::TaskState) -> Result<()> {
        self.windows.clear();
        self.persisted.clear();
        self.dirty.clear();
        self.fired.clear();
        for (key, value) in state.scan(op)? {
            if key == META_KEY {
                if let Ok(b) = <[u8; 8]>::try_from(value.as_slice()) {
                    self.fired_through = i64::from_be_bytes(b);
                }
                continue;
            }
            let Some(w) = parse_window_key(&key) else {
                continue;
            };
            let batch = crate::operators::from_ipc(&value)?;
            let n = batch.num_rows();
            let nkeys = self.keys.len();
            if !self.windows.contains_key(&w) {
                let group = WindowGroups {
                    index: HashMap::new(),
                    keys: self.converter.empty_rows(0, 0),
                    groups: 0,
                    accumulators: self
                        .calls
                        .iter()
                        .map(|c| c.accumulator())
                        .collect::<Result<_>>()?,
                    first_offsets: HashMap::new(),
                };
                self.windows.insert(w, group);
            }
            let Some(group) = self.windows.get_mut(&w) else {
                continue;
            };
            let first = group.groups;
            if nkeys > 0 {
                let rows = self.converter.convert_columns(&batch.columns()[..nkeys])?;
                for (i, row) in rows.iter().enumerate() {
                    group.index.insert(row.as_ref().into(), first + i);
                    group.keys.push(row);
                }
            }
            group.groups = if nkeys > 0 { first + n } else { n.max(first) };
            let indices: Vec<usize> = if nkeys > 0 {
                (first..first + n).collect()
            } else {
                (0..n).collect()
            };
            let mut at = nkeys;
            for (acc, call) in group.accumulators.iter_mut().zip(&self.calls) {
                let width = call.function.state_fields()?.len();
                let cols = batch.columns().get(at..at + width).ok_or_else(|| {
                    crate::StreamError::State(
                        "a window snapshot has fewer columns than its aggregates".into(),
                    )
                })?;
                acc.merge_batch(cols, &indices, group.groups)?;
                at += width;
            }
            *self.persisted.entry(w).or_insert(0) += 1;
        }
        Ok(())
    }

    fn emit(&self, start: i64, end: i64, mut group: WindowGroups) -> Result<RecordBatch> {
        let n = group.groups;
        let key_columns = if self.keys.is_empty() {
            Vec::new()
        } else {
            self.converter.convert_rows(&group.keys)?
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for g in &self.layout {
            columns.push(match *g {
                GroupColumn::WindowStart => {
                    Arc::new(TimestampMillisecondArray::from(vec![start; n]))
                }
                GroupColumn::WindowEnd => Arc::new(TimestampMillisecondArray::from(vec![end; n])),
                GroupColumn::Key(i) => key_columns[i].clone(),
            });
        }
        for acc in group.accumulators.iter_mut() {
            columns.push(acc.evaluate(EmitTo::All)?);
        }
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;

    #[test]
    fn snapshots_split_into_chunks_a_kafka_message_can_carry() {
        let values: Vec<String> = (0..60_000)
            .map(|i| format!("key-{i:08}-{}", "x".repeat(20)))
            .collect();
        let batch = crate::operators::anonymous_batch_rows(
            vec![Arc::new(StringArray::from(values.clone())) as ArrayRef],
            values.len(),
        )
        .unwrap();
        let chunks = ipc_chunks(&batch).unwrap();
        assert!(chunks.len() > 1);
        let mut back = Vec::new();
        for c in &chunks {
            assert!(c.len() <= MAX_CHUNK_BYTES, "{}", c.len());
            let b = crate::operators::from_ipc(c).unwrap();
            let s = b
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .clone();
            back.extend(s.iter().map(|v| v.unwrap().to_string()));
        }
        assert_eq!(back, values);
        // an empty batch is one chunk of no rows
        assert_eq!(ipc_chunks(&batch.slice(0, 0)).unwrap().len(), 1);
    }

    #[test]
    fn window_keys_sort_by_end_then_start_including_negative_times() {
        let mut keys = [
            window_key(10, 0, 0),
            window_key(-5, -10, 1),
            window_key(10, -5, 0),
            window_key(-5, -10, 0),
        ];
        keys.sort();
        let parsed: Vec<(i64, i64)> = keys.iter().map(|k| parse_window_key(k).unwrap()).collect();
        assert_eq!(parsed, vec![(-5, -10), (-5, -10), (10, -5), (10, 0)]);
    }
}
