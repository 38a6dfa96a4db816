//! An array map's values mapped into the daemon's memory (maps created with BPF_F_MMAPABLE):
//! read and written with plain loads and stores, no syscall. The liveness entries, read on
//! every wake-up of the loop for every instance, and the heartbeat, written on most of them,
//! live there.

use std::{io, os::fd::AsFd as _, ptr::NonNull};

use aya::maps::Map;

/// The values of an array map of `T`, mapped shared with the kernel.
pub(super) struct Mapped<T> {
    base: NonNull<T>,
    entries: u32,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory, valid until drop; every access is a volatile
// read or write of a whole `T` (or one of its fields) of plain integers, as the kernel's own
// syscall copies of array values are (arrays hold no lock).
unsafe impl<T> Send for Mapped<T> {}
// SAFETY: as above; `&self` only reads.
unsafe impl<T> Sync for Mapped<T> {}

impl<T: Copy> Mapped<T> {
    /// Maps the `entries` values of the array `map`.
    pub(super) fn new(map: &Map, entries: u32) -> io::Result<Self> {
        // The kernel lays array values out every round_up(size, 8) bytes: the same stride as a
        // slice of T only if its size is a multiple of 8.
        assert!(
            size_of::<T>().is_multiple_of(8),
            "value size not a multiple of 8"
        );
        let Map::Array(data) = map else {
            return Err(io::Error::other("not an array map"));
        };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let bytes = (entries as usize * size_of::<T>()).div_ceil(page) * page;
        let fd = data.fd().as_fd();
        // SAFETY: a fresh shared mapping of the map's values (the kernel checks the length and
        // that the map was created mmapable); nothing else aliases it in this process.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            entries,
            bytes,
        })
    }

    /// A pointer to entry `index`, if there is one.
    pub(super) fn entry(&self, index: u32) -> Option<*mut T> {
        // SAFETY: within the mapping.
        (index < self.entries).then(|| unsafe { self.base.as_ptr().add(index as usize) })
    }

    /// A copy of entry `index`.
    pub(super) fn get(&self, index: u32) -> Option<T> {
        // SAFETY: a whole, aligned T within the mapping (page-aligned base, stride size_of T).
        self.entry(index).map(|p| unsafe { p.read_volatile() })
    }
}

impl<T> Drop for Mapped<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.bytes) };
    }
}
