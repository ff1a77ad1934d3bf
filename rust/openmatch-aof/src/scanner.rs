//! The replay scanner (issue 4). Placeholder until it lands.
