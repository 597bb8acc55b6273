//! `GROUP BY` without a window: an updating aggregation. Each key's accumulator state lives in
//! RocksDB (so state may be far larger than memory); a bounded cache holds the keys touched
//! recently. Every input batch emits the new result of each key it touched: an insert for a
//! key seen for the first time, an update-after otherwise (Flink's upsert changelog).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int8Array, RecordBatch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::logical_expr::EmitTo;
use datafusion::physical_expr::PhysicalExpr;

use super::{cast_to, with_row_kind, OpContext, Operator, INSERT, UPDATE_AFTER};
use crate::aggregate::{key_converter, AggregateCall};
use crate::error::{Result, StreamError};
use crate::state::TaskState;

struct Cached {
    state: Box<[u8]>,
    dirty: bool,
}

pub struct GroupAggregate {
    op: u32,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    calls: Vec<AggregateCall>,
    /// Output: the keys, then one column per call, then the row kind.
    schema: SchemaRef,
    changelog_schema: SchemaRef,
    converter: RowConverter,
    /// Encodes the states of all calls of one key as one row.
    state_converter: RowConverter,
    state_widths: Vec<usize>,
    cache: HashMap<Box<[u8]>, Cached>,
    cache_keys: usize,
}

impl GroupAggregate {
    pub fn new(
        op: u32,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        calls: Vec<AggregateCall>,
        schema: SchemaRef,
        input: &Schema,
        cache_keys: usize,
    ) -> Result<Self> {
        let converter = key_converter(&keys, input)?;
        let mut fields = Vec::new();
        let mut state_widths = Vec::new();
        for c in &calls {
            let f = c.function.state_fields()?;
            state_widths.push(f.len());
            fields.extend(f.iter().map(|f| SortField::new(f.data_type().clone())));
        }
        Ok(GroupAggregate {
            op,
            changelog_schema: with_row_kind(&schema),
            keys,
            calls,
            schema,
            converter,
            state_converter: RowConverter::new(fields)?,
            state_widths,
            cache: HashMap::new(),
            cache_keys: cache_keys.max(1),
        })
    }

    /// Writes dirty cached states to the state store.
    fn write_back(&mut self, state: &mut TaskState, clear: bool) -> Result<()> {
        for (k, c) in self.cache.iter_mut() {
            if c.dirty {
                state.put_expiring(self.op, k, &c.state)?;
                c.dirty = false;
            }
        }
        if clear {
            self.cache.clear();
        }
        state.flush()
    }

    fn filters(&self, batch: &RecordBatch) -> Result<Vec<Option<BooleanArray>>> {
        let n = batch.num_rows();
        self.calls
            .iter()
            .map(|call| match &call.filter {
                None => Ok(None),
                Some(f) => f
                    .evaluate(batch)?
                    .into_array(n)?
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| {
                        StreamError::DataFusion(datafusion::error::DataFusionError::Internal(
                            "aggregate FILTER is not boolean".into(),
                        ))
                    }),
            })
            .collect()
    }
}

impl Operator for GroupAggregate {
    fn name(&self) -> String {
        "group_aggregate".into()
    }

    fn process(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        ctx: &mut OpContext<'_>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        if super::is_changelog(&batch.schema()) {
            return Err(StreamError::Config(
                "an aggregation over an updating input is not supported yet".into(),
            ));
        }
        let (key_rows, values) =
            crate::aggregate::evaluate_inputs(&self.keys, &self.converter, &self.calls, &batch)?;
        let filters = self.filters(&batch)?;

        // the batch's distinct keys, in first-seen order
        let mut index: HashMap<&[u8], usize> = HashMap::new();
        let mut distinct: Vec<usize> = Vec::new(); // a row of each distinct key
        let mut group_of_row = Vec::with_capacity(n);
        match &key_rows {
            None => {
                distinct.push(0);
                group_of_row.resize(n, 0);
            }
            Some(rows) => {
                for r in 0..n {
                    let k = rows.row(r);
                    let g = *index.entry(k.data()).or_insert_with(|| {
                        distinct.push(r);
                        distinct.len() - 1
                    });
                    group_of_row.push(g);
                }
            }
        }
        let groups = distinct.len();
        let key_bytes: Vec<&[u8]> = match &key_rows {
            None => vec![&[][..]],
            Some(rows) => distinct.iter().map(|&r| rows.row(r).data()).collect(),
        };

        // earlier state of each key: the cache, else RocksDB
        let mut prior: Vec<Option<Box<[u8]>>> = Vec::with_capacity(groups);
        let mut misses = Vec::new();
        for (g, k) in key_bytes.iter().enumerate() {
            match self.cache.get(*k) {
                Some(c) => prior.push(Some(c.state.clone())),
                None => {
                    prior.push(None);
                    misses.push(g);
                }
            }
        }
        if !misses.is_empty() {
            let state = ctx.state()?;
            let found = state.multi_get(self.op, misses.iter().map(|&g| key_bytes[g]))?;
            for (&g, v) in misses.iter().zip(found) {
                prior[g] = v.map(Vec::into_boxed_slice);
            }
        }

        // fold: earlier state, then this batch's rows
        let mut accs = self
            .calls
            .iter()
            .map(|c| c.accumulator())
            .collect::<Result<Vec<_>>>()?;
        let had: Vec<usize> = (0..groups).filter(|&g| prior[g].is_some()).collect();
        if !had.is_empty() {
            let parser = self.state_converter.parser();
            let rows = had
                .iter()
                .map(|&g| parser.parse(prior[g].as_deref().unwrap_or_default()));
            let columns = self.state_converter.convert_rows(rows)?;
            let mut at = 0;
            for (acc, &w) in accs.iter_mut().zip(&self.state_widths) {
                acc.merge_batch(&columns[at..at + w], &had, groups)?;
                at += w;
            }
        }
        for ((acc, vals), filter) in accs.iter_mut().zip(&values).zip(&filters) {
            acc.update_batch(vals, &group_of_row, filter.as_ref(), groups)?;
        }

        // the new states go back to the cache; their results are the output
        let mut state_columns: Vec<ArrayRef> = Vec::new();
        let mut results: Vec<ArrayRef> = Vec::with_capacity(self.calls.len());
        let all: Vec<usize> = (0..groups).collect();
        for (acc, call) in accs.iter_mut().zip(&self.calls) {
            let st = acc.state(EmitTo::All)?;
            let mut eval = call.accumulator()?;
            eval.merge_batch(&st, &all, groups)?;
            results.push(eval.evaluate(EmitTo::All)?);
            state_columns.extend(st);
        }
        let state_rows = self.state_converter.convert_columns(&state_columns)?;
        for (g, k) in key_bytes.iter().enumerate() {
            self.cache.insert(
                (*k).into(),
                Cached {
                    state: state_rows.row(g).data().into(),
                    dirty: true,
                },
            );
        }

        let mut columns = match &key_rows {
            None => Vec::new(),
            Some(rows) => self
                .converter
                .convert_rows(distinct.iter().map(|&r| rows.row(r)))?,
        };
        columns.extend(results);
        let mut columns = cast_to(columns, &self.schema)?;
        columns.push(Arc::new(Int8Array::from_iter_values(
            prior
                .iter()
                .map(|p| if p.is_some() { UPDATE_AFTER } else { INSERT }),
        )));
        out.push(RecordBatch::try_new(
            self.changelog_schema.clone(),
            columns,
        )?);

        if self.cache.len() > self.cache_keys {
            let state = ctx.state()?;
            self.write_back(state, true)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, state: &mut TaskState) -> Result<()> {
        let clear = self.cache.len() > self.cache_keys / 2;
        self.write_back(state, clear)
    }

    fn restore(&mut self, _state: &TaskState) -> Result<()> {
        self.cache.clear();
        Ok(())
    }

    fn open_windows(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::{OpCounters, ROW_KIND};
    use crate::state::StateConfig;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::functions_aggregate::count::count_udaf;
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::{col, lit};

    fn op(cache_keys: usize) -> GroupAggregate {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("x", DataType::Int64, true),
        ]));
        let count = AggregateExprBuilder::new(count_udaf(), vec![lit(1i64)])
            .schema(input.clone())
            .alias("n")
            .build()
            .unwrap();
        let sum = AggregateExprBuilder::new(sum_udaf(), vec![col("x", &input).unwrap()])
            .schema(input.clone())
            .alias("s")
            .build()
            .unwrap();
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Int64, true),
        ]));
        GroupAggregate::new(
            7,
            vec![col("k", &input).unwrap()],
            vec![
                AggregateCall {
                    function: Arc::new(count),
                    filter: None,
                },
                AggregateCall {
                    function: Arc::new(sum),
                    filter: None,
                },
            ],
            out,
            &input,
            cache_keys,
        )
        .unwrap()
    }

    fn batch(k: Vec<i64>, x: Vec<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("x", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(k)), Arc::new(Int64Array::from(x))],
        )
        .unwrap()
    }

    fn run(
        g: &mut GroupAggregate,
        state: &mut TaskState,
        b: RecordBatch,
    ) -> Vec<(i64, i64, i64, i8)> {
        let mut counters = OpCounters::default();
        let mut ctx = OpContext {
            watermark: i64::MIN,
            state: Some(state),
            counters: &mut counters,
        };
        let mut out = Vec::new();
        g.process(0, b, &mut ctx, &mut out).unwrap();
        let b = &out[0];
        assert_eq!(b.schema().field(3).name(), ROW_KIND);
        let c = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone()
        };
        let kinds = b
            .column(3)
            .as_any()
            .downcast_ref::<Int8Array>()
            .unwrap()
            .clone();
        (0..b.num_rows())
            .map(|r| (c(0).value(r), c(1).value(r), c(2).value(r), kinds.value(r)))
            .collect()
    }

    #[test]
    fn emits_inserts_then_updates_and_keeps_state_across_cache_evictions_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = TaskState::open(dir.path(), &StateConfig::default(), None, true).unwrap();
        // a cache of one key: every batch writes back to RocksDB and reads from it
        let mut g = op(1);
        assert_eq!(
            run(&mut g, &mut state, batch(vec![1, 2, 1], vec![10, 20, 30])),
            vec![(1, 2, 40, INSERT), (2, 1, 20, INSERT)]
        );
        assert_eq!(
            run(&mut g, &mut state, batch(vec![2, 3], vec![5, 7])),
            vec![(2, 2, 25, UPDATE_AFTER), (3, 1, 7, INSERT)]
        );
        g.snapshot(&mut state).unwrap();
        let (chk, _) = state.checkpoint(1).unwrap();
        // after the checkpoint: changes that a restore must forget
        run(&mut g, &mut state, batch(vec![1], vec![1000]));
        g.snapshot(&mut state).unwrap();
        drop(state);

        let mut state =
            TaskState::open(dir.path(), &StateConfig::default(), Some(&chk), false).unwrap();
        let mut g = op(1000);
        g.restore(&state).unwrap();
        assert_eq!(
            run(&mut g, &mut state, batch(vec![1, 4], vec![1, 1])),
            vec![(1, 3, 41, UPDATE_AFTER), (4, 1, 1, INSERT)]
        );
    }
}
