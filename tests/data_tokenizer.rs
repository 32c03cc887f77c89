//! The tiny model's tokenizer (`models/tiny-math/`): ChatML special ids, exact round trips on
//! task text, one token per digit, and reproducible training.

use std::path::PathBuf;

use grpo::data::load_jsonl;
use grpo::data::prompt::PromptTemplate;
use grpo::data::tokenizer::{render_chatml, train_tokenizer, training_texts, CHAT_TEMPLATE};
use tokenizers::Tokenizer;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny-math"))
}

fn tok() -> Tokenizer {
    Tokenizer::from_file(dir().join("tokenizer.json")).unwrap()
}

fn arith(split: &str) -> Vec<grpo::data::Example> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/arith"))
        .join(format!("{split}.jsonl"));
    load_jsonl(&path, "question", "answer").unwrap()
}

#[test]
fn special_tokens_have_chatml_ids() {
    let t = tok();
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(t.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    let v = t.get_vocab_size(true);
    assert!((400..=512).contains(&v), "vocab {v}");
    let ids = t
        .encode("<|im_start|>user\n3+4<|im_end|>\n", false)
        .unwrap();
    let ids = ids.get_ids();
    assert_eq!(ids[0], 1);
    assert!(ids.contains(&2));
    assert_eq!(ids.iter().filter(|&&i| i <= 2).count(), 2);
}

#[test]
fn task_text_round_trips_exactly() {
    let t = tok();
    for ex in arith("validation") {
        let msgs = PromptTemplate::qwen_math().sft_messages(&ex).unwrap();
        let chat = render_chatml(&msgs);
        for text in [
            ex.question.as_str(),
            ex.solution.as_deref().unwrap(),
            chat.as_str(),
        ] {
            let enc = t.encode(text, false).unwrap();
            let back = t.decode(enc.get_ids(), false).unwrap();
            assert_eq!(back, text);
        }
    }
}

#[test]
fn every_digit_is_its_own_token() {
    let t = tok();
    let digit_ids: Vec<u32> = (0..10)
        .map(|d| t.token_to_id(&d.to_string()).unwrap())
        .collect();
    let enc = t.encode("105-33=72.", false).unwrap();
    let d = |c: u32| digit_ids[c as usize];
    let eq = t.token_to_id("=").unwrap();
    let minus = t.token_to_id("-").unwrap();
    let dot = t.token_to_id(".").unwrap();
    assert_eq!(
        enc.get_ids(),
        [d(1), d(0), d(5), minus, d(3), d(3), eq, d(7), d(2), dot]
    );
}

#[test]
fn tokens_per_problem_are_short() {
    let t = tok();
    let rows = arith("test");
    let count = |s: &str| t.encode(s, false).unwrap().len();
    let q = rows.iter().map(|r| count(&r.question)).max().unwrap();
    let s = rows
        .iter()
        .map(|r| count(r.solution.as_deref().unwrap()))
        .max()
        .unwrap();
    assert!(q <= 45, "longest question {q} tokens");
    assert!(s <= 60, "longest solution {s} tokens");
}

#[test]
fn committed_tokenizer_is_reproducible() {
    let rows: Vec<(String, String)> = arith("train")
        .into_iter()
        .map(|e| (e.question, e.solution.unwrap()))
        .collect();
    let texts = training_texts(&rows);
    let fresh = train_tokenizer(texts.iter(), 512).unwrap();
    let committed = std::fs::read_to_string(dir().join("tokenizer.json")).unwrap();
    assert!(
        fresh.to_string(true).unwrap() == committed,
        "retrained tokenizer.json differs"
    );
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["chat_template"], CHAT_TEMPLATE);
    assert_eq!(config["eos_token"], "<|im_end|>");
    assert_eq!(config["pad_token"], "<|endoftext|>");
    let generation: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir().join("generation_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(generation["eos_token_id"], 2);
    assert_eq!(generation["pad_token_id"], 0);
}

#[test]
fn model_loader_renders_the_same_chatml() {
    let t = grpo::model::Tokenizer::load(&dir()).unwrap();
    assert_eq!(t.eos_token_ids(), vec![2]);
    assert_eq!(t.pad_token_id(), 0);
    let ex = &arith("validation")[3];
    let msgs = PromptTemplate::qwen_math().messages(ex);
    let rendered = t.apply_chat_template(&msgs, true).unwrap();
    assert_eq!(rendered, render_chatml(&msgs) + "<|im_start|>assistant\n");
    let ids = t.encode(&rendered, false).unwrap();
    assert_eq!(t.decode(&ids, false).unwrap(), rendered);
}
