//! Vectors come from github.com/standard-webhooks/standard-webhooks (commit b2fa7b87); each
//! test names the file. Only the facts (inputs and outputs) are taken from there.

use crate::*;

/// Secret, id, timestamp and body shared by the JavaScript, Python and Go reference tests.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const TIMESTAMP: i64 = 1_614_265_330;
const BODY: &[u8] = br#"{"test": 2432232314}"#;
const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

fn secret() -> SigningSecret {
    SigningSecret::parse(SECRET).expect("reference secret parses")
}

fn other_secret() -> SigningSecret {
    SigningSecret::from_bytes(vec![7; 32]).expect("32 bytes is a valid length")
}

fn headers<'a>(timestamp: &'a str, signature: &'a str) -> Headers<'a> {
    Headers {
        id: MSG_ID,
        timestamp,
        signature,
    }
}

/// Verifies the reference message (`MSG_ID`, `BODY`) signed at `signed_at`, claiming
/// `claimed_at` in the timestamp header, with the receiver's clock at `now`.
fn check(signed_at: i64, claimed_at: i64, now: i64) -> Result<(), VerifyError> {
    let signature = sign(&secret(), MSG_ID, signed_at, BODY);
    let claimed = claimed_at.to_string();
    verify_one(&secret(), headers(&claimed, &signature), BODY, now)
}

// --- Published vectors -------------------------------------------------------------------

#[test]
fn vector_sign_javascript_python_go() {
    // libraries/javascript/src/webhook.test.ts ("sign function works"),
    // libraries/python/tests/test_webhooks.py (test_sign_function),
    // libraries/go/webhook_test.go (TestWebhookSign): all the same vector.
    assert_eq!(sign(&secret(), MSG_ID, TIMESTAMP, BODY), SIGNATURE);
    let ts = TIMESTAMP.to_string();
    assert_eq!(
        verify_one(&secret(), headers(&ts, SIGNATURE), BODY, TIMESTAMP),
        Ok(())
    );
}

#[test]
fn vector_sign_rust() {
    // libraries/rust/src/lib.rs (test_sign).
    let secret =
        SigningSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").expect("secret parses");
    let body = br#"{"email":"test@example.com","username":"test_user"}"#;
    let expected = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
    assert_eq!(
        sign(
            &secret,
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            1_649_367_553,
            body
        ),
        expected
    );
    let headers = Headers {
        id: "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
        timestamp: "1649367553",
        signature: expected,
    };
    assert_eq!(verify_one(&secret, headers, body, 1_649_367_553), Ok(()));
}

#[test]
fn vector_near_miss_signature_is_rejected() {
    // libraries/python/tests/test_webhooks.py (test_invalid_signature_raises_error): the
    // vector's signature with its last base64 digit changed.
    let ts = TIMESTAMP.to_string();
    let near_miss = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";
    assert_eq!(
        verify_one(&secret(), headers(&ts, near_miss), BODY, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn vector_multi_signature_header() {
    // libraries/javascript/src/webhook.test.ts ("multi sig payload is valid"), also in
    // libraries/python/tests/test_webhooks.py and libraries/go/webhook_test.go: decoys,
    // including a `v2` entry, around the valid signature.
    let decoy = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
    let ts = TIMESTAMP.to_string();
    let header = format!("v1,{decoy} v2,{decoy} {SIGNATURE} v1,{decoy}");
    assert_eq!(
        verify_one(&secret(), headers(&ts, &header), BODY, TIMESTAMP),
        Ok(())
    );
    let without_valid = format!("v1,{decoy} v2,{decoy} v1,{decoy}");
    assert_eq!(
        verify_one(&secret(), headers(&ts, &without_valid), BODY, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn vector_rust_multi_signature_decoys() {
    // libraries/rust/src/lib.rs (test_verify_with_multiple_signatures and
    // test_no_verify_with_multiple_signatures).
    let decoys = [
        "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ=",
        "v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=",
        "v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=",
    ];
    let ts = TIMESTAMP.to_string();
    let with_valid = format!("{} {} {SIGNATURE} {}", decoys[0], decoys[1], decoys[2]);
    assert_eq!(
        verify_one(&secret(), headers(&ts, &with_valid), BODY, TIMESTAMP),
        Ok(())
    );
    assert_eq!(
        verify_one(&secret(), headers(&ts, &decoys.join(" ")), BODY, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn vector_spec_v1a_entry_is_skipped() {
    // spec/standard-webhooks.md ("Example headers"): the Ed25519 `v1a` entry. On its own it
    // can never match a symmetric secret.
    let v1a = "v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==";
    let ts = TIMESTAMP.to_string();
    assert_eq!(
        verify_one(&secret(), headers(&ts, v1a), BODY, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
    // Next to a valid `v1` entry it does no harm.
    let both = format!("{SIGNATURE} {v1a}");
    assert_eq!(
        verify_one(&secret(), headers(&ts, &both), BODY, TIMESTAMP),
        Ok(())
    );
}

#[test]
fn vector_partial_signatures_are_rejected() {
    // libraries/javascript/src/webhook.test.ts ("partial signature throws error") and
    // libraries/rust/src/lib.rs (test_verify_partial_signature): `v1,` and the first 8 chars.
    let ts = TIMESTAMP.to_string();
    for partial in ["v1,", &SIGNATURE[..8]] {
        assert_eq!(
            verify_one(&secret(), headers(&ts, partial), BODY, TIMESTAMP),
            Err(VerifyError::NoMatch),
            "{partial}"
        );
    }
}

#[test]
fn vector_unpadded_secrets_parse() {
    // libraries/python/tests/test_webhooks.py (test_signature_verification_with_unpadded_secret):
    // secrets needing no, one and two `=` of padding, with and without `whsec_`.
    let cases = [
        (
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS=",
        ),
        (
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr==",
        ),
        (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr==",
        ),
    ];
    for (unpadded, padded) in cases {
        assert_eq!(
            SigningSecret::parse(unpadded).expect("unpadded parses"),
            SigningSecret::parse(padded).expect("padded parses"),
            "{unpadded}"
        );
    }
}

#[test]
fn vector_empty_secrets_are_refused() {
    // libraries/python/tests/test_webhooks.py (test_empty_secret_raises_error), and the same
    // in libraries/javascript/src/webhook.test.ts and libraries/go/webhook_test.go.
    for text in ["", "whsec_", "  "] {
        assert_eq!(
            SigningSecret::parse(text),
            Err(SecretError::Empty),
            "{text:?}"
        );
    }
    assert_eq!(
        SigningSecret::from_bytes(Vec::new()),
        Err(SecretError::InvalidLength { len: 0 })
    );
}

// --- Signing and verifying ---------------------------------------------------------------

#[test]
fn round_trip() {
    let now = 1_700_000_000;
    assert_eq!(check(now, now, now), Ok(()));
    let empty_body = sign(&secret(), MSG_ID, now, b"");
    let ts = now.to_string();
    assert_eq!(
        verify_one(&secret(), headers(&ts, &empty_body), b"", now),
        Ok(())
    );
}

#[test]
fn rotation_either_secret_verifies_alone() {
    let (old, new) = (secret(), other_secret());
    let header = signature_header(&[new.clone(), old.clone()], MSG_ID, TIMESTAMP, BODY);
    assert_eq!(header.split(' ').count(), 2);
    assert!(header.contains(SIGNATURE));
    let ts = TIMESTAMP.to_string();
    for secret in [&old, &new] {
        assert_eq!(
            verify_one(secret, headers(&ts, &header), BODY, TIMESTAMP),
            Ok(())
        );
    }
    // And a receiver holding both accepts a header signed by only one.
    assert_eq!(
        verify(&[old, new], headers(&ts, SIGNATURE), BODY, TIMESTAMP),
        Ok(())
    );
}

#[test]
fn signature_header_with_one_or_no_secret() {
    assert_eq!(
        signature_header(&[secret()], MSG_ID, TIMESTAMP, BODY),
        SIGNATURE
    );
    assert_eq!(signature_header(&[], MSG_ID, TIMESTAMP, BODY), "");
}

#[test]
fn wrong_secret_does_not_match() {
    let ts = TIMESTAMP.to_string();
    assert_eq!(
        verify_one(&other_secret(), headers(&ts, SIGNATURE), BODY, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn altered_body_id_or_timestamp_does_not_match() {
    let ts = TIMESTAMP.to_string();
    let altered_body = br#"{"test": 2432232315}"#;
    assert_eq!(
        verify_one(&secret(), headers(&ts, SIGNATURE), altered_body, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
    let altered_id = Headers {
        id: "msg_p5jXN8AQM9LWM0D4loKWxJeK",
        ..headers(&ts, SIGNATURE)
    };
    assert_eq!(
        verify_one(&secret(), altered_id, BODY, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
    // Re-dated by one second, well within the tolerance: the signature covers the timestamp.
    assert_eq!(
        check(TIMESTAMP, TIMESTAMP + 1, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
}

#[test]
fn tolerance_is_inclusive_at_the_boundary() {
    // Like the reference libraries: too old only when `now - ts > tolerance`.
    let ts = TIMESTAMP;
    assert_eq!(check(ts, ts, ts + TOLERANCE_SECS), Ok(()));
    assert_eq!(check(ts, ts, ts - TOLERANCE_SECS), Ok(()));
    assert_eq!(
        check(ts, ts, ts + TOLERANCE_SECS + 1),
        Err(VerifyError::TooOld)
    );
    assert_eq!(
        check(ts, ts, ts - TOLERANCE_SECS - 1),
        Err(VerifyError::TooNew)
    );
}

#[test]
fn custom_tolerance() {
    let signature = sign(&secret(), MSG_ID, TIMESTAMP, BODY);
    let ts = TIMESTAMP.to_string();
    let run = |now, tolerance| {
        verify_with_tolerance(&[secret()], headers(&ts, &signature), BODY, now, tolerance)
    };
    assert_eq!(run(TIMESTAMP + 10, 10), Ok(()));
    assert_eq!(run(TIMESTAMP + 11, 10), Err(VerifyError::TooOld));
    assert_eq!(run(TIMESTAMP - 11, 10), Err(VerifyError::TooNew));
    assert_eq!(run(TIMESTAMP + 3600, 3600), Ok(()));
    // A negative tolerance counts as zero rather than rejecting everything.
    assert_eq!(run(TIMESTAMP, -5), Ok(()));
    assert_eq!(run(TIMESTAMP + 1, -5), Err(VerifyError::TooOld));
}

#[test]
fn freshness_is_checked_before_the_signature() {
    // A stale delivery reports TooOld even when its signature is also wrong, like the
    // reference libraries; neither outcome tells an attacker anything about the secret.
    let ts = TIMESTAMP.to_string();
    assert_eq!(
        verify_one(
            &other_secret(),
            headers(&ts, SIGNATURE),
            BODY,
            TIMESTAMP + 301
        ),
        Err(VerifyError::TooOld)
    );
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    assert_eq!(
        check(i64::MIN, i64::MIN, i64::MAX),
        Err(VerifyError::TooOld)
    );
    assert_eq!(
        check(i64::MAX, i64::MAX, i64::MIN),
        Err(VerifyError::TooNew)
    );
    assert_eq!(check(i64::MIN, i64::MIN, i64::MIN), Ok(()));
    assert_eq!(check(-5, -5, 0), Ok(()));
}

#[test]
fn malformed_timestamps_are_rejected() {
    for text in [
        "hello",
        "1.5",
        "1614265330.0",
        "+1614265330",
        " 1614265330",
        "1614265330 ",
        "1e9",
        "-",
        "--1",
        "0x10",
        "99999999999999999999",
        "١٦١٤٢٦٥٣٣٠",
    ] {
        assert_eq!(
            verify_one(&secret(), headers(text, SIGNATURE), BODY, TIMESTAMP),
            Err(VerifyError::InvalidTimestamp),
            "{text:?}"
        );
    }
}

#[test]
fn empty_headers_and_no_secrets() {
    let ts = TIMESTAMP.to_string();
    let cases = [
        (
            Headers {
                id: "",
                ..headers(&ts, SIGNATURE)
            },
            HEADER_ID,
        ),
        (headers("", SIGNATURE), HEADER_TIMESTAMP),
        (headers(&ts, ""), HEADER_SIGNATURE),
    ];
    for (headers, name) in cases {
        assert_eq!(
            verify_one(&secret(), headers, BODY, TIMESTAMP),
            Err(VerifyError::MissingHeader(name))
        );
    }
    assert_eq!(
        verify(&[], headers(&ts, SIGNATURE), BODY, TIMESTAMP),
        Err(VerifyError::NoSecrets)
    );
}

#[test]
fn garbage_entries_are_skipped() {
    let ts = TIMESTAMP.to_string();
    let garbage = "v1,!!!not-base64!!! v1,*** ,,, v1 , v1,= v1,Zm9v v1,g0hM9SsE+OTPJTGt v1a, ,v1";
    assert_eq!(
        verify_one(&secret(), headers(&ts, garbage), BODY, TIMESTAMP),
        Err(VerifyError::NoMatch)
    );
    // Garbage around a valid entry, with extra spaces, still verifies.
    let mixed = format!("{garbage}   {SIGNATURE}  v1,%%%");
    assert_eq!(
        verify_one(&secret(), headers(&ts, &mixed), BODY, TIMESTAMP),
        Ok(())
    );
}

#[test]
fn only_v1_is_accepted_for_the_symmetric_signature() {
    // The right MAC under another version label must not count.
    let ts = TIMESTAMP.to_string();
    let mac = SIGNATURE.trim_start_matches("v1,");
    for label in ["v1a", "v2", "V1", "v1 ", "", "v10"] {
        let header = format!("{label},{mac}");
        assert_eq!(
            verify_one(&secret(), headers(&ts, &header), BODY, TIMESTAMP),
            Err(VerifyError::NoMatch),
            "{header:?}"
        );
    }
}

#[test]
fn error_messages_are_one_line() {
    let errors = [
        VerifyError::NoSecrets,
        VerifyError::MissingHeader(HEADER_ID),
        VerifyError::InvalidTimestamp,
        VerifyError::TooOld,
        VerifyError::TooNew,
        VerifyError::NoMatch,
    ];
    for error in errors {
        let message = error.to_string();
        assert!(!message.is_empty() && !message.contains('\n'), "{message}");
    }
    assert_eq!(
        VerifyError::MissingHeader(HEADER_SIGNATURE).to_string(),
        "missing or empty `webhook-signature` header"
    );
}

#[test]
fn unix_now_is_plausible() {
    // After 2020-09-13 and before 2286: catches unit mistakes (millis) and sign errors.
    let now = unix_now();
    assert!((1_600_000_000..10_000_000_000).contains(&now), "{now}");
}

// --- Secrets -----------------------------------------------------------------------------

#[test]
fn debug_is_redacted() {
    let secret = secret();
    let debug = format!("{secret:?}");
    assert_eq!(debug, "SigningSecret([redacted])");
    assert!(!debug.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert!(!format!("{:?}", Some(&secret)).contains("MfKQ"));
}

#[test]
fn bad_base64_is_refused_without_echoing_it() {
    for text in [
        "whsec_not*base64",
        "whsec_MfKQ9r8G$ecret",
        "whsec_abc-def_",
        "whsk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whpk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw===",
        "whsec_M",
        "whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        let error = SigningSecret::parse(text).expect_err(text);
        assert_eq!(error, SecretError::InvalidBase64, "{text}");
        assert!(!error.to_string().contains("MfKQ"), "{error}");
    }
}

#[test]
fn parse_accepts_the_usual_forms() {
    let reference = secret();
    assert_eq!(reference.as_bytes().len(), 24);
    assert_eq!(reference.to_whsec(), SECRET);
    for text in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n",
        "  whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw  ",
    ] {
        assert_eq!(
            SigningSecret::parse(text).expect("parses"),
            reference,
            "{text:?}"
        );
    }
    let via_from_str: SigningSecret = SECRET.parse().expect("FromStr parses");
    assert_eq!(via_from_str, reference);
    // Lenient on length, unlike `from_bytes`: a one-byte key from elsewhere still parses.
    assert_eq!(
        SigningSecret::parse("whsec_AQ==")
            .expect("short key parses")
            .as_bytes(),
        [1]
    );
}

#[test]
fn from_bytes_enforces_24_to_64() {
    for len in [MIN_SECRET_LEN, 32, MAX_SECRET_LEN] {
        let secret = SigningSecret::from_bytes(vec![9; len]).expect("valid length");
        assert_eq!(secret.as_bytes(), vec![9; len].as_slice());
        let text = secret.to_whsec();
        assert!(text.starts_with(SECRET_PREFIX));
        assert_eq!(SigningSecret::parse(&text).expect("round trip"), secret);
    }
    for len in [1, MIN_SECRET_LEN - 1, MAX_SECRET_LEN + 1, 1000] {
        assert_eq!(
            SigningSecret::from_bytes(vec![9; len]),
            Err(SecretError::InvalidLength { len })
        );
    }
}

#[test]
fn equality_and_clone() {
    let a = SigningSecret::from_bytes(vec![1; 32]).expect("valid");
    let b = SigningSecret::from_bytes(vec![1; 32]).expect("valid");
    let mut differs = vec![1; 32];
    differs[31] = 2;
    let c = SigningSecret::from_bytes(differs).expect("valid");
    let shorter = SigningSecret::from_bytes(vec![1; 31]).expect("valid");
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, shorter);
    let copy = a.clone();
    drop(a);
    assert_eq!(copy, b);
}
