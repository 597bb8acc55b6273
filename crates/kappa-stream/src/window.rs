//! Window assignment for Flink's window table-valued functions: which windows an event-time
//! instant belongs to, and the window-assigning operator that adds `window_start`,
//! `window_end` and `window_time` to each row.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A window function with its sizes in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    Tumble { size: i64 },
    Hop { slide: i64, size: i64 },
    Cumulate { step: i64, size: i64 },
    Session { gap: i64 },
}

impl WindowKind {
    /// Appends every window `[start, end)` that contains `t`.
    pub fn assign(&self, t: i64, out: &mut Vec<(i64, i64)>) {
        match *self {
            WindowKind::Tumble { size } => {
                let start = t - t.rem_euclid(size);
                out.push((start, start + size));
            }
            WindowKind::Hop { slide, size } => {
                let mut start = t - t.rem_euclid(slide);
                while start > t - size {
                    out.push((start, start + size));
                    start -= slide;
                }
            }
            WindowKind::Cumulate { step, size } => {
                let start = t - t.rem_euclid(size);
                let mut end = t - t.rem_euclid(step) + step;
                while end <= start + size {
                    out.push((start, end));
                    end += step;
                }
            }
            WindowKind::Session { gap } => out.push((t, t + gap)),
        }
    }

    /// The earliest end of a window containing `t`: once the watermark reaches it, an event
    /// at `t` is late (Flink drops it when the first window it would join has fired).
    pub fn first_end(&self, t: i64) -> i64 {
        match *self {
            WindowKind::Tumble { size } => t - t.rem_euclid(size) + size,
            WindowKind::Hop { slide, size } => {
                // the oldest window containing t has the smallest start > t - size
                let lowest = t - size + 1;
                let start = lowest + (slide - lowest.rem_euclid(slide)) % slide;
                start + size
            }
            WindowKind::Cumulate { step, .. } => t - t.rem_euclid(step) + step,
            WindowKind::Session { gap } => t + gap,
        }
    }

    /// The longest span of time a window covers (bounds the arithmetic on event times).
    pub fn extent(&self) -> i64 {
        match *self {
            WindowKind::Tumble { size }
            | WindowKind::Hop { size, .. }
            | WindowKind::Cumulate { size, .. } => size,
            WindowKind::Session { gap } => gap,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            WindowKind::Tumble { .. } => "TUMBLE",
            WindowKind::Hop { .. } => "HOP",
            WindowKind::Cumulate { .. } => "CUMULATE",
            WindowKind::Session { .. } => "SESSION",
        }
    }
}

pub fn window_time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// The input schema with `window_start`, `window_end` and `window_time` appended.
pub fn windowed_schema(input: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    for name in ["window_start", "window_end", "window_time"] {
        fields.push(Field::new(name, window_time_type(), false));
    }
    Arc::new(Schema::new(fields))
}

/// Milliseconds of an event-time column (any timestamp unit); nulls stay null.
pub fn event_times(column: &ArrayRef) -> Result<TimestampMillisecondArray> {
    let casted = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
    Ok(casted
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .cloned()
        .expect("cast to a millisecond timestamp yields one"))
}

/// Assigns windows (TUMBLE, HOP, CUMULATE) to rows, repeating a row once per window it is in.
/// With `drop_late`, windows that have already fired are left out; a row with none left is
/// dropped and counted as late.
pub struct WindowAssign {
    pub kind: WindowKind,
    pub time_column: usize,
    pub schema: SchemaRef,
    pub drop_late: bool,
    windows: Vec<(i64, i64)>,
}

pub struct Assigned {
    pub batch: Option<RecordBatch>,
    pub late: u64,
    pub null_time: u64,
}

impl WindowAssign {
    pub fn new(kind: WindowKind, time_column: usize, input: &Schema, drop_late: bool) -> Self {
        WindowAssign {
            kind,
            time_column,
            schema: windowed_schema(input),
            drop_late,
            windows: Vec::new(),
        }
    }

    pub fn process(&mut self, batch: &RecordBatch, watermark: i64) -> Result<Assigned> {
        let times = event_times(batch.column(self.time_column))?;
        let n = batch.num_rows();
        let mut indices: Vec<u32> = Vec::with_capacity(n);
        let mut starts: Vec<i64> = Vec::with_capacity(n);
        let mut ends: Vec<i64> = Vec::with_capacity(n);
        let (mut late, mut null_time) = (0u64, 0u64);
        for row in 0..n {
            if times.is_null(row) {
                null_time += 1;
                continue;
            }
            let t = times.value(row);
            // times this close to the ends of i64 have no window end
            if t.checked_add(self.kind.extent()).is_none()
                || t.checked_sub(self.kind.extent()).is_none()
            {
                null_time += 1;
                continue;
            }
            self.windows.clear();
            self.kind.assign(t, &mut self.windows);
            // as Flink: a row joins the windows that have not fired yet, and is late (dropped
            // and counted) only when every window it belongs to has fired; a session's
            // lateness is decided by the session aggregation, after merging
            let drop_fired = self.drop_late && !matches!(self.kind, WindowKind::Session { .. });
            let mut kept = 0;
            for &(s, e) in &self.windows {
                if drop_fired && e - 1 <= watermark {
                    continue;
                }
                indices.push(row as u32);
                starts.push(s);
                ends.push(e);
                kept += 1;
            }
            if kept == 0 {
                late += 1;
            }
        }
        if indices.is_empty() {
            return Ok(Assigned {
                batch: None,
                late,
                null_time,
            });
        }
        let mut columns: Vec<ArrayRef> =
            if indices.len() == n && indices.iter().enumerate().all(|(i, &r)| i as u32 == r) {
                batch.columns().to_vec()
            } else {
                let idx = UInt32Array::from(indices);
                batch
                    .columns()
                    .iter()
                    .map(|c| take(c.as_ref(), &idx, None))
                    .collect::<std::result::Result<_, _>>()?
            };
        let times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        columns.push(Arc::new(TimestampMillisecondArray::from(times)));
        Ok(Assigned {
            batch: Some(RecordBatch::try_new(self.schema.clone(), columns)?),
            late,
            null_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(kind: &WindowKind, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        kind.assign(t, &mut out);
        out.sort();
        out
    }

    /// The definition: every window [s, e) of the kind's grid with s <= t < e, by brute force.
    fn brute(kind: &WindowKind, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        for s in (t - 200)..=t {
            for e in (s + 1)..=(s + 200) {
                let member = match *kind {
                    WindowKind::Tumble { size } => s.rem_euclid(size) == 0 && e - s == size,
                    WindowKind::Hop { slide, size } => s.rem_euclid(slide) == 0 && e - s == size,
                    WindowKind::Cumulate { step, size } => {
                        s.rem_euclid(size) == 0 && e - s <= size && (e - s) % step == 0
                    }
                    WindowKind::Session { .. } => false,
                };
                if member && s <= t && t < e {
                    out.push((s, e));
                }
            }
        }
        out
    }

    #[test]
    fn assignment_matches_the_definition_including_negative_times() {
        let kinds = [
            WindowKind::Tumble { size: 10 },
            WindowKind::Hop { slide: 5, size: 15 },
            WindowKind::Hop { slide: 4, size: 10 },
            WindowKind::Cumulate { step: 5, size: 20 },
        ];
        for kind in &kinds {
            for t in -60..60 {
                let got = windows(kind, t);
                assert_eq!(got, brute(kind, t), "{kind:?} t={t}");
                let first = got.iter().map(|w| w.1).min().unwrap();
                assert_eq!(kind.first_end(t), first, "{kind:?} t={t}");
            }
        }
    }

    #[test]
    fn late_rows_are_dropped_and_counted() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            window_time_type(),
            true,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(TimestampMillisecondArray::from(vec![
                Some(5),
                Some(15),
                None,
                Some(25),
            ]))],
        )
        .unwrap();
        let mut assign = WindowAssign::new(WindowKind::Tumble { size: 10 }, 0, &schema, true);
        // watermark 19: window [10, 20) has fired (its last instant is 19)
        let out = assign.process(&batch, 19).unwrap();
        assert_eq!((out.late, out.null_time), (2, 1));
        let b = out.batch.unwrap();
        assert_eq!(b.num_rows(), 1);
        assert_eq!(b.schema().field(1).name(), "window_start");

        // HOP: a row late for its oldest window still joins the windows that are open
        let mut hop = WindowAssign::new(
            WindowKind::Hop {
                slide: 10,
                size: 20,
            },
            0,
            &schema,
            true,
        );
        let out = hop.process(&batch, 19).unwrap();
        assert_eq!(out.late, 1, "only t=5 has no open window left");
        let b = out.batch.unwrap();
        let starts = b
            .column(1)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        assert_eq!(
            starts.values().to_vec(),
            vec![10, 20, 10],
            "t=15 joins [10,30); t=25 joins [20,40) and [10,30)"
        );
    }
}
