//! Two values of an [`Arith`] type computed side by side: each operation is the type's on both.
//! The vector lanes step two rows at once with it, so that the two rows' long chains of
//! dependent operations (each a vector operation and a rounding) interleave in the instruction
//! stream and the processor has independent work at hand.

use std::fmt;
use std::ops::{Add, Div, Mul, Neg, Sub};

use super::arith::Arith;

/// Two values of `A`, each operation done on both.
#[derive(Clone, Copy, Default)]
pub struct Pair<A>(pub A, pub A);

impl<A: Arith> fmt::Debug for Pair<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Pair").field(&self.0).field(&self.1).finish()
    }
}

/// Not an order: the loops that compute with pairs compare nothing.
impl<A: Arith> PartialEq for Pair<A> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0 && self.1 == other.1
    }
}
impl<A: Arith> PartialOrd for Pair<A> {
    fn partial_cmp(&self, _: &Self) -> Option<std::cmp::Ordering> {
        None
    }
}

macro_rules! both {
    ($trait:ident, $method:ident) => {
        impl<A: Arith> $trait for Pair<A> {
            type Output = Self;
            #[inline(always)]
            fn $method(self, rhs: Self) -> Self {
                Pair(self.0.$method(rhs.0), self.1.$method(rhs.1))
            }
        }
    };
}
both!(Add, add);
both!(Sub, sub);
both!(Mul, mul);
both!(Div, div);

impl<A: Arith> Neg for Pair<A> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        Pair(-self.0, -self.1)
    }
}

impl<A: Arith> Arith for Pair<A> {
    const ZERO: Self = Pair(A::ZERO, A::ZERO);
    const ONE: Self = Pair(A::ONE, A::ONE);
    const INFINITY: Self = Pair(A::INFINITY, A::INFINITY);
    const MIN_NORMAL: Self = Pair(A::MIN_NORMAL, A::MIN_NORMAL);

    #[inline(always)]
    fn abs(self) -> Self {
        Pair(self.0.abs(), self.1.abs())
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Pair(self.0.sqrt(), self.1.sqrt())
    }
    fn is_nan(self) -> bool {
        self.0.is_nan() || self.1.is_nan()
    }
    #[inline(always)]
    fn copysign(self, sign: Self) -> Self {
        Pair(self.0.copysign(sign.0), self.1.copysign(sign.1))
    }
    #[inline(always)]
    fn clip_to(self, hi: Self, lo: Self) -> Self {
        Pair(self.0.clip_to(hi.0, lo.0), self.1.clip_to(hi.1, lo.1))
    }
    #[inline(always)]
    fn max_nan(self, other: Self) -> Self {
        Pair(self.0.max_nan(other.0), self.1.max_nan(other.1))
    }
    #[inline(always)]
    fn flush(self) -> Self {
        Pair(self.0.flush(), self.1.flush())
    }
}
