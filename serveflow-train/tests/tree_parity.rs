//! The native evaluator (`serveflow::model::tree`) against LightGBM itself (lightgbm3): models
//! trained here with NaNs, exact zeros, negative values and categorical features, in every
//! missing-value mode, must predict bit-identical probabilities and raw scores on every row.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::ffi::{c_char, c_void, CString};

use lightgbm3::Booster;
use serde_json::json;
use serveflow::model::tree::TreeModel;

const FEATURES: usize = 12;

/// Deterministic pseudo-random numbers (64-bit LCG), so the test is reproducible.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Rows with NaNs (~10%), exact zeros, negatives; features 3 and 7 are categories 0..40.
fn data(rows: usize, classes: usize, seed: u64) -> (Vec<f64>, Vec<f32>) {
    let mut rng = Lcg(seed);
    let mut x = Vec::with_capacity(rows * FEATURES);
    let mut y = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut row = [0.0f64; FEATURES];
        for (j, v) in row.iter_mut().enumerate() {
            *v = match j {
                3 | 7 => (rng.next() * 40.0).floor(),
                _ if rng.next() < 0.1 => f64::NAN,
                _ if rng.next() < 0.1 => 0.0,
                _ => rng.next() * 20.0 - 5.0,
            };
        }
        let score = row[0].max(0.0) * 0.3
            + if (row[3] as i64) % 3 == 0 { 2.0 } else { 0.0 }
            + if row[1].is_nan() { 1.5 } else { row[1] * 0.1 }
            + if row[7] < 10.0 { 1.0 } else { 0.0 }
            + rng.next() * 2.0;
        y.push(((score as usize) % classes) as f32);
        x.extend_from_slice(&row);
    }
    (x, y)
}

/// The decision_type values used by the model's splits.
fn decision_types(text: &str) -> std::collections::BTreeSet<u8> {
    text.lines()
        .filter_map(|l| l.strip_prefix("decision_type="))
        .flat_map(|v| v.split_whitespace().filter_map(|d| d.parse().ok()))
        .collect()
}

/// Trains with `params`, checks parity, and returns the decision types the model used.
fn check(params: serde_json::Value, classes: usize) -> std::collections::BTreeSet<u8> {
    let (x, y) = data(3000, classes, 7);
    let text = train_text(&x, &y, &params);
    let booster = Booster::from_string(&text).unwrap();
    let model = TreeModel::parse(&text).unwrap();
    assert_eq!(model.num_features(), FEATURES);
    let outputs = model.num_outputs();

    let (test_x, _) = data(2000, classes, 99);
    let theirs = booster.predict(&test_x, FEATURES as i32, true).unwrap();
    let theirs_raw = booster.raw_scores(&test_x, FEATURES as i32, true).unwrap();
    let mut ours = vec![0.0; outputs];
    let mut ours_raw = vec![0.0; outputs];
    let mut wide_raw = vec![0.0; outputs];
    for (r, row) in test_x.chunks(FEATURES).enumerate() {
        // The f32 path serving uses (branch-free when the model allows) equals the general
        // one on the same values.
        let row32: Vec<f32> = row.iter().map(|v| *v as f32).collect();
        let wide: Vec<f64> = row32.iter().map(|v| f64::from(*v)).collect();
        model.predict_raw(&wide, &mut wide_raw);
        model.predict_raw_f32(&row32, &mut ours_raw);
        assert_eq!(
            wide_raw.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            ours_raw.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "row {r}: f32 path"
        );
        model.predict(row, &mut ours);
        model.predict_raw(row, &mut ours_raw);
        for k in 0..outputs {
            let (a, b) = (ours[k], theirs[r * outputs + k]);
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "row {r} output {k}: ours {a}, lightgbm {b}"
            );
            let (a, b) = (ours_raw[k], theirs_raw[r * outputs + k]);
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "row {r} raw {k}: ours {a}, lightgbm {b}"
            );
        }
    }
    decision_types(&text)
}

/// Missing-value mode of a decision type: 0 none, 1 zero, 2 NaN.
fn missing(types: &std::collections::BTreeSet<u8>, mode: u8) -> bool {
    types.iter().any(|d| (d >> 2) & 3 == mode)
}

/// Trains through LightGBM's C API, because dataset parameters (categorical_feature,
/// zero_as_missing, use_missing) must reach `LGBM_DatasetCreateFromMat`, which lightgbm3's
/// safe `Dataset` constructors call with none. Returns the model as text.
fn train_text(x: &[f64], y: &[f32], params: &serde_json::Value) -> String {
    let iterations = params["num_iterations"].as_u64().unwrap_or(10);
    let params: String = params
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let params = CString::new(params).unwrap();
    let label = CString::new("label").unwrap();
    let rows = (x.len() / FEATURES) as i32;
    // SAFETY: plain C API calls on buffers that outlive them; every return code is checked,
    // and both handles are freed before returning.
    unsafe {
        let mut dataset: lightgbm3_sys::DatasetHandle = std::ptr::null_mut();
        assert_eq!(
            lightgbm3_sys::LGBM_DatasetCreateFromMat(
                x.as_ptr().cast::<c_void>(),
                lightgbm3_sys::C_API_DTYPE_FLOAT64 as i32,
                rows,
                FEATURES as i32,
                1,
                params.as_ptr(),
                std::ptr::null_mut(),
                &mut dataset,
            ),
            0
        );
        assert_eq!(
            lightgbm3_sys::LGBM_DatasetSetField(
                dataset,
                label.as_ptr(),
                y.as_ptr().cast::<c_void>(),
                y.len() as i32,
                lightgbm3_sys::C_API_DTYPE_FLOAT32 as i32,
            ),
            0
        );
        let mut booster: lightgbm3_sys::BoosterHandle = std::ptr::null_mut();
        assert_eq!(
            lightgbm3_sys::LGBM_BoosterCreate(dataset, params.as_ptr(), &mut booster),
            0
        );
        for _ in 0..iterations {
            let mut finished = 0;
            assert_eq!(
                lightgbm3_sys::LGBM_BoosterUpdateOneIter(booster, &mut finished),
                0
            );
        }
        let mut len = 0i64;
        let mut buf = vec![0u8; 1 << 22];
        assert_eq!(
            lightgbm3_sys::LGBM_BoosterSaveModelToString(
                booster,
                0,
                -1,
                0,
                buf.len() as i64,
                &mut len,
                buf.as_mut_ptr().cast::<c_char>(),
            ),
            0
        );
        assert!((len as usize) < buf.len(), "model larger than the buffer");
        lightgbm3_sys::LGBM_BoosterFree(booster);
        lightgbm3_sys::LGBM_DatasetFree(dataset);
        buf.truncate((len as usize).saturating_sub(1));
        String::from_utf8(buf).unwrap()
    }
}

fn base(objective: &str, classes: usize) -> serde_json::Value {
    json!({
        "objective": objective,
        "num_class": classes,
        "num_iterations": 40,
        "num_leaves": 31,
        "min_data_in_leaf": 5,
        "categorical_feature": "3,7",
        "max_cat_to_onehot": 4,
        "num_threads": 1,
        "deterministic": true,
        "verbosity": -1,
        "seed": 1,
    })
}

#[test]
fn multiclass_nan_missing_and_categorical() {
    let types = check(base("multiclass", 5), 5);
    assert!(
        types.iter().any(|d| d & 1 == 1),
        "no categorical split: {types:?}"
    );
    assert!(missing(&types, 2), "no NaN-missing split: {types:?}");
}

#[test]
fn multiclass_zero_as_missing() {
    let mut p = base("multiclass", 4);
    p["zero_as_missing"] = json!(true);
    let types = check(p, 4);
    assert!(missing(&types, 1), "no Zero-missing split: {types:?}");
}

#[test]
fn multiclass_without_missing_handling() {
    let mut p = base("multiclass", 3);
    p["use_missing"] = json!(false);
    let types = check(p, 3);
    assert!(
        missing(&types, 0),
        "no split without missing handling: {types:?}"
    );
}

#[test]
fn binary_with_sigmoid() {
    let mut p = base("binary", 1);
    p.as_object_mut().unwrap().remove("num_class");
    p["sigmoid"] = json!(0.7);
    check(p, 2);
}
