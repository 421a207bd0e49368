//! Helpers shared by the integration tests.

use papa_core::population::Population;

/// A population with no member, which the crate's own views refuse to build.
pub struct Nobody;

impl Population for Nobody {
    fn members(&self) -> usize {
        0
    }
    fn member_len(&self) -> usize {
        1
    }
    fn member(&self, _: usize) -> &[f32] {
        &[]
    }
}
