//! The target and slug rules, as tables of good and hostile inputs.

use std::collections::HashSet;

use pier_links::{RESERVED, Slug, SlugError, Target, TargetError};

#[test]
fn good_targets_are_kept_normalised() {
    let cases = [
        ("https://example.com", "https://example.com/"),
        (
            "https://example.com/a/b?q=1#top",
            "https://example.com/a/b?q=1#top",
        ),
        ("HTTPS://EXAMPLE.com/Path", "https://example.com/Path"),
        ("http://example.com:80/x", "http://example.com/x"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("https://example.com/a/./b/../c", "https://example.com/a/c"),
        ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ("https://example.com/a b", "https://example.com/a%20b"),
        ("https://127.0.0.1:8080/", "https://127.0.0.1:8080/"),
        // IPv6 literals are valid URLs; the redirect hands them on and never fetches them.
        ("https://[2606:4700::1111]/x", "https://[2606:4700::1111]/x"),
        ("http://[::1]:8080/", "http://[::1]:8080/"),
        ("https://[2001:DB8:0:0:0:0:0:1]/", "https://[2001:db8::1]/"),
    ];
    for (input, normalised) in cases {
        let target = Target::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(target.as_str(), normalised, "{input}");
    }
}

#[test]
fn hostile_and_broken_targets_are_refused_with_their_reason() {
    let long = format!("https://example.com/{}", "a".repeat(Target::MAX_BYTES));
    // Under the limit as typed, over it once its spaces are percent-encoded.
    let grows = format!("https://example.com/{}x", " ".repeat(Target::MAX_BYTES / 2));
    let cases: Vec<(&str, &str)> = vec![
        ("", "required"),
        (&long, "too_long"),
        (&grows, "too_long"),
        ("javascript:alert(1)", "scheme_not_allowed"),
        ("JavaScript:alert(1)", "scheme_not_allowed"),
        ("java\tscript:alert(1)", "invalid"),
        (
            "data:text/html,<script>alert(1)</script>",
            "scheme_not_allowed",
        ),
        ("file:///etc/passwd", "scheme_not_allowed"),
        ("ftp://example.com/", "scheme_not_allowed"),
        ("vbscript:msgbox", "scheme_not_allowed"),
        ("https://user:pass@example.com/", "credentials_not_allowed"),
        ("https://user@example.com/", "credentials_not_allowed"),
        ("//example.com/path", "invalid"),
        ("/relative/path", "invalid"),
        ("example.com", "invalid"),
        (" https://example.com", "invalid"),
        ("https://example.com\n", "invalid"),
        ("https://exa\u{0}mple.com", "invalid"),
        ("https://", "invalid"),
        ("https://exa mple.com/", "invalid"),
        ("http://[::1/", "invalid"),
        // What the URL parser passes as a host but no resolver serves.
        ("http://246.52.252.2*/", "invalid"),
        ("http://a_b.example/", "invalid"),
        ("http://example.1a/", "invalid"),
        ("http://-example.com/", "invalid"),
        ("https://[2606:4700::1111::1]/", "invalid"),
    ];
    for (input, code) in cases {
        match Target::parse(input) {
            Ok(t) => panic!("{input:?} was accepted as {t}"),
            Err(e) => assert_eq!(e.code(), code, "{input:?}: {e}"),
        }
    }
    assert_eq!(
        Target::parse("javascript:alert(1)"),
        Err(TargetError::Scheme("javascript".into()))
    );
}

#[test]
fn chosen_slugs_follow_the_rules() {
    for good in [
        "a",
        "Launch-2026",
        "under_score",
        "x".repeat(Slug::MAX_CHARS).as_str(),
    ] {
        assert_eq!(Slug::parse(good).expect(good).as_str(), good);
    }
    assert_ne!(Slug::parse("Sale"), Slug::parse("sale"), "case-sensitive");
    let refused: Vec<(String, &str)> = vec![
        (String::new(), "required"),
        ("x".repeat(Slug::MAX_CHARS + 1), "too_long"),
        ("a/b".into(), "invalid"),
        ("a.b".into(), "invalid"),
        ("..".into(), "invalid"),
        ("with space".into(), "invalid"),
        ("émoji".into(), "invalid"),
        ("%2e%2e".into(), "invalid"),
        ("docs".into(), "reserved"),
        ("Docs".into(), "reserved"),
        ("V1".into(), "reserved"),
        ("healthz".into(), "reserved"),
    ];
    for (input, code) in &refused {
        let err = Slug::parse(input).expect_err(input);
        assert_eq!(err.code(), *code, "{input:?}: {err}");
    }
    for reserved in RESERVED {
        assert!(matches!(Slug::parse(reserved), Err(SlugError::Reserved(_))));
    }
}

#[test]
fn generated_slugs_are_seven_unambiguous_characters_and_valid() {
    let mut seen = HashSet::new();
    for _ in 0..10_000 {
        let slug = Slug::generate();
        let text = slug.as_str();
        assert_eq!(text.len(), Slug::GENERATED_CHARS);
        assert!(!text.contains(['0', 'O', 'o', '1', 'l', 'I']), "{text}");
        assert_eq!(Slug::parse(text).as_ref(), Ok(&slug));
        seen.insert(slug);
    }
    assert!(seen.len() > 9_990, "random enough: {} distinct", seen.len());
}
