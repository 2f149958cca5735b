//! Adversarial over-the-wire tests (issue "Hardening: adversarial tokens, requests and faults"):
//! forged and malformed tokens, request smuggling, path confusion, header spoofing and floods,
//! HTTP/2 rapid reset, token endpoint abuse, and property tests of the parsers.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod headers;
mod jwt;
mod jwt_json;
mod paths;
mod properties;
mod smuggling;
mod token_endpoint;
