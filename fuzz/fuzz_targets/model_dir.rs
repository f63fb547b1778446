//! The models-directory loader on arbitrary manifests next to the bundled service models:
//! it either loads (and the loaded cascade classifies a row) or fails with an error naming
//! the file and field; it never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serveflow::model::dir::ModelDir;

/// A copy of the bundled service models, made once per process.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let bundled = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/service");
        for entry in std::fs::read_dir(bundled).expect("bundled models") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = dir();
    if std::fs::write(dir.path().join("serveflow-model.toml"), data).is_err() {
        return;
    }
    match ModelDir::load(dir.path()) {
        Ok(models) => {
            let width = models.fast.features.width();
            let mut out = vec![0.0; models.fast.model.num_outputs()];
            models.fast.model.predict(&vec![0.0; width], &mut out);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
