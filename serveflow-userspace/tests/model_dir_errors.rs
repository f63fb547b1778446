//! Broken and mismatched models directories: each is one error naming the file, the field and
//! the fix, never a panic or a model that loads wrong. Starts from the bundled service models.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on purpose"
)]

use std::path::{Path, PathBuf};

use serveflow::model::dir::{Manifest, ModelDir};

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/service")
}

/// A copy of the bundled service models with `edit` applied, and the error loading it.
fn load_broken(edit: impl FnOnce(&Path)) -> String {
    let dir = tempfile::tempdir().unwrap();
    for f in ["serveflow-model.toml", "first.txt", "fast.txt", "slow.onnx"] {
        std::fs::copy(bundled().join(f), dir.path().join(f)).unwrap();
    }
    ModelDir::load(dir.path()).expect("the unedited copy loads");
    edit(dir.path());
    match ModelDir::load(dir.path()) {
        Ok(_) => panic!("a broken models directory loaded"),
        Err(e) => e.to_string(),
    }
}

fn edit_manifest(dir: &Path, from: &str, to: &str) {
    let p = dir.join("serveflow-model.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{from:?} not in the manifest");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn missing_directory_or_manifest() {
    let e = ModelDir::load(Path::new("/nonexistent/models")).unwrap_err();
    assert!(
        e.to_string()
            .contains("is /nonexistent/models a models directory?"),
        "{e}"
    );
    let e = load_broken(|d| std::fs::remove_file(d.join("serveflow-model.toml")).unwrap());
    assert!(e.contains("serveflow-model.toml: (file)"), "{e}");
}

#[test]
fn manifest_syntax_and_unknown_fields() {
    let e = load_broken(|d| edit_manifest(d, "task = ", "task = = "));
    assert!(e.contains("(syntax)"), "{e}");
    let e = load_broken(|d| edit_manifest(d, "[fast]\n", "[fast]\ncolour = \"red\"\n"));
    assert!(e.contains("unknown field `colour`"), "{e}");
}

/// Rewrites the manifest through its parsed form.
fn edit_parsed(dir: &Path, edit: impl FnOnce(&mut Manifest)) {
    let p = dir.join("serveflow-model.toml");
    let mut m: Manifest = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut m);
    std::fs::write(&p, toml::to_string(&m).unwrap()).unwrap();
}

fn manifest() -> Manifest {
    toml::from_str(&std::fs::read_to_string(bundled().join("serveflow-model.toml")).unwrap())
        .unwrap()
}

#[test]
fn class_count_must_match_both_models() {
    let k = manifest().classes.len();
    let e = load_broken(|d| {
        edit_parsed(d, |m| {
            m.classes.pop();
            for r in
                std::iter::once(&mut m.routing).chain(m.early.iter_mut().map(|e| &mut e.routing))
            {
                r.per_class.remove("other");
            }
        })
    });
    assert!(
        e.contains(&format!(
            "fast.txt: classes: the fast model has {k} outputs, the manifest {} classes",
            k - 1
        )),
        "{e}"
    );
}

#[test]
fn feature_sets_must_match_model_inputs() {
    let e = load_broken(|d| edit_parsed(d, |m| m.fast.features.push_str(",nprint")));
    assert!(
        e.contains("fast.features") && e.contains("retrain, or fix the manifest"),
        "{e}"
    );
    let e = load_broken(|d| edit_parsed(d, |m| m.slow.packets += 1));
    assert!(e.contains("slow.onnx: slow.model"), "{e}");
    assert!(e.contains("retrain, or fix the manifest"), "{e}");
    let e = load_broken(|d| edit_parsed(d, |m| m.fast.features = "colour".into()));
    assert!(e.contains("fast.features"), "{e}");
    let e = load_broken(|d| edit_parsed(d, |m| m.fast.packets = 0));
    assert!(e.contains("fast.packets: must be 1..=64"), "{e}");
    // An early stage may not wait for more packets than the stage after it.
    let m = manifest();
    let e = load_broken(|d| edit_parsed(d, |m| m.early[0].packets = m.fast.packets + 1));
    assert!(
        e.contains(&format!(
            "packets: stages wait for [{}, {}, {}] packets",
            m.fast.packets + 1,
            m.fast.packets,
            m.slow.packets
        )),
        "{e}"
    );
}

#[test]
fn temperatures_are_checked() {
    let e = load_broken(|d| edit_parsed(d, |m| m.routing.temperature = 0.0));
    assert!(e.contains("routing.temperature"), "{e}");
    let e = load_broken(|d| edit_parsed(d, |m| m.early[0].routing.temperature = f64::NAN));
    assert!(e.contains("early[0].routing.temperature"), "{e}");
}

#[test]
fn unreadable_or_corrupt_model_files() {
    let e = load_broken(|d| std::fs::remove_file(d.join("fast.txt")).unwrap());
    assert!(e.contains("fast.txt: fast.model"), "{e}");
    let e = load_broken(|d| {
        std::fs::write(d.join("fast.txt"), "tree\nversion=v4\nnum_class=").unwrap()
    });
    assert!(e.contains("fast.txt: fast.model"), "{e}");
    let e = load_broken(|d| {
        let p = d.join("slow.onnx");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    });
    assert!(e.contains("slow.onnx: slow.model"), "{e}");
    let e = load_broken(|d| std::fs::write(d.join("slow.onnx"), b"not a model").unwrap());
    assert!(e.contains("slow.onnx: slow.model"), "{e}");
}

#[test]
fn routing_thresholds_are_checked() {
    let e = load_broken(|d| edit_manifest(d, "threshold = -1.0", "threshold = 1.5"));
    assert!(
        e.contains("routing.threshold: must be within -1..=1"),
        "{e}"
    );
    let e = load_broken(|d| {
        edit_manifest(
            d,
            "[routing.per_class]",
            "[routing.per_class]\nNoSuchApp = 0.1",
        )
    });
    assert!(e.contains("\"NoSuchApp\" is not one of the classes"), "{e}");
    let e = load_broken(|d| edit_manifest(d, "least_confidence", "vibes"));
    assert!(e.contains("(syntax)"), "{e}");
}

/// The cases: a `fast.txt` cut to 200 bytes (it once loaded as a model of no trees),
/// a file cut before `end of trees`, NaN leaves, trees that do not cover the classes, a
/// cycle between nodes, and a model path that is not a regular file.
#[test]
fn truncated_and_corrupt_tree_models_name_the_fix() {
    let cut = |n: usize| {
        move |d: &Path| {
            let p = d.join("fast.txt");
            let text = std::fs::read_to_string(&p).unwrap();
            std::fs::write(&p, &text[..n]).unwrap();
        }
    };
    let e = load_broken(cut(200));
    assert!(e.contains("fast.txt: fast.model"), "{e}");
    assert!(e.contains("no trees"), "{e}");
    let full = std::fs::read_to_string(bundled().join("fast.txt")).unwrap();
    let end = full.find("end of trees").unwrap();
    let e = load_broken(cut(end - 1));
    assert!(e.contains("cut short"), "{e}");

    // Sets the first value of the first `key=` line of fast.txt.
    let replace = |key: &'static str, value: &'static str| {
        move |d: &Path| {
            let p = d.join("fast.txt");
            let text = std::fs::read_to_string(&p).unwrap();
            let mut done = false;
            let edited: Vec<String> = text
                .lines()
                .map(|l| match l.strip_prefix(key) {
                    Some(rest) if !done => {
                        done = true;
                        let mut tokens: Vec<&str> = rest.split(' ').collect();
                        tokens[0] = value;
                        format!("{key}{}", tokens.join(" "))
                    }
                    _ => l.to_owned(),
                })
                .collect();
            assert!(done, "{key:?} not in fast.txt");
            std::fs::write(&p, edited.join("\n") + "\n").unwrap();
        }
    };
    let e = load_broken(replace("leaf_value=", "nan"));
    assert!(e.contains("not a finite number"), "{e}");
    let e = load_broken(replace("num_tree_per_iteration=", "1"));
    assert!(e.contains("do not cover the classes"), "{e}");
    let e = load_broken(replace("left_child=", "0"));
    assert!(e.contains("child out of range"), "{e}");
    let e = load_broken(|d| {
        std::fs::remove_file(d.join("fast.txt")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join("fast.txt")).unwrap();
    });
    assert!(e.contains("not a model file"), "{e}");
}

/// `serveflow models --check` runs exactly these checks; the self-test is part of loading.
#[test]
fn loading_ends_with_a_self_test() {
    let models = ModelDir::load(&bundled()).unwrap();
    models.self_test().unwrap();
}

/// `needs_payload` resolves to the stage's payload columns, survives a rewrite of the
/// manifest, and is left out of manifests that do not set it.
#[test]
fn needs_payload_names_the_payload_columns() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["serveflow-model.toml", "first.txt", "fast.txt", "slow.onnx"] {
        std::fs::copy(bundled().join(f), dir.path().join(f)).unwrap();
    }
    let loaded = ModelDir::load(dir.path()).unwrap();
    assert!(loaded.manifest.early[0].needs_payload);
    let cols = loaded.early[0].payload_columns.expect("payload columns");
    let names = loaded.early[0].stage.features.names();
    assert_eq!(
        [names[cols[0]].as_str(), names[cols[1]].as_str()],
        ["st_fwd_payload", "st_bwd_payload"]
    );
    loaded.save_manifest().unwrap();
    let text = std::fs::read_to_string(dir.path().join("serveflow-model.toml")).unwrap();
    assert_eq!(text.matches("needs_payload = true").count(), 1, "{text}");
    edit_manifest(dir.path(), "needs_payload = true\n", "");
    let loaded = ModelDir::load(dir.path()).unwrap();
    assert_eq!(loaded.early[0].payload_columns, None);
    loaded.save_manifest().unwrap();
    let text = std::fs::read_to_string(dir.path().join("serveflow-model.toml")).unwrap();
    assert!(!text.contains("needs_payload"), "{text}");
}
