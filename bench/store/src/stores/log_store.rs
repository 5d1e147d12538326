//! Baseline: an append-only log. Not a candidate for hmq as it stands (no
//! index, no space reclamation: deleted records stay on disk until someone
//! rewrites the file); it shows the floor of what durable writes cost on this
//! disk, against which the real stores are measured.
//!
//! File format: a sequence of frames, one per commit:
//!   payload_len u32 LE, crc32(payload) u32 LE, payload
//!   payload = op count u32 LE, then per op: kind u8 (1 put, 2 delete),
//!             key_len u16 LE, value_len u32 LE, key, value
//! A commit is one `write_all` of one frame (+ `sync_data` when synced).
//!
//! Recovery = read it all: `open` validates every frame to find the end of
//! the valid log (an incomplete or bad *last* frame is a torn write and is cut
//! off; a bad frame followed by more data is corruption and refuses to open);
//! `scan` reads the log again and replays it into an ordered map, which is
//! what a broker built on a log would hold in memory.

use super::{Batch, Res, Store};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct LogStore {
    path: PathBuf,
    file: File,
    end: u64,
    buf: Vec<u8>,
    table: [u32; 256],
}

fn crc32_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    for (i, slot) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    t
}

/// CRC-32 (IEEE), table driven.
fn crc32(table: &[u32; 256], data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Frames are capped so that a corrupted length field cannot ask for a
/// multi-gigabyte allocation.
const MAX_FRAME: u32 = 256 << 20;

enum Frame {
    Ok(Vec<u8>),
    /// Not enough bytes left for the frame: torn tail.
    Incomplete,
    Eof,
    BadCrc,
    BadLen,
}

fn read_frame(r: &mut impl Read, table: &[u32; 256], remaining: u64) -> Frame {
    if remaining == 0 {
        return Frame::Eof;
    }
    if remaining < 8 {
        return Frame::Incomplete;
    }
    let mut h = [0u8; 8];
    if r.read_exact(&mut h).is_err() {
        return Frame::Incomplete;
    }
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if len > MAX_FRAME {
        return Frame::BadLen;
    }
    if 8 + len as u64 > remaining {
        return Frame::Incomplete;
    }
    let mut p = vec![0u8; len as usize];
    if r.read_exact(&mut p).is_err() {
        return Frame::Incomplete;
    }
    if crc32(table, &p) != crc {
        return Frame::BadCrc;
    }
    Frame::Ok(p)
}

/// Apply a frame's operations; Err if the payload is malformed.
fn replay(p: &[u8], map: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> Result<(), ()> {
    let n = u32::from_le_bytes(p.get(0..4).ok_or(())?.try_into().map_err(|_| ())?);
    let mut at = 4;
    for _ in 0..n {
        let kind = *p.get(at).ok_or(())?;
        let kl = u16::from_le_bytes(
            p.get(at + 1..at + 3)
                .ok_or(())?
                .try_into()
                .map_err(|_| ())?,
        ) as usize;
        let vl = u32::from_le_bytes(
            p.get(at + 3..at + 7)
                .ok_or(())?
                .try_into()
                .map_err(|_| ())?,
        ) as usize;
        at += 7;
        let k = p.get(at..at + kl).ok_or(())?;
        let v = p.get(at + kl..at + kl + vl).ok_or(())?;
        at += kl + vl;
        match kind {
            1 => {
                map.insert(k.to_vec(), v.to_vec());
            }
            2 => {
                map.remove(k);
            }
            _ => return Err(()),
        }
    }
    Ok(())
}

impl LogStore {
    pub fn open(dir: &Path) -> Res<Self> {
        let path = dir.join("hmq.log");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|x| format!("log open: {x}"))?;
        let len = file.metadata().map_err(|x| format!("log stat: {x}"))?.len();
        let table = crc32_table();
        let mut end = 0u64;
        {
            let mut r = BufReader::with_capacity(1 << 20, &mut file);
            // Bounded by the file length: each frame advances `end` by >= 8.
            loop {
                match read_frame(&mut r, &table, len - end) {
                    Frame::Ok(p) => end += 8 + p.len() as u64,
                    Frame::Eof => break,
                    Frame::Incomplete => {
                        eprintln!("log: torn tail at offset {end} of {len}: cutting it off");
                        break;
                    }
                    Frame::BadCrc | Frame::BadLen => {
                        // The last frame may be a torn write; anything before
                        // the last frame being bad is corruption.
                        return Err(format!(
                            "log: corrupt frame at offset {end} of {len} bytes (checksum or length mismatch); refusing to open"
                        ));
                    }
                }
            }
        }
        if end < len {
            file.set_len(end)
                .map_err(|x| format!("log truncate: {x}"))?;
            file.sync_all().map_err(|x| format!("log sync: {x}"))?;
        }
        file.seek(SeekFrom::Start(end))
            .map_err(|x| format!("log seek: {x}"))?;
        Ok(LogStore {
            path,
            file,
            end,
            buf: Vec::new(),
            table,
        })
    }
}

impl Store for LogStore {
    fn commit(&mut self, b: &Batch, sync: bool) -> Res<()> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; 8]);
        self.buf
            .extend_from_slice(&(b.ops.len() as u32).to_le_bytes());
        for (k, v) in &b.ops {
            self.buf.push(if v.is_some() { 1 } else { 2 });
            self.buf.extend_from_slice(&(k.len() as u16).to_le_bytes());
            let vl = v.as_ref().map_or(0, |v| v.len());
            self.buf.extend_from_slice(&(vl as u32).to_le_bytes());
            self.buf.extend_from_slice(k);
            if let Some(v) = v {
                self.buf.extend_from_slice(v);
            }
        }
        let plen = (self.buf.len() - 8) as u32;
        let crc = crc32(&self.table, &self.buf[8..]);
        self.buf[0..4].copy_from_slice(&plen.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all(&self.buf)
            .map_err(|x| format!("log write: {x}"))?;
        self.end += self.buf.len() as u64;
        if sync {
            self.file
                .sync_data()
                .map_err(|x| format!("log sync_data: {x}"))?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Res<()> {
        self.file
            .sync_data()
            .map_err(|x| format!("log sync_data: {x}"))
    }

    fn scan(&mut self, f: &mut dyn FnMut(&[u8], &[u8])) -> Res<u64> {
        let table = self.table;
        let file = File::open(&self.path).map_err(|x| format!("log reopen: {x}"))?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut map = BTreeMap::new();
        let mut at = 0u64;
        while at < self.end {
            match read_frame(&mut r, &table, self.end - at) {
                Frame::Ok(p) => {
                    replay(&p, &mut map)
                        .map_err(|_| format!("log: malformed frame payload at offset {at}"))?;
                    at += 8 + p.len() as u64;
                }
                _ => return Err(format!("log: frame at offset {at} unreadable during scan")),
            }
        }
        let n = map.len() as u64;
        for (k, v) in &map {
            f(k, v);
        }
        Ok(n)
    }

    fn compact(&mut self) -> Res<bool> {
        Ok(false)
    }

    fn close(self: Box<Self>) -> Res<()> {
        self.file
            .sync_data()
            .map_err(|x| format!("log sync_data: {x}"))
    }
}
