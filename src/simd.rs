//! Which instruction set the CPU loops run with, chosen at run time.
//!
//! The processor is asked once (`cpuid`, through std's cached detection); the loops then run the
//! best level it has, or a lower one when the process asks for it: the environment variable
//! `ADAMW_SIMD` (`portable`, `avx2`, `avx512` or `avx512bf16`, read once, at the first step) or
//! [`set_simd_level`]. Every level gives the same bits (the conformance suites run through each
//! one the processor has); lower levels exist to test that and to rule a path out.
//!
//! A loop is written once, as a [`Kernel`] whose `run` is `#[inline(always)]`: [`dispatch`]
//! calls it inside a function compiled for the level's target features, so the compiler
//! vectorizes the same code for AVX-512, for AVX2 and F16C, and portably.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction set level of the CPU loops, from the portable one up. Levels may be added (a
/// match needs a wildcard arm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SimdLevel {
    /// What the build targets (x86-64's SSE2, aarch64's NEON): runs everywhere.
    Portable,
    /// AVX2 with F16C (every x86-64 with AVX2 has F16C).
    Avx2,
    /// AVX-512 F, BW and VL, with AVX2 and F16C.
    Avx512,
    /// [`SimdLevel::Avx512`] with AVX512_BF16, whose conversions round a bfloat16 step's
    /// results (`vcvtne2ps2bf16`); every other loop runs as at the AVX-512 level.
    Avx512Bf16,
}

impl SimdLevel {
    /// Every level, lowest first.
    pub const ALL: [SimdLevel; 4] = [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512, SimdLevel::Avx512Bf16];

    /// The level's name, as `ADAMW_SIMD` takes it.
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Portable => "portable",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Avx512Bf16 => "avx512bf16",
        }
    }

    /// The level called `name`, if any.
    pub fn from_name(name: &str) -> Option<SimdLevel> {
        SimdLevel::ALL.into_iter().find(|level| level.name() == name.trim().to_ascii_lowercase())
    }

    /// The best level this processor has.
    pub fn detected() -> SimdLevel {
        static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx2") && has!("f16c") {
                    return if has!("avx512bf16") { SimdLevel::Avx512Bf16 } else { SimdLevel::Avx512 };
                }
                if has!("avx2") && has!("f16c") {
                    return SimdLevel::Avx2;
                }
            }
            SimdLevel::Portable
        })
    }

    /// Every level this processor can run, lowest first.
    pub fn supported() -> Vec<SimdLevel> {
        SimdLevel::ALL.into_iter().filter(|&level| level <= SimdLevel::detected()).collect()
    }
}

/// The highest level the process allows: `NOT_SET` until the environment is read.
static LIMIT: AtomicU8 = AtomicU8::new(NOT_SET);
const NOT_SET: u8 = u8::MAX;
const NO_LIMIT: u8 = u8::MAX - 1;

/// Limits the CPU loops of the whole process to `level` and below (`None`: the best the
/// processor has). The results are the same bits at every level; this exists to test that.
pub fn set_simd_level(level: Option<SimdLevel>) {
    LIMIT.store(level.map_or(NO_LIMIT, |l| l as u8), Ordering::Relaxed);
}

/// The level the CPU loops run with now: the processor's best, within the process' limit.
pub fn simd_level() -> SimdLevel {
    let mut limit = LIMIT.load(Ordering::Relaxed);
    if limit == NOT_SET {
        let from_env = std::env::var("ADAMW_SIMD").ok().and_then(|name| SimdLevel::from_name(&name));
        limit = from_env.map_or(NO_LIMIT, |l| l as u8);
        // A limit set meanwhile by `set_simd_level` wins over the environment.
        limit = match LIMIT.compare_exchange(NOT_SET, limit, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => limit,
            Err(set) => set,
        };
    }
    let detected = SimdLevel::detected();
    SimdLevel::ALL.into_iter().find(|&l| l as u8 == limit).map_or(detected, |l| l.min(detected))
}

/// A loop to run at a SIMD level: `run` must be `#[inline(always)]` (so that it, and what it
/// inlines, is compiled for the level's features) and must not call anything that needs more
/// than the portable build's instructions except through [`dispatch`]'s guarantee.
pub(crate) trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for `level`, or for [`SimdLevel::detected`] if that is lower (a level
/// from [`simd_level`] never is higher).
#[inline(always)]
pub(crate) fn dispatch<K: Kernel>(level: SimdLevel, kernel: K) -> K::Output {
    // SAFETY: the processor reported every feature of the level (`SimdLevel::detected`).
    unsafe { dispatch_supported(level.min(SimdLevel::detected()), kernel) }
}

/// Runs `kernel` compiled for `level` exactly (the AVX512_BF16 level as AVX-512: a kernel that
/// needs its conversions runs through `Registers::run`). With `level` a constant, only that
/// level's copy of the kernel is compiled into the caller (where [`dispatch`] compiles one per
/// level).
///
/// # Safety
/// The processor must have `level` (`level <= SimdLevel::detected()`).
#[inline(always)]
pub(crate) unsafe fn dispatch_supported<K: Kernel>(level: SimdLevel, kernel: K) -> K::Output {
    match level {
        // SAFETY: the caller's guarantee (the AVX512_BF16 level has every AVX-512 feature; its
        // conversions are used only by kernels run through `run_avx512bf16`).
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 | SimdLevel::Avx512Bf16 => unsafe { run_avx512(kernel) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { run_avx2(kernel) },
        _ => kernel.run(),
    }
}

/// # Safety
/// The processor must have AVX-512 F, BW and VL, AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
pub(crate) unsafe fn run_avx512<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

/// # Safety
/// The processor must have AVX-512 F, BW, VL and BF16, AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,avx2,f16c")]
pub(crate) unsafe fn run_avx512bf16<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

/// # Safety
/// The processor must have AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
pub(crate) unsafe fn run_avx2<K: Kernel>(kernel: K) -> K::Output {
    kernel.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level's name reads back as the level (as `ADAMW_SIMD` and `adamw-replay --simd`
    /// take it, in any case), an unknown name as none; the levels this processor supports are
    /// the lowest ones, up to the detected one.
    #[test]
    fn level_names_and_order() {
        for level in SimdLevel::ALL {
            assert_eq!(SimdLevel::from_name(level.name()), Some(level));
            assert_eq!(SimdLevel::from_name(&format!(" {} ", level.name().to_uppercase())), Some(level));
        }
        assert_eq!(SimdLevel::from_name("avx512bf"), None);
        assert!(SimdLevel::ALL.windows(2).all(|pair| pair[0] < pair[1]));
        let supported = SimdLevel::supported();
        assert_eq!(supported, SimdLevel::ALL[..supported.len()].to_vec());
        assert_eq!(supported.last(), Some(&SimdLevel::detected()));
    }
}
