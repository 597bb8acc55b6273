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
    /// `'state.backend.rocksdb.block.cache-size'`: RocksDB's block cache per task.
    pub block_cache_bytes: Option<u64>,
    /// `'state.backend.rocksdb.writebuffer.size'`: RocksDB's memtable size per task.
    pub write_buffer_bytes: Option<u64>,
    /// `'state.backend.rocksdb.writebuffer.count'`: memtables per task.
    pub write_buffer_count: Option<u32>,
    /// `'state.cache.max-keys'` (Kappa's): decoded keys an updating aggregation keeps in
    /// memory per task before writing them to RocksDB.
    pub cache_keys: Option<usize>,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            name: None,
            checkpoint_interval: Duration::from_secs(10),
            parallelism: None,
            state_ttl: None,
            runtime: Runtime::V2,
            block_cache_bytes: None,
            write_buffer_bytes: None,
            write_buffer_count: None,
            cache_keys: None,
        }
    }
}

/// The keys `SET` takes, sorted.
pub const SUPPORTED_KEYS: &[&str] = &[
    "execution.checkpointing.interval",
    "execution.runtime",
    "parallelism.default",
    "pipeline.name",
    "state.backend.rocksdb.block.cache-size",
    "state.backend.rocksdb.writebuffer.count",
    "state.backend.rocksdb.writebuffer.size",
    "state.cache.max-keys",
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
            "state.backend.rocksdb.block.cache-size" => {
                self.block_cache_bytes = Some(memory_size(key, v)?);
            }
            "state.backend.rocksdb.writebuffer.size" => {
                let n = memory_size(key, v)?;
                if n < 64 << 10 {
                    return Err(format!("'{key}' must be at least 64 kb, not '{value}'"));
                }
                self.write_buffer_bytes = Some(n);
            }
            "state.backend.rocksdb.writebuffer.count" => {
                let n: u32 = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| {
                        format!("'{key}' must be a number from 1 to 64, not '{value}'")
                    })?;
                self.write_buffer_count = Some(n);
            }
            "state.cache.max-keys" => {
                let n: usize =
                    v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("'{key}' must be a positive number, not '{value}'")
                    })?;
                self.cache_keys = Some(n);
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

/// Memory sizes as Flink writes them: `64 mb`, `512kb`, `1 gb`, `1048576` (bytes).
pub fn memory_size(key: &str, value: &str) -> Result<u64, String> {
    let t = value.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{key}' must be a memory size such as '64 mb', not '{value}'"))?;
    let mult: u64 = match unit.trim() {
        "" | "b" | "bytes" => 1,
        "k" | "kb" | "kibibytes" => 1 << 10,
        "m" | "mb" | "mebibytes" => 1 << 20,
        "g" | "gb" | "gibibytes" => 1 << 30,
        other => {
            return Err(format!(
                "'{key}': unknown size unit '{other}' in '{value}' (b, kb, mb, gb)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("'{key}': '{value}' is too large"))
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
    fn memory_sizes_as_flink_writes_them() {
        let mut s = PipelineSettings::default();
        s.set("state.backend.rocksdb.block.cache-size", "8 mb")
            .unwrap();
        s.set("state.backend.rocksdb.writebuffer.size", "512kb")
            .unwrap();
        s.set("state.backend.rocksdb.writebuffer.count", "3")
            .unwrap();
        s.set("state.cache.max-keys", "1000").unwrap();
        assert_eq!(s.block_cache_bytes, Some(8 << 20));
        assert_eq!(s.write_buffer_bytes, Some(512 << 10));
        assert_eq!((s.write_buffer_count, s.cache_keys), (Some(3), Some(1000)));
        assert!(s
            .set("state.backend.rocksdb.writebuffer.size", "1 kb")
            .is_err());
        assert!(s
            .set("state.backend.rocksdb.block.cache-size", "8 parsecs")
            .is_err());
        assert!(s.set("state.cache.max-keys", "0").is_err());
        assert_eq!(memory_size("k", "1048576"), Ok(1 << 20));
    }

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
                ..PipelineSettings::default()
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
