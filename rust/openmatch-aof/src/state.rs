//! In-memory engine state (issue 6). Placeholder until it lands.
