//! SASL DIGEST-MD5 (RFC 2831) exactly as Spark uses it for
//! `spark.authenticate=true` (`network/sasl/SparkSaslServer.java`,
//! `SparkSaslClient.java`).
//!
//! Spark's parameters: username = base64("sparkSaslUser"), password =
//! base64(UTF-8 secret), realm "default", digest-uri "null/default" (no
//! protocol, server name "default"), charset utf-8, algorithm md5-sess.
//!
//! The exchange, each client step wrapped in a SaslMessage and each server
//! step sent as a raw RpcResponse body:
//! 1. client: empty token (DIGEST-MD5 has no initial response);
//! 2. server: challenge with a fresh nonce;
//! 3. client: digest response;
//! 4. server: `rspauth=…`, proving it knows the secret too.
//!
//! Only qop=auth (authentication, no integrity/encryption layer) is
//! implemented; the challenge still offers `auth-conf,auth` like Spark's
//! server so that clients behave exactly as against the Java ESS, and a
//! client that picks auth-conf is refused with a clear error.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use md5::{Digest, Md5};
use rand::Rng as _;

use super::error::SaslError;

/// Spark's fixed SASL user name (before base64).
pub const SPARK_SASL_USER: &str = "sparkSaslUser";
/// Spark's SASL realm.
pub const SPARK_SASL_REALM: &str = "default";
/// digest-uri Spark's client and server agree on (protocol null, server "default").
pub const SPARK_DIGEST_URI: &str = "null/default";

const QOP_AUTH: &str = "auth";
const QOP_OFFERED: &str = "auth-conf,auth";
const CIPHERS_OFFERED: &str = "3des,rc4,des,rc4-56,rc4-40";
const ALGORITHM: &str = "md5-sess";
const CHARSET: &str = "utf-8";
const NONCE_COUNT: &str = "00000001";
const CLIENT_MAXBUF: &str = "65536";
/// Random bytes in a nonce; Java's DIGEST-MD5 uses 30 (40 base64 characters).
const NONCE_RANDOM_BYTES: usize = 30;

/// The user name as sent on the wire: base64("sparkSaslUser").
pub fn encoded_sasl_user() -> String {
    BASE64.encode(SPARK_SASL_USER)
}

/// The DIGEST-MD5 password Spark derives from the shared secret:
/// base64 of its UTF-8 bytes.
pub fn encoded_sasl_password(secret: &str) -> String {
    BASE64.encode(secret.as_bytes())
}

/// A server nonce or client cnonce. Random in production; fixed in tests to
/// reproduce captured exchanges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslNonce(String);

impl SaslNonce {
    /// 30 random bytes, base64-encoded, as Java generates them.
    pub fn random() -> Self {
        let mut bytes = [0u8; NONCE_RANDOM_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(BASE64.encode(bytes))
    }

    /// A given nonce value (for tests and replays of captured traffic).
    pub fn from_string(nonce: impl Into<String>) -> Self {
        Self(nonce.into())
    }

    /// The nonce text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One `name=value` pair of a directive list; names are lower-cased.
type Directive = (String, String);

/// Parses an RFC 2831 directive list: `name=token` or `name="quoted"`
/// separated by commas, with optional linear white space and empty elements;
/// inside quotes, `\` escapes the next character.
fn parse_directives(input: &[u8]) -> Result<Vec<Directive>, SaslError> {
    let text = std::str::from_utf8(input).map_err(|e| SaslError::MalformedDirectives {
        offset: e.valid_up_to(),
        reason: "not UTF-8",
    })?;
    let bytes = text.as_bytes();
    let is_lws = |b: u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let malformed =
        |offset: usize, reason: &'static str| SaslError::MalformedDirectives { offset, reason };
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        while pos < bytes.len() && (is_lws(bytes[pos]) || bytes[pos] == b',') {
            pos += 1;
        }
        if pos == bytes.len() {
            return Ok(out);
        }
        let name_start = pos;
        while pos < bytes.len() && !is_lws(bytes[pos]) && !matches!(bytes[pos], b'=' | b',' | b'"')
        {
            pos += 1;
        }
        if pos == name_start {
            return Err(malformed(pos, "expected a directive name"));
        }
        let name = text[name_start..pos].to_ascii_lowercase();
        while pos < bytes.len() && is_lws(bytes[pos]) {
            pos += 1;
        }
        if bytes.get(pos) != Some(&b'=') {
            return Err(malformed(pos, "expected '=' after the directive name"));
        }
        pos += 1;
        while pos < bytes.len() && is_lws(bytes[pos]) {
            pos += 1;
        }
        let value = if bytes.get(pos) == Some(&b'"') {
            pos += 1;
            let mut value = String::new();
            loop {
                let Some(c) = text[pos..].chars().next() else {
                    return Err(malformed(pos, "unterminated quoted string"));
                };
                pos += c.len_utf8();
                match c {
                    '"' => break,
                    '\\' => {
                        let Some(escaped) = text[pos..].chars().next() else {
                            return Err(malformed(pos, "escape at end of input"));
                        };
                        pos += escaped.len_utf8();
                        value.push(escaped);
                    }
                    c => value.push(c),
                }
            }
            value
        } else {
            let value_start = pos;
            while pos < bytes.len() && !is_lws(bytes[pos]) && bytes[pos] != b',' {
                if bytes[pos] == b'"' {
                    return Err(malformed(pos, "quote inside an unquoted value"));
                }
                pos += 1;
            }
            if pos == value_start {
                return Err(malformed(pos, "empty directive value"));
            }
            text[value_start..pos].to_owned()
        };
        while pos < bytes.len() && is_lws(bytes[pos]) {
            pos += 1;
        }
        if pos < bytes.len() && bytes[pos] != b',' {
            return Err(malformed(pos, "expected ',' between directives"));
        }
        out.push((name, value));
    }
}

/// Directive lookup over a parsed list.
struct Directives(Vec<Directive>);

impl Directives {
    /// Parses `input`, rejecting repeated directives except those in
    /// `repeatable` (a challenge may list several realms).
    fn parse(input: &[u8], repeatable: &[&str]) -> Result<Self, SaslError> {
        let list = parse_directives(input)?;
        for (i, (name, _)) in list.iter().enumerate() {
            if !repeatable.contains(&name.as_str()) && list[..i].iter().any(|(n, _)| n == name) {
                return Err(SaslError::DuplicateDirective(name.clone()));
            }
        }
        Ok(Self(list))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn require(&self, name: &'static str) -> Result<&str, SaslError> {
        self.get(name).ok_or(SaslError::MissingDirective(name))
    }
}

/// Quotes a value for a directive list.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut hasher = Md5::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

fn lower_hex(digest: [u8; 16]) -> String {
    digest.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Inputs to the RFC 2831 digest computations (md5-sess).
struct DigestInputs<'a> {
    username: &'a str,
    realm: &'a str,
    password: &'a str,
    nonce: &'a str,
    cnonce: &'a str,
    authzid: Option<&'a str>,
    nonce_count: &'a str,
    qop: &'a str,
    digest_uri: &'a str,
}

impl DigestInputs<'_> {
    /// HEX(H(A1)) with A1 = H(user:realm:password):nonce:cnonce[:authzid].
    fn ha1_hex(&self) -> String {
        let user_realm_password = md5(&[
            self.username.as_bytes(),
            b":",
            self.realm.as_bytes(),
            b":",
            self.password.as_bytes(),
        ]);
        let mut a1: Vec<&[u8]> = vec![
            &user_realm_password,
            b":",
            self.nonce.as_bytes(),
            b":",
            self.cnonce.as_bytes(),
        ];
        if let Some(authzid) = self.authzid {
            a1.extend([b":".as_slice(), authzid.as_bytes()]);
        }
        lower_hex(md5(&a1))
    }

    /// KD(HEX(H(A1)), nonce:nc:cnonce:qop:HEX(H(A2))) with A2 = prefix:digest-uri.
    fn digest(&self, a2_prefix: &str) -> String {
        let ha2 = lower_hex(md5(&[
            a2_prefix.as_bytes(),
            b":",
            self.digest_uri.as_bytes(),
        ]));
        lower_hex(md5(&[
            self.ha1_hex().as_bytes(),
            b":",
            self.nonce.as_bytes(),
            b":",
            self.nonce_count.as_bytes(),
            b":",
            self.cnonce.as_bytes(),
            b":",
            self.qop.as_bytes(),
            b":",
            ha2.as_bytes(),
        ]))
    }

    /// The client's `response` value.
    fn client_response(&self) -> String {
        self.digest("AUTHENTICATE")
    }

    /// The server's `rspauth` value.
    fn server_rspauth(&self) -> String {
        self.digest("")
    }
}

/// Compares without an early exit, so timing does not reveal a prefix match.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn expect_value(directive: &'static str, actual: &str, expected: &str) -> Result<(), SaslError> {
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(SaslError::UnexpectedValue {
            directive,
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Initial,
    ChallengeSent,
    Complete,
    Failed,
}

/// Server side of one DIGEST-MD5 authentication (one per connection).
#[derive(Debug, Clone)]
pub struct DigestMd5Server {
    password: String,
    nonce: SaslNonce,
    state: ServerState,
}

impl DigestMd5Server {
    /// A server that accepts clients knowing `secret`, and will issue `nonce`.
    pub fn new(secret: &str, nonce: SaslNonce) -> Self {
        Self {
            password: encoded_sasl_password(secret),
            nonce,
            state: ServerState::Initial,
        }
    }

    /// Answers a client token the way Spark's `SaslServer.evaluateResponse`
    /// does: the first (empty) token yields the challenge, the second the
    /// rspauth.
    pub fn evaluate(&mut self, token: &[u8]) -> Result<Vec<u8>, SaslError> {
        match self.state {
            ServerState::Initial if token.is_empty() => self.challenge(),
            ServerState::Initial => {
                self.state = ServerState::Failed;
                Err(SaslError::UnexpectedInitialResponse { len: token.len() })
            }
            _ => self.respond(token),
        }
    }

    /// The digest challenge, byte-identical in layout to Java's.
    pub fn challenge(&mut self) -> Result<Vec<u8>, SaslError> {
        match self.state {
            ServerState::Initial | ServerState::ChallengeSent => {}
            ServerState::Complete => {
                return Err(SaslError::InvalidState("authentication already complete"))
            }
            ServerState::Failed => {
                return Err(SaslError::InvalidState("authentication already failed"))
            }
        }
        self.state = ServerState::ChallengeSent;
        Ok(format!(
            "realm={},nonce={},qop={},charset={CHARSET},cipher={},algorithm={ALGORITHM}",
            quoted(SPARK_SASL_REALM),
            quoted(self.nonce.as_str()),
            quoted(QOP_OFFERED),
            quoted(CIPHERS_OFFERED),
        )
        .into_bytes())
    }

    /// Checks the client's digest response; on success returns the
    /// `rspauth=…` token to send back and the authentication is complete.
    pub fn respond(&mut self, response: &[u8]) -> Result<Vec<u8>, SaslError> {
        match self.state {
            ServerState::ChallengeSent => {}
            ServerState::Initial => {
                return Err(SaslError::InvalidState(
                    "response received before the challenge",
                ))
            }
            ServerState::Complete => {
                return Err(SaslError::InvalidState("authentication already complete"))
            }
            ServerState::Failed => {
                return Err(SaslError::InvalidState("authentication already failed"))
            }
        }
        let result = self.verify(response);
        self.state = if result.is_ok() {
            ServerState::Complete
        } else {
            ServerState::Failed
        };
        result
    }

    /// Whether a client has authenticated successfully.
    pub fn is_complete(&self) -> bool {
        self.state == ServerState::Complete
    }

    fn verify(&self, response: &[u8]) -> Result<Vec<u8>, SaslError> {
        let d = Directives::parse(response, &[])?;
        if let Some(charset) = d.get("charset") {
            expect_value("charset", charset, CHARSET)?;
        }
        let username = d.require("username")?;
        let expected_user = encoded_sasl_user();
        if username != expected_user {
            return Err(SaslError::UnexpectedValue {
                directive: "username",
                expected: expected_user,
                actual: username.to_owned(),
            });
        }
        let realm = d.get("realm").unwrap_or("");
        if realm != SPARK_SASL_REALM {
            return Err(SaslError::UnexpectedValue {
                directive: "realm",
                expected: SPARK_SASL_REALM.to_owned(),
                actual: realm.to_owned(),
            });
        }
        let nonce = d.require("nonce")?;
        if !constant_time_eq(nonce.as_bytes(), self.nonce.as_str().as_bytes()) {
            return Err(SaslError::NonceMismatch);
        }
        let nonce_count = d.require("nc")?;
        if u32::from_str_radix(nonce_count, 16) != Ok(1) {
            return Err(SaslError::UnexpectedValue {
                directive: "nc",
                expected: NONCE_COUNT.to_owned(),
                actual: nonce_count.to_owned(),
            });
        }
        let cnonce = d.require("cnonce")?;
        let qop = d.get("qop").unwrap_or(QOP_AUTH);
        if qop != QOP_AUTH {
            return Err(SaslError::UnsupportedQop {
                qop: qop.to_owned(),
            });
        }
        let digest_uri = d.require("digest-uri")?;
        expect_value("digest-uri", digest_uri, SPARK_DIGEST_URI)?;
        let authzid = d.get("authzid");
        if let Some(authzid) = authzid {
            // Spark authorizes only authzid == authentication id.
            if authzid != username {
                return Err(SaslError::UnexpectedValue {
                    directive: "authzid",
                    expected: username.to_owned(),
                    actual: authzid.to_owned(),
                });
            }
        }
        let client_response = d.require("response")?;
        let inputs = DigestInputs {
            username,
            realm,
            password: &self.password,
            nonce,
            cnonce,
            authzid,
            nonce_count,
            qop,
            digest_uri,
        };
        if !constant_time_eq(
            client_response.as_bytes(),
            inputs.client_response().as_bytes(),
        ) {
            return Err(SaslError::AuthenticationFailed);
        }
        Ok(format!("rspauth={}", inputs.server_rspauth()).into_bytes())
    }
}

/// Client side of DIGEST-MD5 as Spark's `SparkSaslClient` performs it; used
/// by kess's own test client.
#[derive(Debug, Clone)]
pub struct DigestMd5Client {
    password: String,
    cnonce: SaslNonce,
    expected_rspauth: Option<String>,
}

impl DigestMd5Client {
    /// A client that proves knowledge of `secret`, using `cnonce`.
    pub fn new(secret: &str, cnonce: SaslNonce) -> Self {
        Self {
            password: encoded_sasl_password(secret),
            cnonce,
            expected_rspauth: None,
        }
    }

    /// The first SASL token: empty (DIGEST-MD5 has no initial response).
    pub fn initial_token(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Computes the digest response to a server challenge, in the exact
    /// layout Java's client produces (qop=auth).
    pub fn respond(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        let d = Directives::parse(challenge, &["realm"])?;
        let realm = d.require("realm")?;
        let nonce = d.require("nonce")?;
        let qop_offered = d.get("qop").unwrap_or(QOP_AUTH);
        if !qop_offered.split(',').any(|q| q.trim() == QOP_AUTH) {
            return Err(SaslError::UnsupportedQop {
                qop: qop_offered.to_owned(),
            });
        }
        let algorithm = d.require("algorithm")?;
        expect_value("algorithm", algorithm, ALGORITHM)?;
        let charset = d.get("charset");
        if let Some(charset) = charset {
            expect_value("charset", charset, CHARSET)?;
        }
        let username = encoded_sasl_user();
        let inputs = DigestInputs {
            username: &username,
            realm,
            password: &self.password,
            nonce,
            cnonce: self.cnonce.as_str(),
            authzid: None,
            nonce_count: NONCE_COUNT,
            qop: QOP_AUTH,
            digest_uri: SPARK_DIGEST_URI,
        };
        let mut out = String::new();
        if charset.is_some() {
            out.push_str("charset=utf-8,");
        }
        let _ = write!(
            out,
            "username={},realm={},nonce={},nc={NONCE_COUNT},cnonce={},digest-uri={},maxbuf={CLIENT_MAXBUF},response={},qop={QOP_AUTH}",
            quoted(&username),
            quoted(realm),
            quoted(nonce),
            quoted(self.cnonce.as_str()),
            quoted(SPARK_DIGEST_URI),
            inputs.client_response(),
        );
        self.expected_rspauth = Some(inputs.server_rspauth());
        Ok(out.into_bytes())
    }

    /// Checks the server's final `rspauth=…` token.
    pub fn verify_rspauth(&self, token: &[u8]) -> Result<(), SaslError> {
        let expected = self
            .expected_rspauth
            .as_deref()
            .ok_or(SaslError::InvalidState(
                "rspauth received before the response",
            ))?;
        let d = Directives::parse(token, &[])?;
        let rspauth = d.require("rspauth")?;
        if constant_time_eq(rspauth.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            Err(SaslError::RspauthMismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use tokio_util::codec::Decoder;

    use super::super::frame::{SparkFrame, SparkFrameCodec};
    use super::super::rpc_payload::SaslMessage;
    use super::super::test_vectors::vectors_dir;
    use super::*;

    const SECRET: &str = "ess-test-secret";
    const CAPTURED_NONCE: &str = "B9yVOAwILiS82oanmS0wNSMSpajabKSUw2f7llUt";
    const CAPTURED_CNONCE: &str = "qEcytgyQc2wBxm/jz9Ndjvgl4iwZRJXq/PKd4zbK";

    /// The body of the single frame in a vector file.
    fn frame_body(file: &str) -> Bytes {
        let bytes = std::fs::read(vectors_dir().join(file)).unwrap();
        let mut buf = BytesMut::from(&bytes[..]);
        match SparkFrameCodec::new().decode(&mut buf).unwrap().unwrap() {
            SparkFrame::RpcRequest { body, .. } | SparkFrame::RpcResponse { body, .. } => body,
            other => panic!("{file}: unexpected {other:?}"),
        }
    }

    fn captured_challenge() -> Bytes {
        frame_body("sasl_server_challenge.bin")
    }

    fn captured_client_response() -> Bytes {
        SaslMessage::decode(frame_body("sasl_client_response.bin"))
            .unwrap()
            .token
    }

    fn captured_rspauth() -> Bytes {
        frame_body("sasl_server_rspauth.bin")
    }

    fn captured_server(secret: &str) -> DigestMd5Server {
        DigestMd5Server::new(secret, SaslNonce::from_string(CAPTURED_NONCE))
    }

    #[test]
    fn credentials_are_spark_encoded() {
        assert_eq!(encoded_sasl_user(), "c3BhcmtTYXNsVXNlcg==");
        assert_eq!(encoded_sasl_password(SECRET), "ZXNzLXRlc3Qtc2VjcmV0");
    }

    #[test]
    fn server_reproduces_captured_exchange() {
        let initial = SaslMessage::decode(frame_body("sasl_client_initial.bin")).unwrap();
        let mut server = captured_server(SECRET);
        assert_eq!(
            server.evaluate(&initial.token).unwrap(),
            captured_challenge()
        );
        assert!(!server.is_complete());
        let rspauth = server.evaluate(&captured_client_response()).unwrap();
        assert_eq!(rspauth, captured_rspauth());
        assert!(server.is_complete());
        assert!(matches!(
            server.evaluate(b"again"),
            Err(SaslError::InvalidState(_))
        ));
    }

    #[test]
    fn server_rejects_wrong_secret() {
        let mut server = captured_server("not-the-secret");
        server.challenge().unwrap();
        assert_eq!(
            server.respond(&captured_client_response()),
            Err(SaslError::AuthenticationFailed)
        );
        assert!(!server.is_complete());
        assert!(matches!(
            server.respond(&captured_client_response()),
            Err(SaslError::InvalidState(_))
        ));
    }

    #[test]
    fn server_rejects_other_nonce() {
        let mut server = DigestMd5Server::new(SECRET, SaslNonce::random());
        server.challenge().unwrap();
        assert_eq!(
            server.respond(&captured_client_response()),
            Err(SaslError::NonceMismatch)
        );
    }

    fn tampered_response(from: &str, to: &str) -> Vec<u8> {
        let text = String::from_utf8(captured_client_response().to_vec()).unwrap();
        assert!(text.contains(from), "{from}");
        text.replace(from, to).into_bytes()
    }

    fn respond_to(response: &[u8]) -> Result<Vec<u8>, SaslError> {
        let mut server = captured_server(SECRET);
        server.challenge()?;
        server.respond(response)
    }

    #[test]
    fn server_rejects_auth_conf_with_clear_error() {
        let err = respond_to(&tampered_response("qop=auth", "qop=auth-conf")).unwrap_err();
        assert_eq!(
            err,
            SaslError::UnsupportedQop {
                qop: "auth-conf".into()
            }
        );
        assert!(err.to_string().contains("only qop=auth"));
        let err = respond_to(&tampered_response("qop=auth", "qop=auth-int")).unwrap_err();
        assert!(matches!(err, SaslError::UnsupportedQop { .. }));
    }

    #[test]
    fn server_rejects_malformed_and_inconsistent_responses() {
        assert!(matches!(
            respond_to(b"username=\"unterminated"),
            Err(SaslError::MalformedDirectives {
                reason: "unterminated quoted string",
                ..
            })
        ));
        assert!(matches!(
            respond_to(b"username"),
            Err(SaslError::MalformedDirectives { .. })
        ));
        assert!(matches!(
            respond_to(b"a=b c=d"),
            Err(SaslError::MalformedDirectives {
                reason: "expected ',' between directives",
                ..
            })
        ));
        assert!(matches!(
            respond_to(&[0xff, 0xfe]),
            Err(SaslError::MalformedDirectives {
                reason: "not UTF-8",
                ..
            })
        ));
        assert_eq!(
            respond_to(&tampered_response("nc=00000001", "nc=00000001,nc=00000001")),
            Err(SaslError::DuplicateDirective("nc".into()))
        );
        assert_eq!(
            respond_to(&tampered_response(",response=", ",x=")),
            Err(SaslError::MissingDirective("response"))
        );
        assert!(matches!(
            respond_to(&tampered_response("nc=00000001", "nc=00000002")),
            Err(SaslError::UnexpectedValue {
                directive: "nc",
                ..
            })
        ));
        assert!(matches!(
            respond_to(&tampered_response("null/default", "hdfs/default")),
            Err(SaslError::UnexpectedValue {
                directive: "digest-uri",
                ..
            })
        ));
        assert!(matches!(
            respond_to(&tampered_response("c3BhcmtTYXNsVXNlcg==", "b3RoZXI=")),
            Err(SaslError::UnexpectedValue {
                directive: "username",
                ..
            })
        ));
        assert_eq!(
            respond_to(&tampered_response("response=1a4b", "response=0a4b")),
            Err(SaslError::AuthenticationFailed)
        );
    }

    #[test]
    fn server_state_machine_guards() {
        let mut server = captured_server(SECRET);
        assert!(matches!(
            server.respond(&captured_client_response()),
            Err(SaslError::InvalidState(_))
        ));
        assert_eq!(
            server.evaluate(b"x"),
            Err(SaslError::UnexpectedInitialResponse { len: 1 })
        );
    }

    #[test]
    fn directive_parser_handles_quotes_escapes_and_whitespace() {
        let parsed = parse_directives(b" a = \"x\\\"y,z\" ,, B=tok\t,c=\"\xc3\xa9\" ,").unwrap();
        assert_eq!(
            parsed,
            vec![
                ("a".to_string(), "x\"y,z".to_string()),
                ("b".to_string(), "tok".to_string()),
                ("c".to_string(), "é".to_string()),
            ]
        );
        assert_eq!(quoted("x\"y\\"), "\"x\\\"y\\\\\"");
        assert!(parse_directives(b"a=").is_err());
        assert!(parse_directives(b"a=\"x\\").is_err());
        assert!(parse_directives(b"=x").is_err());
        assert!(parse_directives(b"a=x\"y").is_err());
    }

    #[test]
    fn client_reproduces_captured_response_and_verifies_rspauth() {
        let mut client = DigestMd5Client::new(SECRET, SaslNonce::from_string(CAPTURED_CNONCE));
        assert!(client.initial_token().is_empty());
        let response = client.respond(&captured_challenge()).unwrap();
        assert_eq!(response, captured_client_response());
        client.verify_rspauth(&captured_rspauth()).unwrap();
        assert_eq!(
            client.verify_rspauth(b"rspauth=00000000000000000000000000000000"),
            Err(SaslError::RspauthMismatch)
        );
    }

    #[test]
    fn client_and_server_agree_with_random_nonces() {
        let mut server = DigestMd5Server::new("s3cr\u{e9}t", SaslNonce::random());
        let mut client = DigestMd5Client::new("s3cr\u{e9}t", SaslNonce::random());
        let challenge = server.evaluate(&client.initial_token()).unwrap();
        let response = client.respond(&challenge).unwrap();
        let rspauth = server.evaluate(&response).unwrap();
        client.verify_rspauth(&rspauth).unwrap();
        assert!(server.is_complete());

        let mut server = DigestMd5Server::new("a", SaslNonce::random());
        let mut client = DigestMd5Client::new("b", SaslNonce::random());
        let response = client.respond(&server.challenge().unwrap()).unwrap();
        assert_eq!(
            server.respond(&response),
            Err(SaslError::AuthenticationFailed)
        );
    }

    #[test]
    fn random_nonce_has_java_length() {
        let nonce = SaslNonce::random();
        assert_eq!(nonce.as_str().len(), 40);
        assert_ne!(nonce, SaslNonce::random());
    }

    #[test]
    fn client_rejects_challenges_without_auth() {
        let mut client = DigestMd5Client::new(SECRET, SaslNonce::random());
        assert!(matches!(
            client.respond(b"realm=\"default\",nonce=\"n\",qop=\"auth-conf\",algorithm=md5-sess"),
            Err(SaslError::UnsupportedQop { .. })
        ));
        assert_eq!(
            client.respond(b"realm=\"default\",qop=\"auth\",algorithm=md5-sess"),
            Err(SaslError::MissingDirective("nonce"))
        );
        assert!(matches!(
            client.verify_rspauth(b"rspauth=x"),
            Err(SaslError::InvalidState(_))
        ));
    }
}
