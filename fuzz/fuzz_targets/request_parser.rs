//! The strict request reading: headers and JSON bodies of any bytes, with
//! each field reader on what parses. Never a panic; every refusal is an
//! error with a defined status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcpat::model::{Header, Request};
use rcpat::request;

#[derive(arbitrary::Arbitrary, Debug)]
struct Input {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    limit: u16,
}

fuzz_target!(|input: Input| {
    let req = Request {
        headers: input
            .headers
            .into_iter()
            .map(|(name, value)| Header { name, value })
            .collect(),
        client_address: "127.0.0.1".into(),
        body: input.body,
    };
    if let Err(e) = request::headers(&req) {
        rcpat_fuzz::check_reply(&e.to_response());
    }
    match request::body(&req.body, usize::from(input.limit)) {
        Ok(body) => {
            for r in [
                request::token_name(&body).map(drop),
                request::bypass_two_factor(&body).map(drop),
            ] {
                if let Err(e) = r {
                    rcpat_fuzz::check_reply(&e.to_response());
                }
            }
        }
        Err(e) => rcpat_fuzz::check_reply(&e.to_response()),
    }
});
