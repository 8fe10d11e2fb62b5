//! The GPU's [`Decoder`]: one session whose main sequence is the prompt and whose
//! streams are the candidates (attending to the prompt's slots, then their own), so a
//! step of N candidates is one batched forward pass of N rows, the adapter applied by
//! its own kernels to the rows that want it, each row picking its token on the device
//! with its own draw. Tokens fed before a candidate's last (the think prefix, a forced
//! suffix) go in passes of their own first, so the step's output rows are exactly one
//! per candidate.

use super::decoder::{pick_from, Decoder, Feed, Picked};
use crate::error::{Error, Result};
use crate::gpu::{GpuAdapter, GpuModel, GpuSession, PassOptions, MAX_ROWS};
use crate::model::Logits;
use crate::sampler::Draw;

pub struct GpuDecoder<'a> {
    gm: &'a GpuModel,
    adapter: Option<&'a GpuAdapter>,
    session: Option<GpuSession>,
}

impl<'a> GpuDecoder<'a> {
    pub fn new(gm: &'a GpuModel, adapter: Option<&'a GpuAdapter>) -> Self {
        GpuDecoder {
            gm,
            adapter,
            session: None,
        }
    }

    fn session(&mut self) -> Result<&mut GpuSession> {
        self.session
            .as_mut()
            .ok_or_else(|| Error::InvalidArgument("the decoder was not reserved".into()))
    }

    /// Appends `tokens` to stream `candidate` for each `(candidate, tokens)` of `feeds`
    /// (the adapter on when `lora`), in passes of up to [`MAX_ROWS`] rows that produce
    /// no logits.
    fn feed_silent(&mut self, feeds: &[(usize, &[u32])], lora: bool) -> Result<()> {
        let (gm, adapter) = (self.gm, self.adapter);
        let s = self.session()?;
        let rows = s.feed_rows(feeds, lora)?;
        for chunk in rows.chunks(MAX_ROWS) {
            let o = PassOptions {
                adapter,
                ..Default::default()
            };
            gm.run_pass(s, chunk, o)?;
        }
        Ok(())
    }
}

impl Decoder for GpuDecoder<'_> {
    fn reserve(&mut self, prompt: usize, candidates: usize, room: usize) -> Result<()> {
        self.session = Some(GpuSession::new(self.gm, prompt, candidates, room)?);
        Ok(())
    }

    async fn prefill(&mut self, tokens: &[u32], pool: bool, lora: bool) -> Result<Vec<f32>> {
        let (gm, adapter) = (self.gm, self.adapter.filter(|_| lora));
        let pool = pool && adapter.is_none();
        let s = self.session()?;
        if pool {
            gm.clear_pooled(s);
        }
        s.check_main_room(tokens.len())?;
        let chunks: Vec<&[u32]> = tokens.chunks(MAX_ROWS).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut rows = s.main_rows(chunk)?;
            rows.iter_mut().for_each(|r| r.lora = lora as u32);
            let want = if i + 1 == chunks.len() {
                Logits::Last
            } else {
                Logits::None
            };
            gm.run_pass(
                s,
                &rows,
                PassOptions {
                    want,
                    pool,
                    adapter,
                    ..Default::default()
                },
            )?;
        }
        if pool {
            gm.read_pooled(s).await
        } else {
            Ok(Vec::new())
        }
    }

    fn fork(&mut self, n: usize) -> Result<()> {
        self.session()?.fork(n)
    }

    async fn step(&mut self, feeds: &mut [Feed<'_>], lora: bool) -> Result<Vec<Picked>> {
        let gm = self.gm;
        let empty = feeds.iter().filter(|f| f.tokens.is_empty()).count();
        if empty > 0 {
            // A first step from the prompt's own logits (one output row: one candidate).
            if empty != feeds.len() || feeds.len() != 1 {
                return Err(Error::InvalidArgument(
                    "only a single candidate's first step may start from the prompt's logits"
                        .into(),
                ));
            }
            let s = self.session()?;
            return pick_on_device(gm, s, feeds, |gm, s, draws| gm.pick_again(s, draws)).await;
        }

        // 1. Every token before each candidate's last, in passes without logits.
        let early: Vec<(usize, &[u32])> = feeds
            .iter()
            .filter(|f| f.tokens.len() > 1)
            .map(|f| (f.candidate, &f.tokens[..f.tokens.len() - 1]))
            .collect();
        if !early.is_empty() {
            self.feed_silent(&early, lora)?;
        }

        // 2. Each candidate's last token, one row each, picking its next.
        let last: Vec<(usize, &[u32])> = feeds
            .iter()
            .map(|f| (f.candidate, &f.tokens[f.tokens.len() - 1..]))
            .collect();
        let adapter = self.adapter;
        let s = self.session()?;
        let rows = s.feed_rows(&last, lora)?;
        pick_on_device(gm, s, feeds, |gm, s, draws| {
            gm.run_pass(
                s,
                &rows,
                PassOptions {
                    want: Logits::All,
                    draws,
                    adapter,
                    ..Default::default()
                },
            )
        })
        .await
    }

    async fn last_hidden(
        &mut self,
        candidate: usize,
        tokens: &[u32],
        lora: bool,
    ) -> Result<Vec<f32>> {
        let Some((last, before)) = tokens.split_last() else {
            return Err(Error::InvalidArgument(
                "no tokens to read a hidden state of".into(),
            ));
        };
        if !before.is_empty() {
            self.feed_silent(&[(candidate, before)], lora)?;
        }
        let (gm, adapter) = (self.gm, self.adapter);
        let s = self.session()?;
        let rows = s.feed_rows(&[(candidate, std::slice::from_ref(last))], lora)?;
        gm.clear_pooled(s);
        let o = PassOptions {
            adapter,
            pool: true,
            ..Default::default()
        };
        gm.run_pass(s, &rows, o)?;
        gm.read_pooled(s).await
    }

    fn kv_bytes(&self) -> usize {
        self.session.as_ref().map_or(0, |s| {
            (s.kv_positions() as u64 * s.kv_bytes_per_position()) as usize
        })
    }
}

/// Runs `pass` (which leaves one output row per feed) with each feed's draw, and reads
/// back the picks; feeds whose sampler cannot pick on the device (top-k 0 or above
/// 64) pick from their read-back logits instead.
async fn pick_on_device(
    gm: &GpuModel,
    s: &mut GpuSession,
    feeds: &mut [Feed<'_>],
    pass: impl FnOnce(&GpuModel, &mut GpuSession, &[Draw]) -> Result<()>,
) -> Result<Vec<Picked>> {
    let draws: Vec<Option<Draw>> = feeds.iter_mut().map(|f| f.sampler.device_draw()).collect();
    let device: Vec<Draw> = draws.iter().map(|d| d.unwrap_or(Draw::GREEDY)).collect();
    pass(gm, s, &device)?;
    let (ids, logprobs) = gm.read_picks(s).await?;
    let mut picked: Vec<Picked> = ids
        .iter()
        .zip(&logprobs)
        .map(|(&token, &logprob)| Picked { token, logprob })
        .collect();
    if draws.iter().any(Option::is_none) {
        let logits = gm.read_logits(s).await?;
        let vocab = gm.model.config.vocab_size;
        for (i, f) in feeds.iter_mut().enumerate() {
            if draws[i].is_none() {
                let mut row = logits[i * vocab..(i + 1) * vocab].to_vec();
                picked[i] = pick_from(&mut row, f.sampler);
            }
        }
    }
    Ok(picked)
}
