//! The tables the host hands the kernels, mirrored from `kernels.cu` field for field (both sides
//! assert the sizes). Every address is a device address; every number a kernel reads as a float
//! travels as its bits, so nothing is converted on the way.

use crate::dtype::DType;

/// A dtype as the kernels number them.
pub(crate) fn dtype_code(dtype: DType) -> u32 {
    match dtype {
        DType::F64 => 1,
        DType::BF16 => 2,
        DType::F16 => 3,
        _ => 0,
    }
}

/// `adamw_entry.flags` and friends.
pub(crate) mod flags {
    pub const DECAY: u32 = 1;
    pub const SPARSE: u32 = 2;
    pub const AMSGRAD: u32 = 4;
    pub const EMA: u32 = 8;
    pub const OVERWRITE: u32 = 16;
    pub const MASTER: u32 = 32;
    pub const UNSCALE: u32 = 64;
    pub const HALVE: u32 = 128;
    pub const VEC4: u32 = 256;
    /// The entry steps with its own scalars (`StepEntry::scalars`): a variable with multipliers.
    pub const OWN_SCALARS: u32 = 512;
    /// The step takes the report's group lanes of the entry's gradient (`StepEntry::group_lanes`).
    pub const REPORT: u32 = 1024;
}

/// Threads per block of the step and the non-finite check, and elements per block.
pub(crate) const BLOCK: u32 = 256;
pub(crate) const BLOCK_ELEMENTS: u64 = 256 * 4;

/// One variable of a step (`adamw_entry`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StepEntry {
    pub values: u64,
    pub gradient: u64,
    pub m: u64,
    pub v: u64,
    pub vhat: u64,
    pub average: u64,
    pub master: u64,
    pub pairs: u64,
    pub len: u64,
    pub row_len: u64,
    pub offset: u64,
    pub pair_count: u64,
    pub first_block: u64,
    /// The gradient op `max(min(((g * r) * a) / d, hi), lo)`: r, a, d, hi, lo.
    pub op: [u64; 5],
    /// With [`flags::OWN_SCALARS`]: the variable's own step scalars (per-variable multipliers),
    /// as `StepParams::scalars` holds a dtype's.
    pub scalars: [u64; 8],
    /// With [`flags::REPORT`]: where the step leaves each group's lanes (`f32[groups * 32]`,
    /// `f64` for a float64 gradient).
    pub group_lanes: u64,
    pub state_dtype: u32,
    pub values_dtype: u32,
    pub gradient_dtype: u32,
    pub flags: u32,
}

/// `adamw_step_params`: the table and the step's scalars per dtype code (lr, wd, 1 - beta_1,
/// 1 - beta_2, alpha, epsilon, ema_momentum, 1 - ema_momentum).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepParams {
    pub entries: u64,
    pub scalars: [[u64; 8]; 4],
    pub count: u32,
    pub total_blocks: u32,
}

/// One gradient of a clip-norm sum (`adamw_norm_entry`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NormEntry {
    pub gradient: u64,
    pub unscale: u64,
    pub gradient_dtype: u32,
    pub terms_dtype: u32,
    pub tree_dtype: u32,
    pub flags: u32,
}

/// One leaf of Eigen's tree over entry `entry`'s terms `first..first + len` (`adamw_leaf`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Leaf {
    pub entry: u64,
    pub first: u64,
    pub len: u64,
}

/// `adamw_leaf_params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LeafParams {
    pub entries: u64,
    pub leaves: u64,
    pub sums: u64,
    pub count: u64,
}

/// One gradient of the non-finite check (`adamw_check_entry`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CheckEntry {
    pub gradient: u64,
    pub len: u64,
    pub first_block: u64,
    pub unscale: u64,
    pub gradient_dtype: u32,
    pub check_dtype: u32,
    pub flags: u32,
    pub pad: u32,
}

/// `adamw_check_params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CheckParams {
    pub entries: u64,
    pub first_bad: u64,
    pub count: u32,
    pub total_blocks: u32,
}

/// One gradient of the step report's sums (`adamw_report_entry`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReportEntry {
    pub gradient: u64,
    /// Values: a dense gradient's elements, a sparse one's values as passed.
    pub len: u64,
    /// Elements per task: a multiple of [`GROUP`], or a sparse gradient's whole length.
    pub task_len: u64,
    /// Its groups' lanes, `f32[groups * 32]` (`f64` for a float64 gradient): the step's
    /// table's for a dense gradient.
    pub group_lanes: u64,
    pub first_task: u64,
    /// `adamw_group_lanes`' index of its first group (a sparse gradient's; the step takes a
    /// dense one's).
    pub first_sparse_group: u64,
    pub gradient_dtype: u32,
    pub pad: u32,
}

/// `adamw_report_params`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReportParams {
    pub entries: u64,
    /// `f64[total_tasks]`.
    pub task_sums: u64,
    pub sparse_groups: u64,
    pub total_tasks: u64,
    pub count: u32,
    pub pad: u32,
}

/// Elements per group of the report's sums (`ADAMW_GROUP`), and lanes per group.
pub(crate) const GROUP: u64 = crate::squares::GROUP as u64;
pub(crate) const LANES: u64 = crate::squares::LANES as u64;

const _: () = assert!(size_of::<StepEntry>() == 232);
const _: () = assert!(size_of::<ReportEntry>() == 56);
const _: () = assert!(size_of::<ReportParams>() == 40);
const _: () = assert!(size_of::<StepParams>() == 272);
const _: () = assert!(size_of::<NormEntry>() == 32);
const _: () = assert!(size_of::<Leaf>() == 24);
const _: () = assert!(size_of::<LeafParams>() == 32);
const _: () = assert!(size_of::<CheckEntry>() == 48);
const _: () = assert!(size_of::<CheckParams>() == 24);

/// Types that are plain data: any bytes are a value, and there is no padding.
///
/// # Safety
/// Implement only for `repr(C)` structs of integers without padding, and for number types.
pub(crate) unsafe trait Plain: Copy {}
// SAFETY: each is repr(C), made of u64 and u32 fields in an order that leaves no padding (the
// sizes asserted above are the sums of the fields).
unsafe impl Plain for StepEntry {}
// SAFETY: as above.
unsafe impl Plain for StepParams {}
// SAFETY: as above.
unsafe impl Plain for NormEntry {}
// SAFETY: as above.
unsafe impl Plain for Leaf {}
// SAFETY: as above.
unsafe impl Plain for LeafParams {}
// SAFETY: as above.
unsafe impl Plain for CheckEntry {}
// SAFETY: as above.
unsafe impl Plain for CheckParams {}
// SAFETY: as above.
unsafe impl Plain for ReportEntry {}
// SAFETY: as above.
unsafe impl Plain for ReportParams {}
// SAFETY: an array of a plain type is plain.
unsafe impl Plain for [u64; 2] {}
// SAFETY: numbers: no padding, and every bit pattern is a value.
unsafe impl Plain for u64 {}
// SAFETY: as above.
unsafe impl Plain for f64 {}
// SAFETY: as above.
unsafe impl Plain for f32 {}
// SAFETY: as above.
unsafe impl Plain for i64 {}
// SAFETY: as above (a 16-bit float is a u16 inside).
unsafe impl Plain for half::bf16 {}
// SAFETY: as above.
unsafe impl Plain for half::f16 {}

/// The bytes of plain data.
pub(crate) fn bytes<T: Plain>(x: &[T]) -> &[u8] {
    // SAFETY: `Plain` types have no padding, so every byte is initialized; u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

/// The bytes of plain data, for writing.
pub(crate) fn bytes_mut<T: Plain>(x: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `bytes`; and any bytes written are a value of a `Plain` type.
    unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}
