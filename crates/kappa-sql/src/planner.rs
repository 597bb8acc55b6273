//! Plans a continuous query: DataFusion resolves names and types and builds the logical
//! plan (tables and window relations registered with their schemas), then the plan is
//! lowered into kappa-stream's operator chain with DataFusion physical expressions.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::compute::can_cast_types;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::catalog::view::ViewTable;
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Query, Statement as SqlStatement};
use datafusion::sql::sqlparser::tokenizer::Location;
use kappa_stream::aggregate::{AggregateCall, GroupColumn};
use kappa_stream::operators::OpSpec;
use kappa_stream::window::{windowed_schema, WindowKind};

use crate::catalog::{Catalog, Table};
use crate::parser::{parse_script, SqlError, Statement, WindowCall};

/// A planned pipeline body: the source table it reads and the operators after it.
pub struct Lowered {
    pub source: String,
    pub ops: Vec<OpSpec>,
    pub schema: SchemaRef,
    /// The result is an updating stream (a non-windowed aggregation): only an upsert table
    /// can take it. Holds a description of the node that makes it so.
    pub updating: Option<String>,
}

struct WindowBinding {
    call: WindowCall,
    input: LogicalPlan,
    time_index: usize,
}

pub struct Planner<'a> {
    catalog: &'a Catalog,
    ctx: SessionContext,
    windows: HashMap<String, WindowBinding>,
    counter: usize,
    /// Where errors without a position of their own are reported.
    fallback: Location,
}

/// A DataFusion session with Flink's case-sensitive identifiers.
pub fn session() -> SessionContext {
    let mut config = SessionConfig::new();
    {
        let o = config.options_mut();
        // Flink's identifiers are case-sensitive
        o.sql_parser.enable_ident_normalization = false;
        o.sql_parser.collect_spans = true;
    }
    SessionContext::new_with_config(config)
}

impl<'a> Planner<'a> {
    /// Registers the catalog's tables and views (views whose definition no longer plans are
    /// left out, and fail only the queries that use them).
    pub async fn new(catalog: &'a Catalog) -> Self {
        let mut planner = Planner {
            catalog,
            ctx: session(),
            windows: HashMap::new(),
            counter: 0,
            fallback: Location { line: 1, column: 1 },
        };
        for (name, table) in &catalog.tables {
            let _ = planner.ctx.register_table(
                TableReference::bare(name.as_str()),
                Arc::new(EmptyTable::new(table.schema.clone())),
            );
        }
        for view in &catalog.views {
            if let Err(e) = planner.register_view(&view.name, &view.query_sql).await {
                tracing::warn!(view = %view.name, "view does not plan: {e}");
            }
        }
        planner
    }

    pub fn set_fallback(&mut self, at: Location) {
        self.fallback = at;
    }

    pub fn error(&self, e: DataFusionError) -> SqlError {
        let at = e
            .diagnostic()
            .and_then(|d| d.span)
            .map(|s| Location {
                line: s.start.line,
                column: s.start.column,
            })
            .filter(|l| l.line > 0)
            .unwrap_or(self.fallback);
        let mut message = e.strip_backtrace();
        for prefix in [
            "Error during planning: ",
            "Schema error: ",
            "This feature is not implemented: ",
        ] {
            if let Some(m) = message.strip_prefix(prefix) {
                message = m.to_string();
            }
        }
        SqlError::new(message, at)
    }

    /// Plans a view's query and registers it under `name`.
    pub async fn register_view(
        &mut self,
        name: &str,
        query_sql: &str,
    ) -> Result<LogicalPlan, SqlError> {
        let parsed = parse_script(query_sql, &mut self.counter)?;
        let Some(p) = parsed.into_iter().next() else {
            return Err(SqlError::unpositioned(format!(
                "view '{name}' has no query"
            )));
        };
        let Statement::Select { query } = p.statement else {
            return Err(SqlError::unpositioned(format!(
                "view '{name}' is not a query"
            )));
        };
        let plan = self.plan_query(query, &p.windows).await?;
        let _ = self.ctx.deregister_table(TableReference::bare(name));
        self.ctx
            .register_table(
                TableReference::bare(name),
                Arc::new(ViewTable::new(plan.clone(), Some(query_sql.to_string()))),
            )
            .map_err(|e| self.error(e))?;
        Ok(plan)
    }

    /// Plans a query (with its window calls) into an analysed DataFusion logical plan.
    pub async fn plan_query(
        &mut self,
        query: Box<Query>,
        windows: &[WindowCall],
    ) -> Result<LogicalPlan, SqlError> {
        for call in windows {
            self.register_window(call).await?;
        }
        let state = self.ctx.state();
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(SqlStatement::Query(query))))
            .await
            .map_err(|e| self.error(e))?;
        state
            .analyzer()
            .execute_and_check(plan, state.config_options(), |_, _| {})
            .map_err(|e| self.error(e))
    }

    async fn register_window(&mut self, call: &WindowCall) -> Result<(), SqlError> {
        let at = call.span.start;
        let input = match self
            .ctx
            .table(TableReference::bare(call.input.as_str()))
            .await
        {
            Ok(df) => df.into_unoptimized_plan(),
            Err(_) => {
                return Err(SqlError::new(
                    format!(
                        "{}: table or view '{}' not found",
                        call.kind.name(),
                        call.input
                    ),
                    at,
                ))
            }
        };
        let schema: Schema = input.schema().as_arrow().clone();
        let time_index = schema.index_of(&call.time_column).map_err(|_| {
            SqlError::new(
                format!(
                    "{}: column '{}' not found in '{}' (columns: {})",
                    call.kind.name(),
                    call.time_column,
                    call.input,
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                at,
            )
        })?;
        // the time column must be an event-time attribute: the watermarked column of the
        // table the relation reads
        let source = scanned_tables(&input);
        let rowtime = source
            .iter()
            .filter_map(|t| self.catalog.tables.get(t))
            .find_map(|t| t.def.watermark.as_ref().map(|w| w.column.clone()));
        if rowtime.as_deref() != Some(call.time_column.as_str()) {
            return Err(SqlError::new(
                format!(
                    "{}(TABLE {}, DESCRIPTOR({}), ...) needs '{}' to be an event-time attribute: declare `WATERMARK FOR {} AS ...` on the source table",
                    call.kind.name(),
                    call.input,
                    call.time_column,
                    call.time_column,
                    call.time_column
                ),
                at,
            ));
        }
        let schema = windowed_schema(&schema);
        self.ctx
            .register_table(
                TableReference::bare(call.relation.as_str()),
                Arc::new(EmptyTable::new(schema)),
            )
            .map_err(|e| self.error(e))?;
        self.windows.insert(
            call.relation.clone(),
            WindowBinding {
                call: call.clone(),
                input,
                time_index,
            },
        );
        Ok(())
    }

    /// Lowers an analysed plan to the operator chain.
    pub fn lower(&self, plan: &LogicalPlan) -> Result<Lowered, SqlError> {
        let mut ops = Vec::new();
        let mut source = None;
        let mut window_cols = None;
        self.lower_into(plan, &mut ops, &mut source, &mut window_cols)?;
        // a window assignment feeding an aggregation drops late rows (the aggregation
        // could not place them in a window that has already fired)
        let mut seen_assign: Option<usize> = None;
        for i in 0..ops.len() {
            match &ops[i] {
                OpSpec::WindowAssign { .. } => seen_assign = Some(i),
                OpSpec::WindowAggregate { .. } | OpSpec::SessionAggregate { .. } => {
                    if let Some(a) = seen_assign.take() {
                        if let OpSpec::WindowAssign { drop_late, .. } = &mut ops[a] {
                            *drop_late = true;
                        }
                    }
                }
                _ => {}
            }
        }
        let source =
            source.ok_or_else(|| SqlError::new("the query reads no table", self.fallback))?;
        // what an updating aggregation feeds: projections only (a filter would need
        // retractions of rows that stop matching)
        let mut updating = None;
        for op in &ops {
            match op {
                OpSpec::GroupAggregate { keys, calls, .. } => {
                    if updating.is_some() {
                        return Err(self.unsupported("an aggregation over an updating result"));
                    }
                    updating = Some(format!(
                        "GroupAggregate(groupBy=[{}], select=[{}])",
                        keys.iter()
                            .map(|k| k.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        calls
                            .iter()
                            .map(|c| c.function.name().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                OpSpec::Filter { .. } if updating.is_some() => {
                    return Err(
                        self.unsupported("HAVING (a filter over a non-windowed aggregation)")
                    )
                }
                OpSpec::WindowAssign { .. }
                | OpSpec::WindowAggregate { .. }
                | OpSpec::SessionAggregate { .. }
                    if updating.is_some() =>
                {
                    return Err(self.unsupported("a window over an updating result"))
                }
                _ => {}
            }
        }
        Ok(Lowered {
            source,
            ops,
            schema: Arc::new(plan.schema().as_arrow().clone()),
            updating,
        })
    }

    fn physical(&self, e: &Expr, schema: &DFSchema) -> Result<Arc<dyn PhysicalExpr>, SqlError> {
        self.ctx
            .state()
            .create_physical_expr(e.clone(), schema)
            .map_err(|e| self.error(e))
    }

    fn unsupported(&self, what: &str) -> SqlError {
        SqlError::new(
            format!("{what} is not supported in a continuous query yet"),
            self.fallback,
        )
    }

    fn lower_into(
        &self,
        plan: &LogicalPlan,
        ops: &mut Vec<OpSpec>,
        source: &mut Option<String>,
        window_cols: &mut Option<(usize, usize, WindowKind)>,
    ) -> Result<(), SqlError> {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let name = scan.table_name.table().to_string();
                if let Some(binding) = self.windows.get(&name) {
                    self.lower_into(&binding.input, ops, source, window_cols)?;
                    let input_schema = binding.input.schema().as_arrow().clone();
                    let n = input_schema.fields().len();
                    ops.push(OpSpec::WindowAssign {
                        kind: binding.call.kind.clone(),
                        time_column: binding.time_index,
                        input: Arc::new(input_schema),
                        drop_late: false,
                    });
                    *window_cols = Some((n, n + 1, binding.call.kind.clone()));
                } else if self.catalog.tables.contains_key(&name) {
                    if source.is_some() {
                        return Err(self.unsupported("reading more than one table (joins, unions)"));
                    }
                    *source = Some(name);
                    *window_cols = None;
                } else {
                    return Err(SqlError::new(
                        format!("table '{name}' not found"),
                        self.fallback,
                    ));
                }
                if !scan.filters.is_empty() || scan.fetch.is_some() {
                    return Err(self.unsupported("a pushed-down scan"));
                }
                if let Some(projection) = &scan.projection {
                    let exprs: Vec<Arc<dyn PhysicalExpr>> = projection
                        .iter()
                        .map(|&i| {
                            Arc::new(Column::new(scan.source.schema().field(i).name(), i))
                                as Arc<dyn PhysicalExpr>
                        })
                        .collect();
                    *window_cols = remap(window_cols, projection);
                    ops.push(OpSpec::Project {
                        exprs,
                        schema: Arc::new(scan.projected_schema.as_arrow().clone()),
                    });
                }
                Ok(())
            }
            LogicalPlan::Projection(p) => {
                self.lower_into(&p.input, ops, source, window_cols)?;
                let input_schema = p.input.schema();
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| self.physical(e, input_schema))
                    .collect::<Result<Vec<_>, _>>()?;
                let passthrough: Vec<Option<usize>> = p
                    .expr
                    .iter()
                    .map(|e| match e.clone().unalias_nested().data {
                        Expr::Column(c) => input_schema.index_of_column(&c).ok(),
                        _ => None,
                    })
                    .collect();
                *window_cols = window_cols.take().and_then(|(s, e, k)| {
                    let ns = passthrough.iter().position(|x| *x == Some(s))?;
                    let ne = passthrough.iter().position(|x| *x == Some(e))?;
                    Some((ns, ne, k))
                });
                ops.push(OpSpec::Project {
                    exprs,
                    schema: Arc::new(p.schema.as_arrow().clone()),
                });
                Ok(())
            }
            LogicalPlan::Filter(f) => {
                self.lower_into(&f.input, ops, source, window_cols)?;
                let predicate = self.physical(&f.predicate, f.input.schema())?;
                ops.push(OpSpec::Filter { predicate });
                Ok(())
            }
            LogicalPlan::SubqueryAlias(a) => self.lower_into(&a.input, ops, source, window_cols),
            LogicalPlan::Aggregate(agg) => {
                self.lower_into(&agg.input, ops, source, window_cols)?;
                let input_schema = agg.input.schema();
                let Some((ws, we, kind)) = window_cols.clone() else {
                    return self.lower_group_aggregate(agg, ops);
                };
                let mut layout = Vec::new();
                let mut keys = Vec::new();
                let (mut has_start, mut has_end) = (false, false);
                for g in &agg.group_expr {
                    let idx = match g {
                        Expr::Column(c) => input_schema.index_of_column(c).ok(),
                        Expr::GroupingSet(_) => return Err(self.unsupported("GROUPING SETS")),
                        _ => None,
                    };
                    if idx == Some(ws) {
                        has_start = true;
                        layout.push(GroupColumn::WindowStart);
                    } else if idx == Some(we) {
                        has_end = true;
                        layout.push(GroupColumn::WindowEnd);
                    } else {
                        layout.push(GroupColumn::Key(keys.len()));
                        keys.push(self.physical(g, input_schema)?);
                    }
                }
                if !(has_start && has_end) {
                    return Err(SqlError::new(
                        "a window aggregation must GROUP BY both window_start and window_end",
                        self.fallback,
                    ));
                }
                let calls = self.aggregate_calls(agg)?;
                let schema = Arc::new(agg.schema.as_arrow().clone());
                let input = Arc::new(input_schema.as_arrow().clone());
                let op = match kind {
                    WindowKind::Session { .. } if calls.iter().any(|c| c.filter.is_some()) => {
                        return Err(
                            self.unsupported("FILTER (WHERE ...) in a SESSION window aggregation")
                        )
                    }
                    WindowKind::Session { gap } => OpSpec::SessionAggregate {
                        gap,
                        time_column: ws,
                        keys,
                        layout,
                        calls,
                        schema,
                        input,
                    },
                    _ => OpSpec::WindowAggregate {
                        window_start: ws,
                        window_end: we,
                        keys,
                        layout,
                        calls,
                        schema,
                        input,
                    },
                };
                ops.push(op);
                // window_start/window_end of the output are plain columns from here on
                *window_cols = None;
                Ok(())
            }
            LogicalPlan::Sort(_) => Err(self.unsupported("ORDER BY")),
            LogicalPlan::Limit(_) => Err(self.unsupported("LIMIT")),
            LogicalPlan::Join(_) => Err(self.unsupported("JOIN")),
            LogicalPlan::Union(_) => Err(self.unsupported("UNION")),
            LogicalPlan::Distinct(_) => Err(self.unsupported("SELECT DISTINCT")),
            LogicalPlan::Window(_) => Err(self.unsupported("an OVER window")),
            LogicalPlan::EmptyRelation(_) | LogicalPlan::Values(_) => Err(SqlError::new(
                "a continuous query must read a table (FROM ...)",
                self.fallback,
            )),
            other => Err(self.unsupported(&format!("'{}'", other.display()))),
        }
    }
}

impl Planner<'_> {
    /// The aggregate calls of an aggregation, as DataFusion lowers them.
    fn aggregate_calls(
        &self,
        agg: &datafusion::logical_expr::Aggregate,
    ) -> Result<Vec<AggregateCall>, SqlError> {
        let input_schema = agg.input.schema();
        let arrow_input = input_schema.as_arrow();
        let props = self.ctx.state().execution_props().clone();
        let planning = PhysicalPlanningContext::default();
        agg.aggr_expr
            .iter()
            .map(|e| {
                let lowered =
                    LoweredAggregateBuilder::new(e, input_schema, arrow_input, &props, &planning)
                        .build()
                        .map_err(|e| self.error(e))?;
                if !lowered.order_bys.is_empty() {
                    return Err(self.unsupported("an ordered aggregate (ORDER BY inside the call)"));
                }
                Ok(AggregateCall {
                    function: lowered.aggregate,
                    filter: lowered.filter,
                })
            })
            .collect()
    }

    /// `GROUP BY` without a window: an updating aggregation.
    fn lower_group_aggregate(
        &self,
        agg: &datafusion::logical_expr::Aggregate,
        ops: &mut Vec<OpSpec>,
    ) -> Result<(), SqlError> {
        let input_schema = agg.input.schema();
        let mut keys = Vec::new();
        for g in &agg.group_expr {
            if let Expr::GroupingSet(_) = g {
                return Err(self.unsupported("GROUPING SETS"));
            }
            keys.push(self.physical(g, input_schema)?);
        }
        let calls = self.aggregate_calls(agg)?;
        ops.push(OpSpec::GroupAggregate {
            keys,
            calls,
            schema: Arc::new(agg.schema.as_arrow().clone()),
            input: Arc::new(input_schema.as_arrow().clone()),
        });
        Ok(())
    }
}

fn remap(
    window_cols: &Option<(usize, usize, WindowKind)>,
    projection: &[usize],
) -> Option<(usize, usize, WindowKind)> {
    let (s, e, kind) = window_cols.clone()?;
    Some((
        projection.iter().position(|&i| i == s)?,
        projection.iter().position(|&i| i == e)?,
        kind,
    ))
}

/// Names of the tables a plan scans.
fn scanned_tables(plan: &LogicalPlan) -> Vec<String> {
    let mut out = Vec::new();
    let _ = plan.apply(|p| {
        if let LogicalPlan::TableScan(s) = p {
            out.push(s.table_name.table().to_string());
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    out
}

/// Maps the query's output onto the sink's columns (by position, or by the INSERT's
/// column list), checking that each type can be cast to the sink's.
pub fn sink_projection(
    query: &SchemaRef,
    sink: &Table,
    insert_columns: &[String],
    at: Location,
) -> Result<Option<OpSpec>, SqlError> {
    let sink_schema = &sink.schema;
    let targets: Vec<usize> = if insert_columns.is_empty() {
        (0..sink_schema.fields().len()).collect()
    } else {
        insert_columns
            .iter()
            .map(|c| {
                sink_schema.index_of(c).map_err(|_| {
                    SqlError::new(
                        format!("unknown column '{c}' in sink table '{}'", sink.def.name),
                        at,
                    )
                })
            })
            .collect::<Result<_, _>>()?
    };
    if targets.len() != query.fields().len() {
        return Err(SqlError::new(
            format!(
                "Column types of query result and sink for '{}' do not match: the query has {} columns, the sink takes {} ({})",
                sink.def.name,
                query.fields().len(),
                targets.len(),
                sink_schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
            ),
            at,
        ));
    }
    for (q, &t) in query.fields().iter().zip(&targets) {
        let to = sink_schema.field(t);
        if !insertable(q.data_type(), to.data_type()) {
            return Err(SqlError::new(
                format!(
                    "Column types of query result and sink for '{}' do not match: '{}' is {} but sink column '{}' is {}",
                    sink.def.name,
                    q.name(),
                    q.data_type(),
                    to.name(),
                    to.data_type()
                ),
                at,
            ));
        }
    }
    if targets.iter().enumerate().all(|(i, &t)| i == t)
        && targets.len() == sink_schema.fields().len()
    {
        return Ok(None);
    }
    // reorder, filling columns the INSERT does not name with NULL
    let mut exprs: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    let mut fields = Vec::new();
    for (i, f) in sink_schema.fields().iter().enumerate() {
        match targets.iter().position(|&t| t == i) {
            Some(q) => {
                exprs.push(Arc::new(Column::new(query.field(q).name(), q)));
                fields.push(query.field(q).clone().with_name(f.name()));
            }
            None => {
                let null = ScalarValue::try_from(f.data_type())
                    .map_err(|e| SqlError::new(e.to_string(), at))?;
                exprs.push(Arc::new(Literal::new(null)));
                fields.push(f.as_ref().clone().with_nullable(true));
            }
        }
    }
    Ok(Some(OpSpec::Project {
        exprs,
        schema: Arc::new(Schema::new(fields)),
    }))
}

fn is_temporal(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
    )
}

/// The implicit conversions an INSERT makes (as Flink: numbers widen or narrow among
/// themselves, anything becomes a string, temporal types convert among themselves).
fn insertable(from: &DataType, to: &DataType) -> bool {
    let stringy =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    from == to
        || from == &DataType::Null
        || (from.is_numeric() && to.is_numeric())
        || (stringy(to) && can_cast_types(from, to))
        || (is_temporal(from) && is_temporal(to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::table_from_def;

    const DDL: &str = "CREATE TABLE bids (auction BIGINT, price BIGINT, url VARCHAR, date_time TIMESTAMP(3),
        WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
        WITH ('connector' = 'kafka', 'topic' = 'bids', 'format' = 'json');
      CREATE TABLE plain (auction BIGINT, date_time TIMESTAMP(3)) WITH ('connector' = 'kafka', 'topic' = 'p', 'format' = 'json');
      CREATE TABLE out (window_start TIMESTAMP(3), window_end TIMESTAMP(3), auction BIGINT, n BIGINT)
        WITH ('connector' = 'kafka', 'topic' = 'out', 'format' = 'json')";

    fn catalog() -> Catalog {
        let mut n = 0;
        let mut c = Catalog::default();
        for p in parse_script(DDL, &mut n).unwrap() {
            let Statement::CreateTable(def) = p.statement else {
                panic!()
            };
            let t = table_from_def(def, p.sql).unwrap();
            c.tables.insert(t.def.name.clone(), t);
        }
        c
    }

    async fn plan(catalog: &Catalog, sql: &str) -> Result<Lowered, SqlError> {
        let mut n = 0;
        let p = parse_script(sql, &mut n)?.pop().unwrap();
        let query = match p.statement {
            Statement::Insert { query, .. } | Statement::Select { query } => query,
            _ => panic!(),
        };
        let mut planner = Planner::new(catalog).await;
        planner.set_fallback(p.start);
        let plan = planner.plan_query(query, &p.windows).await?;
        planner.lower(&plan)
    }

    #[tokio::test]
    async fn a_tumbling_aggregation_lowers_to_assign_then_aggregate() {
        let c = catalog();
        let l = plan(&c, "INSERT INTO out SELECT window_start, window_end, auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) WHERE price > 10 GROUP BY window_start, window_end, auction").await.unwrap();
        assert_eq!(l.source, "bids");
        let names: Vec<String> = l.ops.iter().map(OpSpec::name).collect();
        assert!(
            names.starts_with(&["window_assign_tumble".to_string(), "filter".to_string()]),
            "{names:?}"
        );
        assert!(names.contains(&"window_aggregate".to_string()), "{names:?}");
        assert!(matches!(
            &l.ops[0],
            OpSpec::WindowAssign {
                drop_late: true,
                ..
            }
        ));
        assert!(sink_projection(
            &l.schema,
            &c.tables["out"],
            &[],
            Location { line: 1, column: 1 }
        )
        .unwrap()
        .is_none());
    }

    #[tokio::test]
    async fn unknown_columns_are_named_with_their_position() {
        let e = plan(
            &catalog(),
            "INSERT INTO out\nSELECT auction,\n       no_such_col FROM bids",
        )
        .await
        .err()
        .unwrap();
        assert!(e.message.contains("no_such_col"), "{e}");
        assert_eq!((e.line, e.column), (3, 8), "{e}");
    }

    #[tokio::test]
    async fn windows_need_an_event_time_attribute() {
        let e = plan(&catalog(), "SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE plain, DESCRIPTOR(date_time), INTERVAL '1' MINUTE)) GROUP BY window_start, window_end").await.err().unwrap();
        assert!(e.message.contains("WATERMARK FOR date_time"), "{e}");
        assert_eq!((e.line, e.column), (1, 36), "{e}");
        let e = plan(
            &catalog(),
            "SELECT * FROM TABLE(TUMBLE(TABLE nope, DESCRIPTOR(date_time), INTERVAL '1' MINUTE))",
        )
        .await
        .err()
        .unwrap();
        assert!(e.message.contains("'nope' not found"), "{e}");
    }

    #[tokio::test]
    async fn unbounded_aggregations_and_unsupported_clauses_are_refused() {
        let c = catalog();
        let l = plan(&c, "SELECT auction, COUNT(*) FROM bids GROUP BY auction")
            .await
            .unwrap();
        assert!(l
            .updating
            .as_deref()
            .is_some_and(|u| u.starts_with("GroupAggregate")));
        assert!(matches!(
            l.ops.last(),
            Some(OpSpec::GroupAggregate { .. }) | Some(OpSpec::Project { .. })
        ));
        let e = plan(
            &c,
            "SELECT auction, COUNT(*) FROM bids GROUP BY auction HAVING COUNT(*) > 2",
        )
        .await
        .err()
        .unwrap();
        assert!(e.message.contains("HAVING"), "{e}");
        let e = plan(&c, "SELECT window_start, COUNT(*) FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(date_time), INTERVAL '1' MINUTE)) GROUP BY window_start").await.err().unwrap();
        assert!(e.message.contains("window_start and window_end"), "{e}");
        let e = plan(&c, "SELECT auction FROM bids ORDER BY auction")
            .await
            .err()
            .unwrap();
        assert!(e.message.contains("ORDER BY"), "{e}");
        let e = plan(
            &c,
            "SELECT a.auction FROM bids a JOIN plain b ON a.auction = b.auction",
        )
        .await
        .err()
        .unwrap();
        assert!(
            e.message.contains("JOIN") || e.message.contains("more than one table"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn sink_types_must_be_insertable() {
        let c = catalog();
        let l = plan(&c, "SELECT date_time, date_time AS e, url, price FROM bids")
            .await
            .unwrap();
        let e = sink_projection(
            &l.schema,
            &c.tables["out"],
            &[],
            Location { line: 2, column: 3 },
        )
        .err()
        .unwrap();
        assert!(
            e.message
                .contains("'url' is Utf8 but sink column 'auction' is Int64"),
            "{e}"
        );
        let l = plan(&c, "SELECT price FROM bids").await.unwrap();
        let e = sink_projection(
            &l.schema,
            &c.tables["out"],
            &[],
            Location { line: 2, column: 3 },
        )
        .err()
        .unwrap();
        assert!(
            e.message
                .contains("the query has 1 columns, the sink takes 4"),
            "{e}"
        );
        // a column list fills the others with NULL
        let p = sink_projection(
            &l.schema,
            &c.tables["out"],
            &["n".to_string()],
            Location { line: 1, column: 1 },
        )
        .unwrap();
        assert!(matches!(p, Some(OpSpec::Project { schema, .. }) if schema.fields().len() == 4));
    }
}
