//! The proxy's upstream connections in a server's idle pool, which lives
//! with the server's state in the runtime.

use crate::runtime::pool::Idle;
use crate::upstream::Conn;

impl Idle for Conn {
    fn is_reusable(&self) -> bool {
        Conn::is_reusable(self)
    }
}
