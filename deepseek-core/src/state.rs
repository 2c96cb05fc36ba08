//! Session state on disk: a session's tokens and KV cache, in the cache's own format, behind a
//! versioned header that names the model it was computed by, and ending in a checksum.
//!
//! Layout (little-endian): `b"DSSTATE\0"`, version `u32`, header length `u32`, the header
//! (model fingerprint `u64`, layers `u32`, row parts `u32` + one `u32` per part, cache format
//! `u8`, bytes per row `u32`, tokens `u64`), the token ids (`u32` each), each layer's rows, then
//! a 64-bit checksum of everything before it. Every size is checked against the model and the
//! file's length before anything is allocated from it. Knows the cache's bytes, never attention.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::kernels::attention::CacheDtype;
use crate::model::{KvCache, Network, RowLayout};
use crate::quant::Weight;

const MAGIC: &[u8; 8] = b"DSSTATE\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Header bytes a reader accepts at most (a real header is tens of bytes).
const MAX_HEADER: u32 = 1 << 16;

/// A streaming 64-bit checksum: any change to one 8-byte word changes the result (each step is
/// a bijection of the state), and words are mixed so reordered data does too.
#[derive(Debug, Clone)]
pub(crate) struct Checksum {
    h: u64,
    buf: [u8; 8],
    fill: usize,
    len: u64,
}

impl Checksum {
    pub(crate) fn new() -> Self {
        Checksum {
            h: 0x243F_6A88_85A3_08D3,
            buf: [0; 8],
            fill: 0,
            len: 0,
        }
    }

    #[inline]
    fn word(&mut self, w: u64) {
        self.h = (self.h.rotate_left(23) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.fill > 0 {
            let take = (8 - self.fill).min(data.len());
            self.buf[self.fill..self.fill + take].copy_from_slice(&data[..take]);
            self.fill += take;
            data = &data[take..];
            if self.fill < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.buf));
            self.fill = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.fill = rest.len();
    }

    pub(crate) fn finish(&self) -> u64 {
        let mut c = self.clone();
        let mut last = [0u8; 8];
        last[..c.fill].copy_from_slice(&c.buf[..c.fill]);
        c.word(u64::from_le_bytes(last));
        c.word(c.len);
        let mut h = c.h;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^ (h >> 33)
    }
}

/// What identifies a model for its cache: the shapes a cache row depends on, the rotary table,
/// and samples of the stored bytes of the embedding, lm_head and every layer's key/value
/// projections (their format included: a cache is only valid for the weights that made it).
pub(crate) fn fingerprint(net: &Network) -> u64 {
    let mut c = Checksum::new();
    let cfg = net.config();
    for v in [cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size] {
        c.update(&(v as u64).to_le_bytes());
    }
    for p in net.cache_parts() {
        c.update(&(p as u64).to_le_bytes());
    }
    let sample = |c: &mut Checksum, w: &Weight| {
        c.update(w.format().info().name.as_bytes());
        c.update(&(w.rows() as u64).to_le_bytes());
        c.update(&(w.cols() as u64).to_le_bytes());
        let d = w.data();
        let n = d.len().min(4096);
        c.update(&d[..n]);
        c.update(&d[d.len() - n..]);
    };
    match net {
        Network::Deepseek(m) => {
            for f in m.rope.inv_freq() {
                c.update(&f.to_le_bytes());
            }
            sample(&mut c, &m.embed_tokens);
            sample(&mut c, &m.lm_head.weight);
            for l in &m.layers {
                sample(&mut c, &l.self_attn.kv_a_proj_with_mqa.weight);
            }
        }
        Network::Llama(m) => {
            for f in m.rope.inv_freq() {
                c.update(&f.to_le_bytes());
            }
            sample(&mut c, &m.embed_tokens);
            sample(&mut c, &m.lm_head.weight);
            for l in &m.layers {
                sample(&mut c, &l.self_attn.k_proj.linear.weight);
                sample(&mut c, &l.self_attn.v_proj.linear.weight);
            }
        }
    }
    c.finish()
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::SessionState {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A writer that checksums what it writes.
struct Summed<W> {
    inner: W,
    sum: Checksum,
}

impl<W: Write> Summed<W> {
    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.sum.update(b);
        self.inner.write_all(b)
    }
}

/// Writes `tokens` and `cache` to `path` (through a temporary file renamed into place, so a
/// crash never leaves a half-written state under the name).
pub(crate) fn save(path: &Path, model: u64, tokens: &[u32], cache: &KvCache) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension()
            .map_or(String::new(), |e| e.to_string_lossy().into_owned()),
        std::process::id()
    ));
    let io = |e| Error::io(path, e);
    let write = || -> std::io::Result<()> {
        let mut w = Summed {
            inner: BufWriter::new(File::create(&tmp)?),
            sum: Checksum::new(),
        };
        let layout = cache.layout();
        let mut header = Vec::new();
        header.extend_from_slice(&model.to_le_bytes());
        header.extend_from_slice(&(cache.layers() as u32).to_le_bytes());
        header.extend_from_slice(&(layout.parts() as u32).to_le_bytes());
        for i in 0..layout.parts() {
            header.extend_from_slice(&(layout.part_width(i) as u32).to_le_bytes());
        }
        header.push(layout.dtype().id());
        header.extend_from_slice(&(layout.row_bytes() as u32).to_le_bytes());
        header.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
        w.put(MAGIC)?;
        w.put(&VERSION.to_le_bytes())?;
        w.put(&(header.len() as u32).to_le_bytes())?;
        w.put(&header)?;
        let ids: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        w.put(&ids)?;
        for l in 0..cache.layers() {
            for run in cache.layer(l).rows(0..tokens.len()) {
                w.put(run.data)?;
            }
        }
        let sum = w.sum.finish();
        w.inner.write_all(&sum.to_le_bytes())?;
        let f = w.inner.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// What a state file must agree with to be restored into a session of this model.
pub(crate) struct Expect<'a> {
    pub model: u64,
    pub network: &'a Network,
    pub context_length: usize,
}

/// A reader that checksums what it reads.
struct SummedReader<R> {
    inner: R,
    sum: Checksum,
}

impl<R: Read> SummedReader<R> {
    fn take(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.sum.update(buf);
        Ok(())
    }
}

/// Reads a state file written by [`save`]: its tokens and a cache in its format.
pub(crate) fn load(path: &Path, expect: &Expect<'_>) -> Result<(Vec<u32>, KvCache)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut r = SummedReader {
        inner: BufReader::with_capacity(1 << 20, file),
        sum: Checksum::new(),
    };
    let short = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad(path, "truncated")
        } else {
            Error::io(path, e)
        }
    };
    let mut fixed = [0u8; 16];
    r.take(&mut fixed).map_err(short)?;
    if &fixed[..8] != MAGIC {
        return Err(bad(path, "not a deepseek-rs session state file"));
    }
    let version = u32::from_le_bytes(fixed[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(
            path,
            format!("format version {version}; this build reads version {VERSION}"),
        ));
    }
    let header_len = u32::from_le_bytes(fixed[12..16].try_into().expect("4 bytes"));
    if header_len > MAX_HEADER || u64::from(header_len) > file_len {
        return Err(bad(path, format!("header of {header_len} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    r.take(&mut header).map_err(short)?;
    let mut h = Fields { b: &header, path };
    let model = h.u64()?;
    let layers = h.u32()? as usize;
    let parts_n = h.u32()? as usize;
    if parts_n > header.len() / 4 {
        return Err(bad(path, format!("{parts_n} row parts")));
    }
    let parts = (0..parts_n)
        .map(|_| h.u32().map(|v| v as usize))
        .collect::<Result<Vec<_>>>()?;
    let dtype_id = h.u8()?;
    let dtype = CacheDtype::from_id(dtype_id)
        .ok_or_else(|| bad(path, format!("unknown cache format id {dtype_id}")))?;
    let row_bytes = h.u32()? as usize;
    let n = h.u64()?;
    if !h.b.is_empty() {
        return Err(bad(path, "header longer than its fields"));
    }

    let net = expect.network;
    if model != expect.model {
        return Err(bad(
            path,
            format!(
                "saved from another model (fingerprint {model:016x}; this model is {:016x}: \
                 a cache is only valid for the weights, in the format, that computed it)",
                expect.model
            ),
        ));
    }
    let want_parts = net.cache_parts();
    if layers != net.config().num_hidden_layers || parts != want_parts {
        return Err(bad(
            path,
            format!(
                "cache of {layers} layers with rows {parts:?}; the model has {} layers with \
                 rows {want_parts:?}",
                net.config().num_hidden_layers
            ),
        ));
    }
    let layout = RowLayout::new(&parts, dtype);
    if row_bytes != layout.row_bytes() {
        return Err(bad(
            path,
            format!(
                "rows of {row_bytes} bytes; {dtype} rows of this model are {}",
                layout.row_bytes()
            ),
        ));
    }
    if n > expect.context_length as u64 {
        return Err(Error::ContextOverflow {
            cached: 0,
            new: n.min(usize::MAX as u64) as usize,
            limit: expect.context_length,
        });
    }
    let n = n as usize;
    let want_len = (|| {
        let body = (n as u64)
            .checked_mul(row_bytes as u64)?
            .checked_mul(layers as u64)?;
        16u64
            .checked_add(u64::from(header_len))?
            .checked_add(4 * n as u64)?
            .checked_add(body)?
            .checked_add(8)
    })();
    if want_len != Some(file_len) {
        return Err(bad(
            path,
            format!(
                "{file_len} bytes; {n} tokens of this model take {}",
                want_len.map_or("more than 2^64".into(), |l| l.to_string())
            ),
        ));
    }

    let mut ids = vec![0u8; 4 * n];
    r.take(&mut ids).map_err(short)?;
    let vocab = net.config().vocab_size;
    let tokens: Vec<u32> = ids
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    if let Some((position, &id)) = tokens
        .iter()
        .enumerate()
        .find(|(_, &t)| t as usize >= vocab)
    {
        return Err(Error::TokenOutOfRange {
            id,
            position,
            vocab_size: vocab,
        });
    }
    let mut cache = KvCache::new(layers, layout);
    let mut buf = vec![0u8; (1 << 20) / row_bytes.max(1) * row_bytes.max(1)];
    for l in 0..layers {
        let mut left = n * row_bytes;
        while left > 0 {
            let take = left.min(buf.len());
            let chunk = &mut buf[..take];
            r.take(chunk).map_err(short)?;
            cache.layer_mut(l).append_raw(chunk);
            left -= chunk.len();
        }
    }
    let sum = r.sum.finish();
    let mut stored = [0u8; 8];
    r.inner.read_exact(&mut stored).map_err(short)?;
    if u64::from_le_bytes(stored) != sum {
        return Err(bad(path, "checksum mismatch: the file is corrupt"));
    }
    Ok((tokens, cache))
}

/// Little-endian fields of a header, in order.
struct Fields<'a> {
    b: &'a [u8],
    path: &'a Path,
}

impl Fields<'_> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.b.len() < N {
            return Err(bad(self.path, "header shorter than its fields"));
        }
        let (v, rest) = self.b.split_at(N);
        self.b = rest;
        Ok(v.try_into().expect("N bytes"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_sees_every_word_and_the_split_does_not_matter() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut whole = Checksum::new();
        whole.update(&data);
        let mut parts = Checksum::new();
        for c in data.chunks(13) {
            parts.update(c);
        }
        assert_eq!(whole.finish(), parts.finish());
        for i in [0, 7, 8, 500, 999] {
            let mut d = data.clone();
            d[i] ^= 1;
            let mut c = Checksum::new();
            c.update(&d);
            assert_ne!(c.finish(), whole.finish(), "flip at {i}");
        }
        let mut shorter = Checksum::new();
        shorter.update(&data[..999]);
        assert_ne!(shorter.finish(), whole.finish());
    }
}
