//! A candidate's final answer, out of its text, normalized so that equal answers vote
//! together: `\boxed{...}`, else a `Final answer:` / `Answer:` line, else the last
//! number; numbers compare by value (1,000 = 1000 = 1000.0; 0.50 = .5 = 1/2; a leading
//! `$` and trailing units dropped; a worked `60 + 2 = 62.` by what it ends equal to),
//! short text answers trimmed and case-folded.

/// An extracted answer: what the candidate wrote, and the key votes are counted by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    /// The answer as written (trimmed).
    pub text: String,
    /// The normalized form: a canonical number, or folded text.
    pub key: String,
}

/// The parts of `text` after the reasoning, the last first: what follows each
/// `</think>` up to the next one, or the whole text when there is none. (A candidate
/// may write a stray `</think>` after its answer; the answer is then in the part
/// before it. What comes before the first `</think>` is thinking, never an answer.)
fn answer_regions(text: &str) -> Vec<&str> {
    let mut parts: Vec<&str> = text.rsplit("</think>").collect();
    if parts.len() > 1 {
        parts.pop(); // the thinking
    }
    parts
}

/// The contents of the last `\boxed{...}`, braces matched.
fn boxed(text: &str) -> Option<&str> {
    let start = text.rfind("\\boxed{")? + "\\boxed{".len();
    let mut depth = 1usize;
    for (i, c) in text[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// The rest of the last line that starts with (or contains) `Final answer:` or
/// `Answer:`, case-insensitive.
fn labelled(text: &str) -> Option<&str> {
    text.lines().rev().find_map(|line| {
        let lower = line.to_ascii_lowercase();
        ["final answer:", "answer:"]
            .iter()
            .find_map(|label| lower.rfind(label).map(|i| &line[i + label.len()..]))
            .map(str::trim)
            .filter(|rest| !rest.is_empty())
    })
}

/// Byte ranges of number-like tokens (digits with `,` `.` `/` inside, an optional
/// leading `-` or `.`).
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = b[i].is_ascii_digit()
            || (matches!(b[i], b'-' | b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < b.len() {
            let inner =
                matches!(b[i], b',' | b'.' | b'/') && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            if b[i].is_ascii_digit() || inner {
                i += 1;
            } else {
                break;
            }
        }
        spans.push((start, i));
    }
    spans
}

/// A number written as `1,000`, `-2.50`, `.5` or `3/4`, as a value.
fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('/') {
        let (a, b) = (parse_number(a)?, parse_number(b)?);
        return (b != 0.0).then(|| a / b);
    }
    // Thousands separators: only in groups of three.
    let plain = if s.contains(',') {
        let int = s.split('.').next()?;
        let groups: Vec<&str> = int.trim_start_matches('-').split(',').collect();
        let ok = groups[0].len() <= 3
            && !groups[0].is_empty()
            && groups[1..].iter().all(|g| g.len() == 3);
        if !ok {
            return None;
        }
        s.replace(',', "")
    } else {
        s.to_string()
    };
    plain.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A value as the key answers are counted by: integers without a decimal point, others
/// with up to 9 significant decimals and no trailing zeros.
fn number_key(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The normalized key of an answer's text: its value when it is a number (with an
/// optional leading currency sign and trailing unit words or `%`) or arithmetic worked
/// out to one (see `worked_result`), else the text trimmed of markup and punctuation
/// and case-folded.
pub fn normalize(answer: &str) -> String {
    worked_result(answer)
        .or_else(|| number_only_key(answer))
        .unwrap_or_else(|| text_key(answer))
}

/// The key of arithmetic worked out on the answer line and closed with a period, as a
/// candidate cut short by forcing may write it (`60 + 2 = 62.`, `80 x 2 = $160.`): the
/// number after the last `=`, when all before it is numbers and operators. Not a line
/// left unfinished (`= 121 +`), nor one whose last number the answer's token cap may
/// have cut (no closing period), nor equations in letters (`x = 2, y = 3.`).
fn worked_result(answer: &str) -> Option<String> {
    let closed = answer.trim().strip_suffix('.')?;
    let (work, result) = closed.rsplit_once('=')?;
    let arithmetic = work.chars().any(|c| c.is_ascii_digit())
        && work
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_whitespace() || "+-*/x×÷().,=".contains(c));
    let result = result.trim().trim_start_matches(['$', '€', '£']);
    let whole_number = number_spans(result) == [(0, result.len())];
    (arithmetic && whole_number)
        .then(|| parse_number(result))
        .flatten()
        .map(number_key)
}

/// The answer trimmed of markup and punctuation around it, in any order ("**Paris**.").
fn unwrapped(answer: &str) -> &str {
    let mut t = answer.trim();
    loop {
        let next = t
            .trim_matches(|c: char| matches!(c, '*' | '`' | '"' | '\'') || c.is_whitespace())
            .trim_end_matches(['.', '!', ';', ',']);
        if next == t {
            return t;
        }
        t = next;
    }
}

/// The key of an answer that is a number, alone or with a currency sign, `$...$` or
/// trailing units ("12 apples", "5 cm", "50%"); `None` for anything else.
fn number_only_key(answer: &str) -> Option<String> {
    let t = unwrapped(answer);
    let math = t
        .strip_prefix('$')
        .and_then(|x| x.strip_suffix('$'))
        .unwrap_or(t);
    let bare = math.trim_start_matches(['$', '€', '£']).trim();
    let spans = number_spans(bare);
    let &(s, e) = spans.first()?;
    let tail = bare[e..].trim();
    let units_only = tail.is_empty()
        || tail == "%"
        || (spans.len() == 1
            && tail.split_whitespace().count() <= 2
            && tail.chars().all(|c| c.is_alphabetic() || c.is_whitespace()));
    (s == 0 && units_only)
        .then(|| parse_number(&bare[s..e]))
        .flatten()
        .map(number_key)
}

/// The key of a text answer: trimmed of markup, whitespace collapsed, case-folded.
fn text_key(answer: &str) -> String {
    unwrapped(answer)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The final answer of a candidate's whole text (reasoning included), looked for only
/// after the thinking, or `None` when it gave none.
pub fn extract(text: &str) -> Option<Answer> {
    let found = answer_regions(text)
        .into_iter()
        .find_map(|region| {
            boxed(region)
                .or_else(|| labelled(region))
                .or_else(|| number_spans(region).last().map(|&(s, e)| &region[s..e]))
                .filter(|found| !found.trim().is_empty())
        })
        .or_else(|| boxed(text))?;
    let text = found.trim().to_string();
    if text.is_empty() {
        return None;
    }
    Some(Answer {
        key: normalize(&text),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Option<String> {
        extract(text).map(|a| a.key)
    }

    #[test]
    fn tricky_answers_extract_to_the_same_key() {
        let table: &[(&str, Option<&str>)] = &[
            ("The answer is \\boxed{42}.", Some("42")),
            ("\\boxed{\\frac{1}{2}} then \\boxed{7}", Some("7")),
            ("\\boxed{{a}+{b}}", Some("{a}+{b}")),
            ("<think>2+2 is 5? no, 4</think>\nFinal answer: 4", Some("4")),
            ("<think>maybe 12</think> So we get 13 apples.", Some("13")),
            ("Final answer: 1,000", Some("1000")),
            ("Answer: 1000.0", Some("1000")),
            ("final ANSWER: $1,250.50", Some("1250.5")),
            ("Answer: 0.50", Some("0.5")),
            ("Answer: .5", Some("0.5")),
            ("Answer: 1/2", Some("0.5")),
            ("Answer: 3/4 cup", Some("0.75")),
            ("Answer: 12 apples.", Some("12")),
            ("Answer: 50%", Some("50")),
            ("Answer: -7", Some("-7")),
            ("Final answer: **Paris**.", Some("paris")),
            ("Final answer:   Alice  is   first", Some("alice is first")),
            ("We add 3 and 4 to get 7, then double: 14", Some("14")),
            ("Answer: 1,00", Some("1,00")),
            ("Answer: 2 and 3", Some("2 and 3")),
            // Worked out on the answer line (forcing cut a step short): what it equals,
            // when the line is closed.
            ("Final answer: 60 + 2 = 62.", Some("62")),
            (
                "Final answer: 80 x 2 + 37 x 2 = 160 + 74 = 234.",
                Some("234"),
            ),
            ("Answer: 1,000 + 250 = $1,250.", Some("1250")),
            ("Final answer: 110 + 112 = 121 +", Some("110 + 112 = 121 +")),
            // (Cut by the answer's token cap: the last number may be cut too.)
            (
                "Final answer: 30 x 2 + 2 x 2 = 60",
                Some("30 x 2 + 2 x 2 = 60"),
            ),
            ("Final answer: x = 2, y = 3.", Some("x = 2, y = 3")),
            ("Final answer: x >= 3.", Some("x >= 3")),
            ("Final answer: a = b", Some("a = b")),
            ("No idea.", None),
            // Nothing after the thinking: no answer (the thinking is not mined for one).
            ("<think>the answer is 9</think>", None),
            // A stray `</think>` after the answer: the answer before it counts.
            (
                "<think>3 + 4 = 7</think>\n\nFinal answer: 7\n</think>\n\n",
                Some("7"),
            ),
            (
                "<think>a</think>Final answer: 5</think>Final answer: 6",
                Some("6"),
            ),
            ("<think>the answer is 9</think>\n</think>", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(key(text).as_deref(), *want, "extracting from {text:?}");
        }
    }

    #[test]
    fn a_labelled_line_wins_over_later_numbers_only_when_it_is_last() {
        assert_eq!(key("Answer: 5\nCheck: 2 + 3 = 5").as_deref(), Some("5"));
        assert_eq!(key("Step 1: 10\nFinal answer: 8").as_deref(), Some("8"));
    }
}
