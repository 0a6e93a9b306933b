//! `--config FILE` (or `IM_CONFIG`): one TOML file with any of the settings
//! every binary reads from its environment, keyed by the variable's name
//! (`IM_HTTP = "…"`) or by it in lowercase without the prefix
//! (`http = "…"`). Environment variables and flags override the file: a
//! setting from the file is used only where the environment has none (and a
//! flag beats both). `imctl config print` shows the effective settings with
//! secrets masked.

use std::path::{Path, PathBuf};

/// The file's settings as (variable, value), in file order (pure).
pub fn settings(text: &str) -> Result<Vec<(String, String)>, String> {
    let document: toml_edit::DocumentMut = text
        .parse()
        .map_err(|error: toml_edit::TomlError| format!("not TOML: {error}"))?;
    let mut found = Vec::new();
    for (key, item) in document.as_table().iter() {
        let Some(value) = item.as_value() else {
            return Err(format!(
                "{key}: settings are plain keys (`{key} = …`), not tables"
            ));
        };
        let text = match value {
            toml_edit::Value::String(s) => s.value().clone(),
            toml_edit::Value::Integer(i) => i.value().to_string(),
            toml_edit::Value::Float(f) => f.value().to_string(),
            toml_edit::Value::Boolean(b) => b.value().to_string(),
            _ => {
                return Err(format!(
                    "{key}: a string, number or boolean, not {}",
                    value.type_name()
                ))
            }
        };
        found.push((variable_of(key)?, text));
    }
    Ok(found)
}

/// `http` → `IM_HTTP`; `IM_HTTP` stays.
fn variable_of(key: &str) -> Result<String, String> {
    let name = if key.starts_with("IM_") || key.starts_with("OTEL_") {
        key.to_string()
    } else {
        format!("IM_{}", key.to_ascii_uppercase())
    };
    if name
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(name)
    } else {
        Err(format!(
            "{key:?} is not a setting's name (letters, digits and _)"
        ))
    }
}

/// The file named by `--config FILE` / `--config=FILE` among `args`, or
/// by `IM_CONFIG`.
pub fn path_from(args: &[String]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("IM_CONFIG")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Read the file and set every setting the environment does not have yet.
/// Call first thing in `main`, before the flags are parsed (they read the
/// environment) and before threads start.
pub fn load(path: &Path) -> crate::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| crate::config_error!("--config {}: {error}", path.display()))?;
    let settings = settings(&text)
        .map_err(|error| crate::config_error!("--config {}: {error}", path.display()))?;
    for (name, value) in &settings {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(settings)
}

/// [`load`] the file this process's arguments (or `IM_CONFIG`) name, if
/// any; exits with the reason when it cannot be read.
pub fn load_from_args() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = path_from(&args) {
        if let Err(error) = load(&path) {
            eprintln!("{error}; fix the file or leave out --config");
            std::process::exit(2);
        }
    }
}

/// A setting as `imctl config print` shows it: secrets masked.
pub fn shown(name: &str, value: &str) -> String {
    let secret = ["SECRET", "PASSWORD", "TOKEN", "KEY"]
        .iter()
        .any(|word| name.contains(word));
    if secret && !value.is_empty() {
        "****".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests;
