//! Where the models come from when the operator names none: the bundled models directory of
//! the task, trained by `serveflow train` from `../shared/data` and shipped with serveflow.
//!
//! Looked up, in order: `$SERVEFLOW_MODELS/<task>`, `<exe>/../share/serveflow/models/<task>`
//! (an installed appliance, see `deploy/`), and the source tree's `models/<task>` (a
//! checkout, `cargo run`).

use std::path::{Path, PathBuf};

use super::dir::{ModelDir, ModelDirError, MANIFEST};
use crate::{labels::Task, limits::Choice as _};
/// The directories searched for `task`, in order.
pub fn candidates(task: Task) -> Vec<PathBuf> {
    let task = task.name();
    let mut out = Vec::new();
    if let Some(root) = std::env::var_os("SERVEFLOW_MODELS") {
        out.push(PathBuf::from(root).join(task));
    }
    if let Some(bin_dir) = std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
    {
        out.push(bin_dir.join("../share/serveflow/models").join(task));
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models")
            .join(task),
    );
    out
}

/// The models directory to use: `explicit` when given, else the first bundled directory of
/// `task` that has a manifest.
pub fn resolve(explicit: Option<&Path>, task: Task) -> Result<PathBuf, ModelDirError> {
    match explicit {
        Some(dir) => Ok(dir.to_owned()),
        None => first_with_manifest(&candidates(task), task),
    }
}

/// The first of `searched` that holds a manifest.
fn first_with_manifest(searched: &[PathBuf], task: Task) -> Result<PathBuf, ModelDirError> {
    let task = task.name();
    searched
        .iter()
        .find(|d| d.join(MANIFEST).is_file())
        // Printed and written into reports: `/opt/serveflow/models/service`, not
        // `.../serveflow-userspace/../models/service`.
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        .ok_or_else(|| ModelDirError {
            path: searched.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
            field: "(bundled models)".into(),
            problem: format!(
                "no bundled `{task}` models found: pass --models DIR, set SERVEFLOW_MODELS, or install models/ (see deploy/README.md)"
            ),
        })
}

/// Loads `explicit`, or the bundled models of `task`.
pub fn load(explicit: Option<&Path>, task: Task) -> Result<ModelDir, ModelDirError> {
    ModelDir::load(&resolve(explicit, task)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
    use super::*;

    #[test]
    fn explicit_directory_wins_and_missing_task_is_explained() {
        let dir = Path::new("/nonexistent/models");
        assert_eq!(resolve(Some(dir), Task::Service).unwrap(), dir);
        let e = first_with_manifest(&[dir.join("device")], Task::Device)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no bundled `device` models"), "{e}");
        assert!(e.contains("--models DIR"), "{e}");
    }

    #[test]
    fn found_directories_are_named_without_dot_dot() {
        let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/service");
        let found = first_with_manifest(&[bundled], Task::Service).unwrap();
        assert!(found.is_absolute(), "{}", found.display());
        assert!(
            !found
                .components()
                .any(|c| c == std::path::Component::ParentDir),
            "{}",
            found.display()
        );
    }
}
