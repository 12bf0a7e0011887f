//! Access tokens, signing keys, codes and refresh tokens against real databases: every JWT
//! attack of RFC 8725 that needs Pier's own key to mount (the test opens it with the server
//! key, as an insider would), key rotation, and races on codes and refresh tokens.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pier_auth::oauth::{
    ClientRequest, GrantLifetimes, NewClient, NewCode, OAuthClient, OAuthStore,
};
use pier_auth::{
    AccessTokens, Action, Decision, Email, KeySchedule, Permission, PermissionSet, Principal,
    Relation, Resource, ResourceGrants, ResourceType, Role, SigningKeys, TokenError, TokenSubject,
    UserId, UserStore, Workspace, WorkspaceName, WorkspaceStore,
};
use pier_core::{Clock, Label, ManualClock, MasterKey, SubKey};
use pier_db::with_reader;
use pier_testkit::{Backend, TestDb, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    a_token_verifies_only_with_every_claim_as_issued,
    none_and_algorithm_confusion_are_refused,
    a_kid_is_only_looked_up_among_piers_own_keys,
    keys_rotate_and_an_old_key_verifies_until_its_tokens_expire,
    signing_keys_are_stored_sealed,
    a_code_works_once_and_its_reuse_revokes_the_grant,
    a_raced_refresh_token_revokes_its_family,
    resource_grants_never_reach_a_clients_token,
);

const ISSUER: &str = "https://pier.example";
const LIFETIME: Duration = Duration::from_secs(900);
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const REDIRECT: &str = "https://app.example/cb";

struct Fixture {
    test_db: TestDb,
    clock: ManualClock,
    seal: SubKey,
    keys: SigningKeys,
    tokens: AccessTokens,
    oauth: OAuthStore,
    workspace: Workspace,
    client: OAuthClient,
}

fn schedule() -> KeySchedule {
    KeySchedule {
        rotate_after: Duration::from_secs(30 * 24 * 3600),
        verify_for: LIFETIME + pier_auth::LEEWAY,
    }
}

async fn fixture(backend: Backend) -> Fixture {
    let test_db = TestDb::new(&backend, &[pier_db::MIGRATIONS, pier_auth::MIGRATIONS]).await;
    let clock = ManualClock::starting_now();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let (workspace, owner_key, _) = WorkspaceStore::new(test_db.db.clone(), shared.clone())
        .create_with_owner_key(WorkspaceName::parse("acme").expect("name"))
        .await
        .expect("workspace");
    let seal = MasterKey::generate().derive("auth/token-signing-keys");
    let keys = SigningKeys::load(test_db.db.clone(), shared.clone(), seal.clone(), schedule())
        .await
        .expect("keys");
    let tokens = AccessTokens::new(keys.clone(), shared.clone(), ISSUER, LIFETIME);
    let oauth = OAuthStore::new(
        test_db.db.clone(),
        shared,
        GrantLifetimes {
            code: Duration::from_secs(60),
            access: LIFETIME,
            refresh: Duration::from_secs(30 * 24 * 3600),
        },
    );
    let admin = Principal::ApiKey {
        key_id: owner_key.id,
        workspace_id: workspace.id.clone(),
        role: Role::Admin,
        permissions: Role::Admin.permissions(),
    };
    let (client, _) = oauth
        .create_client(
            &workspace.id,
            NewClient::new(
                ClientRequest {
                    name: "app".to_owned(),
                    client_type: Some("public".to_owned()),
                    redirect_uris: vec![REDIRECT.to_owned()],
                    grant_types: vec!["authorization_code".to_owned(), "refresh_token".to_owned()],
                    scopes: vec!["links:read".to_owned()],
                },
                &admin,
            )
            .expect("a valid client"),
            "key_test",
        )
        .await
        .expect("client");
    Fixture {
        test_db,
        clock,
        seal,
        keys,
        tokens,
        oauth,
        workspace,
        client,
    }
}

impl Fixture {
    /// A genuine token, for the grant of a client-credentials exchange.
    async fn token(&self) -> String {
        let grant = self
            .oauth
            .grant_client_credentials(&self.client, PermissionSet::from_names("links:read"))
            .await
            .expect("grant");
        let subject = TokenSubject {
            subject: grant.subject(),
            client_id: &grant.client_id,
            workspace_id: &grant.workspace_id,
            grant_id: &grant.id,
            scopes: grant.scopes,
        };
        self.tokens.issue(&subject).expect("issued").0
    }

    /// Pier's newest private key, opened as an insider with the server key could.
    async fn private_key(&self) -> (String, EncodingKey, String) {
        let (kid, sealed, public): (String, String, String) =
            with_reader!(&self.test_db.db, pool => {
                sqlx::query_as(
                    "SELECT kid, private_key, public_key FROM signing_keys \
                     ORDER BY created_at DESC LIMIT 1",
                )
                .fetch_one(pool)
                .await
            })
            .expect("key row");
        let sealed = STANDARD.decode(sealed).expect("base64");
        let pkcs8 = self.seal.open(&sealed, kid.as_bytes()).expect("opens");
        (kid, EncodingKey::from_ed_der(&pkcs8), public)
    }

    /// The claims and header of `token`, to alter and sign again.
    fn parts(token: &str) -> (Value, Value) {
        let mut parts = token.split('.');
        let mut decode = || {
            let part = parts.next().expect("part");
            serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).expect("b64"))
                .expect("json")
        };
        let header = decode();
        (header, decode())
    }

    /// `claims` signed by Pier's own key under `header` (EdDSA).
    async fn forge(&self, header: &Value, claims: &Value) -> String {
        let (_, key, _) = self.private_key().await;
        let header: Header = serde_json::from_value(header.clone()).expect("header");
        jsonwebtoken::encode(&header, claims, &key).expect("signed")
    }

    async fn refused(&self, token: &str, case: &str) {
        let outcome = self.tokens.verify(token).await;
        assert!(
            matches!(outcome, Err(TokenError::Invalid(_) | TokenError::Expired)),
            "{case}: {outcome:?}"
        );
    }
}

fn unsigned(header: &Value, claims: &Value, signature: &[u8]) -> String {
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"));
    format!(
        "{}.{}.{}",
        encode(header),
        encode(claims),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

async fn a_token_verifies_only_with_every_claim_as_issued(backend: Backend) {
    let f = fixture(backend).await;
    let token = f.token().await;
    let claims = f
        .tokens
        .verify(&token)
        .await
        .expect("a genuine token verifies");
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, format!("{ISSUER}/v1"));
    assert_eq!(claims.scope, "links:read");
    assert_eq!(claims.exp - claims.iat, 900);
    let (header, body) = Fixture::parts(&token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");

    // Signed with Pier's own key, but not as Pier issues: each is refused.
    let mut cases: Vec<(&str, Value, Value)> = Vec::new();
    for claim in ["iss", "aud", "exp", "nbf", "iat", "sub", "jti"] {
        let mut without = body.clone();
        without.as_object_mut().expect("object").remove(claim);
        cases.push((claim, header.clone(), without));
    }
    let altered = |name: &str, value: Value| {
        let mut claims = body.clone();
        claims[name] = value;
        claims
    };
    cases.push((
        "wrong iss",
        header.clone(),
        altered("iss", json!("https://evil.example")),
    ));
    cases.push((
        "wrong aud",
        header.clone(),
        altered("aud", json!("https://evil.example/v1")),
    ));
    cases.push((
        "aud as another list",
        header.clone(),
        altered("aud", json!(["other"])),
    ));
    let with_header = |name: &str, value: Value| {
        let mut h = header.clone();
        h[name] = value;
        h
    };
    cases.push(("typ JWT", with_header("typ", json!("JWT")), body.clone()));
    cases.push(("no typ", with_header("typ", Value::Null), body.clone()));
    cases.push((
        "jku",
        with_header("jku", json!("http://127.0.0.1:9/keys")),
        body.clone(),
    ));
    cases.push((
        "x5u",
        with_header("x5u", json!("http://127.0.0.1:9/cert")),
        body.clone(),
    ));
    for (case, header, claims) in &cases {
        let forged = f.forge(header, claims).await;
        f.refused(&forged, case).await;
    }

    // Time: expired past the leeway, not yet valid beyond it; within the leeway it passes. The
    // second check finds the token remembered from the first, and still looks at the time.
    f.clock.advance(LIFETIME + Duration::from_secs(10));
    f.tokens.verify(&token).await.expect("within the leeway");
    f.clock.advance(Duration::from_secs(30));
    assert!(matches!(
        f.tokens.verify(&token).await,
        Err(TokenError::Expired)
    ));
    let future = altered(
        "nbf",
        json!(body["iat"].as_i64().expect("iat") + LIFETIME.as_secs() as i64 + 120),
    );
    let future = f.forge(&header, &future).await;
    f.refused(&future, "nbf in the future").await;
}

async fn none_and_algorithm_confusion_are_refused(backend: Backend) {
    let f = fixture(backend).await;
    let token = f.token().await;
    // Verified first, so the genuine token is remembered: no altered copy below may pass on it.
    f.tokens
        .verify(&token)
        .await
        .expect("a genuine token verifies");
    let (header, claims) = Fixture::parts(&token);
    let (kid, _, public_x) = f.private_key().await;

    let mut none = header.clone();
    none["alg"] = json!("none");
    f.refused(&unsigned(&none, &claims, b""), "alg none").await;
    none["alg"] = json!("None");
    f.refused(&unsigned(&none, &claims, b""), "alg None").await;

    // HS256 with the public key as the HMAC secret, in each form an attacker might try.
    let raw = URL_SAFE_NO_PAD.decode(&public_x).expect("x");
    for secret in [raw.as_slice(), public_x.as_bytes()] {
        let hs = Header {
            typ: Some("at+jwt".to_owned()),
            kid: Some(kid.clone()),
            ..Header::new(Algorithm::HS256)
        };
        let forged =
            jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(secret)).expect("hs256");
        f.refused(&forged, "HS256 keyed with the public key").await;
    }
    for alg in ["RS256", "ES256", "PS256", "HS512", "EdDSA "] {
        let mut other = header.clone();
        other["alg"] = json!(alg);
        f.refused(&unsigned(&other, &claims, &[7; 64]), alg).await;
    }

    // One flipped bit anywhere in the signature.
    let (signed, signature) = token.rsplit_once('.').expect("three parts");
    let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("b64");
    bytes[17] ^= 0x01;
    let flipped = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(bytes));
    f.refused(&flipped, "flipped signature").await;
    // Claims changed under the genuine signature.
    let mut widened = claims.clone();
    widened["scope"] = json!("links:read links:write api_keys:write");
    let (_, body) = signed.split_once('.').expect("header.claims");
    let swapped = token.replace(
        body,
        &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&widened).expect("json")),
    );
    f.refused(&swapped, "claims altered under the signature")
        .await;
}

async fn a_kid_is_only_looked_up_among_piers_own_keys(backend: Backend) {
    let f = fixture(backend).await;
    let token = f.token().await;
    let (header, claims) = Fixture::parts(&token);
    let long = "k".repeat(10_000);
    for kid in [
        Value::Null,
        json!(""),
        json!("../../../../etc/passwd"),
        json!("' OR '1'='1"),
        json!("01m8pd91emf07nqws6p476403x"),
        json!(long),
        json!(12),
    ] {
        let mut hostile = header.clone();
        hostile["kid"] = kid.clone();
        // Signed by the real key, so only the kid is wrong.
        if let Ok(parsed) = serde_json::from_value::<Header>(hostile.clone()) {
            let (_, key, _) = f.private_key().await;
            let forged = jsonwebtoken::encode(&parsed, &claims, &key).expect("signed");
            f.refused(&forged, &format!("kid {kid}")).await;
        } else {
            f.refused(
                &unsigned(&hostile, &claims, &[0; 64]),
                "kid of another type",
            )
            .await;
        }
    }
    // A key made elsewhere (another deployment) is not Pier's, whatever its kid says.
    let other = fixture(Backend::Sqlite).await;
    let foreign = other.token().await;
    f.refused(&foreign, "another deployment's key").await;
}

async fn keys_rotate_and_an_old_key_verifies_until_its_tokens_expire(backend: Backend) {
    let f = fixture(backend).await;
    let old = f.token().await;
    let old_kid = Fixture::parts(&old).0["kid"].clone();
    assert!(
        !f.keys.rotate_if_due().await.expect("checked"),
        "not due yet"
    );

    f.clock.advance(schedule().rotate_after);
    f.keys.rotate_if_due().await.expect("rotated");
    let new = f.token().await;
    let new_kid = Fixture::parts(&new).0["kid"].clone();
    assert_ne!(old_kid, new_kid, "the new key signs");
    let jwks = f.keys.jwks();
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert_eq!(kids, [&old_kid, &new_kid], "both are published");
    for key in jwks["keys"].as_array().expect("keys") {
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["crv"], "Ed25519");
        assert_eq!(key["alg"], "EdDSA");
        assert!(key.get("d").is_none(), "no private part is published");
    }

    // Another node learns of the new key on first sight of its kid.
    let shared: Arc<dyn Clock> = Arc::new(f.clock.clone());
    let elsewhere = SigningKeys::load(
        f.test_db.db.clone(),
        shared.clone(),
        f.seal.clone(),
        schedule(),
    )
    .await
    .expect("loaded");
    AccessTokens::new(elsewhere, shared, ISSUER, LIFETIME)
        .verify(&new)
        .await
        .expect("the other node verifies the new key");

    // Once every token the old key signed has expired, it is dropped.
    f.clock
        .advance(LIFETIME + pier_auth::LEEWAY + Duration::from_secs(1));
    f.keys.rotate_if_due().await.expect("pruned");
    let jwks = f.keys.jwks();
    assert_eq!(jwks["keys"].as_array().expect("keys").len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], new_kid);
    f.refused(&old, "the retired key").await;
}

async fn signing_keys_are_stored_sealed(backend: Backend) {
    let f = fixture(backend).await;
    let (kid, _, _) = f.private_key().await;
    let stored: (String,) = with_reader!(&f.test_db.db, pool => {
        sqlx::query_as("SELECT private_key FROM signing_keys WHERE kid = $1")
            .bind(&kid)
            .fetch_one(pool)
            .await
    })
    .expect("row");
    let sealed = STANDARD.decode(&stored.0).expect("base64");
    // A PKCS#8 Ed25519 document starts with this; sealed bytes do not show it.
    let pkcs8_prefix = [0x30, 0x53, 0x02, 0x01, 0x01];
    assert!(!sealed.windows(5).any(|w| w == pkcs8_prefix));
    let shared: Arc<dyn Clock> = Arc::new(f.clock.clone());
    let wrong = MasterKey::generate().derive("auth/token-signing-keys");
    let elsewhere = SigningKeys::load(f.test_db.db.clone(), shared, wrong, schedule())
        .await
        .expect("loads");
    let kids: Vec<String> = elsewhere.jwks()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect();
    assert!(
        !kids.contains(&kid),
        "a key that does not open under this server's key is not trusted"
    );
    assert_eq!(kids.len(), 1, "the node made a key of its own");
}

/// Ann's id, creating her the first time.
async fn ann(f: &Fixture) -> UserId {
    let clock: Arc<dyn Clock> = Arc::new(f.clock.clone());
    let users = UserStore::new(f.test_db.db.clone(), clock);
    let email = Email::parse("ann@example.com").expect("email");
    if let Some(user) = users.by_email(&email).await.expect("read") {
        return user.id;
    }
    let name = Label::parse("Ann").expect("name");
    users
        .create(&email, &name, &f.workspace.id, Role::Member)
        .await
        .expect("user")
        .user
        .id
}

/// A code for Ann's consent to the fixture's client.
async fn user_code(f: &Fixture) -> String {
    f.oauth
        .issue_code(NewCode {
            client: &f.client,
            user_id: &ann(f).await,
            workspace_id: &f.workspace.id,
            redirect_uri: REDIRECT,
            scopes: [Permission::LinksRead].into_iter().collect(),
            code_challenge: CHALLENGE,
        })
        .await
        .expect("code")
        .expose()
        .to_owned()
}

async fn a_code_works_once_and_its_reuse_revokes_the_grant(backend: Backend) {
    let f = fixture(backend).await;
    let code = user_code(&f).await;
    for (uri, verifier, case) in [
        ("https://app.example/cb/", VERIFIER, "another redirect URI"),
        (
            REDIRECT,
            CHALLENGE,
            "the challenge as its own verifier (plain)",
        ),
        (REDIRECT, "x", "a short verifier"),
    ] {
        assert!(
            f.oauth
                .redeem_code(&f.client, &code, uri, verifier)
                .await
                .is_err(),
            "{case}"
        );
    }
    let issued = f
        .oauth
        .redeem_code(&f.client, &code, REDIRECT, VERIFIER)
        .await
        .expect("the first exchange");
    assert!(issued.refresh_token.is_some());
    assert!(
        f.oauth
            .live_grant(issued.grant.id.as_str())
            .await
            .expect("read")
            .is_some()
    );
    assert!(
        f.oauth
            .redeem_code(&f.client, &code, REDIRECT, VERIFIER)
            .await
            .is_err()
    );
    assert!(
        f.oauth
            .live_grant(issued.grant.id.as_str())
            .await
            .expect("read")
            .is_none(),
        "the reused code revoked what it was exchanged for"
    );

    // Raced: of concurrent exchanges of one code at most one wins, and then loses its grant.
    let code = user_code(&f).await;
    let attempts = (0..8).map(|_| f.oauth.redeem_code(&f.client, &code, REDIRECT, VERIFIER));
    let outcomes = futures_util::future::join_all(attempts).await;
    let winners: Vec<_> = outcomes.into_iter().filter_map(Result::ok).collect();
    assert!(
        winners.len() <= 1,
        "{} exchanges of one code",
        winners.len()
    );
    for winner in winners {
        assert!(
            f.oauth
                .live_grant(winner.grant.id.as_str())
                .await
                .expect("read")
                .is_none()
        );
    }
}

async fn a_raced_refresh_token_revokes_its_family(backend: Backend) {
    let f = fixture(backend).await;
    let code = user_code(&f).await;
    let issued = f
        .oauth
        .redeem_code(&f.client, &code, REDIRECT, VERIFIER)
        .await
        .expect("exchange");
    let first = issued.refresh_token.expect("refresh token");
    let second = f
        .oauth
        .refresh(&f.client, first.expose())
        .await
        .expect("rotates")
        .refresh_token
        .expect("next");
    assert_ne!(first.expose(), second.expose());

    // The same token presented by eight at once: at most one gets a successor, and the reuse
    // the others commit ends the whole family, that successor included.
    let attempts = (0..8).map(|_| f.oauth.refresh(&f.client, second.expose()));
    let outcomes = futures_util::future::join_all(attempts).await;
    let successors: Vec<_> = outcomes
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|i| i.refresh_token)
        .collect();
    assert!(successors.len() <= 1, "{} successors", successors.len());
    for next in &successors {
        assert!(f.oauth.refresh(&f.client, next.expose()).await.is_err());
    }
    assert!(
        f.oauth
            .live_grant(issued.grant.id.as_str())
            .await
            .expect("read")
            .is_none()
    );
    assert!(f.oauth.refresh(&f.client, first.expose()).await.is_err());
}

async fn resource_grants_never_reach_a_clients_token(backend: Backend) {
    let f = fixture(backend).await;
    let shared: Arc<dyn Clock> = Arc::new(f.clock.clone());
    let grants = ResourceGrants::new(f.test_db.db.clone(), shared);
    let user_id = ann(&f).await;
    let link = Resource {
        kind: ResourceType::Link,
        id: "lnk_01m8pd91emf07nqws6p476403x",
    };
    grants
        .grant(
            &f.workspace.id,
            user_id.as_str(),
            link,
            Relation::Editor,
            "test",
        )
        .await
        .expect("granted");
    let person = |via_client| Principal::User {
        user_id: user_id.clone(),
        workspace_id: f.workspace.id.clone(),
        role: Role::Viewer,
        permissions: Role::Viewer.permissions(),
        via_client,
    };
    let signed_in = grants
        .authorize(&person(None), Action::Write, link)
        .await
        .expect("decided");
    assert_eq!(signed_in, Decision::Grant);
    let through_app = grants
        .authorize(
            &person(Some(f.client.client_id.clone())),
            Action::Write,
            link,
        )
        .await
        .expect("decided");
    assert_eq!(
        through_app,
        Decision::Denied,
        "a client acts within its scopes only"
    );
    let read = grants
        .authorize(
            &person(Some(f.client.client_id.clone())),
            Action::Read,
            link,
        )
        .await
        .expect("decided");
    assert_eq!(read, Decision::Role, "what the role covers still holds");
}
