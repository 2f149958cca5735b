//! Free loopback ports for servers the tests start on a port chosen in advance.

/// A port the kernel just handed out and released; another process may take it before the
/// caller binds it (callers that can, retry on another one).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0").local_addr().expect("local addr").port()
}
