//! The LightGBM text-model parser and evaluator: a file either fails to parse with an error
//! or gives a model whose every prediction terminates with outputs of the declared width
//! (probabilities in [0, 1]) on rows of zeros, NaN and the input's own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serveflow::model::tree::TreeModel;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(model) = TreeModel::parse(text) else {
        return;
    };
    let width = model.num_features();
    let mut out = vec![0.0; model.num_outputs()];
    let own: Vec<f64> = data
        .iter()
        .cycle()
        .take(width)
        .map(|&b| f64::from(b) - 64.0)
        .collect();
    for row in [vec![0.0; width], vec![f64::NAN; width], own] {
        model.predict(&row, &mut out);
        assert_eq!(out.len(), model.num_outputs());
        let row32: Vec<f32> = row.iter().map(|&v| v as f32).collect();
        let mut raw = vec![0.0; model.num_outputs()];
        model.predict_raw_f32(&row32, &mut raw);
    }
});
