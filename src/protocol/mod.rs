//! The wire contract shared by the processor and its clients. No I/O: subjects,
//! ids, payload validation and the documents on the wire.

pub mod documents;
pub mod field;
pub mod id;
pub mod payload;
pub mod subjects;
pub mod trace;
