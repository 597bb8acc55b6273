//! Kappa's streaming SQL: Flink SQL statements (DDL with watermarks, views, window
//! table-valued functions, INSERT INTO) parsed and planned with DataFusion into
//! kappa-stream dataflows, and the service that keeps the catalog and runs pipelines.

pub mod catalog;
pub mod parser;
pub mod planner;
pub mod service;
pub mod settings;

pub use parser::SqlError;
