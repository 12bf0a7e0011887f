//! The rules Pier adds to flagd's: faults found when a flag is stored, named by path, and
//! evaluation that stays bounded whatever the context; plus flagd daemon behaviours the testbed
//! does not pin.

use pier_flags::logic::{MAX_DEPTH, MAX_OPERATIONS};
use pier_flags::{Context, Document, ErrorCode, Flag, FlagKey, Reason};
use serde_json::{Map, Value, json};

fn key(text: &str) -> FlagKey {
    FlagKey::parse(text).expect("a valid key")
}

fn parse(definition: Value) -> Result<Flag, Vec<(String, String)>> {
    Flag::parse(key("f"), &definition, "", &Map::new()).map_err(|errors| {
        errors
            .into_vec()
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    })
}

fn faults(definition: Value) -> Vec<(String, String)> {
    parse(definition).expect_err("the definition is refused")
}

fn fault(field: &str, code: &str) -> Vec<(String, String)> {
    vec![(field.to_owned(), code.to_owned())]
}

fn with_targeting(targeting: Value) -> Value {
    json!({"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a", "targeting": targeting})
}

fn evaluate(flag: &Flag, context: Value) -> pier_flags::Resolution {
    let attributes = context.as_object().cloned().unwrap_or_default();
    flag.evaluate(&mut Context::new(attributes, 1_700_000_000))
}

#[test]
fn structural_faults_name_their_path() {
    assert_eq!(
        faults(json!({"state": "ENABLED", "defaultVariant": "a"})),
        fault("variants", "required")
    );
    assert_eq!(
        faults(json!({"state": "ON", "variants": {"a": true}})),
        fault("state", "invalid")
    );
    assert_eq!(
        faults(json!({"state": "ENABLED", "variants": {"a": true}, "defaultVariant": "b"})),
        fault("defaultVariant", "unknown_variant")
    );
    assert_eq!(
        faults(json!({"state": "ENABLED", "variants": {"a": true, "b": "no"}})),
        fault("variants.b", "type_mismatch")
    );
    assert_eq!(
        faults(json!({"state": "ENABLED", "variants": {"a": [1]}})),
        fault("variants.a", "invalid")
    );
    assert_eq!(
        faults(json!({"state": "ENABLED", "variants": {"a": 1}, "rules": {}})),
        fault("rules", "unknown_field")
    );
    assert_eq!(
        faults(json!({"state": "ENABLED", "variants": {"a": 1}, "metadata": {"m": [1]}})),
        fault("metadata.m", "invalid")
    );
}

#[test]
fn an_unknown_operator_is_refused_where_it_is() {
    let rule = json!({"if": [{"==": [1, 1]}, {"regex_match": ["a", "b"]}, null]});
    assert_eq!(
        faults(with_targeting(rule)),
        fault("targeting.if[1].regex_match", "unknown_operator")
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_refused() {
    let mut rule = json!("a");
    for _ in 0..MAX_DEPTH {
        rule = json!({"if": [true, rule]});
    }
    let errors = faults(with_targeting(rule));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].1, "too_deep");
    assert!(
        errors[0].0.starts_with("targeting.if[1].if[1]."),
        "{}",
        errors[0].0
    );

    let mut rule = json!("a");
    for _ in 0..MAX_DEPTH / 2 - 1 {
        rule = json!({"if": [true, rule]});
    }
    let flag = parse(with_targeting(rule)).expect("within the limit");
    assert_eq!(evaluate(&flag, json!({})).variant.as_deref(), Some("a"));
}

#[test]
fn evaluators_that_refer_in_a_cycle_are_refused() {
    let document = json!({
        "$evaluators": {
            "one": {"and": [{"$ref": "two"}, true]},
            "two": {"or": [{"$ref": "one"}]}
        },
        "flags": {"f": with_targeting(json!({"if": [{"$ref": "one"}, "b", "a"]}))}
    });
    let errors = Document::parse(&document).expect_err("a cycle").into_vec();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].code, "evaluator_cycle");
    assert_eq!(errors[0].field, "$evaluators.two.or[0].$ref");
}

#[test]
fn shared_evaluators_multiplying_past_the_node_limit_are_refused() {
    let mut evaluators = Map::new();
    evaluators.insert("e0".into(), json!([1, 2, 3, 4]));
    for level in 1..20 {
        let below = format!("e{}", level - 1);
        evaluators.insert(
            format!("e{level}"),
            json!({"merge": [{"$ref": below}, {"$ref": below}]}),
        );
    }
    let document = json!({
        "$evaluators": evaluators,
        "flags": {"f": with_targeting(json!({"if": [{"$ref": "e19"}, "b", "a"]}))}
    });
    let errors = Document::parse(&document)
        .expect_err("too large")
        .into_vec();
    assert_eq!(errors[0].code, "too_large");
}

#[test]
fn document_fields_are_checked() {
    let errors = Document::parse(&json!({"$schema": {}, "flags": {}})).expect_err("refused");
    assert_eq!(errors.into_vec()[0].field, "$schema");
    let errors = Document::parse(&json!({"flags": {}, "metadata": {}})).expect_err("refused");
    assert_eq!(errors.into_vec()[0].field, "metadata");
}

#[test]
fn documents_over_the_size_limit_are_refused() {
    assert!(Document::check_size(1 << 20, 1 << 20).is_ok());
    let errors = Document::check_size((1 << 20) + 1, 1 << 20).expect_err("too large");
    assert_eq!(errors.into_vec()[0].field, "document");
}

const _: () = assert!(MAX_OPERATIONS < 25_000);

#[test]
fn evaluation_stops_after_its_operation_budget() {
    // 25,000 elements to visit: more than the budget (checked at compile time below).
    let big: Vec<u32> = (0..5_000).collect();
    let rule = json!({"if": [{"in": [1, {"merge": [big.clone(), big.clone(), big.clone(), big.clone(), big]}]}, "b", "a"]});
    let flag = parse(with_targeting(rule)).expect("valid");
    let resolution = evaluate(&flag, json!({}));
    assert_eq!(
        (resolution.reason, resolution.error),
        (Reason::Error, Some(ErrorCode::General))
    );
}

#[test]
fn hostile_contexts_resolve_without_panicking() {
    let rule = json!({"if": [
        {"in": [{"var": "a"}, {"var": "b"}]}, "b",
        {"<": [{"var": "c"}, {"var": "d"}, {"var": "e"}]}, "b",
        {"sem_ver": [{"var": "v"}, {"var": "op"}, "1.0.0"]}, "b",
        {"fractional": [{"var": "f"}, ["a", {"var": "w"}], ["b", 1]]}, "b",
        {"substr": [{"var": "s"}, {"var": "n"}, {"var": "m"}]}, "b",
        {"cat": [{"var": "a"}, {"var": "b"}]}, "a", null
    ]});
    let flag = parse(with_targeting(rule)).expect("valid");
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e308),
        json!(-1e308),
        json!(0.5),
        json!(""),
        json!("é😀"),
        json!([]),
        json!([[1, 2]]),
        json!({}),
        json!({"x": {"y": []}}),
        json!(u64::MAX),
        json!(i64::MIN),
        json!("999999999999999999999.0.0"),
    ];
    let names = [
        "a",
        "b",
        "c",
        "d",
        "e",
        "v",
        "op",
        "f",
        "w",
        "s",
        "n",
        "m",
        "targetingKey",
    ];
    for (i, name) in names.iter().enumerate() {
        for (j, value) in values.iter().enumerate() {
            let mut context = Map::new();
            for (k, other) in names.iter().enumerate() {
                context.insert(
                    (*other).to_owned(),
                    values[(i + j + k) % values.len()].clone(),
                );
            }
            context.insert((*name).to_owned(), value.clone());
            let resolution = evaluate(&flag, Value::Object(context));
            assert!(resolution.value.is_some() || resolution.reason == Reason::Error);
        }
    }
}

#[test]
fn fractional_falls_back_to_the_targeting_key() {
    // flagd v0.16.1: a bucketing value that evaluates to null is dropped, and the flag key plus
    // the targeting key are hashed instead (the shorthand).
    let by_missing =
        with_targeting(json!({"fractional": [{"var": "missing"}, ["a", 50], ["b", 50]]}));
    let shorthand = with_targeting(json!({"fractional": [["a", 50], ["b", 50]]}));
    let (by_missing, shorthand) = (
        parse(by_missing).expect("valid"),
        parse(shorthand).expect("valid"),
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..50 {
        let context = json!({"targetingKey": format!("user-{i}")});
        let ours = evaluate(&by_missing, context.clone());
        assert_eq!(ours, evaluate(&shorthand, context));
        assert_eq!(ours.reason, Reason::TargetingMatch);
        seen.insert(ours.variant);
    }
    assert_eq!(seen.len(), 2, "both buckets are used");
}

#[test]
fn flagd_properties_are_in_the_context() {
    let rule = json!({"if": [
        {"and": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, {">=": [{"var": "$flagd.timestamp"}, 1_700_000_000]}]},
        "b", "a"
    ]});
    let flag = parse(with_targeting(rule)).expect("valid");
    // A caller's own `$flagd` is replaced, as flagd does.
    let resolution = evaluate(
        &flag,
        json!({"$flagd": {"flagKey": "other", "timestamp": 0}}),
    );
    assert_eq!(resolution.variant.as_deref(), Some("b"));
}

#[test]
fn export_inlines_evaluators_and_reads_back_the_same() {
    let document = json!({
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@pier.dev"]}},
        "flags": {"f": with_targeting(json!({"if": [{"$ref": "staff"}, "b", null]}))}
    });
    let flags = Document::parse(&document).expect("valid").flags;
    let exported = Document::export(&flags);
    assert_eq!(
        exported["flags"]["f"]["targeting"],
        json!({"if": [{"ends_with": [{"var": ["email"]}, "@pier.dev"]}, "b", null]})
    );
    let again = Document::parse(&exported)
        .expect("an export reads back")
        .flags;
    let context = json!({"email": "ana@pier.dev"});
    assert_eq!(
        evaluate(&again[0], context.clone()),
        evaluate(&flags[0], context)
    );
}

#[test]
fn flag_keys_are_path_safe() {
    for good in ["a", "new-checkout", "A.b_c-1"] {
        assert!(FlagKey::parse(good).is_ok(), "{good}");
    }
    for bad in ["", "-a", "a b", "a/b", "é", "document", &"a".repeat(129)] {
        assert!(FlagKey::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_flag_reads_the_clock_only_through_flagds_timestamp_or_the_whole_data() {
    let reads = |targeting: Value| {
        parse(with_targeting(targeting))
            .expect("valid")
            .reads_clock()
    };
    assert!(!reads(json!({"fractional": [["on", 50], ["off", 50]]})));
    assert!(!reads(
        json!({"if": [{"==": [{"var": "$flagd.flagKey"}, "x"]}, "on", "off"]})
    ));
    assert!(!reads(json!({"in": [{"var": "email"}, ["a", "b"]]})));
    assert!(reads(
        json!({"if": [{">": [{"var": "$flagd.timestamp"}, 1_700_000_000]}, "on", "off"]})
    ));
    assert!(
        reads(json!({"if": [{"var": ["", "x"]}, "on", "off"]})),
        "the whole data"
    );
    assert!(
        reads(json!({"if": [{"var": {"cat": ["$flagd", ".timestamp"]}}, "on", "off"]})),
        "a path computed at evaluation"
    );
    let static_flag = json!({"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on"});
    assert!(!parse(static_flag).expect("valid").reads_clock());
}
