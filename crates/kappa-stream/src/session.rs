//! Session windows: per key, events closer than the gap fall into one session; sessions
//! merge when a new event bridges them (Flink's rule: windows `[t, t + gap)` that touch or
//! overlap merge). A session fires once, when the watermark passes its end.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;

use crate::aggregate::{evaluate_inputs, key_converter, AggregateCall, GroupColumn};
use crate::error::Result;
use crate::window::event_times;

struct Session {
    start: i64,
    end: i64,
    key: Option<OwnedRow>,
    accumulators: Vec<Box<dyn Accumulator>>,
    first_offsets: HashMap<i32, i64>,
}

pub struct SessionAggregate {
    gap: i64,
    /// The input's event-time column (window_start of the assigned `[t, t + gap)`).
    time_column: usize,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    layout: Vec<GroupColumn>,
    calls: Vec<AggregateCall>,
    schema: SchemaRef,
    converter: RowConverter,
    /// Open sessions per key (its row bytes), unordered.
    sessions: HashMap<Vec<u8>, Vec<Session>>,
    fired_through: i64,
    late: u64,
    /// Sessions changed (or fired) since the last snapshot.
    dirty: bool,
    /// Chunks the last snapshot of the open sessions took.
    persisted_chunks: u32,
}

/// State key of a chunk of the operator's open sessions.
fn sessions_key(chunk: u32) -> [u8; 5] {
    let mut k = [b's', 0, 0, 0, 0];
    k[1..].copy_from_slice(&chunk.to_be_bytes());
    k
}

impl SessionAggregate {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gap: i64,
        time_column: usize,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        layout: Vec<GroupColumn>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        input_schema: &Schema,
    ) -> Result<Self> {
        let converter = key_converter(&keys, input_schema)?;
        Ok(SessionAggregate {
            gap,
            time_column,
            keys,
            layout,
            calls,
            schema,
            converter,
            sessions: HashMap::new(),
            fired_through: i64::MIN,
            late: 0,
            dirty: false,
            persisted_chunks: 0,
        })
    }

    pub fn late_rows(&self) -> u64 {
        self.late
    }

    pub fn open_windows(&self) -> usize {
        self.sessions.values().map(Vec::len).sum()
    }

    pub fn pinned_offsets(&self, out: &mut HashMap<i32, i64>) {
        for s in self.sessions.values().flatten() {
            for (&p, &o) in &s.first_offsets {
                out.entry(p).and_modify(|e| *e = (*e).min(o)).or_insert(o);
            }
        }
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        self.calls
            .iter()
            .map(|c| Ok(c.function.create_accumulator()?))
            .collect()
    }

    pub fn process(&mut self, batch: &RecordBatch, origin: Option<(i32, i64)>) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let times = event_times(batch.column(self.time_column))?;
        let (key_rows, values) = evaluate_inputs(&self.keys, &self.converter, &self.calls, batch)?;
        self.dirty = true;
        // rows waiting to be folded into each session, by (key, session index)
        let mut pending: HashMap<(Vec<u8>, usize), Vec<u32>> = HashMap::new();
        for row in 0..n {
            if times.is_null(row) {
                continue;
            }
            let t = times.value(row);
            let (start, end) = (t, t + self.gap);
            if end - 1 <= self.fired_through {
                self.late += 1;
                continue;
            }
            let key: Vec<u8> = key_rows
                .as_ref()
                .map(|r| r.row(row).as_ref().to_vec())
                .unwrap_or_default();
            let owned_key = key_rows.as_ref().map(|r| r.row(row).owned());
            let new_accs = if self
                .sessions
                .get(&key)
                .is_none_or(|v| !v.iter().any(|s| s.start <= end && s.end >= start))
            {
                Some(self.new_accumulators()?)
            } else {
                None
            };
            let list = self.sessions.entry(key.clone()).or_default();
            // every session this event touches merges with it
            let touching: Vec<usize> = (0..list.len())
                .filter(|&i| list[i].start <= end && list[i].end >= start)
                .collect();
            let target = match touching.first() {
                None => {
                    list.push(Session {
                        start,
                        end,
                        key: owned_key,
                        accumulators: new_accs.unwrap_or_default(),
                        first_offsets: HashMap::new(),
                    });
                    list.len() - 1
                }
                Some(&first) => {
                    list[first].start = list[first].start.min(start);
                    list[first].end = list[first].end.max(end);
                    // fold the others into the first, highest index first so indices stay valid
                    for &other in touching[1..].iter().rev() {
                        let removed = list.swap_remove(other);
                        let moved_from = list.len(); // the element swapped into `other`
                        let keep = &mut list[first];
                        keep.start = keep.start.min(removed.start);
                        keep.end = keep.end.max(removed.end);
                        for (p, o) in removed.first_offsets {
                            keep.first_offsets
                                .entry(p)
                                .and_modify(|e| *e = (*e).min(o))
                                .or_insert(o);
                        }
                        for (acc, mut other_acc) in
                            keep.accumulators.iter_mut().zip(removed.accumulators)
                        {
                            let state = other_acc
                                .state()?
                                .iter()
                                .map(ScalarValue::to_array)
                                .collect::<datafusion::error::Result<Vec<_>>>()?;
                            acc.merge_batch(&state)?;
                        }
                        let mut rows = pending.remove(&(key.clone(), other)).unwrap_or_default();
                        pending
                            .entry((key.clone(), first))
                            .or_default()
                            .append(&mut rows);
                        if other != moved_from {
                            if let Some(r) = pending.remove(&(key.clone(), moved_from)) {
                                pending.insert((key.clone(), other), r);
                            }
                        }
                    }
                    first
                }
            };
            if let Some((p, o)) = origin {
                list[target]
                    .first_offsets
                    .entry(p)
                    .and_modify(|e| *e = (*e).min(o))
                    .or_insert(o);
            }
            pending.entry((key, target)).or_default().push(row as u32);
        }
        for ((key, index), rows) in pending {
            let Some(session) = self.sessions.get_mut(&key).and_then(|l| l.get_mut(index)) else {
                continue;
            };
            let idx = UInt32Array::from(rows);
            for (acc, vals) in session.accumulators.iter_mut().zip(&values) {
                let taken = vals
                    .iter()
                    .map(|v| take(v.as_ref(), &idx, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                acc.update_batch(&taken)?;
            }
        }
        Ok(())
    }

    /// Writes every open session to `state` under operator `op` when any changed.
    pub fn snapshot(&mut self, op: u32, state: &mut crate::state::TaskState) -> Result<()> {
        if self.dirty {
            self.dirty = false;
            let sessions: Vec<&mut Session> = self.sessions.values_mut().flatten().collect();
            let n = sessions.len();
            let mut keys = datafusion::arrow::array::BinaryBuilder::new();
            let mut starts = Vec::with_capacity(n);
            let mut ends = Vec::with_capacity(n);
            let mut states: Vec<Vec<Vec<ScalarValue>>> = vec![Vec::new(); self.calls.len()];
            for s in sessions {
                match &s.key {
                    Some(k) => keys.append_value(k.row().as_ref()),
                    None => keys.append_null(),
                }
                starts.push(s.start);
                ends.push(s.end);
                for (c, acc) in s.accumulators.iter_mut().enumerate() {
                    let st = acc.state()?;
                    // taking the state may empty the accumulator: fold it into a fresh one
                    let mut fresh = self.calls[c].function.create_accumulator()?;
                    let arrays = st
                        .iter()
                        .map(ScalarValue::to_array)
                        .collect::<datafusion::error::Result<Vec<_>>>()?;
                    fresh.merge_batch(&arrays)?;
                    *acc = fresh;
                    states[c].push(st);
                }
            }
            let mut columns: Vec<ArrayRef> = vec![
                Arc::new(keys.finish()),
                Arc::new(datafusion::arrow::array::Int64Array::from(starts)),
                Arc::new(datafusion::arrow::array::Int64Array::from(ends)),
            ];
            for (c, call) in self.calls.iter().enumerate() {
                let width = call.function.state_fields()?.len();
                for j in 0..width {
                    let col = states[c].iter().map(|st| st[j].clone());
                    columns.push(if n == 0 {
                        datafusion::arrow::array::new_empty_array(
                            call.function.state_fields()?[j].data_type(),
                        )
                    } else {
                        ScalarValue::iter_to_array(col)?
                    });
                }
            }
            let batch = crate::operators::anonymous_batch_rows(columns, n)?;
            let chunks = crate::aggregate::ipc_chunks(&batch)?;
            for (c, bytes) in chunks.iter().enumerate() {
                state.put(op, &sessions_key(c as u32), bytes)?;
            }
            for c in chunks.len() as u32..self.persisted_chunks {
                state.delete(op, &sessions_key(c))?;
            }
            self.persisted_chunks = chunks.len() as u32;
        }
        state.put(
            op,
            crate::aggregate::META_KEY,
            &self.fired_through.to_be_bytes(),
        )?;
        Ok(())
    }

    /// Rebuilds the open sessions from `state`.
    pub fn restore(&mut self, op: u32, state: &crate::state::TaskState) -> Result<()> {
        self.sessions.clear();
        self.dirty = false;
        if let Some(v) = state.get(op, crate::aggregate::META_KEY)? {
            if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                self.fired_through = i64::from_be_bytes(b);
            }
        }
        self.persisted_chunks = 0;
        for (key, bytes) in state.scan(op)? {
            if key.len() != 5 || key[0] != b's' {
                continue;
            }
            self.persisted_chunks += 1;
            let batch = crate::operators::from_ipc(&bytes)?;
            self.restore_chunk(&batch)?;
        }
        Ok(())
    }

    fn restore_chunk(&mut self, batch: &RecordBatch) -> Result<()> {
        use datafusion::arrow::array::{BinaryArray, Int64Array};
        let bad = || crate::StreamError::State("a malformed session snapshot".into());
        if batch.num_columns() < 3 {
            return Err(bad());
        }
        let keys = batch
            .column(0)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(bad)?;
        let starts = batch
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(bad)?;
        let ends = batch
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(bad)?;
        let parser = self.converter.parser();
        for i in 0..batch.num_rows() {
            let key_bytes: Vec<u8> = if keys.is_null(i) {
                Vec::new()
            } else {
                keys.value(i).to_vec()
            };
            let key = (!keys.is_null(i)).then(|| parser.parse(keys.value(i)).owned());
            let mut at = 3;
            let mut accumulators = Vec::with_capacity(self.calls.len());
            for call in &self.calls {
                let width = call.function.state_fields()?.len();
                let cols: Vec<ArrayRef> = batch
                    .columns()
                    .get(at..at + width)
                    .ok_or_else(bad)?
                    .iter()
                    .map(|c| c.slice(i, 1))
                    .collect();
                let mut acc = call.function.create_accumulator()?;
                acc.merge_batch(&cols)?;
                accumulators.push(acc);
                at += width;
            }
            self.sessions.entry(key_bytes).or_default().push(Session {
                start: starts.value(i),
                end: ends.value(i),
                key,
                accumulators,
                first_offsets: HashMap::new(),
            });
        }
        Ok(())
    }

    /// Fires every session whose end the watermark has passed, oldest first.
    pub fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.fired_through = self.fired_through.max(watermark);
        let mut fired: Vec<Session> = Vec::new();
        self.sessions.retain(|_, list| {
            let mut i = 0;
            while i < list.len() {
                if list[i].end - 1 <= watermark {
                    fired.push(list.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !list.is_empty()
        });
        if fired.is_empty() {
            return Ok(());
        }
        self.dirty = true;
        fired.sort_by_key(|s| (s.end, s.start));
        let n = fired.len();
        let key_columns = if self.keys.is_empty() {
            Vec::new()
        } else {
            let rows = fired.iter().filter_map(|s| s.key.as_ref().map(|k| k.row()));
            self.converter.convert_rows(rows)?
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for g in &self.layout {
            columns.push(match *g {
                GroupColumn::WindowStart => Arc::new(TimestampMillisecondArray::from_iter_values(
                    fired.iter().map(|s| s.start),
                )),
                GroupColumn::WindowEnd => Arc::new(TimestampMillisecondArray::from_iter_values(
                    fired.iter().map(|s| s.end),
                )),
                GroupColumn::Key(i) => key_columns[i].clone(),
            });
        }
        for c in 0..self.calls.len() {
            let scalars = fired
                .iter_mut()
                .map(|s| s.accumulators[c].evaluate())
                .collect::<datafusion::error::Result<Vec<_>>>()?;
            columns.push(ScalarValue::iter_to_array(scalars)?);
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
        debug_assert!(columns.iter().all(|c| c.len() == n));
        out.push(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }
}
