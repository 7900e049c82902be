//! The proxy's upstream connections in a server's idle pool, which lives
//! with the server's state in the runtime.

use super::conn::Conn;
use crate::runtime::pool::Idle;

impl Idle for Conn {
    fn is_reusable(&self) -> bool {
        Conn::is_reusable(self)
    }
}
