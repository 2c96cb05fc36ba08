//! Tensor bytes: borrowed from a checkpoint's memory map, or owned in huge-page memory.
//!
//! Owns [`Bytes`] and the arena that converted weights are carved from. Knows no format and no
//! model: a `Weight` or a tensor view holds one of these.

use std::ops::Deref;
use std::sync::Arc;

use memmap2::Mmap;

/// Bytes that live either in a shared memory map or in memory we own.
#[derive(Clone)]
pub struct Bytes {
    inner: BytesInner,
}

#[derive(Clone)]
enum BytesInner {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Anon(Arc<memmap2::MmapMut>),
    Arena {
        chunk: Arc<ArenaChunk>,
        start: usize,
        len: usize,
    },
    Owned(Arc<[u8]>),
}

impl Bytes {
    /// `len` bytes written once by `fill`, in anonymous memory advised to use 2 MiB pages:
    /// a TLB miss is a two-level walk in a VM, so huge pages raise single-thread read bandwidth
    /// by ~1.7x for weights we own (converted formats). Small tensors (an expert's matrices are
    /// a few hundred KiB) share 64 MiB arena chunks, since a mapping smaller than 2 MiB can never
    /// get a huge page.
    pub fn filled(len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        if len == 0 {
            return Bytes::owned(Vec::new());
        }
        if len <= ARENA_CHUNK / 4 {
            if let Some((chunk, start)) = arena_alloc(len) {
                // SAFETY: the arena hands out each range once; nobody reads it before we return.
                let region = unsafe { std::slice::from_raw_parts_mut(chunk.base.add(start), len) };
                fill(region);
                return Bytes {
                    inner: BytesInner::Arena { chunk, start, len },
                };
            }
        }
        match huge_page_map(len) {
            Some(mut map) => {
                fill(&mut map[..]);
                Bytes {
                    inner: BytesInner::Anon(Arc::new(map)),
                }
            }
            None => {
                let mut v = vec![0u8; len];
                fill(&mut v);
                Bytes::owned(v)
            }
        }
    }

    /// `len` bytes of `map` from `start` (a tensor of a memory-mapped checkpoint).
    pub fn mapped(map: Arc<Mmap>, start: usize, len: usize) -> Self {
        assert!(
            start.checked_add(len).is_some_and(|end| end <= map.len()),
            "Bytes::mapped: range outside the map"
        );
        Bytes {
            inner: BytesInner::Mapped { map, start, len },
        }
    }

    /// The sub-range `start..start + len` (one expert of a stacked tensor), sharing the storage.
    pub fn slice(&self, start: usize, len: usize) -> Self {
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.len()),
            "Bytes::slice: range outside the bytes"
        );
        match &self.inner {
            BytesInner::Mapped { map, start: s, .. } => Bytes::mapped(map.clone(), s + start, len),
            BytesInner::Arena {
                chunk, start: s, ..
            } => Bytes {
                inner: BytesInner::Arena {
                    chunk: chunk.clone(),
                    start: s + start,
                    len,
                },
            },
            _ => Bytes::owned(self[start..start + len].to_vec()),
        }
    }

    /// Bytes owned in memory (converted or generated tensors).
    pub fn owned(data: Vec<u8>) -> Self {
        Bytes {
            inner: BytesInner::Owned(data.into()),
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            BytesInner::Mapped { map, start, len } => &map[*start..*start + *len],
            BytesInner::Anon(m) => m,
            // SAFETY: the range was written once before this Bytes existed and is only read now.
            BytesInner::Arena { chunk, start, len } => unsafe {
                std::slice::from_raw_parts(chunk.base.add(*start), *len)
            },
            BytesInner::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}

/// Size of one arena chunk of converted weights (64 KiB under Miri, which interprets every
/// access to a chunk at a cost that grows with its size).
const ARENA_CHUNK: usize = if cfg!(miri) { 64 << 10 } else { 64 << 20 };

/// An anonymous mapping that small converted tensors are carved from.
struct ArenaChunk {
    base: *mut u8,
    _map: memmap2::MmapMut,
}

// SAFETY: each range of the chunk is written once by the thread that allocated it, before any
// `Bytes` refers to it; afterwards the chunk is only read.
unsafe impl Send for ArenaChunk {}
// SAFETY: as above.
unsafe impl Sync for ArenaChunk {}

/// The chunk being filled and how much of it is used.
static ARENA: std::sync::Mutex<Option<(Arc<ArenaChunk>, usize)>> = std::sync::Mutex::new(None);

/// A 64-byte aligned range of `len` bytes in the current arena chunk (a new chunk when full).
fn arena_alloc(len: usize) -> Option<(Arc<ArenaChunk>, usize)> {
    let mut arena = ARENA.lock().unwrap_or_else(|e| e.into_inner());
    let fits = matches!(&*arena, Some((_, used)) if used + len <= ARENA_CHUNK);
    if !fits {
        let mut map = huge_page_map(ARENA_CHUNK)?;
        let base = map.as_mut_ptr();
        *arena = Some((Arc::new(ArenaChunk { base, _map: map }), 0));
    }
    let (chunk, used) = arena.as_mut()?;
    let start = *used;
    *used = (start + len).next_multiple_of(64);
    Some((chunk.clone(), start))
}

/// An anonymous mapping advised to use transparent huge pages.
fn huge_page_map(len: usize) -> Option<memmap2::MmapMut> {
    let map = memmap2::MmapMut::map_anon(len).ok()?;
    // (Not under Miri, which has no madvise: the advice changes speed, never contents.)
    #[cfg(all(target_os = "linux", not(miri)))]
    let _ = map.advise(memmap2::Advice::HugePage);
    Some(map)
}
