//! Reading xvrrp's Prometheus endpoint from inside a lab host, as a scraper would.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    time::Duration,
};

use crate::Lab;

/// One HTTP GET of `path` on `host`'s 127.0.0.1:`port`: (status line, body).
pub fn get(lab: &Lab, host: &str, port: u16, path: &str) -> (String, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let text = lab
        .host(host)
        .ns
        .run_in(move || {
            let mut s = TcpStream::connect_timeout(
                &(Ipv4Addr::LOCALHOST, port).into(),
                Duration::from_secs(2),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            Ok(text)
        })
        .expect("scrape");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

/// GET /metrics on `host`'s `port`, which must answer 200: the exposition text.
pub fn scrape(lab: &Lab, host: &str, port: u16) -> String {
    let (status, body) = get(lab, host, port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

/// The value of the sample `name` whose labels include every one of `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
