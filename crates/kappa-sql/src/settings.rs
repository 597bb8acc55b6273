//! Pipeline settings given with `SET 'key' = 'value'` before an `INSERT INTO`, with Flink's
//! keys where Flink has one.

use std::time::Duration;

use crate::catalog::parse_duration;

/// Which stream runtime runs a pipeline (`'execution.runtime'`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// `v1`: the first runtime (one source, a chain of operators, one sink).
    V1,
    /// `v2` (default): the dataflow runtime with parallel tasks, exchanges and checkpoints.
    #[default]
    V2,
}

/// Settings of the next pipeline started in a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSettings {
    /// `'pipeline.name'`.
    pub name: Option<String>,
    /// `'execution.checkpointing.interval'` (default 10 s). Flink turns checkpointing off when
    /// it is unset; Kappa always checkpoints, so it must be positive.
    pub checkpoint_interval: Duration,
    /// `'parallelism.default'`: tasks per keyed operator (at least 1); `None`: the
    /// runtime's choice.
    pub parallelism: Option<usize>,
    /// `'table.exec.state.ttl'`: state idle for longer is dropped; `None` (or `'0 ms'`, as
    /// in Flink): kept forever.
    pub state_ttl: Option<Duration>,
    /// `'execution.runtime'`: `v2` (default) or `v1`.
    pub runtime: Runtime,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            name: None,
            checkpoint_interval: Duration::from_secs(10),
            parallelism: None,
            state_ttl: None,
            runtime: Runtime::V2,
        }
    }
}

/// The keys `SET` takes, sorted.
pub const SUPPORTED_KEYS: &[&str] = &[
    "execution.checkpointing.interval",
    "execution.runtime",
    "parallelism.default",
    "pipeline.name",
    "table.exec.state.ttl",
];

/// Flink's upper bound for (maximum) parallelism.
pub const MAX_PARALLELISM: usize = 32_768;

impl PipelineSettings {
    /// Applies `SET 'key' = 'value'`; an unknown key or a bad value is refused and leaves the
    /// settings unchanged.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        match key {
            "pipeline.name" => {
                if v.is_empty() {
                    return Err("'pipeline.name' must not be empty".into());
                }
                self.name = Some(value.to_string());
            }
            "execution.checkpointing.interval" => {
                let d = duration(key, v)?;
                if d.is_zero() {
                    return Err(format!(
                        "'{key}' must be positive, not '{value}' (Kappa always checkpoints)"
                    ));
                }
                self.checkpoint_interval = d;
            }
            "parallelism.default" => {
                let n: i64 = v.parse().map_err(|_| {
                    format!("'{key}' must be a whole number of tasks, not '{value}'")
                })?;
                if n < 1 || n as u64 > MAX_PARALLELISM as u64 {
                    return Err(format!(
                        "'{key}' must be between 1 and {MAX_PARALLELISM}, not '{value}'"
                    ));
                }
                self.parallelism = Some(n as usize);
            }
            "table.exec.state.ttl" => {
                let d = duration(key, v)?;
                self.state_ttl = (!d.is_zero()).then_some(d);
            }
            "execution.runtime" => {
                self.runtime = match v.to_ascii_lowercase().as_str() {
                    "v1" => Runtime::V1,
                    "v2" => Runtime::V2,
                    _ => return Err(format!("'{key}' must be 'v1' or 'v2', not '{value}'")),
                };
            }
            _ => {
                return Err(format!(
                    "unknown setting '{key}' (supported: {})",
                    SUPPORTED_KEYS.join(", ")
                ))
            }
        }
        Ok(())
    }
}

fn duration(key: &str, value: &str) -> Result<Duration, String> {
    if value.starts_with('-') {
        return Err(format!("'{key}' must not be negative, not '{value}'"));
    }
    parse_duration(value).map_err(|e| format!("'{key}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = PipelineSettings::default();
        assert_eq!(s.checkpoint_interval, Duration::from_secs(10));
        assert_eq!(
            (s.name, s.parallelism, s.state_ttl, s.runtime),
            (None, None, None, Runtime::V2)
        );
    }

    #[test]
    fn each_key_sets_its_field() {
        let mut s = PipelineSettings::default();
        s.set("pipeline.name", "q1").unwrap();
        s.set("execution.checkpointing.interval", "30 s").unwrap();
        s.set("parallelism.default", "4").unwrap();
        s.set("table.exec.state.ttl", "1 h").unwrap();
        s.set("execution.runtime", "v1").unwrap();
        assert_eq!(
            s,
            PipelineSettings {
                name: Some("q1".into()),
                checkpoint_interval: Duration::from_secs(30),
                parallelism: Some(4),
                state_ttl: Some(Duration::from_secs(3600)),
                runtime: Runtime::V1,
            }
        );
        s.set("execution.checkpointing.interval", "500").unwrap();
        assert_eq!(s.checkpoint_interval, Duration::from_millis(500));
        s.set("table.exec.state.ttl", "0 ms").unwrap();
        assert_eq!(s.state_ttl, None);
        s.set("table.exec.state.ttl", "2 d").unwrap();
        assert_eq!(s.state_ttl, Some(Duration::from_secs(2 * 86_400)));
        s.set("execution.runtime", "V2").unwrap();
        assert_eq!(s.runtime, Runtime::V2);
    }

    #[test]
    fn bad_values_are_refused_and_change_nothing() {
        let mut s = PipelineSettings::default();
        for (k, v, needle) in [
            ("execution.checkpointing.interval", "0", "positive"),
            ("execution.checkpointing.interval", "0 s", "positive"),
            ("execution.checkpointing.interval", "-5 s", "negative"),
            ("execution.checkpointing.interval", "soon", "bad duration"),
            ("execution.checkpointing.interval", "5 fortnights", "unit"),
            ("parallelism.default", "0", "between 1 and 32768"),
            ("parallelism.default", "-1", "between 1 and 32768"),
            ("parallelism.default", "100000", "between 1 and 32768"),
            ("parallelism.default", "two", "whole number"),
            (
                "parallelism.default",
                "99999999999999999999999",
                "whole number",
            ),
            ("table.exec.state.ttl", "-1 ms", "negative"),
            ("execution.runtime", "v3", "'v1' or 'v2'"),
            ("pipeline.name", "", "empty"),
        ] {
            let e = s.set(k, v).unwrap_err();
            assert!(e.contains(k) && e.contains(needle), "{k} = {v}: {e}");
        }
        assert_eq!(s, PipelineSettings::default());
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_supported_ones() {
        let mut s = PipelineSettings::default();
        let e = s
            .set("execution.checkpointing.mode", "EXACTLY_ONCE")
            .unwrap_err();
        assert!(e.contains("'execution.checkpointing.mode'"), "{e}");
        for k in SUPPORTED_KEYS {
            assert!(e.contains(k), "{e}");
        }
        // keys are case-sensitive, as in Flink
        assert!(s.set("Pipeline.Name", "x").is_err());
    }
}
