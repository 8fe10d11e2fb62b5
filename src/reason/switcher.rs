//! The switcher: decides per prompt whether to reason (turn the reasoning adapter on)
//! or answer directly, from the prompt's own prefill, with no extra forward pass.
//!
//! Features: the mean over the prompt's tokens of the final hidden states (after the
//! final RMSNorm, what the output head sees), pooled during the base prefill; when the
//! prompt is prefilled in chunks, chunk means are combined by an EMA
//! (`ema_alpha`; with one chunk it is the plain mean). Head: an MLP
//! `d -> hidden -> 1` with ReLU and a sigmoid, weights in safetensors (`w1` (hidden, d),
//! `b1` (hidden), `w2` (1, hidden), `b2` (1)), settings in a small JSON.

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// `switcher.json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct SwitcherConfig {
    pub hidden: usize,
    /// Reason when p(reason) >= threshold.
    pub threshold: f32,
    /// Only "mean" (of the final hidden states over the prompt tokens).
    pub pooling: String,
    /// Weight of the newest chunk's mean when the prompt is prefilled in chunks.
    pub ema_alpha: f32,
    /// Prefill chunk length the features were computed with.
    pub chunk: usize,
}

/// Which way a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The switcher decides.
    Auto,
    /// Answer directly (adapter off).
    Chat,
    /// Reason (adapter on, candidates, vote).
    Reason,
}

/// A decision: the mode taken and the switcher's probability of reasoning (None when
/// the caller fixed the mode).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Route {
    pub mode: Mode,
    #[serde(rename = "pReason")]
    pub p_reason: Option<f32>,
}

/// A trained switcher head.
#[derive(Debug, Clone)]
pub struct Switcher {
    pub config: SwitcherConfig,
    d: usize,
    /// (hidden, d)
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// (hidden)
    w2: Vec<f32>,
    b2: f32,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(format!("switcher: {}", msg.into()))
}

fn f32_tensor(st: &SafeTensors, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    f32_tensor_of(st, name, shape, "switcher")
}

/// The F32 tensor `name` of `shape` in the weights of `owner` ("switcher"), or a clear
/// error naming it.
pub(super) fn f32_tensor_of(
    st: &SafeTensors,
    name: &str,
    shape: &[usize],
    owner: &str,
) -> Result<Vec<f32>> {
    let bad = |m: String| Error::InvalidArgument(format!("{owner}: {m}"));
    let t = st
        .tensor(name)
        .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
    if t.dtype() != Dtype::F32 || t.shape() != shape {
        return Err(bad(format!(
            "tensor `{name}` is {:?} {:?}; expected F32 {shape:?} (made for another model?)",
            t.dtype(),
            t.shape()
        )));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl Switcher {
    /// Reads `switcher.json` and the weights for a model of width `d`.
    pub fn from_files(config_json: &str, safetensors: &[u8], d: usize) -> Result<Self> {
        let config: SwitcherConfig =
            serde_json::from_str(config_json).map_err(|e| bad(format!("switcher.json: {e}")))?;
        if config.pooling != "mean" {
            return Err(bad(format!(
                "pooling `{}`: only \"mean\" is supported",
                config.pooling
            )));
        }
        if !(0.0..=1.0).contains(&config.threshold) {
            return Err(bad(format!(
                "threshold {} must be in [0, 1]",
                config.threshold
            )));
        }
        if !(0.0..=1.0).contains(&config.ema_alpha) || config.ema_alpha == 0.0 {
            return Err(bad(format!(
                "ema_alpha {} must be in (0, 1]",
                config.ema_alpha
            )));
        }
        let st = SafeTensors::deserialize(safetensors).map_err(|e| bad(format!("weights: {e}")))?;
        let h = config.hidden;
        Ok(Switcher {
            w1: f32_tensor(&st, "w1", &[h, d])?,
            b1: f32_tensor(&st, "b1", &[h])?,
            w2: f32_tensor(&st, "w2", &[1, h])?,
            b2: f32_tensor(&st, "b2", &[1])?[0],
            d,
            config,
        })
    }

    /// Reads a switcher directory (`switcher.json` + `switcher.safetensors`).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: &std::path::Path, d: usize) -> Result<Self> {
        let json = crate::lora::read_in(dir, "switcher.json")?;
        let weights = crate::lora::read_in(dir, "switcher.safetensors")?;
        let json = String::from_utf8(json).map_err(|_| bad("switcher.json is not UTF-8"))?;
        Self::from_files(&json, &weights, d)
    }

    /// p(reason) for pooled features (d).
    pub fn prob(&self, features: &[f32]) -> f32 {
        assert_eq!(features.len(), self.d, "features must be the model width");
        let z: f32 = self
            .w1
            .chunks_exact(self.d)
            .zip(&self.b1)
            .zip(&self.w2)
            .map(|((row, b), w2)| {
                let pre: f32 = row.iter().zip(features).map(|(w, x)| w * x).sum::<f32>() + b;
                w2 * pre.max(0.0)
            })
            .sum::<f32>()
            + self.b2;
        1.0 / (1.0 + (-z).exp())
    }

    /// The route of a request in `mode`: `auto` follows the head; a fixed mode is
    /// kept, with the head's probability still reported (the features cost nothing).
    pub fn route(&self, mode: Mode, features: &[f32]) -> Route {
        let p = self.prob(features);
        let mode = match mode {
            Mode::Auto if p >= self.config.threshold => Mode::Reason,
            Mode::Auto => Mode::Chat,
            fixed => fixed,
        };
        Route {
            mode,
            p_reason: Some(p),
        }
    }
}

/// Pools the final hidden states of a prompt prefilled in chunks: the mean of each
/// chunk, combined by an EMA (the first chunk's mean starts it).
#[derive(Debug, Clone)]
pub struct Pooler {
    alpha: f32,
    value: Option<Vec<f32>>,
}

impl Pooler {
    pub fn new(ema_alpha: f32) -> Self {
        Pooler {
            alpha: ema_alpha,
            value: None,
        }
    }

    /// Adds a chunk: `sum` of its rows' hidden states (d) over `rows` rows.
    pub fn add_chunk(&mut self, sum: &[f32], rows: usize) {
        let mean = sum.iter().map(|s| s / rows as f32);
        match &mut self.value {
            None => self.value = Some(mean.collect()),
            Some(v) => {
                for (v, m) in v.iter_mut().zip(mean) {
                    *v = self.alpha * m + (1.0 - self.alpha) * *v;
                }
            }
        }
    }

    /// The pooled features, once a chunk was added.
    pub fn features(&self) -> Option<&[f32]> {
        self.value.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn weights(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, v)| {
                (
                    n.to_string(),
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, s, d)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    const JSON: &str =
        r#"{"hidden": 2, "threshold": 0.5, "pooling": "mean", "ema_alpha": 0.5, "chunk": 64}"#;

    fn fixture() -> Switcher {
        // d = 3, hidden = 2.
        let st = weights(&[
            ("w1", vec![2, 3], vec![1.0, -1.0, 0.5, 0.0, 2.0, -1.0]),
            ("b1", vec![2], vec![0.1, -0.2]),
            ("w2", vec![1, 2], vec![1.5, -2.0]),
            ("b2", vec![1], vec![-0.25]),
        ]);
        Switcher::from_files(JSON, &st, 3).unwrap()
    }

    #[test]
    fn the_head_matches_a_hand_computed_reference() {
        let s = fixture();
        // x = (1, 2, 3): h1 = 1 - 2 + 1.5 + 0.1 = 0.6; h2 = 0 + 4 - 3 - 0.2 = 0.8;
        // z = 1.5 * 0.6 - 2 * 0.8 - 0.25 = -0.95; p = 1 / (1 + e^0.95) = 0.278885.
        assert!((s.prob(&[1.0, 2.0, 3.0]) - 0.278_885).abs() < 1e-5);
        // x = (2, 0, 0): h1 = 2.1, h2 = relu(-0.2) = 0; z = 3.15 - 0.25 = 2.9; p = 0.94784.
        assert!((s.prob(&[2.0, 0.0, 0.0]) - 0.947_846).abs() < 1e-5);
        assert_eq!(s.route(Mode::Auto, &[2.0, 0.0, 0.0]).mode, Mode::Reason);
        assert_eq!(s.route(Mode::Auto, &[1.0, 2.0, 3.0]).mode, Mode::Chat);
        let fixed = s.route(Mode::Reason, &[1.0, 2.0, 3.0]);
        assert_eq!(fixed.mode, Mode::Reason);
        assert!((fixed.p_reason.unwrap() - 0.278_885).abs() < 1e-5);
    }

    #[test]
    fn pooling_is_the_mean_for_one_chunk_and_an_ema_across_chunks() {
        let mut p = Pooler::new(0.5);
        p.add_chunk(&[2.0, 4.0], 2);
        assert_eq!(p.features(), Some(&[1.0, 2.0][..]));
        p.add_chunk(&[9.0, 0.0], 3);
        assert_eq!(
            p.features(),
            Some(&[2.0, 1.0][..]),
            "0.5 * (3, 0) + 0.5 * (1, 2)"
        );
    }

    #[test]
    fn a_switcher_for_another_model_is_refused() {
        let st = weights(&[
            ("w1", vec![2, 3], vec![0.0; 6]),
            ("b1", vec![2], vec![0.0; 2]),
            ("w2", vec![1, 2], vec![0.0; 2]),
            ("b2", vec![1], vec![0.0]),
        ]);
        let e = Switcher::from_files(JSON, &st, 576)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`w1`") && e.contains("[2, 576]"), "{e}");
        let e = Switcher::from_files(&JSON.replace("mean", "max"), &st, 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("only \"mean\""), "{e}");
    }
}
