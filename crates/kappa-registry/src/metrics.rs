//! The registry's Prometheus metrics: requests by method, route and status, and how many
//! schemas and subjects it holds.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct RegistryMetrics {
    /// (method, route template, status) -> requests
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl RegistryMetrics {
    pub fn record(&self, method: &str, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// OpenMetrics text (without the closing `# EOF`).
    pub fn render(&self, schemas: usize, subjects: usize, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP kappa_registry_requests Schema registry requests by method, route and status.\n# TYPE kappa_registry_requests counter"
        );
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        for ((method, route, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "kappa_registry_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP kappa_registry_schemas Schemas (distinct ids) in the registry.\n# TYPE kappa_registry_schemas gauge\nkappa_registry_schemas {schemas}"
        );
        let _ = writeln!(
            out,
            "# HELP kappa_registry_subjects Subjects with at least one version, live or soft-deleted.\n# TYPE kappa_registry_subjects gauge\nkappa_registry_subjects {subjects}"
        );
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
