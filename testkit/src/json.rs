//! JSON helpers for comparing answers with published samples.

use serde_json::Value;

/// The JSON type of `v`: `null`, `bool`, `number`, `string`, `array` or `object`.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Where the published Consul and Nomad samples live: `$SWITCHYARD_FIXTURES_DIR`, else the
/// one copy beside the client crate that decodes them (`hashi/tests/fixtures`).
pub fn samples_dir() -> std::path::PathBuf {
    std::env::var("SWITCHYARD_FIXTURES_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| crate::fs::workspace_root().join("hashi/tests/fixtures"))
}

/// A published sample, by its path under [`samples_dir`] (e.g. `nomad/job_get.response.json`).
pub fn sample(path: &str) -> Value {
    let p = samples_dir().join(path);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}
