//! The durable segment writer (issue 3). Placeholder until it lands.
