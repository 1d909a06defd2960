//! End-to-end tests: each starts the real server on a loopback port and talks to it over gRPC
//! (or gRPC-Web, or from Python) as a user would.

mod auth_matrix;
mod bad_input;
mod embeddings;
mod faces;
mod import;
mod labeling;
mod paging;
mod proposal;
mod python_client;
mod ranking;
mod restart;
mod rounds;
mod security;
mod training;
mod transport;
