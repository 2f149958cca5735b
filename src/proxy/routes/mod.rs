//! Routing: the request path checked and made canonical ([`path`]), then the route for its host,
//! method and path ([`table`]).

pub mod path;
pub mod table;

pub use path::{normalize_path, PathError, MAX_PATH_LEN};
pub use table::{strip_port, Found, Lookup, RouteSpec, RouteTable, RouteTableError};
