//! The ingest section.

use std::path::Path;

use crate::error::{Error, Result};
use crate::footprint::Footprint;
use crate::report::Table;
use crate::servers::{Binaries, MongoServerKind};
use crate::Counts;

pub async fn run(
    _binaries: &Binaries,
    _mongo: &MongoServerKind,
    _work_dir: &Path,
    _counts: Counts,
    _footprint: &mut Footprint,
) -> Result<Table> {
    Err(Error::Check("not yet built".into()))
}
