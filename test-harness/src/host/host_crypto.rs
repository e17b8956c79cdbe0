//! Envoy's `verify_signature` foreign function, implemented natively so the filter's host-crypto path runs
//! in the harness without Envoy. Registered on every [`Harness`](super::Harness) unless the builder says
//! [`without_host_crypto`](super::HarnessBuilder::without_host_crypto) (a host without the function, like
//! other proxy-wasm hosts).
//!
//! The contract is Envoy 1.40's (`source/extensions/common/wasm/foreign.cc` and
//! `source/common/crypto/utility_impl.cc`, BoringSSL `EVP_DigestVerify`):
//!
//! - argument: protobuf `envoy.source.extensions.common.wasm.VerifySignatureArguments`
//!   `{ string hash_function = 1; bytes public_key = 2; bytes signature = 3; bytes text = 4;
//!   string public_key_pem = 5; }`; bytes that do not parse as that message: status `BadArgument`;
//! - result: `VerifySignatureResult { bool result = 1; string error = 2; }`, status `Ok`;
//! - `hash_function` (any case): `sha256`, `sha384`, `sha512`, else `result=false`,
//!   `error="<hash> is not supported."` (Envoy also knows sha1 and sha224; JWS never uses them);
//! - the key is SubjectPublicKeyInfo DER (or `public_key_pem`, its PEM form; both at once: `BadArgument`).
//!   Anything else (a PKCS#1 `RSAPublicKey`, garbage, an Ed25519 or unsupported-curve key, no key):
//!   `result=false`, `error="Failed to initialize digest verify."`;
//! - RSA keys: PKCS#1 v1.5 only (BoringSSL's default padding: PS* signatures never verify);
//!   EC P-256 / P-384 keys: ECDSA over the digest, with a DER-encoded `ECDSA-Sig-Value` (not JWS r‖s);
//! - a signature that does not verify: `result=false`, `error="Failed to verify digest. Error code: 0"`.
//!
//! The two messages are encoded and decoded by hand: five scalar fields of three wire types, not worth a
//! build script, `protoc` and the `prost` crates in a test host.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rsa::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use super::abi::Status;

/// The name Envoy registers the function under.
pub const VERIFY_SIGNATURE: &str = "verify_signature";

/// `VerifySignatureArguments`, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifySignatureArguments {
    /// `sha256`, `sha384`, `sha512` (field 1).
    pub hash_function: String,
    /// SubjectPublicKeyInfo DER (field 2).
    pub public_key: Vec<u8>,
    /// The signature: PKCS#1 v1.5 bytes for RSA, DER `ECDSA-Sig-Value` for EC (field 3).
    pub signature: Vec<u8>,
    /// The signed text (field 4).
    pub text: Vec<u8>,
    /// The key as PEM `PUBLIC KEY` instead of `public_key` (field 5).
    pub public_key_pem: String,
}

/// `VerifySignatureResult`, decoded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifySignatureResult {
    /// Whether the signature verified (field 1).
    pub result: bool,
    /// Why not (field 2; empty on success).
    pub error: String,
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Proto3 encoding: fields holding their default value are left out.
fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    put_varint(out, u64::from(field << 3 | u32::from(WIRE_LEN)));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// The next field: its number and value (fixed-width fields are skipped).
    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        let key = self.varint()?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return None;
        }
        let value = match wire {
            WIRE_VARINT => Field::Varint(self.varint()?),
            WIRE_I64 => {
                self.take(8)?;
                Field::Skipped
            }
            WIRE_LEN => {
                let n = usize::try_from(self.varint()?).ok()?;
                Field::Bytes(self.take(n)?)
            }
            WIRE_I32 => {
                self.take(4)?;
                Field::Skipped
            }
            _ => return None, // groups (3, 4) and invalid types: protobuf refuses them here too
        };
        Some((number, value))
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Skipped,
}

fn utf8(bytes: &[u8]) -> Option<String> {
    // proto3 `string` fields must be valid UTF-8: ParseFromString fails otherwise.
    String::from_utf8(bytes.to_vec()).ok()
}

impl VerifySignatureArguments {
    /// The protobuf bytes Envoy expects.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        put_bytes(&mut out, 1, self.hash_function.as_bytes());
        put_bytes(&mut out, 2, &self.public_key);
        put_bytes(&mut out, 3, &self.signature);
        put_bytes(&mut out, 4, &self.text);
        put_bytes(&mut out, 5, self.public_key_pem.as_bytes());
        out
    }

    /// Parses the message as protobuf does: last value of a field wins, unknown fields are skipped, a field of
    /// the wrong wire type or a truncated message is an error.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let mut r = Reader { buf };
        let mut args = VerifySignatureArguments::default();
        while !r.buf.is_empty() {
            let (number, value) = r.field()?;
            match (number, value) {
                (1, Field::Bytes(b)) => args.hash_function = utf8(b)?,
                (2, Field::Bytes(b)) => args.public_key = b.to_vec(),
                (3, Field::Bytes(b)) => args.signature = b.to_vec(),
                (4, Field::Bytes(b)) => args.text = b.to_vec(),
                (5, Field::Bytes(b)) => args.public_key_pem = utf8(b)?,
                (1..=5, _) => return None, // a known field with a wire type other than length-delimited
                _ => {}
            }
        }
        Some(args)
    }
}

impl VerifySignatureResult {
    /// The protobuf bytes Envoy returns.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.result {
            put_varint(&mut out, u64::from(1u32 << 3 | u32::from(WIRE_VARINT)));
            put_varint(&mut out, 1);
        }
        put_bytes(&mut out, 2, self.error.as_bytes());
        out
    }

    /// Parses a result (for tests and for callers of the function).
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let mut r = Reader { buf };
        let mut out = VerifySignatureResult::default();
        while !r.buf.is_empty() {
            match r.field()? {
                (1, Field::Varint(v)) => out.result = v != 0,
                (2, Field::Bytes(b)) => out.error = utf8(b)?,
                (1 | 2, _) => return None,
                _ => {}
            }
        }
        Some(out)
    }
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn by_name(name: &str) -> Option<Hash> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Some(Hash::Sha256),
            "sha384" => Some(Hash::Sha384),
            "sha512" => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn digest(self, text: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(text).to_vec(),
            Hash::Sha384 => Sha384::digest(text).to_vec(),
            Hash::Sha512 => Sha512::digest(text).to_vec(),
        }
    }

    fn pkcs1v15(self) -> rsa::Pkcs1v15Sign {
        match self {
            Hash::Sha256 => rsa::Pkcs1v15Sign::new::<Sha256>(),
            Hash::Sha384 => rsa::Pkcs1v15Sign::new::<Sha384>(),
            Hash::Sha512 => rsa::Pkcs1v15Sign::new::<Sha512>(),
        }
    }
}

/// A public key BoringSSL's `EVP_DigestVerify` can use the way Envoy calls it.
enum Key {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

impl Key {
    /// SubjectPublicKeyInfo DER only (`EVP_parse_public_key`).
    fn from_spki(der: &[u8]) -> Option<Key> {
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            return Some(Key::Rsa(k));
        }
        if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            return Some(Key::P256(k.into()));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
            return Some(Key::P384(k.into()));
        }
        None
    }

    fn from_pem(pem: &str) -> Option<Key> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PUBLIC KEY-----")
            .collect();
        Key::from_spki(&STANDARD.decode(body).ok()?)
    }

    fn verify(&self, hash: Hash, signature: &[u8], text: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        let digest = hash.digest(text);
        match self {
            Key::Rsa(k) => k.verify(hash.pkcs1v15(), &digest, signature).is_ok(),
            Key::P256(k) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok()),
            Key::P384(k) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok()),
        }
    }
}

/// What Envoy answers for these arguments.
pub fn verify(args: &VerifySignatureArguments) -> Result<VerifySignatureResult, Status> {
    let key = match (args.public_key.is_empty(), args.public_key_pem.is_empty()) {
        (false, false) => return Err(Status::BadArgument),
        (false, true) => Key::from_spki(&args.public_key),
        (true, false) => Key::from_pem(&args.public_key_pem),
        (true, true) => None,
    };
    let fail = |error: String| VerifySignatureResult {
        result: false,
        error,
    };
    let Some(hash) = Hash::by_name(&args.hash_function) else {
        return Ok(fail(format!("{} is not supported.", args.hash_function)));
    };
    let Some(key) = key else {
        return Ok(fail("Failed to initialize digest verify.".into()));
    };
    if key.verify(hash, &args.signature, &args.text) {
        Ok(VerifySignatureResult {
            result: true,
            error: String::new(),
        })
    } else {
        Ok(fail("Failed to verify digest. Error code: 0".into()))
    }
}

/// The foreign function itself: protobuf arguments in, protobuf result out.
pub fn verify_signature(arguments: &[u8]) -> Result<Vec<u8>, Status> {
    let args = VerifySignatureArguments::decode(arguments).ok_or(Status::BadArgument)?;
    Ok(verify(&args)?.encode())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::mint::TestKey;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::Algorithm;
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::BigUint;

    fn jwk(kid: &str) -> serde_json::Value {
        TestKey::by_kid(kid).unwrap().public_jwk()
    }

    fn b64(v: &serde_json::Value) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(v.as_str().unwrap()).unwrap()
    }

    fn rsa_key(kid: &str) -> rsa::RsaPublicKey {
        let j = jwk(kid);
        rsa::RsaPublicKey::new(
            BigUint::from_bytes_be(&b64(&j["n"])),
            BigUint::from_bytes_be(&b64(&j["e"])),
        )
        .unwrap()
    }

    fn spki(kid: &str) -> Vec<u8> {
        use p256::pkcs8::EncodePublicKey as _;
        let j = jwk(kid);
        match kid {
            "rsa-a" | "rsa-b" => rsa::pkcs8::EncodePublicKey::to_public_key_der(&rsa_key(kid))
                .unwrap()
                .into_vec(),
            "ec-p256" => {
                let mut sec1 = vec![4u8];
                sec1.extend(b64(&j["x"]));
                sec1.extend(b64(&j["y"]));
                p256::PublicKey::from_sec1_bytes(&sec1)
                    .unwrap()
                    .to_public_key_der()
                    .unwrap()
                    .into_vec()
            }
            "ec-p384" => {
                let mut sec1 = vec![4u8];
                sec1.extend(b64(&j["x"]));
                sec1.extend(b64(&j["y"]));
                p384::PublicKey::from_sec1_bytes(&sec1)
                    .unwrap()
                    .to_public_key_der()
                    .unwrap()
                    .into_vec()
            }
            other => panic!("no SPKI for {other}"),
        }
    }

    /// (signing input, raw JWS signature) of a token.
    fn jws(kid: &str, alg: Algorithm) -> (Vec<u8>, Vec<u8>) {
        let token = TestKey::by_kid(kid)
            .unwrap()
            .sign(&serde_json::json!({"sub": "alice"}), alg);
        let (input, sig) = token.rsplit_once('.').unwrap();
        (
            input.as_bytes().to_vec(),
            URL_SAFE_NO_PAD.decode(sig).unwrap(),
        )
    }

    /// JWS r‖s to DER, as the filter must do before calling Envoy.
    fn ecdsa_der(kid: &str, raw: &[u8]) -> Vec<u8> {
        match kid {
            "ec-p256" => p256::ecdsa::Signature::from_slice(raw)
                .unwrap()
                .to_der()
                .as_bytes()
                .to_vec(),
            _ => p384::ecdsa::Signature::from_slice(raw)
                .unwrap()
                .to_der()
                .as_bytes()
                .to_vec(),
        }
    }

    fn call(args: &VerifySignatureArguments) -> VerifySignatureResult {
        VerifySignatureResult::decode(&verify_signature(&args.encode()).unwrap()).unwrap()
    }

    fn args(
        hash: &str,
        key: Vec<u8>,
        signature: Vec<u8>,
        text: Vec<u8>,
    ) -> VerifySignatureArguments {
        VerifySignatureArguments {
            hash_function: hash.into(),
            public_key: key,
            signature,
            text,
            public_key_pem: String::new(),
        }
    }

    fn ok() -> VerifySignatureResult {
        VerifySignatureResult {
            result: true,
            error: String::new(),
        }
    }

    #[test]
    fn rsa_pkcs1v15_verifies_with_each_hash() {
        for (alg, hash) in [
            (Algorithm::RS256, "sha256"),
            (Algorithm::RS384, "sha384"),
            (Algorithm::RS512, "SHA512"),
        ] {
            let (text, sig) = jws("rsa-a", alg);
            assert_eq!(call(&args(hash, spki("rsa-a"), sig, text)), ok(), "{alg:?}");
        }
    }

    #[test]
    fn a_bad_rsa_signature_is_false_with_envoys_error() {
        let (text, mut sig) = jws("rsa-a", Algorithm::RS256);
        sig[10] ^= 1;
        let out = call(&args("sha256", spki("rsa-a"), sig.clone(), text.clone()));
        assert!(!out.result);
        assert_eq!(out.error, "Failed to verify digest. Error code: 0");
        // The wrong key, the wrong hash, the wrong text.
        let (text, sig) = jws("rsa-a", Algorithm::RS256);
        assert!(!call(&args("sha256", spki("rsa-b"), sig.clone(), text.clone())).result);
        assert!(!call(&args("sha384", spki("rsa-a"), sig.clone(), text.clone())).result);
        assert!(!call(&args("sha256", spki("rsa-a"), sig, b"other".to_vec())).result);
    }

    #[test]
    fn pss_signatures_never_verify() {
        let (text, sig) = jws("rsa-b", Algorithm::PS256);
        assert!(!call(&args("sha256", spki("rsa-b"), sig, text)).result);
    }

    #[test]
    fn a_pkcs1_key_is_refused_with_an_error() {
        let pkcs1 = rsa_key("rsa-a").to_pkcs1_der().unwrap().into_vec();
        let (text, sig) = jws("rsa-a", Algorithm::RS256);
        let out = call(&args("sha256", pkcs1, sig, text));
        assert!(!out.result);
        assert_eq!(out.error, "Failed to initialize digest verify.");
    }

    #[test]
    fn ecdsa_wants_der_signatures() {
        for (kid, alg, hash) in [
            ("ec-p256", Algorithm::ES256, "sha256"),
            ("ec-p384", Algorithm::ES384, "sha384"),
        ] {
            let (text, raw) = jws(kid, alg);
            let der = ecdsa_der(kid, &raw);
            assert_eq!(
                call(&args(hash, spki(kid), der.clone(), text.clone())),
                ok()
            );
            // The JWS form (r‖s) is not DER.
            let out = call(&args(hash, spki(kid), raw, text.clone()));
            assert!(!out.result, "{kid}: raw r||s must not verify");
            assert!(!out.error.is_empty());
            // Another curve's key.
            let other = if kid == "ec-p256" {
                "ec-p384"
            } else {
                "ec-p256"
            };
            assert!(!call(&args(hash, spki(other), der, text)).result);
        }
    }

    #[test]
    fn ed25519_and_garbage_keys_are_errors() {
        let ed = TestKey::ed25519().public_jwk();
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend(b64(&ed["x"]));
        let (text, sig) = jws("ed25519", Algorithm::EdDSA);
        for key in [der, b"garbage".to_vec(), Vec::new()] {
            let out = call(&args("sha256", key, sig.clone(), text.clone()));
            assert!(!out.result);
            assert_eq!(out.error, "Failed to initialize digest verify.");
        }
    }

    #[test]
    fn unknown_hashes_are_reported_by_name() {
        let (text, sig) = jws("rsa-a", Algorithm::RS256);
        let out = call(&args("md5", spki("rsa-a"), sig, text));
        assert_eq!(
            out,
            VerifySignatureResult {
                result: false,
                error: "md5 is not supported.".into()
            }
        );
    }

    #[test]
    fn pem_keys_work_and_both_forms_at_once_are_a_bad_argument() {
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(spki("rsa-a"))
        );
        let (text, sig) = jws("rsa-a", Algorithm::RS256);
        let mut a = args("sha256", Vec::new(), sig, text);
        a.public_key_pem = pem;
        assert_eq!(call(&a), ok());
        a.public_key = spki("rsa-a");
        assert_eq!(verify_signature(&a.encode()), Err(Status::BadArgument));
    }

    #[test]
    fn malformed_protobuf_is_a_bad_argument() {
        let good = args("sha256", vec![1, 2, 3], vec![4], vec![5]).encode();
        assert_eq!(
            verify_signature(&good[..good.len() - 1]),
            Err(Status::BadArgument)
        );
        // field 1 as a varint: wrong wire type
        assert_eq!(verify_signature(&[0x08, 0x01]), Err(Status::BadArgument));
        // field 1 not UTF-8
        assert_eq!(
            verify_signature(&[0x0a, 0x01, 0xff]),
            Err(Status::BadArgument)
        );
        // an unknown field is skipped; an empty message is valid (and fails on the missing hash)
        let mut with_unknown = good.clone();
        with_unknown.extend([0x30, 0x07]);
        assert!(VerifySignatureArguments::decode(&with_unknown).is_some());
        let empty = call(&VerifySignatureArguments::default());
        assert!(!empty.result);
        assert_eq!(empty.error, " is not supported.");
    }

    #[test]
    fn the_wire_format_matches_protobuf() {
        // Hand-checked against protoc's encoding of the same message.
        let a = args("sha256", vec![0xaa], vec![0xbb, 0xcc], b"t".to_vec());
        assert_eq!(
            a.encode(),
            [
                &[0x0a, 6][..],
                b"sha256",
                &[0x12, 1, 0xaa],
                &[0x1a, 2, 0xbb, 0xcc],
                &[0x22, 1, b't'],
            ]
            .concat()
        );
        assert_eq!(VerifySignatureArguments::decode(&a.encode()), Some(a));
        assert_eq!(ok().encode(), [0x08, 0x01]);
        let e = VerifySignatureResult {
            result: false,
            error: "x".into(),
        };
        assert_eq!(e.encode(), [0x12, 0x01, b'x']);
        assert_eq!(VerifySignatureResult::decode(&e.encode()), Some(e));
        // A long field needs a multi-byte length.
        let long = args("sha256", vec![7; 300], Vec::new(), Vec::new());
        assert_eq!(VerifySignatureArguments::decode(&long.encode()), Some(long));
    }

    #[test]
    fn the_harness_registers_it_by_default() {
        let b = super::super::HarnessBuilder::default();
        assert!(b.foreign.contains_key(VERIFY_SIGNATURE));
        assert!(!b
            .without_host_crypto()
            .foreign
            .contains_key(VERIFY_SIGNATURE));
    }
}
