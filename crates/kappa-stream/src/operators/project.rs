//! `SELECT` expressions: computes the output columns (an updating stream keeps its row kinds).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::{evaluate, is_changelog, with_row_kind, OpContext, Operator};
use crate::error::Result;

pub struct Project {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    changelog_schema: SchemaRef,
}

impl Project {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Project {
            changelog_schema: with_row_kind(&schema),
            exprs,
            schema,
        }
    }
}

impl Operator for Project {
    fn name(&self) -> String {
        "project".into()
    }

    fn process(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        _ctx: &mut OpContext<'_>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        let mut columns = evaluate(&self.exprs, &batch)?;
        let schema = if is_changelog(&batch.schema()) {
            columns.push(batch.column(batch.num_columns() - 1).clone());
            self.changelog_schema.clone()
        } else {
            self.schema.clone()
        };
        out.push(RecordBatch::try_new(schema, columns)?);
        Ok(())
    }
}
