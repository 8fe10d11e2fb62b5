//! The verifier head: how much to trust a finished candidate, for the weighted vote.
//! After the candidate's own tokens, a short verification suffix (e.g. "\nIs the answer
//! above correct?") is fed to its cache; the final hidden state of the suffix's last
//! token (after the final norm) goes through a linear layer and a sigmoid. Weights in
//! safetensors (`w` (1, d), `b` (1)), the suffix in `verifier.json`.

use safetensors::SafeTensors;

use super::switcher::f32_tensor_of;
use crate::error::{Error, Result};

/// `verifier.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct VerifierConfig {
    /// Fed after a candidate's tokens before its last hidden state is read.
    pub suffix: String,
}

/// A trained verifier head.
#[derive(Debug, Clone)]
pub struct Verifier {
    pub config: VerifierConfig,
    /// (d)
    w: Vec<f32>,
    b: f32,
}

fn bad(msg: String) -> Error {
    Error::InvalidArgument(format!("verifier: {msg}"))
}

impl Verifier {
    /// Reads `verifier.json` and the weights for a model of width `d`.
    pub fn from_files(config_json: &str, safetensors: &[u8], d: usize) -> Result<Self> {
        let config: VerifierConfig =
            serde_json::from_str(config_json).map_err(|e| bad(format!("verifier.json: {e}")))?;
        if config.suffix.is_empty() {
            return Err(bad("the suffix is empty".into()));
        }
        let st = SafeTensors::deserialize(safetensors).map_err(|e| bad(format!("weights: {e}")))?;
        Ok(Verifier {
            w: f32_tensor_of(&st, "w", &[1, d], "verifier")?,
            b: f32_tensor_of(&st, "b", &[1], "verifier")?[0],
            config,
        })
    }

    /// Reads a verifier directory (`verifier.json` + `verifier.safetensors`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path, d: usize) -> Result<Self> {
        let json = crate::lora::read_in(dir, "verifier.json")?;
        let weights = crate::lora::read_in(dir, "verifier.safetensors")?;
        let json = String::from_utf8(json).map_err(|_| bad("verifier.json is not UTF-8".into()))?;
        Self::from_files(&json, &weights, d)
    }

    /// `sigmoid(w . h + b)` for the last hidden state `h` (d).
    pub fn score(&self, h: &[f32]) -> f32 {
        assert_eq!(
            h.len(),
            self.w.len(),
            "the hidden state must be the model width"
        );
        let z: f32 = self.w.iter().zip(h).map(|(w, x)| w * x).sum::<f32>() + self.b;
        1.0 / (1.0 + (-z).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::{tensor::TensorView, Dtype};

    fn weights(w: &[f32], b: f32) -> Vec<u8> {
        let wb: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bb = b.to_le_bytes().to_vec();
        let views = vec![
            (
                "w",
                TensorView::new(Dtype::F32, vec![1, w.len()], &wb).unwrap(),
            ),
            ("b", TensorView::new(Dtype::F32, vec![1], &bb).unwrap()),
        ];
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn the_score_matches_a_hand_computed_reference() {
        let v = Verifier::from_files(
            r#"{"suffix": "\nCorrect?"}"#,
            &weights(&[0.5, -1.0, 2.0], -0.25),
            3,
        )
        .unwrap();
        // z = 0.5 - 2 + 6 - 0.25 = 4.25; sigmoid = 0.985936.
        assert!((v.score(&[1.0, 2.0, 3.0]) - 0.985_936).abs() < 1e-5);
        // z = -0.25: 0.437823.
        assert!((v.score(&[0.0, 0.0, 0.0]) - 0.437_823).abs() < 1e-5);
    }

    #[test]
    fn a_verifier_for_another_width_or_without_a_suffix_is_refused() {
        let e = Verifier::from_files(r#"{"suffix": "?"}"#, &weights(&[1.0; 4], 0.0), 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("verifier") && e.contains("[1, 3]"), "{e}");
        let e = Verifier::from_files(r#"{"suffix": ""}"#, &weights(&[1.0; 3], 0.0), 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("suffix"), "{e}");
    }
}
