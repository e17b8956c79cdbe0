//! ECDSA P-384 signature verification (JWS ES384), hand-written on `crypto-bigint`.
//!
//! Why not the `p384` crate: its field and scalar arithmetic is fiat-crypto output, several
//! 12–15 KB straight-line functions. Measured in Envoy (V8), it cost ~130 KB of the `.wasm` and
//! ~12 MB of Envoy's memory even when never executed (V8 compiles all of it eagerly), against
//! targets of a `.wasm` ≤ 600 KB and a memory footprint ≤ 1.3× an empty filter. In Envoy, ES384
//! goes to the host's `verify_signature` anyway ([`crate::crypto`]); this module is the pure-Rust
//! fallback for hosts without it (and for native tests), so it is built for size: crypto-bigint's
//! generic Montgomery arithmetic (loops over limbs, shared with the scalars mod n) and textbook
//! Jacobian point formulas, a few KB of `.wasm`. `p384` stays as a dev-dependency: the tests
//! below check this module against it.
//!
//! Verification only, on public data (a public key, a message, a signature), so nothing here is
//! constant time; correctness is what matters, and nothing here panics on any input. The checks
//! are those of `p384::ecdsa::VerifyingKey::verify` with `Signature::from_slice`: r and s in
//! [1, n), no low-S rule (s and n − s both verify), SHA-384 of the message reduced mod n.

use crypto_bigint::modular::constant_mod::{Residue, ResidueParams};
use crypto_bigint::{impl_modulus, Encoding as _, U384};
use sha2::{Digest as _, Sha384};

impl_modulus!(
    FieldModulus,
    U384,
    "fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffff"
);
impl_modulus!(
    OrderModulus,
    U384,
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973"
);

/// An element of the base field, integers mod p.
type Fe = Residue<FieldModulus, { U384::LIMBS }>;
/// A scalar, integers mod n (the order of the generator).
type Scalar = Residue<OrderModulus, { U384::LIMBS }>;

const P: U384 = <FieldModulus as ResidueParams<{ U384::LIMBS }>>::MODULUS;
const N: U384 = <OrderModulus as ResidueParams<{ U384::LIMBS }>>::MODULUS;
/// b in y² = x³ − 3x + b.
const B: U384 = U384::from_be_hex("b3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef");
const GX: U384 = U384::from_be_hex("aa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7");
const GY: U384 = U384::from_be_hex("3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5f");

/// Bytes of a field element or a scalar.
const SIZE: usize = 48;
/// An uncompressed SEC1 point: 0x04 ‖ x ‖ y.
const SEC1_LEN: usize = 1 + 2 * SIZE;

/// The DER SubjectPublicKeyInfo of a P-384 key, up to the point itself. DER is canonical, so
/// every such SPKI with an uncompressed point starts with exactly these 23 bytes:
/// ```text
/// 30 76                                SEQUENCE, 118 bytes
///    30 10                             SEQUENCE (AlgorithmIdentifier), 16 bytes
///       06 07 2a 86 48 ce 3d 02 01     OID 1.2.840.10045.2.1 (id-ecPublicKey)
///       06 05 2b 81 04 00 22           OID 1.3.132.0.34 (secp384r1)
///    03 62 00                          BIT STRING, 98 bytes, no unused bits: the 97-byte point
/// ```
const SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// A P-384 public key: an affine point on the curve, other than the identity (which has no
/// affine form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey {
    x: Fe,
    y: Fe,
}

impl PublicKey {
    /// Parses an uncompressed SEC1 point (0x04 ‖ x ‖ y, 97 bytes). Refuses any other form or
    /// length, coordinates ≥ p, and points not on y² = x³ − 3x + b.
    pub fn from_sec1(bytes: &[u8]) -> Option<Self> {
        let (&prefix, coordinates) = bytes.split_first()?;
        if prefix != 0x04 || bytes.len() != SEC1_LEN {
            return None;
        }
        let (x, y) = coordinates.split_at_checked(SIZE)?;
        let x = field_element(x)?;
        let y = field_element(y)?;
        let three = Fe::new(&U384::from_u8(3));
        let rhs = x.square() * x - three * x + Fe::new(&B);
        (y.square() == rhs).then_some(PublicKey { x, y })
    }

    /// Parses a DER SubjectPublicKeyInfo (id-ecPublicKey, secp384r1, an uncompressed point),
    /// the form mlgate keeps keys in.
    pub fn from_spki_der(der: &[u8]) -> Option<Self> {
        Self::from_sec1(der.strip_prefix(&SPKI_PREFIX)?)
    }

    /// The uncompressed SEC1 form, 0x04 ‖ x ‖ y.
    pub fn to_sec1(&self) -> Vec<u8> {
        let x = self.x.retrieve().to_be_bytes();
        let y = self.y.retrieve().to_be_bytes();
        [&[0x04][..], &x, &y].concat()
    }

    /// The DER SubjectPublicKeyInfo, as Envoy's `verify_signature` reads it.
    pub fn to_spki_der(&self) -> Vec<u8> {
        [&SPKI_PREFIX[..], &self.to_sec1()].concat()
    }
}

/// Whether `signature` (JWS ES384: r ‖ s, 48 bytes each) is a valid ECDSA signature by `key` over
/// the SHA-384 of `message`. False for a signature of the wrong length or with r or s outside
/// [1, n) (the CVE-2022-21449 forgeries have r = s = 0).
pub fn verify(key: &PublicKey, message: &[u8], signature: &[u8]) -> bool {
    let Some((r, s)) = signature_scalars(signature) else {
        return false;
    };
    // The digest is exactly 48 bytes: as an integer it may exceed n, and Scalar::new reduces it.
    let e = Scalar::new(&U384::from_be_slice(&Sha384::digest(message)));
    // s is in [1, n) and n is prime: s is invertible.
    let (s_inv, invertible) = s.invert();
    if !bool::from(invertible) {
        return false;
    }
    let u1 = (e * s_inv).retrieve();
    let u2 = (r * s_inv).retrieve();
    let point = Point::double_multiply(&u1, &u2, &Point::affine(key.x, key.y));
    // R = u1·G + u2·Q; accept iff R is not the identity and x(R) mod n = r.
    if point.is_identity() {
        return false;
    }
    // Z ≠ 0 and p is prime: Z² is invertible.
    let (z_inv2, invertible) = point.z.square().invert();
    if !bool::from(invertible) {
        return false;
    }
    // x(R) < p < 2n, and Scalar::new reduces it mod n.
    let x = (point.x * z_inv2).retrieve();
    Scalar::new(&x) == r
}

/// The DER form (SEQUENCE { INTEGER r, INTEGER s }) of a JWS ES384 signature r ‖ s, for hosts
/// that want DER. None for the signatures that [`verify`] refuses without looking at the key:
/// a wrong length, r or s outside [1, n).
pub fn signature_to_der(signature: &[u8]) -> Option<Vec<u8>> {
    signature_scalars(signature)?;
    let (r, s) = signature.split_at_checked(SIZE)?;
    let mut integers = Vec::with_capacity(2 * (3 + SIZE));
    der_unsigned_integer(&mut integers, r);
    der_unsigned_integer(&mut integers, s);
    // At most 2 × (2 + 49) = 102 bytes: DER's short length form (< 128) always fits.
    let mut der = Vec::with_capacity(2 + integers.len());
    der.push(0x30);
    der.push(u8::try_from(integers.len()).ok()?);
    der.extend_from_slice(&integers);
    Some(der)
}

/// Appends a positive big-endian integer as a minimal DER INTEGER (short length form).
fn der_unsigned_integer(out: &mut Vec<u8>, big_endian: &[u8]) {
    let first_nonzero = big_endian.iter().position(|&b| b != 0);
    let digits = first_nonzero
        .and_then(|i| big_endian.get(i..))
        .unwrap_or(&[0]);
    // A leading byte ≥ 0x80 would read as negative: a zero byte goes first.
    let pad = digits.first().is_some_and(|&b| b >= 0x80);
    out.push(0x02);
    // At most 49 bytes.
    out.push((digits.len() + usize::from(pad)) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
}

/// r and s of a 96-byte r ‖ s signature, each in [1, n).
fn signature_scalars(signature: &[u8]) -> Option<(Scalar, Scalar)> {
    if signature.len() != 2 * SIZE {
        return None;
    }
    let (r, s) = signature.split_at_checked(SIZE)?;
    Some((scalar(r)?, scalar(s)?))
}

/// A 48-byte big-endian integer in [1, n), as a scalar.
fn scalar(bytes: &[u8]) -> Option<Scalar> {
    let value = uint(bytes)?;
    (value != U384::ZERO && value < N).then(|| Scalar::new(&value))
}

/// A 48-byte big-endian integer below p, as a field element.
fn field_element(bytes: &[u8]) -> Option<Fe> {
    let value = uint(bytes)?;
    (value < P).then(|| Fe::new(&value))
}

fn uint(bytes: &[u8]) -> Option<U384> {
    // from_be_slice asserts the length: checked here, so it cannot fire.
    (bytes.len() == SIZE).then(|| U384::from_be_slice(bytes))
}

/// A point in Jacobian coordinates: (X/Z², Y/Z³), and the identity when Z = 0.
#[derive(Clone, Copy, Debug)]
struct Point {
    x: Fe,
    y: Fe,
    z: Fe,
}

impl Point {
    const IDENTITY: Point = Point {
        x: Fe::ONE,
        y: Fe::ONE,
        z: Fe::ZERO,
    };

    fn affine(x: Fe, y: Fe) -> Point {
        Point { x, y, z: Fe::ONE }
    }

    fn is_identity(&self) -> bool {
        self.z == Fe::ZERO
    }

    /// 2·self ("dbl-2001-b", for a = −3). The identity doubles to itself (Z stays 0); P-384 has
    /// no point of order 2, so no other point doubles to the identity.
    fn double(&self) -> Point {
        let Point { x, y, z } = *self;
        let delta = z.square();
        let gamma = y.square();
        let beta = x * gamma;
        let t = (x - delta) * (x + delta);
        let alpha = t + t + t;
        let beta4 = twice(twice(beta));
        let x3 = alpha.square() - twice(beta4);
        let z3 = (y + z).square() - gamma - delta;
        let y3 = alpha * (beta4 - x3) - twice(twice(twice(gamma.square())));
        Point {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// self + other ("add-1998-cmo-2"), with the cases that formula does not cover: either
    /// operand the identity, equal points (a doubling) and opposite points (the identity).
    fn add(&self, other: &Point) -> Point {
        if self.is_identity() {
            return *other;
        }
        if other.is_identity() {
            return *self;
        }
        let z1z1 = self.z.square();
        let z2z2 = other.z.square();
        let u1 = self.x * z2z2;
        let u2 = other.x * z1z1;
        let s1 = self.y * other.z * z2z2;
        let s2 = other.y * self.z * z1z1;
        let h = u2 - u1;
        let r = s2 - s1;
        if h == Fe::ZERO {
            return if r == Fe::ZERO {
                self.double()
            } else {
                Point::IDENTITY
            };
        }
        let hh = h.square();
        let hhh = h * hh;
        let v = u1 * hh;
        let x3 = r.square() - hhh - twice(v);
        let y3 = r * (v - x3) - s1 * hhh;
        let z3 = self.z * other.z * h;
        Point {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// u1·G + u2·q, both at once (Shamir's trick: one doubling per bit, one addition of G, q or
    /// G + q where either scalar has that bit set).
    fn double_multiply(u1: &U384, u2: &U384, q: &Point) -> Point {
        let g = Point::affine(Fe::new(&GX), Fe::new(&GY));
        let g_plus_q = g.add(q);
        let mut acc = Point::IDENTITY;
        for bit in (0..U384::BITS).rev() {
            acc = acc.double();
            match (u1.bit_vartime(bit), u2.bit_vartime(bit)) {
                (true, true) => acc = acc.add(&g_plus_q),
                (true, false) => acc = acc.add(&g),
                (false, true) => acc = acc.add(q),
                (false, false) => {}
            }
        }
        acc
    }
}

fn twice(a: Fe) -> Fe {
    a + a
}

#[cfg(test)]
mod tests;
