//! Views of a population: P members of N floats each, either one contiguous P x N buffer
//! (member-major, the layout every papa crate uses) or separately allocated members.

use crate::Error;
use core::marker::PhantomData;

/// Read access to P members of equal length. Implemented by [`Contiguous`] and [`Members`].
pub trait Population {
    /// Number of members P (at least 1 for the views of this crate).
    fn members(&self) -> usize;
    /// Length N of each member.
    fn member_len(&self) -> usize;
    /// Member `j`'s parameters. Callers keep `j < members()`.
    fn member(&self, j: usize) -> &[f32];
}

/// Write access to the members of a population.
pub trait PopulationMut: Population {
    /// Member `j`'s parameters, mutably. Callers keep `j < members()`.
    fn member_mut(&mut self, j: usize) -> &mut [f32];
}

/// A population stored as one contiguous buffer of P x N floats, row j being member j.
///
/// ```
/// use papa_core::population::{Contiguous, Population};
/// let buf = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let pop = Contiguous::new(&buf[..], 3).unwrap();
/// assert_eq!(pop.member_len(), 2);
/// assert_eq!(pop.member(1), &[3.0, 4.0]);
/// ```
#[derive(Debug)]
pub struct Contiguous<S> {
    data: S,
    members: usize,
    len: usize,
}

impl<S: AsRef<[f32]>> Contiguous<S> {
    /// Views `data` as `members` rows of equal length.
    ///
    /// Fails with [`Error::EmptyPopulation`] when `members` is 0 and with
    /// [`Error::LengthMismatch`] when `data.len()` is not a multiple of `members`.
    pub fn new(data: S, members: usize) -> Result<Self, Error> {
        if members == 0 {
            return Err(Error::EmptyPopulation);
        }
        let total = data.as_ref().len();
        if total % members != 0 {
            return Err(Error::LengthMismatch {
                what: "population buffer",
                index: None,
                expected: total - total % members,
                found: total,
            });
        }
        Ok(Self {
            data,
            members,
            len: total / members,
        })
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> S {
        self.data
    }
}

impl<S: AsRef<[f32]>> Population for Contiguous<S> {
    fn members(&self) -> usize {
        self.members
    }
    fn member_len(&self) -> usize {
        self.len
    }
    fn member(&self, j: usize) -> &[f32] {
        &self.data.as_ref()[j * self.len..(j + 1) * self.len]
    }
}

impl<S: AsRef<[f32]> + AsMut<[f32]>> PopulationMut for Contiguous<S> {
    fn member_mut(&mut self, j: usize) -> &mut [f32] {
        &mut self.data.as_mut()[j * self.len..(j + 1) * self.len]
    }
}

/// A population of separately allocated members (a slice of slices, of `Vec`s, ...), for
/// trainers that own their tensors.
///
/// ```
/// use papa_core::population::{Members, Population};
/// let mut a = [1.0f32, 2.0];
/// let mut b = [3.0f32, 4.0];
/// let mut list = [&mut a[..], &mut b[..]];
/// let pop = Members::new(&mut list[..]).unwrap();
/// assert_eq!(pop.members(), 2);
/// ```
#[derive(Debug)]
pub struct Members<S, M> {
    list: S,
    len: usize,
    member: PhantomData<fn() -> M>,
}

impl<S, M> Members<S, M>
where
    S: AsRef<[M]>,
    M: AsRef<[f32]>,
{
    /// Views `list` as a population. Fails when it is empty or when the members' lengths differ
    /// (the error names the first member whose length differs from member 0's).
    pub fn new(list: S) -> Result<Self, Error> {
        let members = list.as_ref();
        let len = members
            .first()
            .ok_or(Error::EmptyPopulation)?
            .as_ref()
            .len();
        if let Some((j, m)) = members
            .iter()
            .enumerate()
            .find(|(_, m)| m.as_ref().len() != len)
        {
            return Err(Error::LengthMismatch {
                what: "member",
                index: Some(j),
                expected: len,
                found: m.as_ref().len(),
            });
        }
        Ok(Self {
            list,
            len,
            member: PhantomData,
        })
    }

    /// Gives the list back.
    pub fn into_inner(self) -> S {
        self.list
    }
}

impl<S, M> Population for Members<S, M>
where
    S: AsRef<[M]>,
    M: AsRef<[f32]>,
{
    fn members(&self) -> usize {
        self.list.as_ref().len()
    }
    fn member_len(&self) -> usize {
        self.len
    }
    fn member(&self, j: usize) -> &[f32] {
        self.list.as_ref()[j].as_ref()
    }
}

impl<S, M> PopulationMut for Members<S, M>
where
    S: AsRef<[M]> + AsMut<[M]>,
    M: AsRef<[f32]> + AsMut<[f32]>,
{
    fn member_mut(&mut self, j: usize) -> &mut [f32] {
        self.list.as_mut()[j].as_mut()
    }
}

/// Fails with [`Error::NonFinite`] at the first NaN or infinity of the population.
pub fn check_finite<P: Population + ?Sized>(pop: &P) -> Result<(), Error> {
    for j in 0..pop.members() {
        if let Some(index) = pop.member(j).iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite { member: j, index });
        }
    }
    Ok(())
}
