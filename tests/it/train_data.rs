//! The training data generator (`train/data.py`): deterministic, every worked solution
//! ends in the answer the runtime's extraction reads, held-out templates stay out of
//! training, and the switcher's labels are not predicted by "has numbers".

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use edge_reason::reason::{extract, normalize};
use serde_json::Value;

fn generate(out: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("train/data.py");
    let status = Command::new("python3")
        .arg(&script)
        .args(["--out", out.to_str().unwrap(), "--seed", "7"])
        .args(["--math-per-template", "120", "--switch-per-template", "60"])
        .args(["--held-out-per-template", "40"])
        .output()
        .expect("python3 runs train/data.py");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
}

fn rows(dir: &Path, name: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn tmp(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edge-reason-data-{tag}-{}", std::process::id()))
}

#[test]
fn the_generated_data_is_reproducible_correct_and_split_by_template() {
    let (a, b) = (tmp("a"), tmp("b"));
    generate(&a);
    generate(&b);
    let files = [
        "math_train.jsonl",
        "math_val.jsonl",
        "math_test.jsonl",
        "switch_train.jsonl",
        "switch_val.jsonl",
        "switch_test.jsonl",
    ];
    for f in files {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between two runs with one seed"
        );
    }

    let mut held_out_in_training = Vec::new();
    let mut templates_by_split: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        for r in rows(&a, f) {
            let split = r["split"].as_str().unwrap().to_string();
            let template = r["template"].as_str().unwrap().to_string();
            if r["held_out"] == true && split != "test" {
                held_out_in_training.push(r["id"].clone());
            }
            templates_by_split
                .entry(split)
                .or_default()
                .insert(template);
            // What the runtime extracts from the worked solution is the answer.
            if let Some(solution) = r["solution"].as_str() {
                assert!(solution.starts_with("<think>\n"), "{solution}");
                let got = extract(solution).unwrap_or_else(|| panic!("no answer in {solution}"));
                let want = normalize(r["answer"].as_str().unwrap());
                assert_eq!(got.key, want, "{}: {solution}", r["id"]);
                for line in solution.lines().filter(|l| l.contains(" = ")) {
                    check_worked_line(line);
                }
            }
        }
    }
    assert!(held_out_in_training.is_empty(), "{held_out_in_training:?}");
    for held in ["bakery", "tank", "follow"] {
        assert!(templates_by_split["test"].contains(held), "{held} in test");
        assert!(
            !templates_by_split["train"].contains(held),
            "{held} not in train"
        );
    }

    // Both labels hold prompts with digits and prompts without: "has numbers" is not
    // the label.
    let switch = rows(&a, "switch_train.jsonl");
    for label in ["reason", "chat"] {
        let of: Vec<&Value> = switch.iter().filter(|r| r["label"] == label).collect();
        let digits = of
            .iter()
            .filter(|r| {
                r["prompt"]
                    .as_str()
                    .unwrap()
                    .chars()
                    .any(|c| c.is_ascii_digit())
            })
            .count();
        assert!(
            digits > of.len() / 5,
            "{label}: {digits} of {} with digits",
            of.len()
        );
        assert!(
            digits < of.len() * 4 / 5,
            "{label}: {digits} of {} with digits",
            of.len()
        );
    }
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

/// Every `=` in a worked arithmetic line joins equal values: `Label: 48 x 4 = 40 x 4 +
/// 8 x 4 = 160 + 32 = 192.` (x and / before + and -, as written for people).
fn check_worked_line(line: &str) {
    let sums = line
        .rsplit(": ")
        .next()
        .unwrap()
        .trim_end_matches('.')
        .split(" = ")
        .map(|side| {
            // A sum of products: split on + and - (spaced), each term a product.
            let mut total = 0i64;
            let mut sign = 1i64;
            let mut term: Option<i64> = None;
            let mut op = 'x';
            for tok in side.split_whitespace() {
                match tok {
                    "+" | "-" => {
                        total += sign * term.take().expect("a term before + or -");
                        sign = if tok == "+" { 1 } else { -1 };
                    }
                    "x" | "/" => op = tok.chars().next().unwrap(),
                    n => {
                        let v: i64 = n
                            .trim_start_matches('$')
                            .parse()
                            .unwrap_or_else(|_| panic!("`{n}` in `{line}`"));
                        term = Some(match (term, op) {
                            (None, _) => v,
                            (Some(t), 'x') => t * v,
                            (Some(t), _) => {
                                assert_eq!(t % v, 0, "inexact division in `{line}`");
                                t / v
                            }
                        });
                    }
                }
            }
            total + sign * term.expect("a last term")
        })
        .collect::<Vec<i64>>();
    assert!(sums.len() >= 2, "{line}");
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{line}: {sums:?}");
}

/// GRPO's reward (`train/grpo.py` `final_answer`) counts a completion right by the
/// answer the runtime votes with: on completions in the trained format (a `Final
/// answer:` line after `</think>`) it reads exactly the integer the runtime keys, and
/// none where the runtime's key is no integer; where the runtime answers from something
/// else (`Answer:`, a bare number), the reward reads none (it asks for the format).
#[test]
fn the_grpo_reward_reads_the_answer_the_runtime_keys() {
    let formatted = [
        "Start: 4.\n</think>\n\nFinal answer: 47",
        "a\n</think>\n\nFinal answer: 1,250",
        "a\n</think>\n\nFinal answer: 60 + 2 = 62.",
        "a\n</think>\n\nFinal answer: 80 x 2 + 37 x 2 = 160 + 74 = 234.",
        "a\n</think>\n\nFinal answer: 60 + 2 = $62.",
        "a\n</think>\n\nFinal answer: 30 x 2 + 2 x 2 = 60",
        "a\n</think>\n\nFinal answer: 110 + 112 = 121 +",
        "a\n</think>\n\nFinal answer: 12 apples",
        "a\n</think>\n\nFinal answer: 5 apples in total",
        "a\n</think>\n\nFinal answer: -7",
        "a\n</think>\n\nFinal answer: $5",
        "a\n</think>\n\nFinal answer: **5**.",
        "a\n</think>\n\nFinal answer: 5.0",
        "a\n</think>\n\nFinal Answer: 4/2",
        "a\n</think>\n\nFinal answer: 1,00",
        "a\n</think>\n\nFinal answer: x = , y",
        "a\n</think>\n\nFinal answer: Paris",
        "a\n</think>\n\nFinal answer: 3 + 46",
        "a\n</think>\n\nFinal answer: 5\n</think>\n\n",
        "a\n</think>\n\nFinal answer: 5</think>Final answer: 6",
    ];
    let unformatted = [
        "a\n</think>\n\nAnswer: 5",
        "a\n</think>\n\nFinal answer:\n5",
        "a\n</think>\n\nFinal answer: 5</think> so 6",
        "a\n</think>\n\nThe answer is \\boxed{5}",
    ];
    let read = grpo_reward_reads(formatted.iter().chain(&unformatted));
    for (text, reward_reads) in formatted.iter().chain(&unformatted).zip(read) {
        let key = extract(text).map(|a| a.key);
        let runtime_int = key.as_deref().and_then(|k| k.parse::<i64>().ok());
        if unformatted.contains(text) {
            assert!(runtime_int.is_some(), "{text:?}: runtime key {key:?}");
            assert_eq!(
                reward_reads, None,
                "{text:?}: the reward asks for the format"
            );
        } else {
            assert_eq!(reward_reads, runtime_int, "{text:?}: runtime key {key:?}");
        }
    }
}

/// GRPO's length factor is the method's soft barrier: 1 up to (1 - m) B, linear to 0 at
/// (1 + m) B, 0 beyond (B = 64, m = 0.25: 1 to 48 tokens, 0 from 80).
#[test]
fn the_grpo_reward_pays_for_length_by_the_soft_barrier() {
    let tokens = [0, 48, 56, 64, 72, 80, 200];
    let paid: Vec<f64> = run_grpo_python(
        "from grpo import budget_reward\n\
         print(json.dumps([budget_reward(t, 64, 0.25) for t in json.load(sys.stdin)]))",
        &tokens,
    );
    let want = [1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0];
    for ((t, got), want) in tokens.iter().zip(&paid).zip(want) {
        assert!((got - want).abs() < 1e-9, "{t} tokens: {got}, want {want}");
    }
}

/// What `train/grpo.py`'s `final_answer` reads from each completion.
fn grpo_reward_reads<'a>(completions: impl Iterator<Item = &'a &'a str>) -> Vec<Option<i64>> {
    let completions: Vec<&str> = completions.copied().collect();
    run_grpo_python(
        "from grpo import final_answer\n\
         print(json.dumps([final_answer(t) for t in json.load(sys.stdin)]))",
        &completions,
    )
}

/// Runs `code` (with `json` and `sys` imported) in train/ with `input` as JSON on stdin,
/// and parses what it prints.
fn run_grpo_python<T: serde::de::DeserializeOwned>(code: &str, input: &impl serde::Serialize) -> T {
    let train = Path::new(env!("CARGO_MANIFEST_DIR")).join("train");
    let script = format!("import json, sys\n{code}");
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .current_dir(&train)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    serde_json::to_writer(child.stdin.take().unwrap(), input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
