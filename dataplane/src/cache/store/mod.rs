//! Where entries live: the process-wide memory store, and Redis for `store: Redis`.

pub mod memory;
pub mod redis;

pub use memory::MemoryStore;
pub use redis::RedisCache;
