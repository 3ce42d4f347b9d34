//! getrandom 0.2's public API, answered by `libc::getrandom`.
//!
//! Patched over crates.io's getrandom 0.2 for the whole workspace. The upstream crate issues the
//! raw syscall, which bypasses madsim; calling the libc symbol lets madsim's override serve bytes
//! drawn from the simulation seed, so `rand::thread_rng` inside dependencies is deterministic.
//! Outside a simulation madsim forwards the call to the real libc function.

use core::fmt;
use core::mem::MaybeUninit;
use core::num::NonZeroU32;

/// An error from the operating system's random source, as getrandom 0.2 reports it.
#[derive(Copy, Clone, Eq, PartialEq)]
pub struct Error(NonZeroU32);

impl Error {
    /// The platform has no supported random source.
    pub const UNSUPPORTED: Error = Error::internal(0);
    /// The random source failed unexpectedly.
    pub const ERRNO_NOT_POSITIVE: Error = Error::internal(1);
    /// Start of the range of codes reserved for this crate.
    pub const INTERNAL_START: u32 = 1 << 31;
    /// Start of the range of codes reserved for custom backends.
    pub const CUSTOM_START: u32 = (1 << 31) + (1 << 30);

    const fn internal(n: u32) -> Error {
        match NonZeroU32::new(Self::INTERNAL_START + n) {
            Some(code) => Error(code),
            None => panic!("internal error code is never zero"),
        }
    }

    /// The OS error number, when the error came from the OS.
    pub fn raw_os_error(self) -> Option<i32> {
        if self.0.get() < Self::INTERNAL_START {
            Some(self.0.get() as i32)
        } else {
            None
        }
    }

    /// The error's numeric code.
    pub const fn code(self) -> NonZeroU32 {
        self.0
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "getrandom::Error({})", self.0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.raw_os_error() {
            Some(errno) => write!(f, "random source failed with OS error {errno}"),
            None => write!(f, "random source failed (code {})", self.0),
        }
    }
}

impl std::error::Error for Error {}

impl From<NonZeroU32> for Error {
    fn from(code: NonZeroU32) -> Self {
        Error(code)
    }
}

/// Fills `dest` with random bytes.
pub fn getrandom(dest: &mut [u8]) -> Result<(), Error> {
    let mut filled = 0;
    while filled < dest.len() {
        let rest = &mut dest[filled..];
        // SAFETY: the pointer and length describe the writable tail of `dest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if errno == libc::EINTR {
                continue;
            }
            return Err(NonZeroU32::new(errno as u32)
                .map(Error)
                .unwrap_or(Error::ERRNO_NOT_POSITIVE));
        }
        filled += n as usize;
    }
    Ok(())
}

/// Fills possibly uninitialised bytes with random bytes and returns them initialised.
pub fn getrandom_uninit(dest: &mut [MaybeUninit<u8>]) -> Result<&mut [u8], Error> {
    for byte in dest.iter_mut() {
        byte.write(0);
    }
    // SAFETY: every byte was initialised just above.
    let dest = unsafe { &mut *(dest as *mut [MaybeUninit<u8>] as *mut [u8]) };
    getrandom(dest)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fills_the_whole_buffer() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        super::getrandom(&mut a).unwrap();
        super::getrandom(&mut b).unwrap();
        assert_ne!(a, b, "two draws of 64 bytes from the OS are never equal");
    }
}
