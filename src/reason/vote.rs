//! The vote over candidates' answers: majority, or weighted (by each candidate's mean
//! token log-probability, or a verifier's score), and early consensus.
//!
//! Ties are broken deterministically: more votes, then more total weight, then the
//! answer whose first voter has the lowest candidate index.

use std::collections::BTreeMap;

/// One candidate's vote: its answer key (None: it gave no answer, and abstains) and
/// its weight (1 for a plain majority vote).
#[derive(Debug, Clone, PartialEq)]
pub struct Ballot {
    pub key: Option<String>,
    pub weight: f64,
}

/// One answer's share of the vote.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Share {
    pub key: String,
    pub votes: usize,
    pub weight: f64,
    /// The lowest index of a candidate that gave it.
    pub first: usize,
}

/// The outcome: every answer's share, the winner first.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tally {
    pub shares: Vec<Share>,
}

impl Tally {
    /// The winning answer's key, or None when no candidate answered.
    pub fn winner(&self) -> Option<&str> {
        self.shares.first().map(|s| s.key.as_str())
    }
}

/// How candidates are weighed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// One candidate, one vote (weights break ties only).
    Majority,
    /// The answer with the largest total weight wins.
    Weighted,
}

/// Counts `ballots` (indexed by candidate) under `rule`.
pub fn tally(ballots: &[Ballot], rule: Rule) -> Tally {
    let mut by_key: BTreeMap<&str, Share> = BTreeMap::new();
    for (i, b) in ballots.iter().enumerate() {
        let Some(key) = b.key.as_deref() else {
            continue;
        };
        let share = by_key.entry(key).or_insert_with(|| Share {
            key: key.to_string(),
            votes: 0,
            weight: 0.0,
            first: i,
        });
        share.votes += 1;
        share.weight += b.weight;
    }
    let mut shares: Vec<Share> = by_key.into_values().collect();
    shares.sort_by(|a, b| {
        let primary = match rule {
            Rule::Majority => b.votes.cmp(&a.votes).then(b.weight.total_cmp(&a.weight)),
            Rule::Weighted => b.weight.total_cmp(&a.weight).then(b.votes.cmp(&a.votes)),
        };
        primary.then(a.first.cmp(&b.first))
    });
    Tally { shares }
}

/// Weight of a candidate from its answer tokens' log-probabilities: exp of the mean, a
/// number in (0, 1] that does not favour short answers. No tokens: weight 1.
pub fn logprob_weight(logprobs: &[f32]) -> f64 {
    if logprobs.is_empty() {
        return 1.0;
    }
    let mean = logprobs.iter().map(|&l| l as f64).sum::<f64>() / logprobs.len() as f64;
    mean.exp()
}

/// Whether a majority vote is already decided with `running` candidates still going:
/// even if every one of them joined the runner-up, the leader would still have more
/// votes. (Stopping them then changes no outcome, and saves their tokens.)
pub fn decided(finished: &Tally, running: usize) -> bool {
    match finished.shares.as_slice() {
        [] => false,
        [leader] => leader.votes > running,
        [leader, second, ..] => leader.votes > second.votes + running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ballots(keys: &[Option<&str>], weights: &[f64]) -> Vec<Ballot> {
        keys.iter()
            .zip(weights)
            .map(|(k, &weight)| Ballot {
                key: k.map(str::to_string),
                weight,
            })
            .collect()
    }

    #[test]
    fn majority_counts_votes_and_abstentions_do_not_count() {
        let b = ballots(&[Some("4"), None, Some("5"), Some("4"), None], &[1.0; 5]);
        let t = tally(&b, Rule::Majority);
        assert_eq!(t.winner(), Some("4"));
        assert_eq!(t.shares[0].votes, 2);
        assert_eq!(t.shares[1].key, "5");
        assert!(tally(&ballots(&[None, None], &[1.0; 2]), Rule::Majority)
            .winner()
            .is_none());
    }

    #[test]
    fn ties_break_by_weight_then_by_the_first_candidate() {
        let b = ballots(
            &[Some("a"), Some("b"), Some("b"), Some("a")],
            &[0.5, 0.9, 0.2, 0.5],
        );
        // 2 votes each; weight a 1.0 vs b 1.1.
        assert_eq!(tally(&b, Rule::Majority).winner(), Some("b"));
        let b = ballots(&[Some("b"), Some("a")], &[1.0, 1.0]);
        assert_eq!(
            tally(&b, Rule::Majority).winner(),
            Some("b"),
            "equal in all but order: the first candidate's answer"
        );
    }

    #[test]
    fn weighted_vote_lets_confident_candidates_outvote_a_majority() {
        let b = ballots(&[Some("1"), Some("1"), Some("2")], &[0.2, 0.2, 0.9]);
        assert_eq!(tally(&b, Rule::Majority).winner(), Some("1"));
        assert_eq!(tally(&b, Rule::Weighted).winner(), Some("2"));
    }

    #[test]
    fn logprob_weight_is_the_geometric_mean_probability() {
        let l = -(1.5f32.ln());
        assert!((logprob_weight(&[l; 3]) - 1.0 / 1.5).abs() < 1e-6);
        assert_eq!(logprob_weight(&[]), 1.0);
    }

    #[test]
    fn early_consensus_stops_exactly_when_the_leader_cannot_be_caught() {
        let t = |keys: &[&str]| {
            tally(
                &ballots(
                    &keys.iter().map(|k| Some(*k)).collect::<Vec<_>>(),
                    &vec![1.0; keys.len()],
                ),
                Rule::Majority,
            )
        };
        // 8 candidates: 3 say "7", 0 others, 5 running: 5 could all say "x" -> not decided.
        assert!(!decided(&t(&["7", "7", "7"]), 5));
        // 5 say "7", 3 running: 3 < 5 -> decided.
        assert!(decided(&t(&["7", "7", "7", "7", "7"]), 3));
        // 4 vs 0 with 4 running: a tie is still possible -> not decided.
        assert!(!decided(&t(&["7", "7", "7", "7"]), 4));
        // 4 "7", 1 "8", 3 running: 8 could reach 4 -> not decided; with 2 running it could reach 3 -> decided.
        assert!(!decided(&t(&["7", "7", "7", "7", "8"]), 3));
        assert!(decided(&t(&["7", "7", "7", "7", "8"]), 2));
        assert!(!decided(&t(&[]), 1));
        assert!(decided(&t(&["7"]), 0));
    }
}
