//! `exp` over a slice, four lanes at a time with AVX2 where the CPU has it: the serving
//! transform's softmax takes one exp per class (46 for the service models), and libm's, one
//! call at a time, took 250-420 ns of them, a quarter to a third of an inline stage.
//!
//! Range reduction `x = n ln2 + r`, `|r| <= ln2/2`, n rounded by the 1.5 * 2^52 shifter (the
//! sum's low mantissa bits are n, which become the exponent of 2^n with an integer add and
//! shift); exp(r) by its Taylor polynomial of degree 13 (truncation below 5e-18 relative), so
//! results are within a few ulp of the exact value. Inputs are clamped to [-708, 709]: below,
//! the result stays at exp(-708) ~ 3e-308 instead of going subnormal (nothing a probability
//! can tell apart from 0); above, exp overflows anyway.

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// ln 2 in two parts (fdlibm's): `n * LN2_HI` is exact for the n that occur.
const LN2_HI: f64 = 6.931_471_803_691_238e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
/// 1.5 * 2^52: adding it rounds to an integer held in the low mantissa bits.
const SHIFTER: f64 = 6_755_399_441_055_744.0;
/// 1/k! for k = 2..=13.
const INV_FACT: [f64; 12] = [
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5_040.0,
    1.0 / 40_320.0,
    1.0 / 362_880.0,
    1.0 / 3_628_800.0,
    1.0 / 39_916_800.0,
    1.0 / 479_001_600.0,
    1.0 / 6_227_020_800.0,
];

/// exp(x), for inputs that are not NaN.
#[inline(always)]
fn exp(x: f64) -> f64 {
    let x = x.clamp(-708.0, 709.0);
    let t = x * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = INV_FACT[11];
    for c in INV_FACT[..11].iter().rev() {
        p = p * r + c;
    }
    let poly = 1.0 + r + r * r * p;
    // The low 12 bits of t's bits are n + 2^51 mod 4096 = n mod 4096; n + 1023 in 1..=2046.
    let scale = f64::from_bits((t.to_bits().wrapping_add(1023)) << 52);
    poly * scale
}

/// Every value of `v` replaced by its exp (values must not be NaN).
pub(super) fn exp_in_place(v: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { exp_in_place_avx2(v) };
        return;
    }
    for x in v {
        *x = exp(*x);
    }
}

/// [`exp`] on four lanes at a time with AVX2 (the compiler would not vectorize the scalar
/// form). The same operations in the same order and no FMA: the same bits as [`exp`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn exp_in_place_avx2(v: &mut [f64]) {
    use std::arch::x86_64::{
        __m256d, _mm256_add_epi64, _mm256_add_pd, _mm256_castpd_si256, _mm256_castsi256_pd,
        _mm256_loadu_pd, _mm256_max_pd, _mm256_min_pd, _mm256_mul_pd, _mm256_set1_epi64x,
        _mm256_set1_pd, _mm256_slli_epi64, _mm256_storeu_pd, _mm256_sub_pd,
    };
    let k = |c: f64| -> __m256d { _mm256_set1_pd(c) };
    let mut chunks = v.chunks_exact_mut(4);
    for c in &mut chunks {
        // SAFETY: `c` is 4 f64s; unaligned load.
        let x = unsafe { _mm256_loadu_pd(c.as_ptr()) };
        let x = _mm256_min_pd(_mm256_max_pd(x, k(-708.0)), k(709.0));
        let t = _mm256_add_pd(_mm256_mul_pd(x, k(LOG2E)), k(SHIFTER));
        let n = _mm256_sub_pd(t, k(SHIFTER));
        let r = _mm256_sub_pd(
            _mm256_sub_pd(x, _mm256_mul_pd(n, k(LN2_HI))),
            _mm256_mul_pd(n, k(LN2_LO)),
        );
        let mut p = k(INV_FACT[11]);
        for f in INV_FACT[..11].iter().rev() {
            p = _mm256_add_pd(_mm256_mul_pd(p, r), k(*f));
        }
        let poly = _mm256_add_pd(
            _mm256_add_pd(k(1.0), r),
            _mm256_mul_pd(_mm256_mul_pd(r, r), p),
        );
        let bits = _mm256_slli_epi64::<52>(_mm256_add_epi64(
            _mm256_castpd_si256(t),
            _mm256_set1_epi64x(1023),
        ));
        let y = _mm256_mul_pd(poly, _mm256_castsi256_pd(bits));
        // SAFETY: `c` is 4 f64s; unaligned store.
        unsafe { _mm256_storeu_pd(c.as_mut_ptr(), y) };
    }
    for x in chunks.into_remainder() {
        *x = exp(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_a_few_ulp_of_libm_over_the_whole_range() {
        let mut worst = 0u64;
        let mut x = -708.0;
        while x <= 709.0 {
            for d in [0.0, 1e-9, 0.3466, 0.5, std::f64::consts::LN_2] {
                let v = x + d;
                if v > 709.0 {
                    continue;
                }
                let (ours, libm) = (exp(v), v.exp());
                let ulps = ours.to_bits().abs_diff(libm.to_bits());
                worst = worst.max(ulps);
            }
            x += 0.731;
        }
        assert!(worst <= 4, "worst {worst} ulp");
        // The vector path gives the scalar one's bits.
        let xs: Vec<f64> = (0..1000).map(|i| -708.0 + f64::from(i) * 1.417_3).collect();
        let mut vector = xs.clone();
        exp_in_place(&mut vector);
        for (x, v) in xs.iter().zip(&vector) {
            assert_eq!(exp(*x).to_bits(), v.to_bits(), "{x}");
        }
        let mut v = [0.0, -1.0, 1.0, -745.0, -1e300, 710.0];
        exp_in_place(&mut v);
        assert_eq!(v[0], 1.0);
        assert!((v[1] - (-1.0f64).exp()).abs() < 1e-16);
        assert!((v[2] - 1f64.exp()).abs() < 1e-15);
        assert!(
            v[3] > 0.0 && v[3] < 1e-307 && v[4] == v[3],
            "clamped, not subnormal"
        );
        assert!((v[5] / 709f64.exp() - 1.0).abs() < 1e-15, "clamped at 709");
    }
}
