//! Accuracy, macro-F1 and the most frequent confusions of a set of predictions.

use serde::Serialize;

/// Scores of one model on one split.
#[derive(Clone, Debug, Serialize)]
pub struct Scores {
    /// Rows scored.
    pub rows: usize,
    /// Share of rows predicted right.
    pub accuracy: f64,
    /// Mean F1 over the classes present in the truth.
    pub macro_f1: f64,
    /// Most frequent (truth, predicted, count) mistakes.
    pub top_confusions: Vec<(String, String, usize)>,
}

/// Scores `predicted` against `truth` (class indices) for `classes`.
pub fn score(truth: &[usize], predicted: &[usize], classes: &[String]) -> Scores {
    let k = classes.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let correct: usize = (0..k).map(|c| confusion[c][c]).sum();
    let mut f1s = Vec::new();
    for (c, row) in confusion.iter().enumerate() {
        let support: usize = row.iter().sum();
        if support == 0 {
            continue;
        }
        let predicted_c: usize = (0..k).map(|t| confusion[t][c]).sum();
        let tp = row[c] as f64;
        let precision = if predicted_c == 0 {
            0.0
        } else {
            tp / predicted_c as f64
        };
        let recall = tp / support as f64;
        f1s.push(if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        });
    }
    let mut mistakes: Vec<(String, String, usize)> = (0..k)
        .flat_map(|t| (0..k).map(move |p| (t, p)))
        .filter(|(t, p)| t != p && confusion[*t][*p] > 0)
        .map(|(t, p)| (classes[t].clone(), classes[p].clone(), confusion[t][p]))
        .collect();
    mistakes.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    mistakes.truncate(5);
    Scores {
        rows: truth.len(),
        accuracy: correct as f64 / truth.len().max(1) as f64,
        macro_f1: f1s.iter().sum::<f64>() / f1s.len().max(1) as f64,
        top_confusions: mistakes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_worked_scores() {
        let classes: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        // truth a a b b, predicted a b b b: a: P=1 R=.5 F1=.667; b: P=.667 R=1 F1=.8
        let s = score(&[0, 0, 1, 1], &[0, 1, 1, 1], &classes);
        assert!((s.accuracy - 0.75).abs() < 1e-12);
        assert!((s.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
        assert_eq!(s.top_confusions, vec![("a".into(), "b".into(), 1)]);
    }
}
