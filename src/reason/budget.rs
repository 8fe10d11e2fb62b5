//! Budget forcing: a candidate may think for at most B tokens. When it reaches B
//! without closing its `<think>` block, the runtime feeds `</think>` and an
//! answer-forcing suffix itself, then allows at most A answer tokens.
//!
//! The forcer only counts and decides; the decode loop feeds what it says. Text, not
//! token ids, tells when the candidate closed the block itself (`</think>` may be one
//! token or several, depending on the tokenizer).

use crate::error::{Error, Result};

/// Limits for one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Budget {
    /// Thinking tokens allowed before `</think>` is forced (B).
    pub think: usize,
    /// Answer tokens allowed after the thinking (A).
    pub answer: usize,
}

/// Where a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Think,
    Answer,
    Done,
}

/// What the decode loop does next for this candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Sample the next token as usual.
    Sample,
    /// Feed these tokens (`</think>` + the answer-forcing suffix), then sample.
    Force(Vec<u32>),
    /// Stop: the answer budget is spent.
    Stop,
}

/// Counts one candidate's tokens against its [`Budget`].
#[derive(Debug, Clone)]
pub struct Forcer {
    budget: Budget,
    /// Token ids of "</think>" + the answer-forcing suffix.
    forced: Vec<u32>,
    phase: Phase,
    think_tokens: usize,
    answer_tokens: usize,
    /// Whether the runtime closed the thinking (rather than the candidate).
    forced_close: bool,
    /// The thinking text seen so far, to spot a `</think>` split across tokens.
    tail: String,
}

const CLOSE: &str = "</think>";

impl Forcer {
    /// `forced`: the token ids of `</think>` followed by the answer-forcing suffix
    /// (e.g. "\n</think>\n\nFinal answer:"). A candidate starts thinking.
    pub fn new(budget: Budget, forced: Vec<u32>) -> Self {
        Forcer {
            budget,
            forced,
            phase: Phase::Think,
            think_tokens: 0,
            answer_tokens: 0,
            forced_close: false,
            tail: String::new(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Thinking tokens the candidate generated (forced tokens not counted).
    pub fn think_tokens(&self) -> usize {
        self.think_tokens
    }

    pub fn answer_tokens(&self) -> usize {
        self.answer_tokens
    }

    /// Whether the runtime had to close the thinking.
    pub fn was_forced(&self) -> bool {
        self.forced_close
    }

    /// What to do before the first token (a thinking budget of 0 forces at once).
    pub fn start(&mut self) -> Next {
        if self.budget.think == 0 {
            return self.force();
        }
        Next::Sample
    }

    /// Records one sampled token with its text; says what to do next.
    pub fn push(&mut self, text: &str) -> Next {
        match self.phase {
            Phase::Think => {
                self.think_tokens += 1;
                self.tail.push_str(text);
                if self.tail.contains(CLOSE) {
                    self.phase = Phase::Answer;
                    return self.answer_room();
                }
                self.keep_tail();
                if self.think_tokens >= self.budget.think {
                    return self.force();
                }
                Next::Sample
            }
            Phase::Answer => {
                self.answer_tokens += 1;
                self.answer_room()
            }
            Phase::Done => Next::Stop,
        }
    }

    /// After the loop fed the forced tokens: sample the answer, or stop when no answer
    /// tokens are allowed.
    pub fn forced_fed(&mut self) -> Next {
        self.answer_room()
    }

    fn force(&mut self) -> Next {
        self.phase = Phase::Answer;
        self.forced_close = true;
        Next::Force(self.forced.clone())
    }

    fn answer_room(&mut self) -> Next {
        if self.answer_tokens >= self.budget.answer {
            self.phase = Phase::Done;
            return Next::Stop;
        }
        Next::Sample
    }

    /// Keeps only the end of the thinking text that could still begin a `</think>`.
    fn keep_tail(&mut self) {
        let mut cut = self.tail.len().saturating_sub(CLOSE.len() - 1);
        while !self.tail.is_char_boundary(cut) {
            cut -= 1;
        }
        self.tail.drain(..cut);
    }
}

/// How a thinking budget is stated in the prompt, for adapters trained with budget
/// buckets (the model then paces its thinking to the stated length). Made only through
/// [`BudgetHint::new`], which checks it, whether it comes from a `budget_hint.json`, a
/// request (serde) or command-line flags.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "UncheckedHint")]
pub struct BudgetHint {
    /// Appended to the user's message after a blank line; `{budget}` becomes the
    /// stated budget, e.g. "Think for at most {budget} tokens."
    template: String,
    /// The budgets the adapter was trained with: the smallest one at least B is
    /// stated (the largest when B is above them all). Empty: B itself.
    buckets: Vec<usize>,
}

/// A budget hint as read, before [`BudgetHint::new`] checks it.
#[derive(serde::Deserialize)]
struct UncheckedHint {
    template: String,
    #[serde(default)]
    buckets: Vec<usize>,
}

impl TryFrom<UncheckedHint> for BudgetHint {
    type Error = String;

    fn try_from(h: UncheckedHint) -> std::result::Result<Self, String> {
        BudgetHint::new(h.template, h.buckets).map_err(|e| e.to_string())
    }
}

/// Limits of a budget hint: a sentence, and a few buckets of at most a context's length.
const MAX_HINT_TEMPLATE_BYTES: usize = 1024;
const MAX_HINT_BUCKETS: usize = 64;
const MAX_HINT_BUCKET: usize = 1 << 20;

impl BudgetHint {
    /// The file beside an adapter's weights that says how it was trained to be told its
    /// budget (`train/grpo.py` writes it): `{"template": "...{budget}...", "buckets": [..]}`.
    pub const FILE: &'static str = "budget_hint.json";

    /// A checked hint: the template holds `{budget}` and is at most 1 KiB, and the
    /// buckets (at most 64) are 1 to 2^20 tokens. Errors are INVALID_ARGUMENT.
    pub fn new(template: String, buckets: Vec<usize>) -> Result<Self> {
        let bad = |msg: String| Err(Error::InvalidArgument(format!("budget hint: {msg}")));
        if !template.contains("{budget}") {
            return bad(format!(
                "the template {:?} has no `{{budget}}` to put the budget in",
                template.chars().take(80).collect::<String>()
            ));
        }
        if template.len() > MAX_HINT_TEMPLATE_BYTES {
            return bad(format!(
                "the template is {} bytes; a hint is a sentence of at most {MAX_HINT_TEMPLATE_BYTES}",
                template.len()
            ));
        }
        if buckets.len() > MAX_HINT_BUCKETS {
            return bad(format!(
                "{} budget buckets; at most {MAX_HINT_BUCKETS}",
                buckets.len()
            ));
        }
        if let Some(b) = buckets.iter().find(|&&b| b == 0 || b > MAX_HINT_BUCKET) {
            return bad(format!(
                "a budget bucket is {b} tokens; buckets are 1 to {MAX_HINT_BUCKET}"
            ));
        }
        Ok(BudgetHint { template, buckets })
    }

    /// The template the budget is put in.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The budgets the adapter was trained with.
    pub fn buckets(&self) -> &[usize] {
        &self.buckets
    }

    /// Parses and checks the text of a `budget_hint.json` (its faults are the adapter's:
    /// INVALID_ADAPTER).
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json).map_err(|e| Error::Adapter(format!("{}: {e}", Self::FILE)))
    }

    /// The hint an adapter directory carries, or None when it has no `budget_hint.json`.
    /// (In the browser the worker fetches the file and hands its text to `from_json`.)
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_adapter_dir(dir: &std::path::Path) -> Result<Option<Self>> {
        if !dir.join(Self::FILE).is_file() {
            return Ok(None);
        }
        let bytes = crate::lora::read_in(dir, Self::FILE)?;
        let json = String::from_utf8(bytes).map_err(|_| {
            Error::InvalidArgument(format!("{} in {} is not UTF-8", Self::FILE, dir.display()))
        })?;
        Self::from_json(&json).map(Some)
    }

    /// The budget stated for a thinking budget of `b` tokens.
    pub fn stated(&self, b: usize) -> usize {
        let mut buckets = self.buckets.clone();
        buckets.sort_unstable();
        match buckets.iter().find(|&&x| x >= b) {
            Some(&x) => x,
            None => buckets.last().copied().unwrap_or(b),
        }
    }

    /// `message` with the budget for `b` thinking tokens stated at its end.
    pub fn apply(&self, message: &str, b: usize) -> String {
        let hint = self
            .template
            .replace("{budget}", &self.stated(b).to_string());
        format!("{}\n\n{hint}", message.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORCED: [u32; 3] = [900, 901, 902];

    fn forcer(think: usize, answer: usize) -> Forcer {
        Forcer::new(Budget { think, answer }, FORCED.to_vec())
    }

    #[test]
    fn the_forced_tokens_come_exactly_after_b_thinking_tokens() {
        for b in [1, 2, 7, 64] {
            let mut f = forcer(b, 5);
            assert_eq!(f.start(), Next::Sample);
            let mut fed = 0;
            let next = loop {
                fed += 1;
                match f.push(" step") {
                    Next::Sample => continue,
                    other => break other,
                }
            };
            assert_eq!(next, Next::Force(FORCED.to_vec()), "B = {b}");
            assert_eq!(fed, b, "forced after exactly B = {b} thinking tokens");
            assert_eq!(f.think_tokens(), b);
            assert!(f.was_forced());
            assert_eq!(f.phase(), Phase::Answer);
        }
    }

    #[test]
    fn at_most_a_answer_tokens_follow() {
        let mut f = forcer(2, 3);
        f.push("a");
        assert!(matches!(f.push("b"), Next::Force(_)));
        assert_eq!(f.forced_fed(), Next::Sample);
        assert_eq!(f.push("1"), Next::Sample);
        assert_eq!(f.push("2"), Next::Sample);
        assert_eq!(f.push("3"), Next::Stop);
        assert_eq!(f.answer_tokens(), 3);
        assert_eq!(f.phase(), Phase::Done);
        let mut none = forcer(1, 0);
        assert!(matches!(none.push("x"), Next::Force(_)));
        assert_eq!(
            none.forced_fed(),
            Next::Stop,
            "A = 0: the forced suffix, then nothing"
        );
    }

    #[test]
    fn a_candidate_that_closes_in_time_is_not_forced_even_across_tokens() {
        let mut f = forcer(10, 4);
        for piece in ["so 4", "</", "thi", "nk>"] {
            assert_eq!(f.push(piece), Next::Sample, "{piece}");
        }
        assert_eq!(f.phase(), Phase::Answer);
        assert!(!f.was_forced());
        assert_eq!(f.think_tokens(), 4);
        // Closing on the B-th token itself is the candidate's own close, not forced.
        let mut g = forcer(2, 4);
        g.push("ok");
        assert_eq!(g.push("</think>"), Next::Sample);
        assert!(!g.was_forced());
    }

    #[test]
    fn a_zero_budget_forces_before_the_first_token_and_multibyte_text_is_safe() {
        let mut f = forcer(0, 2);
        assert_eq!(f.start(), Next::Force(FORCED.to_vec()));
        let mut g = forcer(100, 1);
        for piece in ["é", "漢字", "🙂", "</th", "ink>"] {
            g.push(piece);
        }
        assert_eq!(g.phase(), Phase::Answer);
    }

    #[test]
    fn the_budget_is_stated_as_its_bucket() {
        let hint = BudgetHint::new(
            "Think for at most {budget} tokens.".into(),
            vec![512, 128, 256],
        )
        .unwrap();
        assert_eq!(hint.stated(100), 128);
        assert_eq!(hint.stated(128), 128);
        assert_eq!(hint.stated(129), 256);
        assert_eq!(hint.stated(4000), 512);
        assert_eq!(
            hint.apply("What is 6*7?  \n", 200),
            "What is 6*7?\n\nThink for at most 256 tokens."
        );
        let exact = BudgetHint::new("({budget})".into(), vec![]).unwrap();
        assert_eq!(exact.apply("q", 77), "q\n\n(77)");
    }

    #[test]
    fn an_adapters_hint_file_is_read_and_checked() {
        let hint = BudgetHint::from_json(
            r#"{"template": "Think for at most {budget} tokens.", "buckets": [32, 64, 128]}"#,
        )
        .unwrap();
        assert_eq!(hint.apply("q", 50), "q\n\nThink for at most 64 tokens.");
        for (json, says) in [
            (r#"{"template": "Think briefly."}"#, "no `{budget}`"),
            (
                r#"{"template": "{budget}", "buckets": [0, 64]}"#,
                "is 0 tokens",
            ),
            (r#"{"template": 5}"#, "budget_hint.json"),
            (r#"{"buckets": [64]}"#, "missing field `template`"),
        ] {
            let err = BudgetHint::from_json(json).unwrap_err();
            assert_eq!(
                err.code(),
                "INVALID_ADAPTER",
                "{json}: a fault of the adapter's files"
            );
            let err = err.to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
        // A request's hint (serde) and flags' (new) are checked the same way.
        for json in [
            r#"{"template": "Think briefly."}"#,
            r#"{"template": "{budget}", "buckets": [0]}"#,
            r#"{"template": "{budget}", "buckets": [2000000]}"#,
        ] {
            let err = serde_json::from_str::<BudgetHint>(json).unwrap_err();
            assert!(err.to_string().contains("budget hint"), "{json}: {err}");
        }
        let long = format!("{{budget}}{}", "x".repeat(2000));
        assert_eq!(
            BudgetHint::new(long, vec![]).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
        assert!(BudgetHint::new("{budget}".into(), (1..100).collect()).is_err());
        let dir = std::env::temp_dir().join(format!("budget-hint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(BudgetHint::from_adapter_dir(&dir).unwrap(), None);
        std::fs::write(dir.join(BudgetHint::FILE), r#"{"template": "<{budget}>"}"#).unwrap();
        let read = BudgetHint::from_adapter_dir(&dir).unwrap().unwrap();
        assert_eq!(read.apply("q", 9), "q\n\n<9>");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
