//! Differential tests: every verdict is compared with the `p384` crate's (a dev-dependency).

use super::*;
use p384::ecdsa::signature::{Signer as _, Verifier as _};
use p384::elliptic_curve::sec1::ToEncodedPoint as _;
use p384::pkcs8::EncodePublicKey as _;

/// Deterministic test data: SHA-384 of a label and a counter.
fn pseudo_random(label: &str, i: u64) -> [u8; SIZE] {
    let digest = Sha384::new()
        .chain_update(label)
        .chain_update(i.to_be_bytes())
        .finalize();
    digest.into()
}

fn signing_key(i: u64) -> p384::ecdsa::SigningKey {
    (0..)
        .find_map(|attempt| {
            p384::ecdsa::SigningKey::from_slice(&pseudo_random("key", i * 1000 + attempt)).ok()
        })
        .unwrap()
}

fn sec1_of(key: &p384::ecdsa::SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec()
}

fn message(i: u64) -> Vec<u8> {
    let len = (i % 150) as usize;
    pseudo_random("message", i)
        .iter()
        .cycle()
        .take(len)
        .copied()
        .collect()
}

/// A key, a message and p384's signature (r ‖ s) over it.
struct Case {
    sec1: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
}

fn case_with(key: &p384::ecdsa::SigningKey, message: Vec<u8>) -> Case {
    let signature: p384::ecdsa::Signature = key.sign(&message);
    Case {
        sec1: sec1_of(key),
        message,
        signature: signature.to_bytes().to_vec(),
    }
}

/// The cases the tests below tamper with, made once: signing is slow in a debug build.
const CASES: usize = 30;

fn case(i: u64) -> &'static Case {
    static MADE: std::sync::OnceLock<Vec<Case>> = std::sync::OnceLock::new();
    let made = MADE.get_or_init(|| {
        (0..CASES as u64)
            .map(|i| case_with(&signing_key(i), message(i)))
            .collect()
    });
    &made[i as usize % CASES]
}

fn p384_accepts(sec1: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1) else {
        return false;
    };
    p384::ecdsa::Signature::from_slice(signature)
        .is_ok_and(|signature| key.verify(message, &signature).is_ok())
}

fn we_accept(sec1: &[u8], message: &[u8], signature: &[u8]) -> bool {
    PublicKey::from_sec1(sec1).is_some_and(|key| verify(&key, message, signature))
}

/// Our verdict, after checking that it is p384's.
fn verdict(sec1: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let ours = we_accept(sec1, message, signature);
    assert_eq!(
        ours,
        p384_accepts(sec1, message, signature),
        "key {sec1:02x?}, message {message:02x?}, signature {signature:02x?}"
    );
    ours
}

fn be_bytes(value: &U384) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

fn with_r(signature: &[u8], r: &U384) -> Vec<u8> {
    [&be_bytes(r)[..], &signature[SIZE..]].concat()
}

fn with_s(signature: &[u8], s: &U384) -> Vec<u8> {
    [&signature[..SIZE], &be_bytes(s)[..]].concat()
}

fn n_plus_one() -> U384 {
    N.wrapping_add(&U384::ONE)
}

/// `keys` random keys sign `per_key` random messages each; all of them verify. (That p384
/// accepts them too is checked on the tampered cases below, where it is not a given.)
fn assert_accepts_p384_signatures(keys: u64, per_key: u64) {
    for k in 0..keys {
        let key = signing_key(100_000 + k);
        let sec1 = sec1_of(&key);
        let public = PublicKey::from_sec1(&sec1).unwrap();
        for m in 0..per_key {
            let case = case_with(&key, message(k * per_key + m));
            assert!(
                verify(&public, &case.message, &case.signature),
                "key {k}, message {m}"
            );
        }
    }
}

#[test]
fn accepts_what_p384_signs() {
    assert_accepts_p384_signatures(30, 5);
}

/// The same at scale, too slow for a debug build: run with
/// `cargo test --lib --release p384_verify -- --ignored`.
#[test]
#[ignore]
fn accepts_what_p384_signs_at_scale() {
    assert_accepts_p384_signatures(2000, 5);
}

#[test]
fn p384_accepts_what_it_signs_as_we_do() {
    for i in 0..CASES as u64 {
        let case = case(i);
        assert!(
            verdict(&case.sec1, &case.message, &case.signature),
            "case {i}"
        );
    }
}

#[test]
fn refuses_a_tampered_message() {
    for i in 0..30 {
        let case = case(i);
        let mut message = case.message.clone();
        let at = i as usize % message.len().max(1);
        match message.get_mut(at) {
            Some(byte) => *byte ^= 1 << (i % 8),
            None => message.push(0),
        }
        assert!(!verdict(&case.sec1, &message, &case.signature), "case {i}");
    }
}

#[test]
fn refuses_a_tampered_r() {
    for i in 0..30 {
        let case = case(i);
        let mut signature = case.signature.clone();
        signature[i as usize % SIZE] ^= 1 << (i % 8);
        assert!(!verdict(&case.sec1, &case.message, &signature), "case {i}");
    }
}

#[test]
fn refuses_a_tampered_s() {
    for i in 0..30 {
        let case = case(i);
        let mut signature = case.signature.clone();
        signature[SIZE + i as usize % SIZE] ^= 1 << (i % 8);
        assert!(!verdict(&case.sec1, &case.message, &signature), "case {i}");
    }
}

#[test]
fn refuses_r_and_s_swapped() {
    for i in 0..50 {
        let case = case(i);
        let swapped = [&case.signature[SIZE..], &case.signature[..SIZE]].concat();
        assert!(!verdict(&case.sec1, &case.message, &swapped), "case {i}");
    }
}

#[test]
fn refuses_another_keys_signature() {
    for i in 0..50 {
        let case = case(i);
        let other = sec1_of(&signing_key(i + 10_000));
        assert!(!verdict(&other, &case.message, &case.signature), "case {i}");
    }
}

#[test]
fn accepts_high_s_as_p384_does() {
    // No low-S rule for P-384: s and n − s both verify.
    for i in 0..30 {
        let case = case(i);
        let s = U384::from_be_slice(&case.signature[SIZE..]);
        let high_or_low = with_s(&case.signature, &N.wrapping_sub(&s));
        assert!(verdict(&case.sec1, &case.message, &high_or_low), "case {i}");
    }
}

#[test]
fn refuses_the_all_zero_signature() {
    // CVE-2022-21449: r = s = 0 made Java accept anything.
    let case = case(0);
    assert!(!verdict(&case.sec1, &case.message, &[0; 2 * SIZE]));
}

#[test]
fn refuses_r_of_zero() {
    let case = case(1);
    let signature = with_r(&case.signature, &U384::ZERO);
    assert!(!verdict(&case.sec1, &case.message, &signature));
}

#[test]
fn refuses_s_of_zero() {
    let case = case(2);
    let signature = with_s(&case.signature, &U384::ZERO);
    assert!(!verdict(&case.sec1, &case.message, &signature));
}

#[test]
fn refuses_r_of_n() {
    let case = case(3);
    let signature = with_r(&case.signature, &N);
    assert!(!verdict(&case.sec1, &case.message, &signature));
}

#[test]
fn refuses_s_of_n() {
    let case = case(4);
    let signature = with_s(&case.signature, &N);
    assert!(!verdict(&case.sec1, &case.message, &signature));
}

#[test]
fn refuses_r_of_n_plus_one() {
    // Reduced mod n it would be 1: the range rule, not a reduction, must refuse it.
    let case = case(5);
    let signature = with_r(&case.signature, &n_plus_one());
    assert!(signature_scalars(&signature).is_none());
    assert!(!verdict(&case.sec1, &case.message, &signature));
}

#[test]
fn refuses_s_of_n_plus_one() {
    let case = case(6);
    let signature = with_s(&case.signature, &n_plus_one());
    assert!(!verdict(&case.sec1, &case.message, &signature));
}

#[test]
fn refuses_r_or_s_of_all_ones() {
    let case = case(7);
    assert!(!verdict(
        &case.sec1,
        &case.message,
        &with_r(&case.signature, &U384::MAX)
    ));
    assert!(!verdict(
        &case.sec1,
        &case.message,
        &with_s(&case.signature, &U384::MAX)
    ));
}

#[test]
fn refuses_a_signature_of_the_wrong_length() {
    let case = case(8);
    let der = p384::ecdsa::Signature::from_slice(&case.signature)
        .unwrap()
        .to_der();
    let longer = [&case.signature[..], &[0]].concat();
    for signature in [
        &[][..],
        &case.signature[..64],
        &case.signature[..95],
        &longer,
        der.as_bytes(),
    ] {
        assert!(!verdict(&case.sec1, &case.message, signature));
    }
}

#[test]
fn refuses_random_signatures() {
    let case = case(9);
    for i in 0..30 {
        let signature = [pseudo_random("r", i), pseudo_random("s", i)].concat();
        assert!(!verdict(&case.sec1, &case.message, &signature), "case {i}");
    }
}

#[test]
fn refuses_a_signature_whose_point_is_the_identity() {
    // With r = −e/d mod n, u1·G + u2·Q = (e + r·d)/s · G is the identity, for any s.
    let d_bytes = pseudo_random("identity", 0);
    let key = p384::ecdsa::SigningKey::from_slice(&d_bytes).unwrap();
    let message = b"the sum is the point at infinity";
    let e = Scalar::new(&U384::from_be_slice(&Sha384::digest(message)));
    let d = Scalar::new(&U384::from_be_slice(&d_bytes));
    let (d_inv, _) = d.invert();
    let r = (-(e * d_inv)).retrieve();
    for s in [U384::ONE, U384::from_u8(2), N.wrapping_sub(&U384::ONE)] {
        let signature = [be_bytes(&r), be_bytes(&s)].concat();
        assert!(!verdict(&sec1_of(&key), message, &signature));
    }
}

#[test]
fn accepts_signatures_by_degenerate_keys() {
    // d = 1 makes G + Q a doubling, d = n − 1 makes it the identity.
    let one = U384::ONE;
    let keys = [
        one,
        U384::from_u8(2),
        U384::from_u8(3),
        N.wrapping_sub(&one),
        N.wrapping_sub(&U384::from_u8(2)),
    ];
    for d in keys {
        let key = p384::ecdsa::SigningKey::from_slice(&be_bytes(&d)).unwrap();
        for i in 0..10 {
            let message = message(i);
            let signature: p384::ecdsa::Signature = key.sign(&message);
            let signature = signature.to_bytes();
            assert!(verdict(&sec1_of(&key), &message, &signature), "d {d}");
        }
    }
}

/// The affine SEC1 form of a Jacobian point, None for the identity.
fn affine_sec1(point: &Point) -> Option<Vec<u8>> {
    if point.is_identity() {
        return None;
    }
    let (z_inv, _) = point.z.invert();
    let z_inv2 = z_inv.square();
    let key = PublicKey {
        x: point.x * z_inv2,
        y: point.y * z_inv2 * z_inv,
    };
    Some(key.to_sec1())
}

fn generator() -> Point {
    Point::affine(Fe::new(&GX), Fe::new(&GY))
}

/// k·G by p384, as SEC1 (None for the identity).
fn p384_multiple_of_g(k: u64) -> Option<Vec<u8>> {
    let point = (p384::ProjectivePoint::GENERATOR * p384::Scalar::from(k)).to_affine();
    let encoded = point.to_encoded_point(false);
    (!encoded.is_identity()).then(|| encoded.as_bytes().to_vec())
}

#[test]
fn generator_is_p384s() {
    assert_eq!(affine_sec1(&generator()), p384_multiple_of_g(1));
}

#[test]
fn adding_a_point_to_itself_doubles_it() {
    let g = generator();
    let two_g = g.double();
    assert_eq!(affine_sec1(&g.add(&g)), p384_multiple_of_g(2));
    assert_eq!(affine_sec1(&two_g.add(&two_g)), p384_multiple_of_g(4));
    // The same point in other Jacobian coordinates (Z ≠ 1) is still recognised as equal.
    let four_g = two_g.double();
    let four_g_too = two_g.add(&g).add(&g);
    assert_eq!(affine_sec1(&four_g.add(&four_g_too)), p384_multiple_of_g(8));
}

#[test]
fn adding_a_point_to_its_negation_gives_the_identity() {
    let three_g = generator().double().add(&generator());
    let minus_three_g = Point {
        y: -three_g.y,
        ..three_g
    };
    assert!(three_g.add(&minus_three_g).is_identity());
}

#[test]
fn the_identity_is_neutral_in_addition() {
    let g = generator();
    assert_eq!(affine_sec1(&Point::IDENTITY.add(&g)), p384_multiple_of_g(1));
    assert_eq!(affine_sec1(&g.add(&Point::IDENTITY)), p384_multiple_of_g(1));
    assert!(Point::IDENTITY.add(&Point::IDENTITY).is_identity());
    assert!(Point::IDENTITY.double().is_identity());
}

#[test]
fn double_multiply_matches_p384() {
    let q = generator().double().add(&generator()); // 3·G
    for (u1, u2) in [
        (0u64, 0u64),
        (1, 0),
        (0, 1),
        (5, 7),
        (1 << 40, 12345),
        (u64::MAX, 3),
    ] {
        let ours = Point::double_multiply(&U384::from_u64(u1), &U384::from_u64(u2), &q);
        let k = u128::from(u1) + 3 * u128::from(u2);
        let theirs = (p384::ProjectivePoint::GENERATOR * p384::Scalar::from(u1)
            + p384::ProjectivePoint::GENERATOR * p384::Scalar::from(3u64) * p384::Scalar::from(u2))
        .to_affine()
        .to_encoded_point(false);
        let theirs = (!theirs.is_identity()).then(|| theirs.as_bytes().to_vec());
        assert_eq!(affine_sec1(&ours), theirs, "{u1}·G + {u2}·3G = {k}·G");
    }
}

#[test]
fn public_key_round_trips_through_sec1() {
    for i in 0..CASES as u64 {
        let sec1 = &case(i).sec1;
        assert_eq!(&PublicKey::from_sec1(sec1).unwrap().to_sec1(), sec1);
    }
}

#[test]
fn refuses_a_point_off_the_curve() {
    for i in 0..CASES as u64 {
        let mut sec1 = case(i).sec1.clone();
        sec1[SEC1_LEN - 1 - (i as usize % SIZE)] ^= 1;
        assert!(PublicKey::from_sec1(&sec1).is_none());
        assert!(p384::PublicKey::from_sec1_bytes(&sec1).is_err());
    }
}

/// A valid point with a small x (so that x + p still fits in 48 bytes).
fn point_with_small_x() -> (U384, U384) {
    let sqrt_exponent = P.wrapping_add(&U384::ONE).shr_vartime(2); // p ≡ 3 mod 4
    (0u8..)
        .find_map(|x| {
            let x = U384::from_u8(x);
            let fx = Fe::new(&x);
            let rhs = fx.square() * fx - Fe::new(&U384::from_u8(3)) * fx + Fe::new(&B);
            let y = rhs.pow(&sqrt_exponent);
            (y.square() == rhs).then(|| (x, y.retrieve()))
        })
        .unwrap()
}

fn sec1_from(x: &U384, y: &U384) -> Vec<u8> {
    [&[0x04][..], &be_bytes(x), &be_bytes(y)].concat()
}

#[test]
fn refuses_x_of_p_or_more() {
    let (x, y) = point_with_small_x();
    assert!(PublicKey::from_sec1(&sec1_from(&x, &y)).is_some());
    // x + p is the same field element, but not a canonical encoding.
    let non_canonical = sec1_from(&x.wrapping_add(&P), &y);
    assert!(PublicKey::from_sec1(&non_canonical).is_none());
    assert!(p384::PublicKey::from_sec1_bytes(&non_canonical).is_err());
    assert!(PublicKey::from_sec1(&sec1_from(&P, &y)).is_none());
}

#[test]
fn refuses_y_of_p_or_more() {
    let (x, _) = point_with_small_x();
    for y in [P, P.wrapping_add(&U384::ONE), U384::MAX] {
        let sec1 = sec1_from(&x, &y);
        assert!(PublicKey::from_sec1(&sec1).is_none());
        assert!(p384::PublicKey::from_sec1_bytes(&sec1).is_err());
    }
}

#[test]
fn refuses_the_identity() {
    assert!(PublicKey::from_sec1(&[0x00]).is_none());
    assert!(p384::PublicKey::from_sec1_bytes(&[0x00]).is_err());
    let zeros = sec1_from(&U384::ZERO, &U384::ZERO);
    assert!(PublicKey::from_sec1(&zeros).is_none());
    assert!(p384::PublicKey::from_sec1_bytes(&zeros).is_err());
}

#[test]
fn refuses_a_point_with_another_prefix() {
    let sec1 = &case(0).sec1;
    for prefix in [0x00, 0x02, 0x03, 0x05, 0x06, 0x07, 0xff] {
        let other = [&[prefix][..], &sec1[1..]].concat();
        assert!(PublicKey::from_sec1(&other).is_none(), "{prefix:#x}");
    }
}

#[test]
fn refuses_a_compressed_point() {
    // p384 takes compressed points too; mlgate only ever builds uncompressed ones (from a JWK's
    // x and y), so the other forms are refused rather than decompressed.
    let compressed = signing_key(0).verifying_key().to_encoded_point(true);
    assert!(PublicKey::from_sec1(compressed.as_bytes()).is_none());
}

#[test]
fn refuses_a_point_of_the_wrong_length() {
    let sec1 = &case(0).sec1;
    let longer = [&sec1[..], &[0]].concat();
    for bytes in [&[][..], &[0x04][..], &sec1[..SEC1_LEN - 1], &longer] {
        assert!(
            PublicKey::from_sec1(bytes).is_none(),
            "{} bytes",
            bytes.len()
        );
    }
}

fn p384_spki(i: u64) -> Vec<u8> {
    p384::PublicKey::from_sec1_bytes(&case(i).sec1)
        .unwrap()
        .to_public_key_der()
        .unwrap()
        .into_vec()
}

#[test]
fn spki_der_is_p384s() {
    for i in 0..CASES as u64 {
        let key = PublicKey::from_sec1(&case(i).sec1).unwrap();
        assert_eq!(key.to_spki_der(), p384_spki(i));
    }
}

#[test]
fn parses_p384s_spki_der() {
    for i in 0..CASES as u64 {
        let key = PublicKey::from_spki_der(&p384_spki(i)).unwrap();
        assert_eq!(key.to_sec1(), case(i).sec1);
    }
}

#[test]
fn refuses_spki_der_of_another_curve() {
    use p256::pkcs8::EncodePublicKey as _;
    let p256_key = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let der = p256_key.verifying_key().to_public_key_der().unwrap();
    assert!(PublicKey::from_spki_der(der.as_bytes()).is_none());
}

#[test]
fn refuses_truncated_or_extended_spki_der() {
    let der = p384_spki(0);
    let longer = [&der[..], &[0]].concat();
    assert!(PublicKey::from_spki_der(&der[..der.len() - 1]).is_none());
    assert!(PublicKey::from_spki_der(&longer).is_none());
    assert!(PublicKey::from_spki_der(&der[SPKI_PREFIX.len()..]).is_none());
}

fn p384_der(signature: &[u8]) -> Option<Vec<u8>> {
    let signature = p384::ecdsa::Signature::from_slice(signature).ok()?;
    Some(signature.to_der().as_bytes().to_vec())
}

#[test]
fn signature_der_is_p384s() {
    for i in 0..CASES as u64 {
        let signature = &case(i).signature;
        assert_eq!(signature_to_der(signature), p384_der(signature), "case {i}");
    }
}

#[test]
fn signature_der_is_minimal_for_short_and_high_bit_integers() {
    let high = U384::ONE.shl_vartime(383); // top bit set: needs a leading zero byte
    let short = U384::from_u64(0x80); // one byte with its top bit set
    for (r, s) in [
        (U384::ONE, U384::ONE),
        (U384::ONE, N.wrapping_sub(&U384::ONE)),
        (high, short),
        (short, U384::from_u64(0x7f)),
        (U384::from_u64(0x0100), high),
    ] {
        let signature = [be_bytes(&r), be_bytes(&s)].concat();
        let der = signature_to_der(&signature);
        assert!(der.is_some());
        assert_eq!(der, p384_der(&signature), "r {r}, s {s}");
    }
}

#[test]
fn signature_der_refuses_out_of_range_or_wrongly_sized_signatures() {
    let valid = &case(0).signature;
    for signature in [
        vec![0; 2 * SIZE],
        with_r(valid, &U384::ZERO),
        with_s(valid, &U384::ZERO),
        with_r(valid, &N),
        with_s(valid, &N),
        with_r(valid, &n_plus_one()),
        valid[..95].to_vec(),
        [&valid[..], &[1]].concat(),
    ] {
        assert_eq!(signature_to_der(&signature), None);
        assert_eq!(p384_der(&signature), None);
    }
}

/// Not a test: how long one verification takes. Run with
/// `cargo test --lib --release p384_verify::tests::time -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_one_verification() {
    let cases: Vec<&Case> = (0..20).map(case).collect();
    let keys: Vec<PublicKey> = cases
        .iter()
        .map(|c| PublicKey::from_sec1(&c.sec1).unwrap())
        .collect();
    let rounds = 10;
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for (key, case) in keys.iter().zip(&cases) {
            assert!(verify(key, &case.message, &case.signature));
        }
    }
    let ours = start.elapsed() / (rounds * cases.len() as u32);
    let theirs_keys: Vec<p384::ecdsa::VerifyingKey> = cases
        .iter()
        .map(|c| p384::ecdsa::VerifyingKey::from_sec1_bytes(&c.sec1).unwrap())
        .collect();
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        for (key, case) in theirs_keys.iter().zip(&cases) {
            let signature = p384::ecdsa::Signature::from_slice(&case.signature).unwrap();
            assert!(key.verify(&case.message, &signature).is_ok());
        }
    }
    let theirs = start.elapsed() / (rounds * cases.len() as u32);
    println!("one ES384 verification: p384_verify {ours:?}, p384 crate {theirs:?}");
}
