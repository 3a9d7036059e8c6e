//! Property tests of everything the wait pages read from a client or a
//! theme file: the request-head reader on arbitrary bytes (never a panic,
//! every byte kept for replay), the classification of arbitrary heads
//! (Accept, Sec-Fetch-Mode, Upgrade values with any bytes), the opening
//! sniffer, and the template compiler on arbitrary theme text (compiles or
//! names the line; what it renders always escapes the values). Default
//! config: `PROPTEST_CASES` sets the number of cases; failures are kept in
//! `proptest-regressions/`.

#![allow(
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects,
    reason = "tests: a panic is a failure"
)]

use std::time::Duration;

use proptest::prelude::*;

use super::{
    opening::opening,
    request::{classify, read_head, HeadError, Kind},
    template::{Template, TemplateError},
};

const LIMIT: usize = 2048;

fn read(bytes: &[u8]) -> Result<super::Head, HeadError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut reader = bytes;
    runtime.block_on(read_head(&mut reader, Duration::from_secs(5), LIMIT))
}

/// Issue #25 item 1: an Accept parameter of `a` and a two-byte character
/// was sliced at byte 2, inside the character, and the agent panicked.
#[test]
fn accept_parameters_with_multibyte_characters_do_not_panic() {
    for accept in [
        "text/html;a\u{e9}",
        "text/html;\u{e9}=0",
        "text/html; q\u{e9}",
        "text/html;q=\u{20ac}",
        "text/html;\u{1f600}",
    ] {
        let mut raw = b"GET / HTTP/1.1\r\nAccept: ".to_vec();
        raw.extend_from_slice(accept.as_bytes());
        raw.extend_from_slice(b"\r\n\r\n");
        let head = read(&raw).expect("parses");
        assert_eq!(classify(&head), Kind::Navigation, "{accept}");
    }
    let head = read(b"GET / HTTP/1.1\r\nAccept: text/html;Q = 0\r\n\r\n").expect("parses");
    assert_eq!(classify(&head), Kind::Other, "q=0 refuses html");
}

/// Header values made of any bytes httparse lets through (visible ASCII,
/// spaces, tabs and obs-text 0x80..=0xFF), UTF-8 characters included.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..48),
        "[a-z/*+;=,. \u{e9}\u{20ac}\u{1f600}q0-9]{0,40}".prop_map(String::into_bytes),
        // What the Accept reader looks into: parameters of text/html.
        "(text/html|TEXT/HTML|\\*/\\*)(;[ a-zA-Z=0-9.\u{e9}\u{20ac}\u{1f600}]{0,8}){1,3}"
            .prop_map(String::into_bytes),
    ]
}

fn head_with(name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST"]),
        "/[a-z.?#/]{0,12}",
        header_value(),
    )
        .prop_map(move |(method, path, value)| {
            let mut raw = format!("{method} {path} HTTP/1.1\r\n{name}: ").into_bytes();
            raw.extend(value);
            raw.extend_from_slice(b"\r\n\r\n");
            raw
        })
}

proptest! {
    #[test]
    fn prop_request_heads_from_any_bytes_never_panic_and_keep_every_byte(
        bytes in prop::collection::vec(any::<u8>(), 0..3000)
    ) {
        match read(&bytes) {
            Ok(head) => {
                prop_assert!(bytes.starts_with(&head.raw));
                prop_assert!(head.head_len <= head.raw.len());
                let _ = classify(&head);
                let _ = head.body_prefix();
                let _ = head.path_only();
            }
            Err(HeadError::Io(e)) => prop_assert!(false, "no I/O error from a slice: {e}"),
            Err(e) => prop_assert!(bytes.starts_with(e.raw())),
        }
    }

    #[test]
    fn prop_any_accept_fetch_mode_or_upgrade_value_classifies_without_panic(
        raw in prop_oneof![
            head_with("Accept"),
            head_with("Sec-Fetch-Mode"),
            head_with("Upgrade"),
            head_with("X-Requested-With"),
        ]
    ) {
        if let Ok(head) = read(&raw) {
            let kind = classify(&head);
            if head.method == "POST" {
                prop_assert_eq!(kind, Kind::Other);
            }
        }
    }

    #[test]
    fn prop_opening_of_any_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = opening(&bytes);
    }

    #[test]
    fn prop_themes_compile_or_name_a_line_and_always_escape(
        text in "[a-z {}<>\"'\\n\u{e9}\u{1f600}_]{0,80}",
        value in any::<String>()
    ) {
        match Template::compile(&text) {
            Ok(template) => {
                let page = template.render(|_| value.clone());
                let literal: usize = text.matches('<').count();
                prop_assert!(page.matches('<').count() <= literal, "a value added '<': {page:?}");
            }
            Err(TemplateError::UnknownVariable { line, .. }) => {
                prop_assert!((1..=text.matches('\n').count() + 1).contains(&line));
            }
        }
    }
}
