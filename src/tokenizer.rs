//! Text to token ids and back, built from the model's own GGUF vocabulary (or a
//! `tokenizer.json`), plus the model's chat template.

use serde::Serialize;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::{Gguf, Value};

/// GGUF token type ids (`tokenizer.ggml.token_type`).
mod token_type {
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
}

/// Split regex of Llama 3 (`llama-bpe`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Split regex of Qwen2: as Llama 3 but one digit at a time.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// llama.cpp's `default` pre-tokenizer (what it uses for `tokenizer.ggml.pre = "default"`
/// or an absent key): these four regexes applied one after the other, each isolating its
/// matches (llama-vocab.cpp's `regex_exprs` for `LLAMA_VOCAB_PRE_TYPE_DEFAULT`).
const DEFAULT_SPLITS: [&str; 4] = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
];

/// The ChatML template, used when a model ships none.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// The roles a chat message may have: those the chat templates of the supported model
/// families know. A role is template markup, so it cannot be free text.
pub const CHAT_ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "developer"];

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A tokenizer with the model's special tokens and chat template.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Same vocabulary, but special tokens in text are not parsed.
    literal: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Tokens that end a generation (EOS, `<|im_end|>`, `<|eot_id|>`...).
    pub end_of_generation: Vec<u32>,
    pub chat_template: String,
    /// The text of every control token, to find it in message content.
    control_texts: Vec<String>,
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let model = g.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Tokenizer(format!(
                "tokenizer model `{model}` is not supported: edge-reason reads gpt2-style BPE vocabularies; pass a tokenizer.json instead"
            )));
        }
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let merges = g.str_array("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type") {
            Some(Value::Array(a)) => a.iter().map(|v| v.as_f64().unwrap_or(1.0) as i64).collect(),
            _ => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| Error::Tokenizer(format!("merge `{m}` is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        // Without `tokenizer.ggml.pre`, llama.cpp uses its `default` pre-tokenizer.
        let pre = g
            .get("tokenizer.ggml.pre")
            .and_then(|v| match v {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("default");
        // Llama 3 emits a pre-token that is already in the vocabulary whole, without
        // applying merges (llama.cpp's `ignore_merges`, HF's `"ignore_merges": true`).
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(is_llama3(pre))
            .build()
            .map_err(tk_err)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tokenizer(pre)?));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, &t)| t == token_type::CONTROL || t == token_type::USER_DEFINED)
            .map(|(s, &t)| {
                AddedToken::from(s.to_string(), t == token_type::CONTROL).normalized(false)
            })
            .collect();
        inner.add_special_tokens(&added);
        let id = |k: &str| g.get(k).and_then(Value::as_u64).map(|v| v as u32);
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let add_bos = matches!(
            g.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        let chat_template = match g.get("tokenizer.chat_template") {
            Some(Value::String(s)) => s.clone(),
            _ => CHATML_TEMPLATE.to_string(),
        };
        Self::assemble(inner, bos, eos, add_bos, chat_template).checked()
    }

    /// The tokenizer, once its chat template renders a one-message chat: a template that
    /// cannot (a syntax error, a loop past its fuel, an exception) is refused when the
    /// model loads, naming the problem, rather than at the first request.
    fn checked(self) -> Result<Self> {
        self.apply_chat_template(&[Message::new("user", "Hello")], true)
            .map_err(|e| match e {
                Error::ChatTemplate(why) => Error::ChatTemplate(format!(
                    "the model's chat template does not render a one-message chat: {why}"
                )),
                other => other,
            })?;
        Ok(self)
    }

    /// Builds the tokenizer from a Hugging Face `tokenizer.json`; special token ids and
    /// the template come from the GGUF metadata.
    pub fn from_tokenizer_json(json: &[u8], g: &Gguf) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(json).map_err(tk_err)?;
        let from_gguf = Self::from_gguf(g).ok();
        let (bos, eos, add_bos, template) = match from_gguf {
            Some(t) => (t.bos, t.eos, t.add_bos, t.chat_template),
            None => (None, None, false, CHATML_TEMPLATE.to_string()),
        };
        Self::assemble(inner, bos, eos, add_bos, template).checked()
    }

    fn assemble(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        add_bos: bool,
        chat_template: String,
    ) -> Self {
        let mut literal = inner.clone();
        literal.set_encode_special_tokens(true);
        let mut end_of_generation: Vec<u32> = eos.into_iter().collect();
        for name in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<end_of_turn>",
        ] {
            if let Some(t) = inner.token_to_id(name) {
                if !end_of_generation.contains(&t) {
                    end_of_generation.push(t);
                }
            }
        }
        let control_texts = inner
            .get_added_tokens_decoder()
            .into_values()
            .filter(|t| t.special && !t.content.is_empty())
            .map(|t| t.content)
            .collect();
        Tokenizer {
            inner,
            literal,
            bos,
            eos,
            add_bos,
            end_of_generation,
            chat_template,
            control_texts,
        }
    }

    /// Token ids of `text`, without BOS. With `parse_special`, special-token text such
    /// as `<|im_start|>` becomes its one id (as llama.cpp's `special = true`).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let tk = if parse_special {
            &self.inner
        } else {
            &self.literal
        };
        Ok(tk
            .encode_fast(text, false)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// Prompt ids: BOS when the model wants it, then `text` with special tokens parsed.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if let (true, Some(b)) = (self.add_bos, self.bos) {
            ids.push(b);
        }
        ids.extend(self.encode(text, true)?);
        Ok(ids)
    }

    /// Prompt ids of a chat: `messages` rendered with the model's template, with BOS as
    /// [`Tokenizer::encode_prompt`] adds it. Only the template's own markers become
    /// control tokens: each message's content is text, so a message that writes
    /// `<|im_end|>` gets the ids of those characters, never the control token. Roles are
    /// checked against [`CHAT_ROLES`].
    ///
    /// Content without control-token text (every ordinary message) is encoded with the
    /// rest of the rendered prompt in one piece, exactly as llama.cpp and Hugging Face
    /// tokenize a chat; content with such text is cut out of the rendering (the template
    /// is rendered with a placeholder per message) and encoded on its own as plain text.
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        for m in messages {
            if !CHAT_ROLES.contains(&m.role.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "message role {:?} is not one of {}: roles are part of the template's markup, not free text",
                    m.role.chars().take(40).collect::<String>(),
                    CHAT_ROLES.join(", ")
                )));
            }
        }
        if !messages.iter().any(|m| self.has_control_text(&m.content)) {
            return self.encode_prompt(&self.apply_chat_template(messages, add_generation_prompt)?);
        }
        // Render with a placeholder for each content (a private-use character, the marker,
        // the message's index, the character again), then encode the template's text with
        // control tokens parsed and each content as plain text in its place.
        const MARK: &str = "\u{F8FF}edge-reason-content-";
        let placeholder = |i: usize| format!("{MARK}{i}\u{F8FF}");
        let marked: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| Message::new(&m.role, &placeholder(i)))
            .collect();
        let rendered = self.apply_chat_template(&marked, add_generation_prompt)?;
        let mut ids = Vec::new();
        if let (true, Some(b)) = (self.add_bos, self.bos) {
            ids.push(b);
        }
        let mut rest = rendered.as_str();
        while let Some(start) = rest.find(MARK) {
            ids.extend(self.encode(&rest[..start], true)?);
            let after = &rest[start + MARK.len()..];
            let (index, tail) = after
                .split_once('\u{F8FF}')
                .and_then(|(n, tail)| Some((n.parse::<usize>().ok()?, tail)))
                .filter(|(n, _)| *n < messages.len())
                .ok_or_else(|| {
                    Error::ChatTemplate(
                        "the chat template altered a message placeholder: this template cannot render a message that contains control-token text".into(),
                    )
                })?;
            ids.extend(self.encode(&messages[index].content, false)?);
            rest = tail;
        }
        ids.extend(self.encode(rest, true)?);
        Ok(ids)
    }

    /// Prompt ids of one user prompt: as the user's message of a chat (its text is
    /// text, see [`Tokenizer::encode_chat`]) or, without `chat`, as the model's own text
    /// with control tokens parsed ([`Tokenizer::encode_prompt`]).
    pub fn encode_user_prompt(&self, prompt: &str, chat: bool) -> Result<Vec<u32>> {
        if chat {
            self.encode_chat(&[Message::new("user", prompt)], true)
        } else {
            self.encode_prompt(prompt)
        }
    }

    /// Whether `text` holds the text of a control token (`<|im_start|>`, `<eos>`, ...).
    fn has_control_text(&self, text: &str) -> bool {
        self.control_texts.iter().any(|t| text.contains(t.as_str()))
    }

    /// Text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Whether `id` ends a generation.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.end_of_generation.contains(&id)
    }

    /// Renders `messages` with the model's chat template.
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let token = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .unwrap_or_default()
        };
        render_chat_template(
            &self.chat_template,
            messages,
            add_generation_prompt,
            &token(self.bos),
            &token(self.eos),
        )
    }
}

fn is_llama3(pre: &str) -> bool {
    matches!(pre, "llama-bpe" | "llama3" | "llama-v3")
}

fn pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        Ok(Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tk_err)?
        .into())
    };
    let byte_level = |use_regex| ByteLevel::new(false, false, use_regex).into();
    Ok(match pre {
        "gpt2" | "gpt-2" => byte_level(true),
        "default" => {
            let mut steps = DEFAULT_SPLITS
                .iter()
                .map(|re| split(re))
                .collect::<Result<Vec<_>>>()?;
            steps.push(byte_level(false));
            Sequence::new(steps).into()
        }
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into(),
        p if is_llama3(p) => {
            Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level(false)]).into()
        }
        "qwen2" => Sequence::new(vec![split(QWEN2_SPLIT)?, byte_level(false)]).into(),
        other => {
            return Err(Error::Tokenizer(format!(
                "pre-tokenizer `{other}` is not supported (supported: gpt-2, default, smollm, llama-bpe, qwen2); pass the model's tokenizer.json instead"
            )))
        }
    })
}

/// Instructions one chat template render may run: a template comes from the model file,
/// and a loop of a million steps stops with an error in milliseconds instead of
/// stalling the engine. Real templates take tens to a few hundred a message.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// Macro and block nesting a chat template may use (minijinja allows 500).
pub const TEMPLATE_RECURSION: usize = 32;

/// Bytes one render may write beyond its messages' own text: the template's markup.
pub const TEMPLATE_MARKUP_BYTES: usize = 1 << 20;

/// Renders a Jinja chat template the way Hugging Face does (trim and lstrip blocks,
/// Python string methods, `raise_exception`), within [`TEMPLATE_FUEL`] instructions,
/// [`TEMPLATE_RECURSION`] levels and an output of the messages' text plus
/// [`TEMPLATE_MARKUP_BYTES`].
pub fn render_chat_template(
    template: &str,
    messages: &[Message],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    let err = |e: minijinja::Error| Error::ChatTemplate(format!("{e:#}"));
    let mut env = minijinja::Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_RECURSION);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template).map_err(err)?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => bos_token,
        eos_token => eos_token,
    };
    let limit = messages
        .iter()
        .map(|m| m.content.len() + m.role.len())
        .sum::<usize>()
        + TEMPLATE_MARKUP_BYTES;
    let mut out = CappedOutput {
        bytes: Vec::new(),
        limit,
    };
    let rendered = env
        .get_template("chat")
        .map_err(err)?
        .render_captured_to(ctx, &mut out)
        .map(|_| ());
    match rendered {
        // minijinja writes whole strings, so the bytes are UTF-8.
        Ok(_) => String::from_utf8(out.bytes).map_err(|e| Error::ChatTemplate(e.to_string())),
        Err(_) if out.bytes.len() > limit => Err(Error::ChatTemplate(format!(
            "the chat template wrote more than {limit} bytes (its messages plus {TEMPLATE_MARKUP_BYTES} of markup): it is not a chat template this engine renders"
        ))),
        Err(e) => Err(err(e)),
    }
}

/// A render's output that refuses to grow past `limit` bytes.
struct CappedOutput {
    bytes: Vec<u8>,
    limit: usize,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        if self.bytes.len() > self.limit {
            return Err(std::io::Error::other("output limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_renders() {
        let out = render_chat_template(
            CHATML_TEMPLATE,
            &[Message::new("user", "Hi!")],
            true,
            "",
            "<|im_end|>",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn template_errors_are_reported() {
        let t = "{% if messages|length == 0 %}{{ raise_exception('need a message') }}{% endif %}";
        let err = render_chat_template(t, &[], true, "", "").unwrap_err();
        assert!(err.to_string().contains("need a message"), "{err}");
    }

    #[test]
    fn runaway_templates_stop_with_an_error() {
        let cases = [
            // Two nested loops of 100,000: past the fuel in milliseconds.
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            // Output past the cap.
            "{% for i in range(100000) %}{{ 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' }}{% endfor %}",
            // Recursion past the limit.
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        ];
        for t in cases {
            let t0 = std::time::Instant::now();
            let err =
                render_chat_template(t, &[Message::new("user", "hi")], true, "", "").unwrap_err();
            assert_eq!(err.code(), "UNSUPPORTED_MODEL", "{err}");
            assert!(t0.elapsed().as_secs() < 10, "{t}: took {:?}", t0.elapsed());
        }
    }

    #[test]
    fn python_string_methods_work_in_templates() {
        let t = "{{ messages[0]['content'].strip() }}";
        let out = render_chat_template(t, &[Message::new("user", "  x  ")], false, "", "").unwrap();
        assert_eq!(out, "x");
    }
}
