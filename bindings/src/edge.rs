//! The edge every export crosses: the numbered statuses, the ABI version, the thread's last
//! error, the one panic boundary, and the checks of what a caller passes (strings, handles,
//! slices, out-pointers).

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Result of every call. Values are stable and never reused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NasnetStatus {
    Ok = 0,
    /// A required pointer was null (or a handle was already closed).
    NullArgument = 1,
    /// A size, stride, format or string was invalid.
    InvalidArgument = 2,
    /// A file could not be read or decoded.
    Io = 3,
    /// The model directory is missing or inconsistent.
    Model = 4,
    /// The backend failed while running.
    Runtime = 5,
    /// The caller's buffer is too small; the needed count is in `*written`.
    BufferTooSmall = 6,
    /// The backend or device is not available in this build or on this machine.
    Unavailable = 7,
    /// An internal error was caught at the boundary.
    Panic = 8,
    /// The caller was compiled against another ABI version of this header.
    AbiMismatch = 9,
}

/// The ABI version: incremented on any incompatible change of this header. Pass it to
/// [`nasnet_options_new`]; opening a model with options made for another version fails with
/// `NASNET_STATUS_ABI_MISMATCH`.
pub const NASNET_ABI_VERSION: u32 = 3;

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

pub(crate) fn set_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

/// A failed call: its status and message.
pub(crate) struct Failure(pub(crate) NasnetStatus, pub(crate) String);

pub(crate) type Res<T> = Result<T, Failure>;

pub(crate) fn fail<T>(status: NasnetStatus, msg: impl Into<String>) -> Res<T> {
    Err(Failure(status, msg.into()))
}

/// What an export returns, from its body's success and on failure (in the manner of
/// rustls-ffi's `PanicOrDefault`): a status, or a pointer that is null on failure.
pub(crate) trait Boundary {
    type Ok;
    fn ok(v: Self::Ok) -> Self;
    fn failed(status: NasnetStatus) -> Self;
}

impl Boundary for NasnetStatus {
    type Ok = ();
    fn ok((): ()) -> Self {
        NasnetStatus::Ok
    }
    fn failed(status: NasnetStatus) -> Self {
        status
    }
}

impl<T> Boundary for *const T {
    type Ok = *const T;
    fn ok(v: *const T) -> Self {
        v
    }
    fn failed(_: NasnetStatus) -> Self {
        std::ptr::null()
    }
}

impl<T> Boundary for *mut T {
    type Ok = *mut T;
    fn ok(v: *mut T) -> Self {
        v
    }
    fn failed(_: NasnetStatus) -> Self {
        std::ptr::null_mut()
    }
}

impl Boundary for () {
    type Ok = ();
    fn ok((): ()) {}
    fn failed(_: NasnetStatus) {}
}

/// The panic boundary every export runs its body behind: a failure records its message for
/// [`nasnet_last_error`] and returns its status (or null); a panic is caught and becomes
/// `NASNET_STATUS_PANIC`.
pub(crate) fn boundary<T: Boundary>(body: impl FnOnce() -> Res<T::Ok>) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => T::ok(v),
        Ok(Err(Failure(status, msg))) => {
            set_error(&msg);
            T::failed(status)
        }
        Err(_) => {
            set_error("internal error (panic caught at the C boundary)");
            T::failed(NasnetStatus::Panic)
        }
    }
}

/// The one mapping from the runtime's error codes to statuses.
pub(crate) fn runtime_err(e: nasnet_runtime::Error) -> Failure {
    use nasnet_runtime::ErrorCode as C;
    let status = match e.code() {
        C::Model => NasnetStatus::Model,
        C::Image => NasnetStatus::Io,
        C::Input => NasnetStatus::InvalidArgument,
        C::Unavailable => NasnetStatus::Unavailable,
        C::Backend => NasnetStatus::Runtime,
    };
    Failure(status, e.to_string())
}

pub(crate) fn null<T>(what: &str) -> Res<T> {
    fail(NasnetStatus::NullArgument, format!("{what} is null"))
}

/// A C string argument as UTF-8.
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for the call.
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Res<&'a str> {
    if p.is_null() {
        return null(what);
    }
    // SAFETY: not null, and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().or_else(|_| {
        fail(
            NasnetStatus::InvalidArgument,
            format!("{what} is not UTF-8"),
        )
    })
}

/// A slice from a C pointer and length (empty when `len` is 0, whatever the pointer).
///
/// # Safety
/// When `len > 0`, `p` is null or valid for reading `len` values.
pub(crate) unsafe fn slice_arg<'a, T>(p: *const T, len: usize, what: &str) -> Res<&'a [T]> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return null(what);
    }
    // SAFETY: not null and valid for `len` values, by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A mutable slice from a C pointer and length (empty when `len` is 0).
///
/// # Safety
/// When `len > 0`, `p` is null or valid for writing `len` values, and not read meanwhile.
pub(crate) unsafe fn slice_mut_arg<'a, T>(p: *mut T, len: usize, what: &str) -> Res<&'a mut [T]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return null(what);
    }
    // SAFETY: not null and valid for writing `len` values, by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// Writes a value through a C out-pointer.
///
/// # Safety
/// `p` is null or valid for writing a `T`.
pub(crate) unsafe fn put<T>(p: *mut T, v: T, what: &str) -> Res<()> {
    if p.is_null() {
        return null(what);
    }
    // SAFETY: not null and writable, by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}

/// A short description of a status value (a static string; any value is accepted, an
/// unknown one gives "unknown status").
#[unsafe(no_mangle)]
pub extern "C" fn nasnet_status_str(status: u32) -> *const c_char {
    boundary(|| {
        let s: &'static CStr = match status {
            0 => c"ok",
            1 => c"a required pointer was null",
            2 => c"an argument was out of range or malformed",
            3 => c"a file could not be read or decoded",
            4 => c"the model is missing or inconsistent",
            5 => c"the backend failed while running",
            6 => c"the caller's buffer is too small",
            7 => c"the backend or device is not available",
            8 => c"an internal error was caught at the library boundary",
            9 => c"the caller was built against another ABI version",
            _ => c"unknown status",
        };
        Ok(s.as_ptr())
    })
}

/// The library version, e.g. "0.1.0" (static string).
#[unsafe(no_mangle)]
pub extern "C" fn nasnet_version() -> *const c_char {
    boundary(|| Ok(concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()))
}

/// The ABI version of the library ([`NASNET_ABI_VERSION`] when it was built).
#[unsafe(no_mangle)]
pub extern "C" fn nasnet_abi_version() -> u32 {
    NASNET_ABI_VERSION
}

/// The last error message on this thread, or null. Valid until the thread's next failing call.
#[unsafe(no_mangle)]
pub extern "C" fn nasnet_last_error() -> *const c_char {
    boundary(|| {
        Ok(LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr())))
    })
}
