//! Run-time CPU dispatch: one portable binary that runs the AVX-512 (or AVX2) code where the
//! CPU has it and the x86-64 baseline everywhere else.
//!
//! papa-core stays `#![no_std]` and `forbid(unsafe_code)`: its rules are generic and inlined,
//! and [`rules`] instantiates them inside functions compiled with `#[target_feature]`, chosen
//! by [`Isa`]. The engine's own kernels (papa-train's gemm) take the same [`Isa`].
//!
//! Each path computes the rules with the same roundings (papa-core sums in member order and
//! rounds once; no floating-point contraction is enabled), so every path gives the same bits
//! there; the gemm paths differ in summation order (see papa-train).
//!
//! ```
//! use papa_core::population::Contiguous;
//! use papa_core::rules::{Options, Weights};
//! use papa_cpu::{rules, Isa};
//!
//! let isa = Isa::detect();
//! let mut buf = [0.0f32, 4.0];
//! let mut pop = Contiguous::new(&mut buf[..], 2)?;
//! rules::gradual(isa, &mut pop, Weights::Uniform, 0.75, &Options::default())?;
//! assert_eq!(buf, [0.5, 3.5]);
//! # Ok::<(), papa_core::Error>(())
//! ```

pub mod rules;

/// Compiles a function once per [`Isa`] and calls the one its `#[isa(..)]` expression names
/// (checked against the CPU at run time; the portable copy where the CPU lacks it).
///
/// The body is compiled inside `#[target_feature]` functions, so that its loops, the generic
/// code it instantiates and the closures it defines (rayon tasks included) are compiled for
/// AVX-512 and AVX2. Functions it calls that are not inlined keep the baseline. Generic
/// parameters go in brackets; every argument is a plain name.
///
/// ```
/// use papa_cpu::{multiversion, Isa};
///
/// multiversion! {
///     /// The dot product, in order.
///     #[isa(isa)]
///     fn dot(isa: Isa, x: &[f32], y: &[f32]) -> f32 {
///         x.iter().zip(y).map(|(a, b)| a * b).sum()
///     }
/// }
/// assert_eq!(dot(Isa::detect(), &[1.0, 2.0], &[3.0, 4.0]), 11.0);
/// ```
#[macro_export]
macro_rules! multiversion {
    (
        $(#[doc = $doc:expr])*
        #[isa($isa:expr)]
        $(#[$attr:meta])*
        $vis:vis fn $name:ident $([$($gen:tt)*])? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        $body:block
    ) => {
        $(#[doc = $doc])*
        $(#[$attr])*
        $vis fn $name $(<$($gen)*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(unused_variables, clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512 $(<$($gen)*>)? ($($arg: $ty),*) $(-> $ret)? $body
                #[allow(unused_variables, clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2 $(<$($gen)*>)? ($($arg: $ty),*) $(-> $ret)? $body
                let isa: $crate::Isa = $isa;
                if isa.is_supported() {
                    match isa {
                        // SAFETY: the CPU was just found to have every extension enabled.
                        $crate::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                        // SAFETY: as above.
                        $crate::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                        $crate::Isa::Portable => {}
                    }
                }
            }
            #[allow(unused_variables, clippy::too_many_arguments)]
            #[inline(always)]
            fn portable $(<$($gen)*>)? ($($arg: $ty),*) $(-> $ret)? $body
            portable($($arg),*)
        }
    };
}

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An instruction-set path: what the hot loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isa {
    /// The target's baseline (SSE2 on x86-64): runs on every CPU of the target.
    Portable,
    /// x86-64 AVX2 with FMA (Haswell and later).
    Avx2,
    /// x86-64 AVX-512 F/VL with AVX2 and FMA (Skylake-SP, Ice Lake, Sapphire Rapids, Zen 4).
    Avx512,
}

/// A path that this CPU cannot run, or a name that is no path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    /// The CPU lacks the extensions of this path.
    #[error("this CPU cannot run the {0} path (it supports: {supported})", supported = Isa::supported_names())]
    Unsupported(Isa),
    /// Not one of `portable`, `avx2`, `avx512`.
    #[error("unknown CPU path `{0}` (expected portable, avx2 or avx512)")]
    Unknown(String),
}

impl Isa {
    /// Every path, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The fastest path this CPU supports.
    pub fn detect() -> Isa {
        Self::ALL
            .into_iter()
            .rev()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Portable)
    }

    /// Whether this CPU can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                Isa::Avx2.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// `self` if this CPU supports it, else an error naming what it does support.
    pub fn checked(self) -> Result<Isa, IsaError> {
        if self.is_supported() {
            Ok(self)
        } else {
            Err(IsaError::Unsupported(self))
        }
    }

    /// The paths this CPU supports, slowest first.
    pub fn supported() -> impl Iterator<Item = Isa> {
        Self::ALL.into_iter().filter(|isa| isa.is_supported())
    }

    /// The name used in run directories and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    fn supported_names() -> String {
        Self::supported()
            .map(Isa::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Isa {
    type Err = IsaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|isa| isa.name() == s)
            .ok_or_else(|| IsaError::Unknown(s.into()))
    }
}
