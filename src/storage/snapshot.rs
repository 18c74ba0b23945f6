//! Snapshot files: a self-checking dump of one state-machine tree.
//!
//! Body: u32 length + postcard [`SnapshotMeta`], then pairs
//! `u32 key_len, key, u32 value_len, value` (raw state-machine tree entries, key order),
//! an end marker `u32::MAX`, and the xxh3-64 of the magic and every preceding body
//! byte (u64 LE). A file is the magic `MRDNSNP2` and the body as one zstd frame
//! ([`COMPRESSION_LEVEL`]); files written before compression have the magic
//! `MRDNSNP1` and the body as is, and are still read. The file is what a lagging
//! follower is sent, so compression shrinks both the copy kept on disk and the
//! transfer. A reader rejects a truncated or altered file before anything is switched
//! over. Files are written to a temp name, fsynced, then renamed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::types::SnapshotMeta;
use super::{decode, encode, StorageError};

/// Magic of an uncompressed snapshot (read only).
const MAGIC_PLAIN: &[u8; 8] = b"MRDNSNP1";
/// Magic of a snapshot whose body is zstd-compressed (what is written).
const MAGIC_ZSTD: &[u8; 8] = b"MRDNSNP2";
/// zstd level of snapshot bodies: fast, as a snapshot is dumped while the node serves.
pub const COMPRESSION_LEVEL: i32 = 1;
const END: u32 = u32::MAX;
/// Largest key or value accepted from a snapshot file, bytes.
pub const MAX_SNAPSHOT_ITEM_BYTES: u32 = 64 * 1024 * 1024;

/// The file name of the snapshot taken at `meta`.
pub fn file_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(l) => format!("snap-{}-{}.bin", l.leader_id.term, l.index),
        None => "snap-0-0.bin".to_string(),
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Xxh3,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write a snapshot of `entries` to `dir/<file_name(meta)>`; returns the final path.
pub fn write_snapshot(
    dir: &Path,
    meta: &SnapshotMeta,
    entries: impl Iterator<Item = Result<(sled::IVec, sled::IVec), sled::Error>>,
) -> Result<PathBuf, StorageError> {
    std::fs::create_dir_all(dir)?;
    let name = file_name(meta);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = BufWriter::new(File::create(&tmp)?);
    file.write_all(MAGIC_ZSTD)?;
    let mut hash = Xxh3::new();
    hash.update(MAGIC_ZSTD);
    let mut w =
        HashingWriter { inner: zstd::stream::write::Encoder::new(file, COMPRESSION_LEVEL)?, hash };
    let m = encode(meta)?;
    write_chunk(&mut w, &m)?;
    for kv in entries {
        let (k, v) = kv?;
        write_chunk(&mut w, &k)?;
        write_chunk(&mut w, &v)?;
    }
    w.write_all(&END.to_le_bytes())?;
    let digest = w.hash.digest();
    let mut inner = w.inner;
    inner.write_all(&digest.to_le_bytes())?;
    let file = inner.finish()?.into_inner().map_err(|e| StorageError::Io(e.into_error()))?;
    file.sync_all()?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(path)
}

fn write_chunk<W: Write>(w: &mut W, b: &[u8]) -> Result<(), StorageError> {
    let len = u32::try_from(b.len())
        .ok()
        .filter(|l| *l < END)
        .ok_or_else(|| StorageError::Corrupt(format!("snapshot item of {} bytes", b.len())))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(b)?;
    Ok(())
}

/// One (key, value) pair of a snapshot.
pub type SnapshotPair = (Vec<u8>, Vec<u8>);

/// A snapshot body as stored: as is, or one zstd frame.
enum Body<R: Read> {
    Plain(BufReader<R>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>),
}

impl<R: Read> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Body::Plain(r) => r.read(buf),
            Body::Zstd(r) => r.read(buf),
        }
    }
}

/// Streaming reader of a snapshot file; verifies the checksum at the end.
pub struct SnapshotReader<R: Read> {
    inner: Body<R>,
    hash: Xxh3,
    done: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Open a snapshot and read its metadata.
    pub fn open(r: R) -> Result<(Self, SnapshotMeta), StorageError> {
        let mut raw = BufReader::new(r);
        let mut magic = [0u8; 8];
        raw.read_exact(&mut magic)
            .map_err(|e| StorageError::Corrupt(format!("snapshot truncated: {e}")))?;
        let inner = match &magic {
            MAGIC_PLAIN => Body::Plain(raw),
            MAGIC_ZSTD => Body::Zstd(zstd::stream::read::Decoder::with_buffer(raw)?),
            _ => return Err(StorageError::Corrupt("not a meridian snapshot (bad magic)".into())),
        };
        let mut hash = Xxh3::new();
        hash.update(&magic);
        let mut s = SnapshotReader { inner, hash, done: false };
        let meta_bytes = s.read_chunk()?.ok_or_else(|| StorageError::Corrupt("no meta".into()))?;
        let meta: SnapshotMeta = decode(&meta_bytes)?;
        Ok((s, meta))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), StorageError> {
        self.inner
            .read_exact(buf)
            .map_err(|e| StorageError::Corrupt(format!("snapshot truncated: {e}")))?;
        self.hash.update(buf);
        Ok(())
    }

    fn read_chunk(&mut self) -> Result<Option<Vec<u8>>, StorageError> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len == END {
            return Ok(None);
        }
        if len > MAX_SNAPSHOT_ITEM_BYTES {
            return Err(StorageError::Corrupt(format!("snapshot item of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.read_exact(&mut buf)?;
        Ok(Some(buf))
    }

    /// The next (key, value) pair, or None at the end (after verifying the checksum).
    pub fn next_pair(&mut self) -> Result<Option<SnapshotPair>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let Some(k) = self.read_chunk()? else {
            let expected = self.hash.digest();
            let mut d = [0u8; 8];
            self.inner
                .read_exact(&mut d)
                .map_err(|e| StorageError::Corrupt(format!("snapshot checksum missing: {e}")))?;
            if u64::from_le_bytes(d) != expected {
                return Err(StorageError::Corrupt("snapshot checksum mismatch".into()));
            }
            self.done = true;
            return Ok(None);
        };
        let v = self
            .read_chunk()?
            .ok_or_else(|| StorageError::Corrupt("snapshot key without value".into()))?;
        Ok(Some((k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta::default()
    }

    #[test]
    fn roundtrip_preserves_pairs_and_meta() {
        let dir = tempfile::tempdir().expect("tmp");
        let pairs: Vec<(sled::IVec, sled::IVec)> = (0..100u32)
            .map(|i| (i.to_be_bytes().to_vec().into(), vec![i as u8; 10].into()))
            .collect();
        let path =
            write_snapshot(dir.path(), &meta(), pairs.clone().into_iter().map(Ok)).expect("write");
        let (mut r, m) = SnapshotReader::open(File::open(&path).expect("open")).expect("read");
        assert_eq!(m, meta());
        let mut got = Vec::new();
        while let Some((k, v)) = r.next_pair().expect("pair") {
            got.push((sled::IVec::from(k), sled::IVec::from(v)));
        }
        assert_eq!(got, pairs);
    }

    /// A snapshot as written before compression (`MRDNSNP1`, body as is).
    fn plain_snapshot(pairs: &[(sled::IVec, sled::IVec)]) -> Vec<u8> {
        let mut w = HashingWriter { inner: Vec::new(), hash: Xxh3::new() };
        w.write_all(MAGIC_PLAIN).expect("magic");
        write_chunk(&mut w, &encode(&meta()).expect("meta")).expect("meta chunk");
        for (k, v) in pairs {
            write_chunk(&mut w, k).expect("key");
            write_chunk(&mut w, v).expect("value");
        }
        w.write_all(&END.to_le_bytes()).expect("end");
        let digest = w.hash.digest();
        let mut bytes = w.inner;
        bytes.extend_from_slice(&digest.to_le_bytes());
        bytes
    }

    fn read_all<R: Read>(r: R) -> Result<Vec<(sled::IVec, sled::IVec)>, StorageError> {
        let (mut r, m) = SnapshotReader::open(r)?;
        assert_eq!(m, meta());
        let mut got = Vec::new();
        while let Some((k, v)) = r.next_pair()? {
            got.push((sled::IVec::from(k), sled::IVec::from(v)));
        }
        Ok(got)
    }

    #[test]
    fn files_are_compressed_and_uncompressed_ones_still_read() {
        let dir = tempfile::tempdir().expect("tmp");
        let pairs: Vec<(sled::IVec, sled::IVec)> = (0..1_000u32)
            .map(|i| {
                (format!("key-{i:08}").into_bytes().into(), vec![b'a' + (i % 7) as u8; 100].into())
            })
            .collect();
        let plain = plain_snapshot(&pairs);
        let path =
            write_snapshot(dir.path(), &meta(), pairs.clone().into_iter().map(Ok)).expect("write");
        let written = std::fs::read(&path).expect("read");
        assert_eq!(&written[..8], MAGIC_ZSTD);
        assert!(written.len() * 5 < plain.len(), "{} vs {} bytes", written.len(), plain.len());
        assert_eq!(read_all(written.as_slice()).expect("compressed"), pairs);
        assert_eq!(read_all(plain.as_slice()).expect("plain"), pairs);
        for bytes in [&written, &plain] {
            let cut = &bytes[..bytes.len() - 3];
            assert!(matches!(
                read_all(cut),
                Err(StorageError::Corrupt(_)) | Err(StorageError::Io(_))
            ));
        }
        let mut other = plain.clone();
        other[7] = b'9';
        assert!(matches!(SnapshotReader::open(other.as_slice()), Err(StorageError::Corrupt(_))));
    }

    #[test]
    fn flipped_byte_is_detected() {
        let dir = tempfile::tempdir().expect("tmp");
        let pairs = vec![(sled::IVec::from(b"k".to_vec()), sled::IVec::from(b"value".to_vec()))];
        let path = write_snapshot(dir.path(), &meta(), pairs.into_iter().map(Ok)).expect("write");
        let mut bytes = std::fs::read(&path).expect("read");
        let n = bytes.len();
        bytes[n - 12] ^= 0xff;
        let (mut r, _) = SnapshotReader::open(bytes.as_slice()).expect("header ok");
        let mut err = None;
        loop {
            match r.next_pair() {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(err.is_some(), "corruption must be detected");
    }
}
