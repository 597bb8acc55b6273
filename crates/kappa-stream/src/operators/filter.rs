//! `WHERE`: keeps the rows for which the predicate is true (row kinds pass through).

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;

use super::{OpContext, Operator};
use crate::error::Result;

pub struct Filter {
    predicate: Arc<dyn PhysicalExpr>,
}

impl Filter {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Filter { predicate }
    }
}

impl Operator for Filter {
    fn name(&self) -> String {
        "filter".into()
    }

    fn process(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _ctx: &mut OpContext<'_>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let mask = self
            .predicate
            .evaluate(&batch)?
            .into_array(batch.num_rows())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("WHERE is not boolean".into()))?;
        let kept = filter_record_batch(&batch, mask)?;
        if kept.num_rows() > 0 {
            out.push(kept);
        }
        Ok(())
    }
}
