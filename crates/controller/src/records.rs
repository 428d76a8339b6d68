//! The task record store: one record per request that went through the MUX relay or the
//! task scheduler, with its reply and the IOPub output parented to it. Queried in memory,
//! like ipyparallel's default `DictDB`; with a task database ([`crate::db`]) each finished
//! record is also handed to its writer thread, and `--restore` reloads them. Record keys and query semantics follow
//! ipyparallel (docs/PROTOCOL.md §6.5): equality tests and the operators `$in $nin $eq $ne
//! $gt $gte $lt $lte`; dates are ISO strings and compare as strings.

use bytes::Bytes;
use corral_wire::{EchoedMetadata, HeaderFields};
use serde::de::IgnoredAny;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};
use tracing::warn;

use crate::db::{DbCommand, StoredRecord};
use crate::events::RecordEvent;
use crate::published::{HistoryLimits, Published};
use crate::record_parts::{read_parts, IopubContentView, RawJson};

/// The JSON keys of a record, as ipyparallel names them (buffers are held apart).
const KEYS: [&str; 21] = [
    "msg_id",
    "header",
    "metadata",
    "content",
    "submitted",
    "client_uuid",
    "engine_uuid",
    "started",
    "completed",
    "resubmitted",
    "received",
    "result_header",
    "result_metadata",
    "result_content",
    "queue",
    "execute_input",
    "execute_result",
    "error",
    "stdout",
    "stderr",
    "label",
];

static NULL: Value = Value::Null;

/// One field of a record: a small value the hub set, or a message part kept as sent.
enum Field<'a> {
    Value(&'a Value),
    Raw(Option<&'a RawJson>),
}

/// A task record. Message parts (headers, metadata, contents) are kept as the JSON text
/// they came in and parsed only when a client asks ([`Record::get`]); the few fields the
/// hub reads itself are small values.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// Insertion order: ties in submission time, and the order of query results.
    seq: u64,
    msg_id: Value,
    header: Option<RawJson>,
    metadata: Option<RawJson>,
    content: Option<RawJson>,
    submitted: Value,
    client_uuid: Value,
    engine_uuid: Value,
    started: Value,
    completed: Value,
    resubmitted: Value,
    received: Value,
    result_header: Option<RawJson>,
    result_metadata: Option<RawJson>,
    result_content: Option<RawJson>,
    queue: Value,
    execute_input: Value,
    execute_result: Option<RawJson>,
    error: Option<RawJson>,
    /// `display_data` output: a key the record has only once some came.
    display_data: Option<RawJson>,
    stdout: Value,
    stderr: Value,
    label: Value,
    /// Shared with the frames they came in (and the task database's writer): no copies.
    pub buffers: Vec<Bytes>,
    pub result_buffers: Option<Vec<Bytes>>,
    /// What engines published for this task (`data_message`s), which ipyparallel drops.
    pub published: Published,
}

impl Record {
    fn empty(msg_id: &str, seq: u64) -> Self {
        Record {
            seq,
            msg_id: json!(msg_id),
            header: None,
            metadata: None,
            content: None,
            submitted: Value::Null,
            client_uuid: Value::Null,
            engine_uuid: Value::Null,
            started: Value::Null,
            completed: Value::Null,
            resubmitted: Value::Null,
            received: Value::Null,
            result_header: None,
            result_metadata: None,
            result_content: None,
            queue: Value::Null,
            execute_input: Value::Null,
            execute_result: None,
            error: None,
            display_data: None,
            stdout: json!(""),
            stderr: json!(""),
            label: Value::Null,
            buffers: Vec::new(),
            result_buffers: None,
            published: Published::default(),
        }
    }

    fn field(&self, key: &str) -> Option<Field<'_>> {
        use Field::{Raw, Value as V};
        Some(match key {
            "msg_id" => V(&self.msg_id),
            "header" => Raw(self.header.as_ref()),
            "metadata" => Raw(self.metadata.as_ref()),
            "content" => Raw(self.content.as_ref()),
            "submitted" => V(&self.submitted),
            "client_uuid" => V(&self.client_uuid),
            "engine_uuid" => V(&self.engine_uuid),
            "started" => V(&self.started),
            "completed" => V(&self.completed),
            "resubmitted" => V(&self.resubmitted),
            "received" => V(&self.received),
            "result_header" => Raw(self.result_header.as_ref()),
            "result_metadata" => Raw(self.result_metadata.as_ref()),
            "result_content" => Raw(self.result_content.as_ref()),
            "queue" => V(&self.queue),
            "execute_input" => V(&self.execute_input),
            "execute_result" => Raw(self.execute_result.as_ref()),
            "error" => Raw(self.error.as_ref()),
            "display_data" if self.display_data.is_some() => Raw(self.display_data.as_ref()),
            "stdout" => V(&self.stdout),
            "stderr" => V(&self.stderr),
            "label" => V(&self.label),
            _ => return None,
        })
    }

    /// The keys this record has: ipyparallel's, and `display_data` once some came.
    fn keys(&self) -> impl Iterator<Item = &'static str> {
        let display = self.display_data.is_some().then_some("display_data");
        KEYS.iter().copied().chain(display)
    }

    /// A field as JSON (`null` when the record has no such key). Message parts are
    /// parsed here, on a client's query.
    pub(crate) fn get(&self, key: &str) -> Cow<'_, Value> {
        match self.field(key) {
            Some(Field::Value(v)) => Cow::Borrowed(v),
            Some(Field::Raw(Some(raw))) => Cow::Owned(raw.value()),
            Some(Field::Raw(None)) | None => Cow::Borrowed(&NULL),
        }
    }

    pub(crate) fn msg_id(&self) -> &str {
        self.msg_id.as_str().unwrap_or_default()
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The whole record as a JSON object (what `db_query` returns without `keys`).
    pub(crate) fn fields(&self) -> Map<String, Value> {
        self.keys()
            .map(|k| (k.to_string(), self.get(k).into_owned()))
            .collect()
    }

    /// The whole record as JSON text, its message parts spliced in unparsed (what the
    /// task database stores).
    pub(crate) fn fields_json(&self) -> String {
        // Written straight into one buffer: going through `Value`'s `Display` and a
        // `to_string` per key cost about 50 k instructions a record (callgrind, W9).
        let mut out = Vec::with_capacity(512);
        out.push(b'{');
        for (i, key) in self.keys().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Keys are the plain identifiers of `KEYS`: nothing to escape.
            out.push(b'"');
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            match self.field(key) {
                Some(Field::Value(v)) => {
                    serde_json::to_writer(&mut out, v).expect("a Value always serializes")
                }
                Some(Field::Raw(Some(raw))) => out.extend_from_slice(raw.text().as_bytes()),
                Some(Field::Raw(None)) | None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
        String::from_utf8(out).expect("JSON text is UTF-8")
    }

    /// A record read back from its fields (`--restore`); keys it does not know are
    /// ignored.
    fn from_fields(seq: u64, mut fields: Map<String, Value>) -> Option<Record> {
        let msg_id = fields.get("msg_id")?.as_str()?.to_string();
        let mut rec = Record::empty(&msg_id, seq);
        let mut take = |k: &str| fields.remove(k).unwrap_or(Value::Null);
        let raw = |v: Value| (!v.is_null()).then(|| RawJson::of(&v));
        rec.header = raw(take("header"));
        rec.metadata = raw(take("metadata"));
        rec.content = raw(take("content"));
        rec.submitted = take("submitted");
        rec.client_uuid = take("client_uuid");
        rec.engine_uuid = take("engine_uuid");
        rec.started = take("started");
        rec.completed = take("completed");
        rec.resubmitted = take("resubmitted");
        rec.received = take("received");
        rec.result_header = raw(take("result_header"));
        rec.result_metadata = raw(take("result_metadata"));
        rec.result_content = raw(take("result_content"));
        rec.queue = take("queue");
        rec.execute_input = take("execute_input");
        rec.execute_result = raw(take("execute_result"));
        rec.error = raw(take("error"));
        rec.display_data = fields.remove("display_data").map(|v| RawJson::of(&v));
        let mut take = |k: &str| fields.remove(k).unwrap_or(Value::Null);
        rec.stdout = take("stdout");
        rec.stderr = take("stderr");
        rec.label = take("label");
        Some(rec)
    }

    pub(crate) fn is_completed(&self) -> bool {
        !self.completed.is_null()
    }

    /// The part of a record a `result_reply` carries for one msg_id.
    pub(crate) fn result_entry(&self) -> Value {
        json!({
            "header": self.get("header"),
            "metadata": self.get("metadata"),
            "result_metadata": self.get("result_metadata"),
            "result_header": self.get("result_header"),
            "result_content": self.get("result_content"),
            "received": self.received,
            "io": {
                "execute_input": self.execute_input,
                "execute_result": self.get("execute_result"),
                "error": self.get("error"),
                "stdout": self.stdout,
                "stderr": self.stderr,
            },
        })
    }
}

/// What a request's record is filled in with.
struct Request {
    msg_id: Option<String>,
    date: Option<Value>,
    label: Option<Value>,
    header: RawJson,
    metadata: RawJson,
    content: RawJson,
    buffers: Vec<Bytes>,
}

/// ipyparallel's `DictDB` limits: at most this many records...
const RECORD_LIMIT: usize = 1024;
/// ...and this many buffer bytes; past either, the oldest are culled by this fraction.
const SIZE_LIMIT: usize = 1 << 30;
const CULL_FRACTION: f64 = 0.1;

/// stdout (and, apart, stderr) kept per record. Generous for a task's prints, and it
/// bounds what a chatty task costs the controller; clients still see all of it live on
/// IOPub. Past it, the head is kept and a note says so.
pub(crate) const OUTPUT_LIMIT: usize = 4 << 20;
const TRUNCATED: &str = "\n[corral: output beyond 4 MiB is not kept in the task record]\n";

fn size(buffers: &[Bytes]) -> usize {
    buffers.iter().map(Bytes::len).sum()
}

/// Bytes of a record's kept output and published data, counted with its buffers against
/// the size limit.
fn output_size(rec: &Record) -> usize {
    [&rec.stdout, &rec.stderr]
        .iter()
        .map(|v| v.as_str().map_or(0, str::len))
        .sum::<usize>()
        + rec.published.bytes()
}

/// Appends `text` to an output field in place (no copy of what is already there), up to
/// [`OUTPUT_LIMIT`]. Returns the bytes added.
fn append_output(field: &mut Value, text: &str) -> usize {
    if !field.is_string() {
        *field = Value::String(String::new());
    }
    let Value::String(out) = field else {
        return 0;
    };
    let before = out.len();
    if before > OUTPUT_LIMIT {
        return 0; // already truncated
    }
    if before + text.len() <= OUTPUT_LIMIT {
        out.push_str(text);
    } else {
        let mut cut = OUTPUT_LIMIT - before;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&text[..cut]);
        out.push_str(TRUNCATED);
    }
    out.len() - before
}

#[derive(Debug)]
pub(crate) struct Records {
    records: HashMap<String, Record>,
    /// msg_ids by insertion order (`seq`): culling and queries walk it instead of sorting.
    order: BTreeMap<u64, String>,
    seq: u64,
    /// Total size of the stored request and result buffers.
    bytes: usize,
    record_limit: usize,
    size_limit: usize,
    /// Bounds of each (task, engine)'s history of published updates.
    data_history: HistoryLimits,
    /// The task database writer, when records are durable.
    store: Option<crossbeam_channel::Sender<DbCommand>>,
    /// Requests marked for the database while unfinished, oldest first, with when.
    unwritten: VecDeque<(Instant, String)>,
}

/// A request's record goes to the task database when it has stayed unfinished this long.
/// Most tasks finish sooner and then cost one write and nothing on the way (a thread
/// woken per request slowed W2; thousands of tasks queued at once were written twice),
/// while a controller killed mid-run still leaves the tasks that were running or queued
/// for longer to `--restore`.
pub(crate) const UNFINISHED_GRACE: Duration = Duration::from_millis(500);

impl Default for Records {
    fn default() -> Self {
        Records::with_limits(RECORD_LIMIT, SIZE_LIMIT)
    }
}

impl Records {
    pub(crate) fn with_limits(record_limit: usize, size_limit: usize) -> Self {
        Records {
            records: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
            bytes: 0,
            record_limit,
            size_limit,
            data_history: HistoryLimits::default(),
            store: None,
            unwritten: VecDeque::new(),
        }
    }

    /// Hands finished records, and later changes to them, to a task database writer.
    pub(crate) fn set_store(&mut self, store: crossbeam_channel::Sender<DbCommand>) {
        self.store = Some(store);
    }

    /// Sends a finished record to the task database (a clone that shares the record's
    /// parts and buffers, not a copy: the writer encodes it off this thread). Output that
    /// arrives for an unfinished task waits for its reply.
    fn persist(&self, msg_id: &str) {
        self.persist_if(msg_id, Record::is_completed);
    }

    /// Marks a request (new, or placed on an engine) to be sent to the task database if
    /// it is still unfinished after [`UNFINISHED_GRACE`] (see
    /// [`Records::persist_overdue`]), so that a controller restarted with `--restore`
    /// knows the tasks that were unfinished, and fails those that can no longer finish.
    fn persist_request(&mut self, msg_id: &str) {
        if self.store.is_some() {
            self.unwritten
                .push_back((Instant::now(), msg_id.to_string()));
        }
    }

    /// Sends the records of requests marked [`UNFINISHED_GRACE`] ago (all marked ones if
    /// `all`: the hub is ending) that are still unfinished; finished ones went already.
    pub(crate) fn persist_overdue(&mut self, now: Instant, all: bool) {
        while let Some((since, _)) = self.unwritten.front() {
            if !all && now.saturating_duration_since(*since) < UNFINISHED_GRACE {
                return;
            }
            if let Some((_, msg_id)) = self.unwritten.pop_front() {
                self.persist_if(&msg_id, |r| !r.is_completed());
            }
        }
    }

    fn persist_if(&self, msg_id: &str, wanted: impl Fn(&Record) -> bool) {
        let (Some(store), Some(rec)) = (&self.store, self.records.get(msg_id)) else {
            return;
        };
        if wanted(rec) && store.send(DbCommand::Put(Box::new(rec.clone()))).is_err() {
            warn!(%msg_id, "the task database writer has stopped; record kept in memory only");
        }
    }

    /// The unfinished records, oldest first, with the engine each was placed on (`None`:
    /// still waiting in the scheduler).
    pub(crate) fn unfinished(&self) -> Vec<(String, Option<String>)> {
        self.ordered()
            .into_iter()
            .filter(|r| !r.is_completed())
            .map(|r| {
                let engine = r.engine_uuid.as_str().map(str::to_string);
                (r.msg_id().to_string(), engine)
            })
            .collect()
    }

    /// Adds records read back from the task database (`--restore`), keeping their order.
    pub(crate) fn restore(&mut self, stored: Vec<StoredRecord>) {
        for s in stored {
            let Some(mut rec) = Record::from_fields(s.seq, s.fields) else {
                continue;
            };
            let msg_id = rec.msg_id().to_string();
            rec.buffers = s.buffers;
            rec.result_buffers = s.result_buffers;
            rec.published = s.published;
            self.seq = self.seq.max(s.seq);
            self.bytes += size(&rec.buffers)
                + rec.result_buffers.as_deref().map_or(0, size)
                + output_size(&rec);
            self.order.insert(rec.seq, msg_id.clone());
            if let Some(old) = self.records.insert(msg_id, rec) {
                self.order.remove(&old.seq);
            }
        }
        self.maybe_cull();
    }

    /// Sets the bounds of the published-data history kept per (task, engine).
    pub(crate) fn set_data_history(&mut self, limits: HistoryLimits) {
        self.data_history = limits;
    }

    /// Drops the oldest records (insertion order) once a limit is exceeded, down to
    /// `limit * (1 - CULL_FRACTION)`, as ipyparallel's `DictDB` does.
    fn maybe_cull(&mut self) {
        if self.records.len() <= self.record_limit && self.bytes <= self.size_limit {
            return;
        }
        let keep_records = (self.record_limit as f64 * (1.0 - CULL_FRACTION)) as usize;
        let keep_bytes = (self.size_limit as f64 * (1.0 - CULL_FRACTION)) as usize;
        let over_records = self.records.len() > self.record_limit;
        let over_bytes = self.bytes > self.size_limit;
        let before = self.records.len();
        loop {
            let records_ok = !over_records || self.records.len() <= keep_records;
            let bytes_ok = !over_bytes || self.bytes <= keep_bytes;
            if records_ok && bytes_ok {
                break;
            }
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.remove(&oldest);
        }
        tracing::info!(
            culled = before - self.records.len(),
            kept = self.records.len(),
            "task records over their limit; culled the oldest"
        );
    }

    pub(crate) fn get(&self, msg_id: &str) -> Option<&Record> {
        self.records.get(msg_id)
    }

    pub(crate) fn contains(&self, msg_id: &str) -> bool {
        self.records.contains_key(msg_id)
    }

    pub(crate) fn remove(&mut self, msg_id: &str) {
        if let Some(rec) = self.records.remove(msg_id) {
            self.order.remove(&rec.seq);
            let freed = size(&rec.buffers)
                + rec.result_buffers.as_deref().map_or(0, size)
                + output_size(&rec);
            self.bytes = self.bytes.saturating_sub(freed);
            if let Some(store) = &self.store {
                let _ = store.send(DbCommand::Delete(msg_id.to_string()));
            }
        }
    }

    fn entry(&mut self, msg_id: &str) -> &mut Record {
        let (seq, order) = (&mut self.seq, &mut self.order);
        self.records.entry(msg_id.to_string()).or_insert_with(|| {
            *seq += 1;
            order.insert(*seq, msg_id.to_string());
            Record::empty(msg_id, *seq)
        })
    }

    /// Adds (or fills in) the record of a request the hub built itself (a resubmission).
    pub(crate) fn add_request(
        &mut self,
        header: Value,
        metadata: Value,
        content: Value,
        buffers: Vec<Vec<u8>>,
        queue: &str,
        client: Option<String>,
    ) {
        let HeaderFields { msg_id, date, .. } = HeaderFields::read(&header);
        let request = Request {
            msg_id,
            date,
            label: EchoedMetadata::read(&metadata).label,
            header: RawJson::of(&header),
            metadata: RawJson::of(&metadata),
            content: RawJson::of(&content),
            buffers: buffers.into_iter().map(Bytes::from).collect(),
        };
        self.add_request_parts(request, queue, client, None);
    }

    /// Adds (or fills in) the record of a request, sent to `engine` if known.
    fn add_request_parts(
        &mut self,
        request: Request,
        queue: &str,
        client: Option<String>,
        engine: Option<&str>,
    ) {
        let Some(msg_id) = request.msg_id else {
            warn!("request copy without a msg_id; dropped");
            return;
        };
        let rec = self.entry(&msg_id);
        rec.submitted = request.date.unwrap_or(Value::Null);
        rec.label = request.label.unwrap_or(Value::Null);
        rec.header = Some(request.header);
        rec.metadata = Some(request.metadata);
        rec.content = Some(request.content);
        rec.queue = json!(queue);
        if let Some(client) = client {
            rec.client_uuid = json!(client);
        }
        if let Some(engine) = engine {
            rec.engine_uuid = json!(engine);
        }
        let (old, new) = (size(&rec.buffers), size(&request.buffers));
        rec.buffers = request.buffers;
        self.bytes = self.bytes.saturating_sub(old) + new;
        self.persist_request(&msg_id);
        self.maybe_cull();
    }

    pub(crate) fn set_engine(&mut self, msg_id: &str, engine: &str) {
        if let Some(rec) = self.records.get_mut(msg_id) {
            rec.engine_uuid = json!(engine);
        }
        self.persist_request(msg_id);
    }

    pub(crate) fn set_resubmitted(&mut self, msg_id: &str, new_id: &str) {
        if let Some(rec) = self.records.get_mut(msg_id) {
            rec.resubmitted = json!(new_id);
        }
        self.persist(msg_id);
    }

    /// Applies one copy sent by a relay; bad input is logged and dropped.
    pub(crate) fn apply(&mut self, event: RecordEvent, now: &str) {
        match event {
            RecordEvent::Request {
                queue,
                client,
                engine,
                parts,
            } => {
                let Some(p) = read_parts::<IgnoredAny>(parts, "request") else {
                    return;
                };
                let (header, fields) = p.header;
                let request = Request {
                    msg_id: fields.msg_id,
                    date: fields.date,
                    label: p.metadata.1.label,
                    header,
                    metadata: p.metadata.0,
                    content: p.content.0,
                    buffers: p.buffers,
                };
                let client = String::from_utf8_lossy(&client).into_owned();
                self.add_request_parts(request, queue, Some(client), engine.as_deref());
            }
            RecordEvent::Reply { engine, parts } => {
                let Some(p) = read_parts::<IgnoredAny>(parts, "reply") else {
                    return;
                };
                let Some(msg_id) = p.parent.1.msg_id else {
                    warn!("reply copy without a parent msg_id; dropped");
                    return;
                };
                let rec = self.entry(&msg_id);
                let (header, fields) = p.header;
                let (metadata, md) = p.metadata;
                if let Some(engine) = engine.map(Value::String).or(md.engine) {
                    rec.engine_uuid = engine;
                }
                rec.started = md.started.unwrap_or(Value::Null);
                rec.completed = fields.date.unwrap_or(json!(now));
                rec.received = json!(now);
                rec.result_header = Some(header);
                rec.result_metadata = Some(metadata);
                rec.result_content = Some(p.content.0);
                let old = rec.result_buffers.as_deref().map_or(0, size);
                let new = size(&p.buffers);
                rec.result_buffers = Some(p.buffers);
                self.bytes = self.bytes.saturating_sub(old) + new;
                self.persist(&msg_id);
                self.maybe_cull();
            }
            RecordEvent::Iopub { parts } => {
                let Some(p) = read_parts::<IopubContentView>(parts, "iopub") else {
                    return;
                };
                let Some(msg_id) = p.parent.1.msg_id else {
                    return;
                };
                let header = p.header.1;
                let msg_type = header.msg_type.unwrap_or_default();
                let (content, c) = p.content;
                let mut added = 0;
                let mut freed = 0;
                let limits = self.data_history;
                let rec = self.entry(&msg_id);
                match msg_type.as_str() {
                    "stream" => {
                        let field = match c.name.as_deref() {
                            Some("stdout") => Some(&mut rec.stdout),
                            Some("stderr") => Some(&mut rec.stderr),
                            _ => None,
                        };
                        if let (Some(field), Some(text)) = (field, c.text.as_deref()) {
                            added = append_output(field, text);
                        }
                    }
                    "error" => rec.error = Some(content),
                    "execute_input" => rec.execute_input = c.code.unwrap_or_default(),
                    "execute_result" => rec.execute_result = Some(content),
                    "display_data" => rec.display_data = Some(content),
                    "data_message" => {
                        // The engine is its session; stock engines also name it in metadata.
                        let engine = p.metadata.1.engine_str().map(str::to_string);
                        let Some(engine) = engine.or(header.session) else {
                            warn!(%msg_id, "data_message copy naming no engine; dropped");
                            return;
                        };
                        if let Some(preview) = &c.corral_preview {
                            rec.published.add_preview(&engine, preview);
                        }
                        let published = header.date.unwrap_or(Value::Null);
                        (freed, added) = rec
                            .published
                            .add(&engine, c.keys, published, now, p.buffers, limits);
                    }
                    _ => {}
                }
                self.bytes = self.bytes.saturating_sub(freed) + added;
                self.persist(&msg_id);
                self.maybe_cull();
            }
        }
    }

    /// The `n` newest records, newest first (the dashboard's task list).
    pub(crate) fn newest(&self, n: usize) -> Vec<&Record> {
        let mut v = self.ordered();
        v.reverse();
        v.truncate(n);
        v
    }

    /// Records in insertion order.
    fn ordered(&self) -> Vec<&Record> {
        self.order
            .values()
            .filter_map(|msg_id| self.records.get(msg_id))
            .collect()
    }

    /// msg_ids with a submission time, ordered by it (ipyparallel's `get_history`).
    pub(crate) fn history(&self) -> Vec<String> {
        let mut v: Vec<&Record> = self
            .records
            .values()
            .filter(|r| r.submitted.is_string())
            .collect();
        v.sort_by(|a, b| {
            let (sa, sb) = (a.submitted.as_str(), b.submitted.as_str());
            sa.cmp(&sb).then(a.seq.cmp(&b.seq))
        });
        v.into_iter().map(|r| r.msg_id().to_string()).collect()
    }

    /// Records matching a MongoDB-like `query`, in insertion order.
    pub(crate) fn find(&self, query: &Value) -> Result<Vec<&Record>, String> {
        let Some(query) = query.as_object() else {
            return Err(format!("query must be a dict, not {query}"));
        };
        // Validate operators up front so a bad query is an error, not an empty result.
        for test in query.values() {
            if let Some(ops) = test.as_object() {
                for op in ops.keys() {
                    if !QUERY_OPERATORS.contains(&op.as_str()) {
                        return Err(format!(
                            "unsupported query operator {op:?}; the operators are {}",
                            QUERY_OPERATORS.join(", ")
                        ));
                    }
                }
            }
        }
        Ok(self
            .ordered()
            .into_iter()
            .filter(|r| query.iter().all(|(k, t)| matches(&r.get(k), t)))
            .collect())
    }
}

/// The query operators: those of ipyparallel's in-memory `DictDB`, a superset of its
/// SQLite backend's (which lacks `$all`, `$mod` and `$exists`).
const QUERY_OPERATORS: [&str; 12] = [
    "$in", "$nin", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$glob", "$exists", "$mod", "$all",
];

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Whether a record's `value` passes one query `test` (a literal or an operator dict).
pub(crate) fn matches(value: &Value, test: &Value) -> bool {
    let Some(ops) = test.as_object() else {
        return value == test;
    };
    ops.iter().all(|(op, arg)| match op.as_str() {
        "$eq" => value == arg,
        "$ne" => value != arg,
        "$in" => contains(arg, value).unwrap_or(false),
        "$nin" => contains(arg, value).is_some_and(|found| !found),
        "$gt" => compare(value, arg) == Some(Ordering::Greater),
        "$gte" => matches!(
            compare(value, arg),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        "$lt" => compare(value, arg) == Some(Ordering::Less),
        "$lte" => matches!(compare(value, arg), Some(Ordering::Less | Ordering::Equal)),
        // fnmatch's `*`, `?` and `[...]`, case-sensitive (ipyparallel: `fnmatch` in
        // memory, SQL `GLOB` in SQLite). A pattern that does not parse matches nothing.
        "$glob" => match (value.as_str(), arg.as_str()) {
            (Some(text), Some(pattern)) => {
                glob::Pattern::new(pattern).is_ok_and(|p| p.matches(text))
            }
            _ => false,
        },
        // `{"$exists": true}`: the field is set (not null); `false`: it is not.
        "$exists" => truthy(arg) != value.is_null(),
        // `{"$mod": [d, r]}`: integers whose remainder by d is r.
        "$mod" => match (value.as_i64(), arg.as_array().map(Vec::as_slice)) {
            (Some(v), Some([d, r])) => match (d.as_i64(), r.as_i64()) {
                (Some(d), Some(r)) if d != 0 => v.rem_euclid(d) == r,
                _ => false,
            },
            _ => false,
        },
        // As ipyparallel's `DictDB`: the value is in every one of the listed containers
        // (a list holding it, or a string containing it).
        "$all" => arg.as_array().is_some_and(|all| {
            all.iter().all(|c| match (c, value) {
                (Value::Array(items), _) => items.contains(value),
                (Value::String(text), Value::String(part)) => text.contains(part.as_str()),
                _ => false,
            })
        }),
        _ => false,
    })
}

/// Python's `value in arg` for `$in`/`$nin`: membership in a list, or a substring of a
/// string (ipyparallel's task-label example asks for `{"label": {"$nin": ""}}`, every
/// labelled task). `None` where Python raises or SQL compares with NULL: a non-string
/// in a string, or an argument that is neither.
fn contains(arg: &Value, value: &Value) -> Option<bool> {
    match (arg, value) {
        (Value::Array(items), _) => Some(items.contains(value)),
        (Value::String(text), Value::String(part)) => Some(text.contains(part.as_str())),
        _ => None,
    }
}

/// Python's truth of a JSON value (for `$exists`).
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Request and result buffers of a projected record, when its keys name them.
type Projected<'a> = (Value, Option<&'a [Bytes]>, Option<&'a [Bytes]>);

/// A record reduced to `keys` (msg_id always included), as ipyparallel's `find_records`
/// returns it; `buffers`/`result_buffers` are returned apart.
pub(crate) fn project<'a>(rec: &'a Record, keys: Option<&[String]>) -> Projected<'a> {
    let empty: &'a [Bytes] = &[];
    let result_buffers = rec.result_buffers.as_deref().unwrap_or(empty);
    match keys {
        None => (
            Value::Object(rec.fields()),
            Some(&rec.buffers),
            Some(result_buffers),
        ),
        Some(keys) => {
            let mut out = Map::new();
            out.insert("msg_id".into(), rec.msg_id.clone());
            let (mut b, mut rb) = (None, None);
            for k in keys {
                match k.as_str() {
                    "buffers" => b = Some(rec.buffers.as_slice()),
                    "result_buffers" => rb = Some(result_buffers),
                    _ => {
                        out.insert(k.clone(), rec.get(k).into_owned());
                    }
                }
            }
            (Value::Object(out), b, rb)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(header: Value, parent: Value, metadata: Value, content: Value) -> Vec<Bytes> {
        [header, parent, metadata, content]
            .iter()
            .map(|v| serde_json::to_vec(v).unwrap().into())
            .collect()
    }

    fn request(store: &mut Records, msg_id: &str, date: &str) {
        let mut p = parts(
            json!({"msg_id": msg_id, "msg_type": "apply_request", "date": date}),
            json!({}),
            json!({"label": null}),
            json!({}),
        );
        p.push(Bytes::copy_from_slice(b"buf"));
        store.apply(
            RecordEvent::Request {
                queue: "mux",
                client: b"client".to_vec(),
                engine: Some("e0".into()),
                parts: p,
            },
            "now",
        );
    }

    fn reply(store: &mut Records, msg_id: &str, date: &str) {
        let mut p = parts(
            json!({"msg_id": format!("r-{msg_id}"), "msg_type": "apply_reply", "date": date}),
            json!({"msg_id": msg_id}),
            json!({"started": "S", "engine": "e0", "status": "ok"}),
            json!({"status": "ok"}),
        );
        p.push(Bytes::copy_from_slice(b"result"));
        store.apply(
            RecordEvent::Reply {
                engine: None,
                parts: p,
            },
            "R",
        );
    }

    #[test]
    fn request_reply_and_output_fill_one_record() {
        let mut s = Records::default();
        request(&mut s, "m1", "2026-01-01T00:00:01Z");
        let out = |t: &str, c: Value| {
            parts(
                json!({"msg_type": t}),
                json!({"msg_id": "m1"}),
                json!({}),
                c,
            )
        };
        s.apply(
            RecordEvent::Iopub {
                parts: out("stream", json!({"name": "stdout", "text": "a"})),
            },
            "",
        );
        s.apply(
            RecordEvent::Iopub {
                parts: out("stream", json!({"name": "stdout", "text": "b"})),
            },
            "",
        );
        s.apply(
            RecordEvent::Iopub {
                parts: out("execute_input", json!({"code": "x=1"})),
            },
            "",
        );
        assert!(!s.get("m1").unwrap().is_completed());
        reply(&mut s, "m1", "2026-01-01T00:00:02Z");
        let r = s.get("m1").unwrap();
        assert!(r.is_completed());
        assert_eq!(*r.get("completed"), "2026-01-01T00:00:02Z");
        assert_eq!(*r.get("submitted"), "2026-01-01T00:00:01Z");
        assert_eq!(*r.get("engine_uuid"), "e0");
        assert_eq!(*r.get("client_uuid"), "client");
        assert_eq!(*r.get("queue"), "mux");
        assert_eq!(*r.get("started"), "S");
        assert_eq!(*r.get("received"), "R");
        assert_eq!(r.buffers, vec![b"buf".to_vec()]);
        assert_eq!(r.result_buffers, Some(vec![Bytes::from_static(b"result")]));
        let e = r.result_entry();
        assert_eq!(e["io"]["stdout"], "ab");
        assert_eq!(e["io"]["execute_input"], "x=1");
        assert_eq!(e["io"]["stderr"], "");
        assert_eq!(e["result_content"], json!({"status": "ok"}));
    }

    #[test]
    fn parts_are_parsed_only_when_asked_and_the_stored_text_reads_back_the_same() {
        let mut s = Records::default();
        request(&mut s, "m1", "2026");
        reply(&mut s, "m1", "2027");
        let out = |t: &str, c: Value| RecordEvent::Iopub {
            parts: parts(
                json!({"msg_type": t}),
                json!({"msg_id": "m1"}),
                json!({}),
                c,
            ),
        };
        s.apply(
            out("display_data", json!({"data": {"text/plain": "x"}})),
            "",
        );
        s.apply(out("error", json!({"ename": "E", "traceback": []})), "");
        let r = s.get("m1").unwrap();
        assert_eq!(r.get("header")["msg_type"], "apply_request");
        assert_eq!(*r.get("result_content"), json!({"status": "ok"}));
        assert_eq!(r.get("display_data")["data"]["text/plain"], "x");
        assert_eq!(*r.get("no such key"), Value::Null);
        let fields = r.fields();
        assert_eq!(
            fields.len(),
            KEYS.len() + 1,
            "ipyparallel's keys and display_data"
        );
        let text: Value = serde_json::from_str(&r.fields_json()).unwrap();
        assert_eq!(text, Value::Object(fields.clone()));
        let back = Record::from_fields(r.seq(), fields.clone()).unwrap();
        assert_eq!(back.fields(), fields);
        assert_eq!(back.fields_json(), r.fields_json());
    }

    #[test]
    fn oldest_records_are_culled_past_the_limits() {
        let mut s = Records::with_limits(10, 1 << 20);
        for i in 0..11 {
            request(&mut s, &format!("m{i:02}"), "2026");
        }
        // 11 > 10: culled down to 9, oldest first.
        assert_eq!(s.records.len(), 9);
        assert_eq!(s.order.len(), 9, "the order index follows");
        assert!(!s.contains("m00") && !s.contains("m01") && s.contains("m02"));
        assert_eq!(s.bytes, 9 * 3);
        s.remove("m02");
        assert_eq!(s.bytes, 8 * 3);

        let mut s = Records::with_limits(100, 10);
        for i in 0..4 {
            request(&mut s, &format!("m{i}"), "2026");
        }
        // 12 bytes > 10: culled down to 9 bytes or less.
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.order.len(), 3);
        assert!(!s.contains("m0"));
        reply(&mut s, "m3", "2026");
        assert!(s.bytes <= 9, "{}", s.bytes);
        assert!(s.contains("m3"));
    }

    #[test]
    fn output_is_appended_up_to_a_bound_and_counted_against_the_size_limit() {
        let mut s = Records::default();
        request(&mut s, "m1", "2026");
        let base = s.bytes;
        let stream = |name: &str, text: &str| RecordEvent::Iopub {
            parts: parts(
                json!({"msg_type": "stream"}),
                json!({"msg_id": "m1"}),
                json!({}),
                json!({"name": name, "text": text}),
            ),
        };
        let chunk = "é".repeat(300_000); // 600,000 bytes, two-byte chars
        for _ in 0..10 {
            s.apply(stream("stdout", &chunk), "");
        }
        s.apply(stream("stderr", "oops"), "");
        let r = s.get("m1").unwrap();
        let stdout = r.get("stdout");
        let out = stdout.as_str().unwrap();
        assert!(out.len() > OUTPUT_LIMIT && out.len() < OUTPUT_LIMIT + 100);
        assert!(out.ends_with(TRUNCATED), "the record says it was cut");
        assert!(out.starts_with(&chunk), "the head is kept");
        assert_eq!(*r.get("stderr"), "oops");
        assert_eq!(s.bytes, base + out.len() + 4);
        s.remove("m1");
        assert_eq!(s.bytes, 0);
    }

    #[test]
    fn published_data_is_kept_with_the_record_and_counted_in_its_size() {
        let mut s = Records::default();
        request(&mut s, "m1", "2026");
        let base = s.bytes;
        let data = |keys: Value, engine: &str, payload: &[u8]| {
            let mut p = parts(
                json!({"msg_type": "data_message", "date": "D", "session": engine}),
                json!({"msg_id": "m1"}),
                json!({}),
                json!({ "keys": keys }),
            );
            p.push(Bytes::copy_from_slice(payload));
            RecordEvent::Iopub { parts: p }
        };
        s.apply(data(json!(["a"]), "e0", &[0; 100]), "R1");
        s.apply(data(json!(["a"]), "e0", &[0; 50]), "R2");
        assert_eq!(s.bytes, base + 150, "latest 50 + one earlier update of 100");
        s.apply(data(json!(["a"]), "e1", &[0; 10]), "R3");
        let facts = |_: &str| crate::published::EngineFacts {
            id: None,
            alive: true,
            died: None,
        };
        let (v, frames) = s.get("m1").unwrap().published.entries(false, true, &facts);
        assert_eq!(v[0]["engine_uuid"], "e0");
        assert_eq!(v[0]["seq"], 2);
        assert_eq!(v[0]["received"], "R2");
        assert_eq!(v[1]["engine_uuid"], "e1");
        assert_eq!(frames, vec![vec![0; 50], vec![0; 10]]);
        s.remove("m1");
        assert_eq!(s.bytes, 0);
    }

    #[test]
    fn bad_copies_are_dropped() {
        let mut s = Records::default();
        s.apply(
            RecordEvent::Reply {
                engine: None,
                parts: vec![Bytes::from_static(b"{"); 4],
            },
            "",
        );
        s.apply(RecordEvent::Iopub { parts: vec![] }, "");
        let p = parts(json!({}), json!({}), json!({}), json!({}));
        s.apply(
            RecordEvent::Request {
                queue: "mux",
                client: vec![],
                engine: None,
                parts: p,
            },
            "",
        );
        assert!(s.records.is_empty());
    }

    #[test]
    fn queries_support_mongo_operators_and_history_is_by_submission() {
        let mut s = Records::default();
        request(&mut s, "b", "2026-01-01T00:00:02Z");
        request(&mut s, "a", "2026-01-01T00:00:01Z");
        request(&mut s, "c", "2026-01-01T00:00:03Z");
        reply(&mut s, "a", "2026-01-01T00:00:05Z");
        assert_eq!(s.history(), vec!["a", "b", "c"]);
        let ids = |q: Value| -> Vec<String> {
            s.find(&q)
                .unwrap()
                .iter()
                .map(|r| r.get("msg_id").as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(ids(json!({"msg_id": "a"})), vec!["a"]);
        assert_eq!(ids(json!({"msg_id": {"$in": ["a", "c"]}})), vec!["a", "c"]);
        assert_eq!(ids(json!({"msg_id": {"$nin": ["a", "c"]}})), vec!["b"]);
        assert_eq!(ids(json!({"completed": {"$ne": null}})), vec!["a"]);
        assert_eq!(ids(json!({"completed": {"$eq": null}})), vec!["b", "c"]);
        assert_eq!(ids(json!({"completed": null})), vec!["b", "c"]);
        let t = "2026-01-01T00:00:02Z";
        assert_eq!(ids(json!({"submitted": {"$gt": t}})), vec!["c"]);
        assert_eq!(ids(json!({"submitted": {"$gte": t}})), vec!["b", "c"]);
        assert_eq!(ids(json!({"submitted": {"$lt": t}})), vec!["a"]);
        assert_eq!(
            ids(json!({"submitted": {"$lte": t, "$gt": "2026"}})),
            vec!["b", "a"]
        );
        assert!(s.find(&json!({"x": {"$regex": "a"}})).is_err());
        assert!(s.find(&json!([])).is_err());
        // ipyparallel's other operators: `$glob` (its task-label example queries labels
        // with it), and `DictDB`'s `$exists`, `$mod`, `$all`.
        assert_eq!(ids(json!({"msg_id": {"$glob": "[ab]"}})), vec!["b", "a"]);
        assert_eq!(ids(json!({"submitted": {"$glob": "*:03Z"}})), vec!["c"]);
        assert_eq!(ids(json!({"msg_id": {"$glob": "A"}})), Vec::<String>::new());
        assert_eq!(ids(json!({"completed": {"$glob": "*"}})), vec!["a"]);
        assert_eq!(ids(json!({"completed": {"$exists": true}})), vec!["a"]);
        assert_eq!(
            ids(json!({"completed": {"$exists": false}})),
            vec!["b", "c"]
        );
        assert_eq!(
            ids(json!({"msg_id": {"$all": [["a", "b"], "xab"]}})),
            vec!["b", "a"]
        );
        assert_eq!(ids(json!({"msg_id": {"$nin": ""}})), vec!["b", "a", "c"]);
        assert_eq!(ids(json!({"msg_id": {"$in": "xac"}})), vec!["a", "c"]);
        assert_eq!(
            ids(json!({"completed": {"$nin": ""}})),
            vec!["a"],
            "null is no string"
        );
        assert!(matches(&json!(7), &json!({"$mod": [3, 1]})));
        assert!(!matches(&json!(7), &json!({"$mod": [3, 2]})));
        assert!(
            !matches(&json!(7), &json!({"$mod": [0, 0]})),
            "no division by zero"
        );
        assert!(
            !matches(&json!("x"), &json!({"$glob": "[x"})),
            "a bad pattern matches nothing"
        );

        let r = s.get("a").unwrap();
        let keys = vec!["completed".to_string(), "buffers".to_string()];
        let (v, b, rb) = project(r, Some(&keys));
        assert_eq!(
            v,
            json!({"msg_id": "a", "completed": "2026-01-01T00:00:05Z"})
        );
        assert_eq!(b.unwrap().len(), 1);
        assert!(rb.is_none());
    }

    #[test]
    fn an_unfinished_request_is_written_only_once_overdue() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut s = Records::default();
        s.set_store(tx);
        let t0 = std::time::Instant::now();
        request(&mut s, "quick", "2026");
        request(&mut s, "slow", "2026");
        reply(&mut s, "quick", "2027");
        let written = |rx: &crossbeam_channel::Receiver<DbCommand>| -> Vec<(String, bool)> {
            rx.try_iter()
                .map(|c| match c {
                    DbCommand::Put(r) => (r.msg_id().to_string(), r.is_completed()),
                    DbCommand::Delete(id) => (id, false),
                })
                .collect()
        };
        assert_eq!(
            written(&rx),
            [("quick".to_string(), true)],
            "one write when done"
        );
        s.persist_overdue(t0, false);
        assert!(written(&rx).is_empty(), "not overdue yet");
        s.persist_overdue(t0 + UNFINISHED_GRACE + Duration::from_millis(1), false);
        assert_eq!(written(&rx), [("slow".to_string(), false)]);
        s.persist_overdue(t0 + UNFINISHED_GRACE * 3, true);
        assert!(written(&rx).is_empty(), "written once");
    }

    #[test]
    fn records_reach_the_database_in_batches_and_restore_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db").join("tasks.sqlite");
        let (store, writer) = crate::db::start_writer(crate::db::open(&path).unwrap()).unwrap();
        let mut s = Records::with_limits(10_000, SIZE_LIMIT);
        s.set_store(store);
        let data = |msg_id: &str, payload: &[u8]| {
            let mut p = parts(
                json!({"msg_type": "data_message", "date": "D", "session": "e0"}),
                json!({ "msg_id": msg_id }),
                json!({}),
                json!({ "keys": ["a"] }),
            );
            p.push(Bytes::copy_from_slice(payload));
            RecordEvent::Iopub { parts: p }
        };
        for i in 0..2500 {
            let m = format!("m{i}");
            request(&mut s, &m, "2026");
            s.apply(data(&m, b"first"), "R1");
            s.apply(data(&m, &[i as u8; 3]), "R2");
            reply(&mut s, &m, "2027");
        }
        // Published frames too large to bind whole are streamed into their BLOB.
        let big = vec![9u8; 100_000];
        request(&mut s, "big", "2026");
        s.apply(data("big", &big), "R1");
        reply(&mut s, "big", "2027");
        request(&mut s, "pending", "2026");
        s.remove("m0");
        // Reading while the writer runs: the file fills in batches, never blocking us.
        let reader = crate::db::open(&path).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !crate::db::contains(&reader, "m2499") {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never caught up"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // The hub ending: unfinished requests are written, then the writer commits the
        // rest and exits.
        s.persist_overdue(std::time::Instant::now(), true);
        drop(s);
        writer.join().unwrap();

        let stored = crate::db::load(&reader).unwrap();
        assert_eq!(
            stored.len(),
            2501,
            "the finished records and the unfinished one, the removed one gone"
        );
        let mut back = Records::with_limits(10_000, SIZE_LIMIT);
        back.restore(stored);
        assert!(!back.contains("m0"));
        assert_eq!(
            back.unfinished(),
            vec![("pending".to_string(), Some("e0".to_string()))]
        );
        let r = back.get("m7").expect("restored");
        assert_eq!(*r.get("completed"), json!("2027"));
        assert_eq!(*r.get("engine_uuid"), json!("e0"));
        assert_eq!(r.buffers, vec![b"buf".to_vec()]);
        assert_eq!(r.result_buffers, Some(vec![Bytes::from_static(b"result")]));
        let facts = |_: &str| crate::published::EngineFacts {
            id: None,
            alive: false,
            died: None,
        };
        let (v, frames) = r.published.entries(true, true, &facts);
        assert_eq!(v[0]["seq"], 2);
        assert_eq!(v[0]["received"], "R2");
        assert_eq!(frames, vec![vec![7u8; 3], b"first".to_vec()]);
        let r = back.get("big").expect("restored");
        let (_, frames) = r.published.entries(true, true, &facts);
        assert_eq!(frames, vec![big]);
        assert_eq!(r.buffers, vec![b"buf".to_vec()]);
        assert_eq!(
            back.history().first().map(String::as_str),
            Some("m1"),
            "order kept"
        );
        // New records continue after the restored ones.
        request(&mut back, "new", "2028");
        assert!(back.get("new").unwrap().seq() > back.get("m2499").unwrap().seq());
    }
}
