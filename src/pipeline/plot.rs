//! The latency plot of `bench pipeline`.

use std::path::Path;

use super::error::{PipelineError, Result};
use super::latency::FrameRecord;

/// Latency per frame over time and a histogram, as a PNG.
pub fn latency_plot(_records: &[FrameRecord], _path: &Path) -> Result<()> {
    Err(PipelineError::Config("the latency plot is not implemented yet; use --report and plot the JSON".into()))
}
