//! Conformance with flagd's own test suite: the flag definitions of `open-feature/flagd-testbed`
//! (`evaluator/flags/testkit-flags.json`, testbed v3.9.0, commit 82ba89e, copied unchanged to
//! `tests/data/`) and the expected results of its evaluator scenarios
//! (`evaluator/gherkin/*.feature`), taking the `@fractional-v2` examples: the bucketing of the
//! flagd daemon v0.16.1.

use pier_flags::{Context, Document, ErrorCode, Flag, Reason, VariantKind};
use serde_json::{Map, Value, json};

fn testkit() -> Value {
    serde_json::from_str(include_str!("data/testkit-flags.json")).expect("the testkit is JSON")
}

/// The testkit without its one flag that refers to a missing evaluator (flagd fails that flag
/// when it is evaluated; Pier refuses it when it is stored, see below).
fn flags() -> Vec<Flag> {
    let mut document = testkit();
    document["flags"]
        .as_object_mut()
        .expect("flags")
        .remove("ref-to-nonexistent-evaluator-flag");
    Document::parse(&document)
        .expect("the testkit is valid")
        .flags
}

struct Case {
    key: &'static str,
    context: Value,
    /// `None`: the caller's default (the scenario's "fallback").
    value: Option<Value>,
    reason: Option<Reason>,
}

fn case(key: &'static str, context: Value, value: Option<Value>) -> Case {
    Case {
        key,
        context,
        value,
        reason: None,
    }
}

fn with_reason(key: &'static str, context: Value, value: Option<Value>, reason: Reason) -> Case {
    Case {
        reason: Some(reason),
        ..case(key, context, value)
    }
}

fn user(name: &str) -> Value {
    json!({"user": {"name": name}})
}

fn tk(key: &str) -> Value {
    json!({"targetingKey": key})
}

fn cases() -> Vec<Case> {
    let s = |text: &str| Some(json!(text));
    let none = json!({});
    let mut cases = vec![
        // evaluation.feature
        case("boolean-flag", none.clone(), Some(json!(true))),
        case("string-flag", none.clone(), s("hi")),
        case("integer-flag", none.clone(), Some(json!(10))),
        case("float-flag", none.clone(), Some(json!(0.5))),
        case(
            "object-flag",
            none.clone(),
            Some(
                json!({"showImages": true, "title": "Check out these pics!", "imagesPerPage": 100}),
            ),
        ),
        // zero-values.feature
        case("boolean-zero-flag", none.clone(), Some(json!(false))),
        case("string-zero-flag", none.clone(), s("")),
        case("integer-zero-flag", none.clone(), Some(json!(0))),
        case("float-zero-flag", none.clone(), Some(json!(0.0))),
        case("object-zero-flag", none.clone(), Some(json!({}))),
        case(
            "boolean-targeted-zero-flag",
            none.clone(),
            Some(json!(false)),
        ),
        case("string-targeted-zero-flag", none.clone(), s("")),
        case("integer-targeted-zero-flag", none.clone(), Some(json!(0))),
        case("float-targeted-zero-flag", none.clone(), Some(json!(0.0))),
        // no-default-variant.feature
        with_reason("null-default-flag", none.clone(), None, Reason::Default),
        with_reason(
            "undefined-default-flag",
            none.clone(),
            None,
            Reason::Default,
        ),
        with_reason(
            "no-default-flag-null-targeting-variant",
            json!({"email": "wozniak@orange.com"}),
            None,
            Reason::Default,
        ),
        with_reason(
            "no-default-flag-null-targeting-variant",
            json!({"email": "jobs@orange.com"}),
            s("CEO"),
            Reason::TargetingMatch,
        ),
        with_reason(
            "no-default-flag-undefined-targeting-variant",
            json!({"email": "wozniak@orange.com"}),
            None,
            Reason::Default,
        ),
        // targeting.feature
        with_reason(
            "targeting-key-flag",
            tk("5c3d8535-f81a-4478-a6d3-afaa4d51199e"),
            s("hit"),
            Reason::TargetingMatch,
        ),
        with_reason(
            "targeting-key-flag",
            tk("f20bd32d-703b-48b6-bc8e-79d53c85134a"),
            s("miss"),
            Reason::Default,
        ),
        // evaluator-refs.feature
        case(
            "some-email-targeted-flag",
            json!({"email": "ballmer@macrosoft.com"}),
            s("hi"),
        ),
        case(
            "some-other-email-targeted-flag",
            json!({"email": "ballmer@macrosoft.com"}),
            s("yes"),
        ),
        // fractional.feature, @fractional-v2
        case("fractional-flag", user("jack"), s("hearts")),
        case("fractional-flag", user("queen"), s("spades")),
        case("fractional-flag", user("ten"), s("clubs")),
        case("fractional-flag", user("nine"), s("diamonds")),
        case("fractional-flag", user("3"), s("clubs")),
        case(
            "fractional-flag-shorthand",
            tk("jon@company.com"),
            s("heads"),
        ),
        case(
            "fractional-flag-shorthand",
            tk("jane@company.com"),
            s("tails"),
        ),
        case("fractional-flag-A-shared-seed", user("seven"), s("hearts")),
        case(
            "fractional-flag-A-shared-seed",
            user("eight"),
            s("diamonds"),
        ),
        case("fractional-flag-A-shared-seed", user("nine"), s("clubs")),
        case("fractional-flag-A-shared-seed", user("two"), s("spades")),
        case(
            "fractional-flag-B-shared-seed",
            user("seven"),
            s("ace-of-hearts"),
        ),
        case(
            "fractional-flag-B-shared-seed",
            user("eight"),
            s("ace-of-diamonds"),
        ),
        case(
            "fractional-flag-B-shared-seed",
            user("nine"),
            s("ace-of-clubs"),
        ),
        case(
            "fractional-flag-B-shared-seed",
            user("two"),
            s("ace-of-spades"),
        ),
        case(
            "fractional-single-entry-flag",
            tk("some-targeting-key"),
            s("single"),
        ),
        case(
            "fractional-as-condition-flag",
            tk("some-targeting-key"),
            s("hundreds"),
        ),
        case(
            "fractional-as-condition-false-flag",
            tk("some-targeting-key"),
            s("ones"),
        ),
        with_reason(
            "fractional-null-bucket-key-flag",
            none.clone(),
            s("fallback"),
            Reason::Default,
        ),
        with_reason(
            "fractional-zero-weights-flag",
            tk("any-user"),
            s("fallback"),
            Reason::Default,
        ),
        case("fractional-negative-weight-flag", tk("any-user"), s("two")),
        // string.feature
        case("starts-ends-flag", json!({"id": "abcdef"}), s("prefix")),
        case("starts-ends-flag", json!({"id": "uvwxyz"}), s("postfix")),
        case("starts-ends-flag", json!({"id": "abcxyz"}), s("prefix")),
        case("starts-ends-flag", json!({"id": "lmnopq"}), s("none")),
        // semver.feature
        case(
            "equal-greater-lesser-version-flag",
            json!({"version": "2.0.0"}),
            s("equal"),
        ),
        case(
            "equal-greater-lesser-version-flag",
            json!({"version": "2.1.0"}),
            s("greater"),
        ),
        case(
            "equal-greater-lesser-version-flag",
            json!({"version": "1.9.0"}),
            s("lesser"),
        ),
        case(
            "equal-greater-lesser-version-flag",
            json!({"version": "2.0.0-alpha"}),
            s("lesser"),
        ),
        case(
            "equal-greater-lesser-version-flag",
            json!({"version": "2.0.0.0"}),
            s("none"),
        ),
        case(
            "major-minor-version-flag",
            json!({"version": "3.0.1"}),
            s("minor"),
        ),
        case(
            "major-minor-version-flag",
            json!({"version": "3.1.0"}),
            s("major"),
        ),
        case(
            "major-minor-version-flag",
            json!({"version": "4.0.0"}),
            s("none"),
        ),
        case(
            "semver-build-metadata-flag",
            json!({"version": "1.0.0"}),
            s("match"),
        ),
        case(
            "semver-build-metadata-flag",
            json!({"version": "1.0.0+other"}),
            s("match"),
        ),
        case(
            "semver-build-metadata-flag",
            json!({"version": "2.0.0"}),
            s("no-match"),
        ),
        case(
            "semver-numeric-context-flag",
            json!({"version": 1.2}),
            s("match"),
        ),
        case(
            "semver-numeric-context-flag",
            json!({"version": 1.1}),
            s("no-match"),
        ),
        case(
            "semver-numeric-context-flag",
            json!({"version": 2}),
            s("match"),
        ),
        case(
            "semver-numeric-context-flag",
            json!({"version": 1}),
            s("no-match"),
        ),
        case(
            "semver-numeric-context-flag",
            json!({"version": "1.2"}),
            s("match"),
        ),
    ];
    for (key, value) in [
        (
            "fractional-hash-edge-flag",
            [("ejOoVL", "lower"), ("bY9fO-", "lower"), ("SI7p-", "lower")].as_slice(),
        ),
        (
            "fractional-hash-edge-flag",
            &[("6LvT0", "upper"), ("ceQdGm", "upper")],
        ),
    ] {
        for (target, expected) in value {
            cases.push(case(key, tk(target), s(expected)));
        }
    }
    for version in ["1.0.0", "v1.0.0", "V1.0.0"] {
        cases.push(case(
            "semver-v-prefix-flag",
            json!({"version": version}),
            s("match"),
        ));
    }
    cases.push(case(
        "semver-v-prefix-flag",
        json!({"version": "2.0.0"}),
        s("no-match"),
    ));
    for version in [
        json!("1.5.0"),
        json!("1.0.0"),
        json!("1.0"),
        json!("1"),
        json!(1),
        json!(1.0),
        json!(1.2),
    ] {
        cases.push(case(
            "semver-partial-version-flag",
            json!({"version": version}),
            s("match"),
        ));
    }
    cases.push(case(
        "semver-partial-version-flag",
        json!({"version": "2.0.0"}),
        s("no-match"),
    ));
    for (tier, tk_, expected) in [
        ("premium", "jon@company.com", "premium"),
        ("basic", "jon@company.com", "standard"),
        ("premium", "user1", "standard"),
        ("basic", "user1", "standard"),
    ] {
        let context = json!({"targetingKey": tk_, "tier": tier});
        cases.push(case("fractional-nested-if-flag", context, s(expected)));
    }
    for (tk_, color, expected) in [
        ("jon@company.com", "red", Some("red")),
        ("jon@company.com", "green", Some("green")),
        ("user1", "red", Some("blue")),
        ("jon@company.com", "yellow", None),
        ("jon@company.com", "", None),
    ] {
        let context = json!({"targetingKey": tk_, "color": color});
        cases.push(case(
            "fractional-nested-var-flag",
            context,
            expected.map(|v| json!(v)),
        ));
    }
    for (tk_, tier, expected) in [
        ("jon@company.com", "premium", "red"),
        ("jon@company.com", "basic", "blue"),
        ("user1", "premium", "red"),
        ("user1", "basic", "blue"),
    ] {
        let context = json!({"targetingKey": tk_, "tier": tier});
        cases.push(case("fractional-nested-weight-flag", context, s(expected)));
    }
    // @operator-errors: operators that cannot apply answer null, so the default variant.
    for (key, context) in [
        (
            "semver-invalid-version-flag",
            json!({"version": "not-a-version"}),
        ),
        ("semver-invalid-operator-flag", json!({"version": "1.0.0"})),
        ("semver-wrong-args-flag", json!({"version": "1.0.0"})),
        ("starts-with-non-string-flag", json!({"num": 123})),
        ("ends-with-non-string-flag", json!({"num": 123})),
        ("starts-with-wrong-args-flag", none.clone()),
        ("ends-with-wrong-args-flag", none.clone()),
    ] {
        cases.push(with_reason(key, context, s("fallback"), Reason::Default));
    }
    for email in ["ballmer@macrosoft.com", "user@example.com"] {
        let expected = if email.starts_with("ballmer") {
            "hi"
        } else {
            "bye"
        };
        for key in [
            "ref-whitespace-compact-flag",
            "ref-whitespace-space-after-colon-flag",
            "ref-whitespace-space-around-colon-flag",
        ] {
            cases.push(with_reason(
                key,
                json!({"email": email}),
                s(expected),
                Reason::TargetingMatch,
            ));
        }
    }
    cases
}

fn evaluate(flags: &[Flag], key: &str, context: &Value) -> pier_flags::Resolution {
    let attributes: Map<String, Value> = context.as_object().cloned().unwrap_or_default();
    let flag = flags.iter().find(|flag| flag.key().as_str() == key);
    let flag = flag.unwrap_or_else(|| panic!("the testkit has {key}"));
    flag.evaluate(&mut Context::new(attributes, 1_700_000_000))
}

#[test]
fn every_testbed_scenario_resolves_as_flagd_does() {
    let flags = flags();
    let cases = cases();
    assert!(cases.len() > 100, "{} cases", cases.len());
    for case in cases {
        let resolution = evaluate(&flags, case.key, &case.context);
        assert_eq!(
            resolution.value, case.value,
            "{} with {}",
            case.key, case.context
        );
        if let Some(reason) = case.reason {
            assert_eq!(
                resolution.reason, reason,
                "{} with {}",
                case.key, case.context
            );
        }
        assert!(resolution.error.is_none() || resolution.value.is_none());
    }
}

#[test]
fn variants_that_name_no_variant_are_a_general_error() {
    let flags = flags();
    let context = json!({"targetingKey": "jon@company.com", "color": "yellow"});
    let resolution = evaluate(&flags, "fractional-nested-var-flag", &context);
    assert_eq!(
        (resolution.reason, resolution.error),
        (Reason::Error, Some(ErrorCode::General))
    );
}

#[test]
fn disabled_flags_resolve_to_the_callers_default() {
    let flags = flags();
    for key in [
        "disabled-boolean-flag",
        "disabled-string-flag",
        "disabled-integer-flag",
        "disabled-float-flag",
        "disabled-object-flag",
    ] {
        let resolution = evaluate(&flags, key, &json!({}));
        assert_eq!(
            (resolution.value, resolution.reason),
            (None, Reason::Disabled),
            "{key}"
        );
    }
}

#[test]
fn a_value_of_another_type_is_a_type_mismatch() {
    let flags = flags();
    let resolution = evaluate(&flags, "wrong-flag", &json!({})).expecting(VariantKind::Number);
    assert_eq!(resolution.error, Some(ErrorCode::TypeMismatch));
    let resolution = evaluate(&flags, "wrong-flag", &json!({})).expecting(VariantKind::String);
    assert_eq!(resolution.value, Some(json!("uno")));
}

#[test]
fn metadata_comes_with_the_resolution() {
    let flags = flags();
    let resolution = evaluate(&flags, "metadata-flag", &json!({}));
    assert_eq!(
        Value::Object(resolution.metadata),
        json!({"string": "1.0.2", "integer": 2, "boolean": true, "float": 0.1})
    );
    assert!(
        evaluate(&flags, "boolean-flag", &json!({}))
            .metadata
            .is_empty()
    );
}

#[test]
fn a_ref_to_no_evaluator_is_refused_with_its_path() {
    let errors = Document::parse(&testkit()).expect_err("a missing evaluator is refused");
    let errors = errors.into_vec();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].field,
        "flags.ref-to-nonexistent-evaluator-flag.targeting.if[0].$ref"
    );
    assert_eq!(errors[0].code, "unknown_evaluator");
}
