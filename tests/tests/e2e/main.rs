//! labelq's end-to-end tests, in one binary (each test binary is another link of the whole SDK):
//! real servers on 127.0.0.1:0, the real `labelq` binary as a process, real photos and the real
//! model; with the `localstack` feature, the AWS path against LocalStack (`localstack::`, run by
//! `make aws-tests` once LocalStack is up). `TEST_LOG=1` logs what the servers under test say.

mod api;
mod callbacks;
mod cli;
mod detector;
mod drops;
mod events;
#[cfg(feature = "localstack")]
mod localstack;
mod pipeline;
mod process;
mod uploads;
mod websocket;
