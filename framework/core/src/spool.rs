//! Batches spooled to a temporary Arrow IPC file, so a stage or a destination can hold a
//! run's worth of rows (quarantined rows, a merge's incoming rows) with bounded memory and
//! read them back in order.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_ipc::reader::FileReader;
use arrow_ipc::writer::FileWriter;
use arrow_schema::SchemaRef;

use crate::error::{Error, Result};

/// Writes batches of one schema to a temporary file.
pub struct BatchSpool {
    what: &'static str,
    schema: SchemaRef,
    file: tempfile::NamedTempFile,
    writer: FileWriter<BufWriter<File>>,
    rows: u64,
}

impl std::fmt::Debug for BatchSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSpool")
            .field("what", &self.what)
            .field("file", &self.file.path())
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl BatchSpool {
    /// A new spool for batches of `schema`; `what` names it in file names and errors
    /// (`quarantine`, `merge`).
    pub fn new(schema: SchemaRef, what: &'static str) -> Result<Self> {
        let file = tempfile::Builder::new()
            .prefix(&format!("pipe-{what}-"))
            .suffix(".arrow")
            .tempfile()
            .map_err(|e| Error::from(e).context(format!("creating the {what} spool file")))?;
        let handle = file
            .reopen()
            .map_err(|e| Error::from(e).context(format!("opening the {what} spool file")))?;
        let writer = FileWriter::try_new(BufWriter::new(handle), &schema)?;
        Ok(Self {
            what,
            schema,
            file,
            writer,
            rows: 0,
        })
    }

    /// Append one batch (it must have the spool's schema).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema() != self.schema {
            return Err(Error::internal(format!(
                "a batch given to the {} spool does not have its schema",
                self.what
            )));
        }
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch)?;
        Ok(())
    }

    /// Finish writing; the spooled batches can then be read back (any number of times).
    pub fn finish(mut self) -> Result<Spooled> {
        self.writer.finish()?;
        Ok(Spooled {
            what: self.what,
            schema: self.schema,
            rows: self.rows,
            file: Arc::new(self.file),
        })
    }
}

/// A finished [`BatchSpool`]; the file is deleted when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Spooled {
    what: &'static str,
    schema: SchemaRef,
    rows: u64,
    file: Arc<tempfile::NamedTempFile>,
}

impl Spooled {
    /// The batches' schema.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows spooled.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The batches, read back one at a time, in the order they were written.
    pub fn batches(&self) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send + 'static> {
        let file = self
            .file
            .reopen()
            .map_err(|e| Error::from(e).context(format!("reading the {} spool file", self.what)))?;
        let reader = FileReader::try_new(BufReader::new(file), None)?;
        Ok(reader.map(|b| b.map_err(Error::from)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn batches_come_back_in_order_and_a_foreign_schema_is_refused() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let mut spool = BatchSpool::new(schema.clone(), "test").expect("spool");
        for start in [0i64, 10, 20] {
            let col = Arc::new(Int64Array::from_iter_values(start..start + 3));
            let batch = RecordBatch::try_new(schema.clone(), vec![col]).expect("batch");
            spool.write(&batch).expect("write");
        }
        let other = Arc::new(Schema::new(vec![Field::new("y", DataType::Int64, false)]));
        let col = Arc::new(Int64Array::from_iter_values(0..1));
        let foreign = RecordBatch::try_new(other, vec![col]).expect("batch");
        assert!(spool.write(&foreign).is_err());
        let spooled = spool.finish().expect("finish");
        assert_eq!(spooled.rows(), 9);
        let firsts: Vec<i64> = spooled
            .batches()
            .expect("read")
            .map(|b| {
                let b = b.expect("batch");
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64")
                    .value(0)
            })
            .collect();
        assert_eq!(firsts, vec![0, 10, 20]);
    }
}
