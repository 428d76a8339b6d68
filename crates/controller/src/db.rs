//! The durable task database (SQLite, one file per cluster in the profile's `db`
//! folder), so `corral controller --restore` finds finished results and their published
//! data after a crash or restart.
//!
//! The hub never waits on the disk: [`Records`](crate::records::Records) hands each
//! finished (or later changed) record to a [`DbWriter`] thread over a channel, and that
//! thread encodes and commits them in one transaction per batch (every
//! [`BATCH_INTERVAL`] or [`BATCH_RECORDS`] records, whichever comes first).
//!
//! The record the writer gets shares its buffers and published arrays with the hub's
//! (`Bytes`), and they are streamed into their BLOBs ([`write_packed`]) rather than
//! gathered into one buffer that SQLite would copy again: a finished task with 16 MB of
//! published data used to cost the controller three more copies of it.

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rusqlite::{params, Connection};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

use crate::published::Published;
use crate::records::Record;

/// A batch is committed at most this long after its first record arrived...
pub(crate) const BATCH_INTERVAL: Duration = Duration::from_millis(50);
/// ...or as soon as it holds this many records.
pub(crate) const BATCH_RECORDS: usize = 1000;

/// Where task records are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbMode {
    /// In memory only (ipyparallel's `DictDB`): nothing survives a restart.
    Memory,
    /// An SQLite file; records are written off the hub thread in batches.
    Sqlite(PathBuf),
}

impl DbMode {
    /// The default database file of a cluster: `<profile>/db/corral-tasks-<cluster_id>.sqlite`
    /// (`corral-tasks.sqlite` without a cluster id), beside the profile's `security` folder.
    pub fn default_file(location: &corral_wire::ProfileLocation) -> PathBuf {
        let name = if location.cluster_id.is_empty() {
            "corral-tasks.sqlite".to_string()
        } else {
            format!("corral-tasks-{}.sqlite", location.cluster_id)
        };
        location.profile_dir.join("db").join(name)
    }
}

/// What the hub sends the writer.
#[derive(Debug)]
pub(crate) enum DbCommand {
    /// Insert or replace this record.
    Put(Box<Record>),
    /// Forget a record (purged or culled).
    Delete(String),
}

/// A record read back from the database.
pub(crate) struct StoredRecord {
    pub seq: u64,
    pub fields: Map<String, Value>,
    pub buffers: Vec<Bytes>,
    pub result_buffers: Option<Vec<Bytes>>,
    pub published: Published,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS tasks (
    msg_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    fields TEXT NOT NULL,
    buffers BLOB NOT NULL,
    result_buffers BLOB,
    published TEXT NOT NULL,
    published_frames BLOB NOT NULL
)";

/// Opens (creating when needed) the database file and its table.
pub(crate) fn open(path: &Path) -> rusqlite::Result<Connection> {
    if let Some(dir) = path.parent() {
        if let Err(e) = std::fs::create_dir_all(dir) {
            warn!(dir = %dir.display(), error = %e, "cannot create the task database folder");
        }
    }
    let conn = Connection::open(path)?;
    // WAL: a crash loses at most the batch being written, never the file.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute(SCHEMA, [])?;
    Ok(conn)
}

/// Frames packed into one BLOB: per frame, its length (u64 LE) then its bytes.
fn pack(frames: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::with_capacity(packed_len(frames));
    for f in frames {
        out.extend_from_slice(&(f.len() as u64).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// The size of `frames` packed.
fn packed_len(frames: &[Bytes]) -> usize {
    frames.iter().map(|f| f.len() + 8).sum()
}

/// Packed frames up to this size are bound to the insert whole: opening a BLOB handle to
/// stream them costs more than copying them (it compiles a statement each time).
const INLINE_BLOB: usize = 64 << 10;

/// A packed-frames column's value in the insert: small ones packed and bound; larger ones
/// a zero BLOB of their size, streamed in afterwards by [`write_packed`].
enum PackedColumn {
    Inline(Vec<u8>),
    Streamed(usize),
}

impl PackedColumn {
    fn of(frames: &[Bytes]) -> PackedColumn {
        match packed_len(frames) {
            n if n <= INLINE_BLOB => PackedColumn::Inline(pack(frames)),
            n => PackedColumn::Streamed(n),
        }
    }

    fn is_streamed(&self) -> bool {
        matches!(self, PackedColumn::Streamed(_))
    }
}

impl rusqlite::ToSql for PackedColumn {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(match self {
            PackedColumn::Inline(blob) => ToSqlOutput::Borrowed(ValueRef::Blob(blob)),
            PackedColumn::Streamed(n) => ToSqlOutput::ZeroBlob(
                i32::try_from(*n)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
            ),
        })
    }
}

/// The frames of a packed BLOB, sharing its bytes; `None` when it is damaged.
fn unpack(blob: Vec<u8>) -> Option<Vec<Bytes>> {
    let blob = Bytes::from(blob);
    let mut frames = Vec::new();
    let mut at = 0;
    while at < blob.len() {
        let len = blob.get(at..at + 8)?;
        let len = usize::try_from(u64::from_le_bytes(len.try_into().ok()?)).ok()?;
        let end = (at + 8).checked_add(len).filter(|&end| end <= blob.len())?;
        frames.push(blob.slice(at + 8..end));
        at = end;
    }
    Some(frames)
}

/// Writes `frames` packed into `column` of row `row`, which holds a zero BLOB of their
/// packed size: frame by frame, so no packed copy of large frames is ever built.
fn write_packed(
    conn: &Connection,
    column: &str,
    row: i64,
    frames: &[Bytes],
) -> rusqlite::Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    let mut blob = conn.blob_open(rusqlite::MAIN_DB, "tasks", column, row, false)?;
    let mut at = 0;
    for f in frames {
        blob.write_at(&(f.len() as u64).to_le_bytes(), at)?;
        blob.write_at(f, at + 8)?;
        at += 8 + f.len();
    }
    Ok(())
}

fn put(conn: &Connection, rec: &Record) -> rusqlite::Result<()> {
    let (desc, frames) = rec.published.to_stored();
    let buffers = PackedColumn::of(&rec.buffers);
    let result_buffers = rec.result_buffers.as_deref().map(PackedColumn::of);
    let published = PackedColumn::of(&frames);
    conn.prepare_cached(
        "INSERT OR REPLACE INTO tasks
         (msg_id, seq, fields, buffers, result_buffers, published, published_frames)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        rec.msg_id(),
        rec.seq() as i64,
        rec.fields_json(),
        buffers,
        result_buffers,
        desc.to_string(),
        published,
    ])?;
    let row = conn.last_insert_rowid();
    if buffers.is_streamed() {
        write_packed(conn, "buffers", row, &rec.buffers)?;
    }
    if let (Some(column), Some(frames)) = (&result_buffers, &rec.result_buffers) {
        if column.is_streamed() {
            write_packed(conn, "result_buffers", row, frames)?;
        }
    }
    if published.is_streamed() {
        write_packed(conn, "published_frames", row, &frames)?;
    }
    Ok(())
}

/// Every record in the database, oldest first; damaged rows are logged and skipped.
pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Vec<StoredRecord>> {
    let mut stmt = conn.prepare(
        "SELECT msg_id, seq, fields, buffers, result_buffers, published, published_frames
         FROM tasks ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Vec<u8>>(3)?,
            row.get::<_, Option<Vec<u8>>>(4)?,
            row.get::<_, String>(5)?,
            row.get::<_, Vec<u8>>(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (msg_id, seq, fields, buffers, result_buffers, published, frames) = row?;
        let decoded = (|| {
            let Value::Object(fields) = serde_json::from_str(&fields).ok()? else {
                return None;
            };
            let result_buffers = match result_buffers {
                Some(b) => Some(unpack(b)?),
                None => None,
            };
            let desc: Value = serde_json::from_str(&published).ok()?;
            Some(StoredRecord {
                seq: seq as u64,
                fields,
                buffers: unpack(buffers)?,
                result_buffers,
                published: Published::from_stored(&desc, unpack(frames)?)?,
            })
        })();
        match decoded {
            Some(r) => out.push(r),
            None => warn!(%msg_id, "damaged task record in the database; skipped"),
        }
    }
    Ok(out)
}

/// Whether the database already holds a record (tests and diagnostics).
#[cfg(test)]
pub(crate) fn contains(conn: &Connection, msg_id: &str) -> bool {
    use rusqlite::OptionalExtension;
    conn.query_row(
        "SELECT 1 FROM tasks WHERE msg_id = ?1",
        [msg_id],
        |_| Ok(()),
    )
    .optional()
    .ok()
    .flatten()
    .is_some()
}

/// Starts the writer thread on an open database. Dropping every sender (the hub thread
/// ending) makes it commit what it holds and exit, so joining it flushes the database.
pub(crate) fn start_writer(
    conn: Connection,
) -> std::io::Result<(Sender<DbCommand>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("corral-db".into())
        .spawn(move || write_loop(conn, rx))?;
    Ok((tx, thread))
}

fn write_loop(mut conn: Connection, rx: Receiver<DbCommand>) {
    loop {
        // Wait for the first command of a batch, then gather more until the batch is
        // due; the latest command per msg_id wins.
        let first = match rx.recv() {
            Ok(c) => c,
            Err(_) => return,
        };
        let due = Instant::now() + BATCH_INTERVAL;
        let mut batch: HashMap<String, DbCommand> = HashMap::new();
        let add = |c: DbCommand, batch: &mut HashMap<String, DbCommand>| {
            let id = match &c {
                DbCommand::Put(r) => r.msg_id().to_string(),
                DbCommand::Delete(id) => id.clone(),
            };
            batch.insert(id, c);
        };
        add(first, &mut batch);
        let mut closed = false;
        while batch.len() < BATCH_RECORDS {
            match rx.recv_deadline(due) {
                Ok(c) => add(c, &mut batch),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if let Err(e) = commit(&mut conn, batch.into_values()) {
            error!(error = %e, "task database write failed; these records are only in memory");
        }
        if closed {
            info!("task database writer done");
            return;
        }
    }
}

fn commit(conn: &mut Connection, batch: impl Iterator<Item = DbCommand>) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    for c in batch {
        match c {
            DbCommand::Put(rec) => put(&tx, &rec)?,
            DbCommand::Delete(id) => {
                tx.prepare_cached("DELETE FROM tasks WHERE msg_id = ?1")?
                    .execute([id])?;
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Bytes> {
        vec![
            Bytes::from_static(b"abc"),
            Bytes::new(),
            Bytes::from(vec![7; 1000]),
        ]
    }

    #[test]
    fn frames_pack_and_unpack_and_damage_is_refused() {
        let frames = frames();
        let blob = pack(&frames);
        assert_eq!(blob.len(), packed_len(&frames));
        assert_eq!(unpack(blob.clone()), Some(frames));
        assert_eq!(unpack(vec![]), Some(vec![]));
        assert_eq!(unpack(blob[..blob.len() - 1].to_vec()), None);
        assert_eq!(unpack(vec![1, 2, 3]), None);
        let mut huge = u64::MAX.to_le_bytes().to_vec();
        huge.push(0);
        assert_eq!(unpack(huge), None);
    }

    #[test]
    fn frames_streamed_into_a_blob_read_back_as_packed() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute(SCHEMA, []).unwrap();
        conn.execute(
            "INSERT INTO tasks VALUES ('m', 1, '{}', zeroblob(?1), NULL, '[]', zeroblob(0))",
            [packed_len(&frames()) as i64],
        )
        .unwrap();
        let row = conn.last_insert_rowid();
        write_packed(&conn, "buffers", row, &frames()).unwrap();
        write_packed(&conn, "published_frames", row, &[]).unwrap();
        let blob: Vec<u8> = conn
            .query_row("SELECT buffers FROM tasks", [], |r| r.get(0))
            .unwrap();
        assert_eq!(blob, pack(&frames()));
    }
}
