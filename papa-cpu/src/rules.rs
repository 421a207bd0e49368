//! papa-core's rules, each compiled for every [`Isa`] and run on the one asked for.
//!
//! The signatures are papa-core's with the path first; the results are papa-core's, bit for
//! bit, on every path (the tests check it). Asking for a path the CPU lacks runs the
//! portable one: a caller picks with [`Isa::detect`] or [`Isa::checked`].

use crate::Isa;
use papa_core::population::{Population, PopulationMut};
use papa_core::rules::{self as core_rules, Options, Weights};
use papa_core::Error;

crate::multiversion! {
    /// [`papa_core::rules::average`] on the `isa` path.
    #[isa(isa)]
    pub fn average[P: Population + ?Sized](
        isa: Isa,
        pop: &P,
        weights: Weights<'_>,
        out: &mut [f32],
        opts: &Options<'_>,
    ) -> Result<(), Error> {
        core_rules::average(pop, weights, out, opts)
    }
}

crate::multiversion! {
    /// [`papa_core::rules::papa_all`] on the `isa` path.
    #[isa(isa)]
    pub fn papa_all[P: PopulationMut + ?Sized](
        isa: Isa,
        pop: &mut P,
        weights: Weights<'_>,
        opts: &Options<'_>,
    ) -> Result<(), Error> {
        core_rules::papa_all(pop, weights, opts)
    }
}

crate::multiversion! {
    /// [`papa_core::rules::gradual`] on the `isa` path.
    #[isa(isa)]
    pub fn gradual[P: PopulationMut + ?Sized](
        isa: Isa,
        pop: &mut P,
        weights: Weights<'_>,
        alpha: f32,
        opts: &Options<'_>,
    ) -> Result<(), Error> {
        core_rules::gradual(pop, weights, alpha, opts)
    }
}

crate::multiversion! {
    /// [`papa_core::rules::papa2`] on the `isa` path.
    #[isa(isa)]
    pub fn papa2[P: PopulationMut + ?Sized](
        isa: Isa,
        pop: &mut P,
        pairs: &[(usize, usize)],
        scratch: &mut [f32],
        opts: &Options<'_>,
    ) -> Result<(), Error> {
        core_rules::papa2(pop, pairs, scratch, opts)
    }
}
